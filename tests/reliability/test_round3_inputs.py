"""Issue 26, class 6: files read without limits.  One input rule (``torchace.inputs``) for every file torchace
reads: regular files only (FIFOs, devices, directories refused, also behind symbolic links), size and
declared-dimension limits before allocation, integrity/version checks for the coupling cache, physically
meaningless values refused naming the file and the field.

Every case that could hang (a FIFO) runs in a child process with a timeout, in its own process group.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import torchace
from torchace.inputs import InputFileError, check_input_file, open_input
from torchace.io.model_file import ModelFileError, model_from_dict
from torchace.testing import ChildTimeout, run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_child(code: str, cwd, timeout: float = 120, env=None) -> subprocess.CompletedProcess:
    """``python -c code`` in its own process group, killed with its children after ``timeout`` (a reader that
    blocks on a FIFO must fail the test, not hang it)."""
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {}))
    try:
        return run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=e, timeout=timeout, merge_stderr=True)
    except ChildTimeout as exc:
        pytest.fail(f"the child hung (killed after {timeout} s); output:\n{(exc.output or '')[-3000:]}")


@pytest.fixture(scope="module")
def yace_text(tmp_path_factory):
    from torchace.io import write_yace
    from torchace.testing import randomize_coefficients

    m = torchace.ace_model(["Si"], 2, 5, pair=False)
    randomize_coefficients(m, 0.01, seed=1)
    p = tmp_path_factory.mktemp("yace") / "m.yace"
    write_yace(m, str(p))
    return p.read_text()


@pytest.fixture(scope="module")
def model_doc(tmp_path_factory):
    from torchace.testing import randomize_coefficients

    m = torchace.ace_model(["Si"], 2, 5)
    randomize_coefficients(m, 0.01, seed=1)
    return m.to_dict()


# ------------------------------------------------------------------ regular files only, for every reader

READERS = """
import os, sys, traceback
sys.path.insert(0, {root!r})
import torchace
from torchace.fit.data import read_data
from torchace.fit.config import FitConfig
from torchace.fit.checkpoint import load_checkpoint
from torchace.train.state import TrainCheckpoint
from torchace.io.yace.pair_table import read_pair_table
from torchace.io.torchscript import load_torchscript
from torchace.io import read_yace
from torchace.inputs import open_input
readers = dict(
    read_data=lambda p: read_data(p),
    load=lambda p: torchace.load(p),
    read_yace=lambda p: read_yace(p),
    fit_config=lambda p: FitConfig.load(p),
    assembly_checkpoint=lambda p: load_checkpoint(p),
    train_checkpoint=lambda p: TrainCheckpoint(p, {{}}).load(),
    pair_table=lambda p: read_pair_table(p),
    torchscript=lambda p: load_torchscript(p),
    open_input=lambda p: open_input(p, "test file", 1 << 20),
)
for path in {paths!r}:
    for name, fn in readers.items():
        try:
            fn(path)
            print(f"RESULT|{{path}}|{{name}}|LOADED|")
        except BaseException as exc:
            print(f"RESULT|{{path}}|{{name}}|{{type(exc).__name__}}|{{' '.join(str(exc).split())}}")
"""


def _results(out: str):
    rows = [ln.split("|", 4) for ln in out.splitlines() if ln.startswith("RESULT|")]
    return {(r[1], r[2]): (r[3], r[4]) for r in rows}


def test_every_reader_refuses_a_fifo_a_device_link_and_a_directory(tmp_path):
    """A FIFO would block each reader for ever, /dev/zero never ends; both are refused before reading, naming
    the file (and where a link leads)."""
    os.mkfifo(tmp_path / "pipe.xyz")
    os.symlink("/dev/zero", tmp_path / "zero.json")
    os.mkdir(tmp_path / "dir.yace")
    paths = ["pipe.xyz", "zero.json", "dir.yace"]
    r = run_child(READERS.format(root=ROOT, paths=paths), tmp_path, timeout=180)
    res = _results(r.stdout)
    assert len(res) == 27, r.stdout[-3000:]
    for (path, name), (typ, msg) in res.items():
        assert typ in ("DataError", "ModelFileError", "ValueError", "InputFileError", "CheckpointError"), \
            (path, name, typ, msg)
        assert msg.startswith(path), (path, name, msg)
        kind = {"pipe.xyz": "FIFO", "zero.json": "a link to /dev/zero", "dir.yace": "is a directory"}[path]
        assert kind in msg, (path, name, msg)


def test_cli_evaluate_and_fit_refuse_a_fifo_in_one_line(tmp_path):
    from torchace.testing import randomize_coefficients

    m = torchace.ace_model(["Si"], 2, 5)
    randomize_coefficients(m, 0.01, seed=1)
    m.save(str(tmp_path / "m.json"))
    os.mkfifo(tmp_path / "train.xyz")
    (tmp_path / "fit.json").write_text(json.dumps({
        "model": {"elements": ["Si"], "order": 2, "totaldegree": 5}, "data": {"train": "train.xyz"},
        "E0": {"Si": -5.0}, "output": {"model": "out.json", "errors": None}}))
    code = f"""
    import sys; sys.path.insert(0, {ROOT!r})
    from torchace.cli import main
    for args in (["evaluate", "--model", "m.json", "train.xyz"], ["fit", "fit.json", "-q"]):
        try:
            main(args)
            print("RESULT|" + args[0] + "|RAN|")
        except SystemExit as exc:
            print("RESULT|" + args[0] + "|SystemExit|" + str(exc).replace(chr(10), "<NL>"))
    """
    r = run_child(code, tmp_path, timeout=180)
    rows = {ln.split("|")[1]: ln.split("|", 3)[2:] for ln in r.stdout.splitlines() if ln.startswith("RESULT|")}
    for cmd in ("evaluate", "fit"):
        typ, msg = rows[cmd]
        assert typ == "SystemExit" and "train.xyz" in msg and "FIFO" in msg and "<NL>" not in msg, (cmd, msg)
    assert not (tmp_path / "out.json").exists()


def test_open_input_checks_the_descriptor_it_opened(tmp_path, monkeypatch):
    """The stat-then-open race: a file swapped for a FIFO after the check is still refused (the descriptor is
    opened without blocking and checked with fstat)."""
    import torchace.inputs as inputs

    fifo = tmp_path / "swap.json"
    os.mkfifo(fifo)
    monkeypatch.setattr(inputs, "check_input_file", lambda *a, **k: 0)  # as if the check saw a regular file

    def hung(signum, frame):
        raise TimeoutError("open_input blocked on a FIFO")

    old = signal.signal(signal.SIGALRM, hung)  # a blocking open would hang the test: interrupt it instead
    signal.alarm(20)
    try:
        with pytest.raises(InputFileError, match=r"swap\.json: is not a regular file \(a FIFO"):
            open_input(str(fifo), "model file", 1 << 20)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_size_limits_and_decompression_bombs(tmp_path, monkeypatch):
    import torchace.fit.data as data
    from torchace.fit.data import DataError, read_data
    from torchace.testing import rattled_bulk
    from ase.io import write

    big = tmp_path / "big.json"
    big.write_bytes(b" " * 5000)
    with pytest.raises(InputFileError,
                       match=r"big\.json: 5,000 bytes is larger than any model file \(limit 4,096 bytes\)"):
        check_input_file(str(big), "model file", 4096)
    # a small .gz that decompresses beyond the limit is refused before ASE holds it in memory
    frames = [rattled_bulk(["Si"], seed=k) for k in range(40)]
    write(str(tmp_path / "plain.xyz"), frames)
    text = (tmp_path / "plain.xyz").read_bytes()
    with gzip.open(tmp_path / "bomb.xyz.gz", "wb") as fh:
        fh.write(text)
    assert os.path.getsize(tmp_path / "bomb.xyz.gz") < len(text) // 2
    monkeypatch.setattr(data, "MAX_DATA_BYTES", len(text) - 1)
    with pytest.raises(DataError, match=r"bomb\.xyz\.gz: decompresses to more than .*decompression bomb"):
        read_data(str(tmp_path / "bomb.xyz.gz"))
    (tmp_path / "bad.xyz.gz").write_bytes(gzip.compress(text)[:200])
    monkeypatch.setattr(data, "MAX_DATA_BYTES", 4 << 30)
    with pytest.raises(DataError, match=r"bad\.xyz\.gz: corrupt gzip stream"):
        read_data(str(tmp_path / "bad.xyz.gz"))


def test_yace_size_limit(tmp_path, yace_text, monkeypatch):
    import torchace.io.yace.read as yr

    p = tmp_path / "m.yace"
    p.write_text(yace_text)
    assert yr.MAX_YACE_BYTES <= 1 << 30  # not 4 GiB any more
    monkeypatch.setattr(yr, "MAX_YACE_BYTES", len(yace_text) - 1)
    with pytest.raises(InputFileError, match=r"m\.yace: .* is larger than any \.yace file"):
        yr.read_yace(str(p))


# ------------------------------------------------------------------ .yace: aliases however spelled

ALIAS_VARIANTS = {
    # the old text scan required the name to start with a letter, digit or _: '&-x' passed it
    "dash-named anchor": ("a: &-x [1, 1, 1, 1]\nb: [*-x, *-x, *-x, *-x]\n", 1, "anchors/aliases"),
    # the old scan stopped at the first '#', also inside a quoted string
    "after a '#' in quotes": ('a: ["#", &x [1, 1, 1]]\nb: ["#", *x, *x, *x]\n', 1, "anchors/aliases"),
    "alias only": ("a: [1]\nb: *zz\n", 2, "anchors/aliases|undefined alias|found undefined"),
    "merge key": ("a: {x: 1}\nb: {<<: {y: 2}}\n", 2, "merge keys"),
    "explicit tag": ("a: !!python/name:os.system x\n", 1, "tags"),
    "anchor on a mapping key": ("? &k [0, 0]\n: 1\n", 1, "anchors/aliases"),
}


@pytest.mark.parametrize("name", list(ALIAS_VARIANTS))
def test_yace_alias_bomb_variants_are_refused(tmp_path, yace_text, name):
    from torchace.io import read_yace

    prefix, line, what = ALIAS_VARIANTS[name]
    p = tmp_path / "bomb.yace"
    p.write_text(prefix + yace_text)
    with pytest.raises(ValueError) as exc:
        read_yace(str(p))
    msg = str(exc.value)
    assert msg.startswith(str(p)) and re.search(what, msg), msg
    if "undefined" not in msg:
        assert f"line {line}:" in msg, msg


def test_yace_loader_refuses_aliases_too(yace_text):
    import yaml
    from torchace.io.yace.read import YaceLoader

    with pytest.raises(yaml.YAMLError, match="aliases"):
        yaml.load("a: &-x [1]\nb: [*-x, *-x]\n" + yace_text, Loader=YaceLoader)


def test_yace_second_document_and_deep_nesting(tmp_path, yace_text):
    from torchace.io import read_yace

    p = tmp_path / "two.yace"
    p.write_text(yace_text + "---\n" + yace_text)
    with pytest.raises(ValueError, match=r"two\.yace: line \d+: a second YAML document"):
        read_yace(str(p))
    p = tmp_path / "deep.yace"
    p.write_text("x: " + "[" * 100 + "]" * 100 + "\n" + yace_text)
    with pytest.raises(ValueError, match=r"deep\.yace: .*nest"):
        read_yace(str(p))


# ------------------------------------------------------------------ .yace: declared dimensions

DIMENSIONS = {
    "lmax": (r"lmax: \d+", "lmax: 1000000", r"'bonds\.\[0, 0\]\.lmax' = 1,000,000 is larger"),
    "nradmax": (r"nradmax: \d+", "nradmax: 100000000", r"'bonds\.\[0, 0\]\.nradmax' = 100,000,000 is larger"),
    "nradbasemax": (r"nradbasemax: \d+", "nradbasemax: 100000000", r"'bonds\.\[0, 0\]\.nradbasemax' = 100,000,000"),
    "ndensity": (r"ndensity: 1, FS", "ndensity: 1000000000, FS", r"'embeddings\.0\.ndensity' = 1,000,000,000"),
    "spline bins": (r"deltaSplineBins: [0-9.e-]+", "deltaSplineBins: 1e-15", r"'deltaSplineBins'.*spline bins"),
}


@pytest.mark.slow  # a .yace export per case: 5-9 s
@pytest.mark.parametrize("name", list(DIMENSIONS))
def test_yace_huge_declared_dimensions_are_refused_before_allocation(tmp_path, yace_text, name):
    """A few-kB .yace declaring huge sizes: refused naming the field, before any table of that size exists (a
    child with a 2 GiB address-space limit would die otherwise)."""
    pat, repl, match = DIMENSIONS[name]
    text, n = re.subn(pat, repl, yace_text, count=1)
    assert n == 1
    (tmp_path / "dims.yace").write_text(text)
    assert len(text) < 20_000
    code = f"""
    import resource, sys; sys.path.insert(0, {ROOT!r})
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    from torchace.io import read_yace
    try:
        read_yace("dims.yace")
        print("RESULT|LOADED|")
    except Exception as exc:
        print("RESULT|" + type(exc).__name__ + "|" + " ".join(str(exc).split()))
    """
    r = run_child(code, tmp_path, timeout=120)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT|")]
    assert line, r.stdout[-2000:]
    typ, msg = line[0].split("|", 2)[1:]
    assert typ in ("InputFileError", "ValueError") and msg.startswith("dims.yace") and re.search(match, msg), msg


def test_yace_table_product_limit(tmp_path, yace_text, monkeypatch):
    """Dimensions each within their limits whose radial table is too large are refused before np.zeros."""
    import torchace.io.yace.read as yr

    monkeypatch.setattr(yr, "MAX_CRAD_VALUES", 10)
    p = tmp_path / "t.yace"
    p.write_text(yace_text)
    with pytest.raises(InputFileError, match=r"t\.yace: 'bonds \(nz² · nradmax · \(lmax\+1\) · nradbasemax\)' = "):
        yr.parse_yace(str(p))


# ------------------------------------------------------------------ .yace: meaningless values

YACE_VALUES = {
    "rcut .nan": (r"rcut: [0-9.]+", "rcut: .nan", r"bonds\.\[0, 0\]\.rcut': expected a finite number"),
    "rcut 0": (r"rcut: [0-9.]+", "rcut: 0", r"bonds\.\[0, 0\]\.rcut': must be > 0"),
    "dcut -1": (r"dcut: [0-9.]+,", "dcut: -1,", r"bonds\.\[0, 0\]\.dcut': must be in"),
    "dcut .inf": (r"dcut: [0-9.]+,", "dcut: .inf,", r"bonds\.\[0, 0\]\.dcut': expected a finite number"),
    "rcut_in > rcut": (r"rcut_in: [0-9.]+", "rcut_in: 100", r"bonds\.\[0, 0\]\.rcut_in': must be in"),
    "rho_core_cutoff -1": (r"rho_core_cutoff: [0-9.]+", "rho_core_cutoff: -1",
                           r"embeddings\.0\.rho_core_cutoff': must be ≥ 0"),
    "drho_core_cutoff .nan": (r"drho_core_cutoff: [0-9.]+", "drho_core_cutoff: .nan",
                              r"embeddings\.0\.drho_core_cutoff'"),
    "lambda 0": (r"radparameters: \[[0-9.]+\]", "radparameters: [0]", r"radparameters': must be > 0"),
    "radcoefficients .nan": (r"radcoefficients: \[\[\[[-0-9.e]+", "radcoefficients: [[[.nan",
                             r"radcoefficients': expected finite"),
    "ctildes .nan": (r"ctildes: \[[-0-9.e]+", "ctildes: [.nan", r"ctildes': expected a list of finite"),
    "FS exponent 0": (r"FS_parameters: \[1, 1\]", "FS_parameters: [1, 0]", r"FS_parameters': the exponents"),
    "E0 .inf": (r"E0: \[[-0-9.e]+\]", "E0: [.inf]", r"E0': expected a list of finite"),
}


@pytest.mark.parametrize("name", list(YACE_VALUES))
def test_yace_meaningless_values_are_refused(tmp_path, yace_text, name):
    from torchace.io import read_yace

    pat, repl, match = YACE_VALUES[name]
    text, n = re.subn(pat, repl, yace_text, count=1)
    assert n == 1, pat
    p = tmp_path / "bad.yace"
    p.write_text(text)
    with pytest.raises(ValueError) as exc:
        read_yace(str(p))
    assert str(exc.value).startswith(str(p)) and re.search(match, str(exc.value)), str(exc.value)


def test_yace_unchanged_file_still_loads(tmp_path, yace_text):
    """Negative control: the export itself reads back (and the checks above are about the edited field)."""
    from torchace.io import read_yace
    from torchace.testing import rattled_bulk

    p = tmp_path / "ok.yace"
    p.write_text(yace_text)
    e = torchace.evaluate(read_yace(str(p)), [rattled_bulk(["Si"], seed=0)])["energy"]
    assert torch.isfinite(e).all() and float(e.abs().max()) > 0


# ------------------------------------------------------------------ model files: meaningless values

def _edit(doc, path, value):
    import copy

    d = copy.deepcopy(doc)
    node = d
    for k in path[:-1]:
        node = node[k]
    if callable(value):
        node[path[-1]] = value(node[path[-1]])
    else:
        node[path[-1]] = value
    return d


def _scaled(x, f):
    return [_scaled(v, f) for v in x] if isinstance(x, list) else f(x)


MODEL_VALUES = {
    "rcut 0": (("config", "rcut"), 0, r"'config\.rcut' must be the model's positive cutoff"),
    "rcut null": (("config", "rcut"), None, r"'config\.rcut' must be the model's positive cutoff"),
    "rcut -6": (("config", "rcut"), -6.0, r"rcut"),
    "r0 negative": (("config", "r0"), [[-2.4]], r"'r0' must be a positive number"),
    "nl_scale 0": (("nl_scale",), lambda x: _scaled(x, lambda v: 0.0), r"field 'nl_scale' must hold positive scale"),
    "pair_scale negative": (("pair_scale",), lambda x: _scaled(x, lambda v: -v),
                            r"field 'pair_scale' must hold positive"),
    "coefficient 1e308": (("coefficients",), lambda x: [1e308] + x[1:],
                          r"field 'coefficients' contains values of magnitude"),
    "committee 1e200": (("committee",), lambda x: [[1e200] * len(x[0])] if x else x, r"'committee'"),
}


@pytest.mark.parametrize("name", list(MODEL_VALUES))
def test_model_file_meaningless_values_are_refused(tmp_path, model_doc, name):
    path, value, match = MODEL_VALUES[name]
    doc = dict(model_doc)
    if name.startswith("committee"):
        doc["committee"] = [list(model_doc["coefficients"])]
    d = _edit(doc, path, value)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ModelFileError) as exc:
        torchace.load(str(p))
    assert str(exc.value).startswith(str(p)) and re.search(match, str(exc.value)), str(exc.value)
    with pytest.raises(ModelFileError):
        model_from_dict(d, "bad.json")  # the Python API alike


def test_model_file_unchanged_still_loads(tmp_path, model_doc):
    p = tmp_path / "ok.json"
    p.write_text(json.dumps(model_doc))
    m = torchace.load(str(p))
    assert torch.equal(m.coefficients, torch.tensor(model_doc["coefficients"], dtype=torch.float64))


def test_nonlinear_model_file_meaningless_values_are_refused(tmp_path):
    from torchace.model import ACEModel
    from torchace.config import ACEConfig

    m = ACEModel(ACEConfig.build(["Si"], 2, 5), densities=2, embedding="fs", learnable_radials=False)
    doc = m.to_dict()
    for path, value, match in ((("config", "rcut"), 0, r"'config\.rcut'"),
                               (("nl_scale",), lambda x: _scaled(x, lambda v: 0.0), r"'nl_scale' must hold positive"),
                               (("coefficients",), lambda x: _scaled(x, lambda v: 1e300),
                                r"'coefficients' contains values of magnitude")):
        p = tmp_path / "nl.json"
        p.write_text(json.dumps(_edit(doc, path, value)))
        with pytest.raises(ModelFileError, match=r"nl\.json: .*" + match):
            torchace.load(str(p))


# ------------------------------------------------------------------ the coupling-coefficient disk cache

def _cache(tmp_path, monkeypatch):
    from torchace.basis import coupling_coefficients as C

    monkeypatch.setenv("TORCHACE_CACHE", str(tmp_path))
    C.symmetric_coupling.cache_clear()
    ref = C.symmetric_coupling((1, 2, 3), (1, 1, 1))
    (entry,) = list(tmp_path.glob("coupling_*.npz"))

    def again():
        C.symmetric_coupling.cache_clear()
        return C.symmetric_coupling((1, 2, 3), (1, 1, 1))

    return C, ref, entry, again


def _same(a, b):
    return np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_coupling_cache_roundtrip_has_header_and_checksum(tmp_path, monkeypatch):
    C, ref, entry, again = _cache(tmp_path, monkeypatch)
    with np.load(entry, allow_pickle=False) as f:
        assert str(f["format"]) == C.CACHE_FORMAT and int(f["version"]) == C.CACHE_VERSION
        assert len(str(f["checksum"])) == 64
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact entry is used without a word
        assert _same(again(), ref)


def _truncate(entry, C, ref):
    entry.write_bytes(entry.read_bytes()[:100])


def _empty(entry, C, ref):
    entry.write_bytes(b"")


def _altered(entry, C, ref):
    d = dict(np.load(entry, allow_pickle=False))
    d["coeffs"] = d["coeffs"] * 2.0
    with open(entry, "wb") as fh:
        np.savez(fh, **d)


def _old_format(entry, C, ref):  # an entry of the earlier format: the arrays only
    with open(entry, "wb") as fh:
        np.savez(fh, ms=ref[0], coeffs=ref[1])


def _foreign_key(entry, C, ref):  # another tuple's intact entry under this name
    d = dict(np.load(entry, allow_pickle=False))
    d["key"] = np.array("v2|(0, 0)|(2,)")
    d["checksum"] = np.array(C._checksum("v2|(0, 0)|(2,)", d["ms"], d["coeffs"]))
    with open(entry, "wb") as fh:
        np.savez(fh, **d)


def _other_version(entry, C, ref):
    d = dict(np.load(entry, allow_pickle=False))
    d["version"] = np.array(99)
    with open(entry, "wb") as fh:
        np.savez(fh, **d)


def _devzero(entry, C, ref):
    entry.unlink()
    os.symlink("/dev/zero", entry)


class _Boom:
    def __reduce__(self):
        return (open, (os.environ["TORCHACE_CACHE"] + "/PWNED", "w"))


def _pickle(entry, C, ref):  # an object array: loading it would run code
    d = dict(np.load(entry, allow_pickle=False))
    d["coeffs"] = np.array([_Boom()], dtype=object)
    with open(entry, "wb") as fh:
        np.savez(fh, **d)


@pytest.mark.parametrize("damage", [_truncate, _empty, _altered, _old_format, _foreign_key, _other_version, _devzero,
                                    _pickle], ids=lambda f: f.__name__.strip("_"))
def test_coupling_cache_damaged_entry_is_recomputed_with_a_warning(tmp_path, monkeypatch, damage):
    C, ref, entry, again = _cache(tmp_path, monkeypatch)
    damage(entry, C, ref)
    with pytest.warns(UserWarning, match=re.escape(str(entry)) + r": ignoring a damaged or foreign coupling-"
                                         r"coefficient cache entry .*recomputing it .*delete"):
        got = again()
    assert _same(got, ref)
    assert not (tmp_path / "PWNED").exists()  # never unpickled
    if damage is not _devzero:  # rewritten: the next read is silent and correct
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert _same(again(), ref)
    else:
        assert os.path.islink(entry)  # never written through the link


@pytest.mark.slow  # a child: 7 s
def test_coupling_cache_fifo_entry_does_not_hang(tmp_path):
    code = f"""
    import os, sys, glob, warnings; sys.path.insert(0, {ROOT!r})
    from torchace.basis import coupling_coefficients as C
    ref = C.symmetric_coupling((1, 2, 3), (1, 1, 1))
    (entry,) = glob.glob(os.path.join(os.environ["TORCHACE_CACHE"], "coupling_*.npz"))
    os.unlink(entry); os.mkfifo(entry)
    C.symmetric_coupling.cache_clear()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        got = C.symmetric_coupling((1, 2, 3), (1, 1, 1))
    print("RESULT|" + str((got[1] == ref[1]).all()) + "|" + " ".join(str(x.message) for x in w))
    """
    r = run_child(code, tmp_path, timeout=120, env={"TORCHACE_CACHE": str(tmp_path / "cache")})
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT|")]
    assert line and line[0].startswith("RESULT|True|") and "FIFO" in line[0], r.stdout[-2000:]


def test_coupling_cache_directory_that_is_a_file(tmp_path, monkeypatch):
    from torchace.basis import coupling_coefficients as C

    (tmp_path / "not_a_dir").write_text("x")
    monkeypatch.setenv("TORCHACE_CACHE", str(tmp_path / "not_a_dir"))
    C.symmetric_coupling.cache_clear()
    with pytest.warns(UserWarning, match=r"TORCHACE_CACHE=.*not_a_dir: cannot be used"):
        ms, c = C.symmetric_coupling((1, 1), (2,))
    assert c.shape[0] == 1
    C.symmetric_coupling.cache_clear()


def test_yace_reading_memory_is_linear_in_the_file_size(tmp_path, yace_text):
    """The document is built from the parser's events: about 7 bytes of Python objects per byte of text
    (PyYAML's node tree, the old way, took about 80: a 40 MB file needed 3.3 GB)."""
    import random
    import tracemalloc

    from torchace.io.yace.read import yace_document

    rng = random.Random(0)
    extra = "".join(f"    - {{mu0: 0, rank: 1, ndensity: 1, num_ms_combs: 1, mus: [0], ns: [1], ls: [0], "
                    f"ms_combs: [0], ctildes: [{rng.random()!r}]}}\n" for _ in range(1500))
    p = tmp_path / "many.yace"
    p.write_text(yace_text.rstrip("\n") + "\n" + extra)
    size = os.path.getsize(p)
    tracemalloc.start()
    try:
        with open(p, "rb") as fh:
            doc = yace_document(str(p), fh)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(doc["functions"][0]) >= 1500
    assert peak < 20 * size, (peak, size)


@pytest.mark.slow  # a child: 6.5 s
def test_save_onto_a_fifo_does_not_hang(tmp_path):
    """``model.save`` reads the head of an existing file to see whether torchace wrote it: a FIFO there is
    refused, not opened (the read would block for ever)."""
    os.mkfifo(tmp_path / "out.json")
    code = f"""
    import sys; sys.path.insert(0, {ROOT!r})
    import torchace
    try:
        torchace.ace_model(["Si"], 2, 5).save("out.json")
        print("RESULT|SAVED|")
    except Exception as exc:
        print("RESULT|" + type(exc).__name__ + "|" + str(exc))
    """
    r = run_child(code, tmp_path, timeout=120)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT|")]
    assert line and line[0].startswith("RESULT|OutputPathError|out.json: exists and is not a regular file"), r.stdout
