#!/usr/bin/env python
"""Hostile-input sweep (issue "Reliability", 14): about 120 bad inputs and faults across the seven classes of
docs/reliability.md §1b, each run in its own forked child with a time limit and an address-space limit, and
the outcome classified:

- ``clear error``: a user-facing exception type whose message names the file / frame / field (the case says
  which words), is one line for the CLI, has no internal wording (``min() arg``, ``has no attribute``,
  recursion, ...) and is bounded in length;
- ``correct``: it works and gives the right answer (or the documented warning);
- ``unhelpful error``: an exception that does not say what the user did wrong, or refused a valid input;
- ``wrong/silent``: no error where one was due, a wrong number, or a temporary file left behind;
- ``data loss``: an input file's checksum changed (or it disappeared);
- ``hang/OOM``: the time limit (default 20 s) or the memory limit (default 4 GiB) was hit, or the child died.

    python scripts/tools/hostile_inputs.py                     # the sweep: Markdown table on stdout
    python scripts/tools/hostile_inputs.py --json out.json --markdown out.md \
        --before scripts/tools/hostile_inputs_before.json
    python scripts/tools/hostile_inputs.py --quick             # ~10 cases (tests/reliability/test_reliability_sweep.py)
    python scripts/tools/hostile_inputs.py -k yaml -v          # the cases whose id/input contains "yaml", verbosely

The parent imports torchace once and forks a child per case (so a case costs milliseconds, not an
interpreter start); two children run at a time (``--jobs``).  The whole sweep takes about two minutes on two
cores.  ``--before FILE`` (the JSON of an earlier run) adds a column with the earlier outcome.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np

CLASSES = {
    1: "outputs never overwrite inputs or each other",
    2: "pathological parameters refused before work",
    3: "files parsed strictly",
    4: "the Python API validates like the config files",
    5: "ill-posed fits reported",
    6: "errors name the file and frame; no internal messages; CLI one line",
    7: "concurrency and loading",
    # round 3 (issue 26): one class per finding of the review; cases in scripts/tools/hostile_cases/round3_*.py
    8: "the C++ kernel's build never hangs",
    9: "no stale answers after the model changes",
    10: "no file replaced that torchace did not write",
    11: "generated scripts and input lines quote what a file name says",
    12: "files read with limits; meaningless values refused",
    13: "resource limits that match the machine",
    14: "documented bases build",
    15: "read-back keeps the whole model",
    16: "training lifecycle",
    17: "LAMMPS driver misuse",
}
OUTCOMES = ("clear error", "correct", "unhelpful error", "wrong/silent", "data loss", "hang/OOM")
INTERNAL = ("min() arg", "non-empty list of Tensors", "has no attribute", "object is not", "NoneType",
            "index out of range", "not supported between", "unhashable", "recursion", "invalid literal",
            "could not convert", "can't convert", "Expected one of", "Could not infer dtype",
            "too many values to unpack", "got an unexpected",
            "new(): invalid", "Traceback", "int too large", "can only concatenate", "not subscriptable")
OOM = ("MemoryError", "can't allocate memory", "bad_alloc", "DefaultCPUAllocator")
USER_TYPES = (ValueError, TypeError, OSError, SystemExit)
MAX_MESSAGE = 1000


@dataclass
class Case:
    cls: int
    name: str
    fn: Callable
    expect: str            # "error" | "ok" | "either"
    names: Sequence[str]   # words an error message must contain (file, frame, field)
    cli: bool = False      # a CLI call: SystemExit with one line
    quick: bool = False
    timeout: Optional[float] = None
    id: str = ""


CASES: List[Case] = []


def case(cls: int, name: str, expect: str = "error", names: Sequence[str] = (), cli: bool = False,
         quick: bool = False, timeout: Optional[float] = None):
    def deco(fn):
        CASES.append(Case(cls, name, fn, expect, tuple(names), cli, quick, timeout))
        return fn
    return deco


# ------------------------------------------------------------------------------------------------ context

def sha(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return None


class Ctx:
    """Helpers of one case, run in the child inside the case's own directory."""

    def __init__(self, d: str):
        self.dir = d

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def protect(self, *paths: str) -> None:
        """Record the checksums of input files; the parent compares them after the child exits."""
        rec = self.path(".protect.json")
        old = json.load(open(rec)) if os.path.exists(rec) else {}
        old.update({os.path.abspath(p): sha(p) for p in paths})
        with open(rec, "w") as fh:
            json.dump(old, fh)

    def model(self, elements=("Si",), order=2, td=6, seed=1, **kw):
        import torchace
        from torchace.testing import randomize_coefficients

        m = torchace.ace_model(list(elements), order, td, **kw)
        randomize_coefficients(m, 0.01, seed=seed)
        return m

    def model_file(self, name="m.json", **kw) -> str:
        p = self.path(name)
        self.model(**kw).save(p)
        return p

    def frames(self, n=4, seed=0, elements=("Si",)):
        from ase.calculators.singlepoint import SinglePointCalculator
        from torchace.testing import rattled_bulk

        rng = np.random.default_rng(seed)
        out = []
        for k in range(n):
            a = rattled_bulk(list(elements), seed=seed + k)
            a.calc = SinglePointCalculator(a, energy=-40.0 + rng.normal(), forces=rng.normal(size=(len(a), 3)) * .1)
            a.info["config_type"] = "bulk"
            out.append(a)
        return out

    def xyz(self, name="train.xyz", frames=None) -> str:
        from ase.io import write

        p = self.path(name)
        write(p, frames if frames is not None else self.frames())
        return p

    def xyz_text(self, name: str, text: str) -> str:
        p = self.path(name)
        with open(p, "w") as fh:
            fh.write(text)
        return p

    def config(self, name="fit.json", train="train.xyz", output=None, **sections) -> str:
        d = {"model": {"elements": ["Si"], "order": 2, "totaldegree": 5}, "data": {"train": train},
             "E0": {"Si": -5.0}, "solver": {"name": "QR", "lam": 1e-3},
             "output": output or {"model": "out.json", "errors": None}}
        for k, v in sections.items():
            if v is ...:
                d.pop(k, None)
            elif isinstance(v, dict) and isinstance(d.get(k), dict):
                d[k] = dict(d[k], **v)
            else:
                d[k] = v
        p = self.path(name)
        with open(p, "w") as fh:
            json.dump(d, fh)
        return p

    def cli(self, *args) -> int:
        from torchace.cli import main

        return main([str(a) for a in args])

    def fit(self, data=None, model=None, **kw):
        import torchace

        m = model or torchace.ace_model(["Si"], 2, 5)
        kw.setdefault("E0", {"Si": -5.0})
        kw.setdefault("solver", torchace.solvers.QR(lam=1e-3))
        kw.setdefault("compute_errors", False)
        return torchace.fit(m, self.frames() if data is None else data, **kw)

    def doc(self, name="m.json") -> dict:
        p = self.model_file(name)
        return json.load(open(p))

    def write_doc(self, d, name="bad.json") -> str:
        p = self.path(name)
        with open(p, "w") as fh:
            fh.write(d if isinstance(d, str) else json.dumps(d))
        return p


def _si8(**kw):
    from torchace.testing import rattled_bulk

    return rattled_bulk(["Si"], **kw)


def _flat(pbc, eps=1e-6, n=8):
    from ase import Atoms

    rng = np.random.default_rng(0)
    return Atoms(f"Si{n}", positions=rng.uniform(0, 5, (n, 3)) * [1, 1, 0] + [0, 0, 2],
                 cell=[[5.43, 0, 0], [0, eps, 0], [0, 0, 5.43]] if pbc != (True, True, True)
                 else [[5.43, 0, 0], [0, 5.43, 0], [0, 0, eps]], pbc=pbc)


def _yace(ctx, name="m.yace") -> str:
    from torchace.io import write_yace

    p = ctx.path(name)
    write_yace(ctx.model(pair=False), p)
    return p


# ================================================================ class 1: outputs never overwrite inputs

def _fit_cli_refused(ctx, output, extra_inputs=()):
    train = ctx.xyz()
    cfg = ctx.config(output=output)
    ctx.protect(train, cfg, *extra_inputs)
    ctx.cli("fit", cfg, "-q")


@case(1, "CLI fit: output.model is the training file", names=("train.xyz", "output.model", "is the input"),
      cli=True, quick=True)
def _(ctx):
    _fit_cli_refused(ctx, {"model": "train.xyz", "errors": None})


@case(1, "CLI fit: output.errors is the training file", names=("train.xyz", "output.errors"), cli=True)
def _(ctx):
    _fit_cli_refused(ctx, {"model": "out.json", "errors": "train.xyz"})


@case(1, "CLI fit: output.parity is the config file", names=("fit.json", "output.parity"), cli=True)
def _(ctx):
    _fit_cli_refused(ctx, {"model": "out.json", "errors": None, "parity": "fit.json"})


@case(1, "CLI fit: output.model is a symbolic link to the training file", names=("link.xyz", "train.xyz"), cli=True)
def _(ctx):
    os.symlink(ctx.xyz(), ctx.path("link.xyz"))
    _fit_cli_refused(ctx, {"model": "link.xyz", "errors": None})


@case(1, "CLI fit: output.model is a hard link to the training file", names=("hard.xyz", "train.xyz"), cli=True)
def _(ctx):
    os.link(ctx.xyz(), ctx.path("hard.xyz"))
    _fit_cli_refused(ctx, {"model": "hard.xyz", "errors": None})


@case(1, "CLI fit: output.model is the test file (through sub/../)", names=("test.xyz", "output.model"), cli=True)
def _(ctx):
    os.mkdir(ctx.path("sub"))
    test = ctx.xyz("test.xyz")
    train = ctx.xyz()
    cfg = ctx.config(data={"train": "train.xyz", "test": "test.xyz"},
                     output={"model": "sub/../test.xyz", "errors": None})
    ctx.protect(train, test, cfg)
    ctx.cli("fit", cfg, "-q")


@case(1, "CLI fit: output.model and output.errors are one file", names=("output.model", "output.errors", "same"),
      cli=True)
def _(ctx):
    _fit_cli_refused(ctx, {"model": "o.json", "errors": "o.json"})


@case(1, "CLI fit: output directory does not exist", names=("nodir", "does not exist"), cli=True)
def _(ctx):
    _fit_cli_refused(ctx, {"model": "nodir/o.json", "errors": None})


@case(1, "CLI fit: output in an unwritable directory (/proc)", names=("/proc", "cannot be written"), cli=True)
def _(ctx):
    _fit_cli_refused(ctx, {"model": "/proc/torchace_o.json", "errors": None})


@case(1, "CLI fit: output.model is a directory", names=("adir", "directory"), cli=True)
def _(ctx):
    os.mkdir(ctx.path("adir"))
    _fit_cli_refused(ctx, {"model": "adir", "errors": None})


@case(1, "CLI export: output is the input model file", names=("m.json", "is the input"), cli=True)
def _(ctx):
    m = ctx.model_file()
    ctx.protect(m)
    ctx.cli("export", m, m, "--format", "torchscript")


@case(1, "CLI export: output is a symbolic link to the input", names=("out.pt", "m.json"), cli=True)
def _(ctx):
    m = ctx.model_file()
    os.symlink(m, ctx.path("out.pt"))
    ctx.protect(m)
    ctx.cli("export", m, ctx.path("out.pt"), "--format", "torchscript")


@case(1, "CLI export --format yace: the pair table would overwrite the input", names=("m_pairpot.table",), cli=True)
def _(ctx):
    m = ctx.model_file("m_pairpot.table")
    ctx.protect(m)
    ctx.cli("export", m, ctx.path("m.yace"), "--format", "yace")


@case(1, "CLI evaluate: -o is the structure file", names=("s.xyz", "--output"), cli=True)
def _(ctx):
    s = ctx.xyz("s.xyz")
    ctx.protect(s)
    ctx.cli("evaluate", s, "--model", ctx.model_file(), "-o", s)


@case(1, "CLI evaluate: -o is the --model file", names=("m.json", "--output"), cli=True)
def _(ctx):
    s, m = ctx.xyz("s.xyz"), ctx.model_file()
    ctx.protect(s, m)
    ctx.cli("evaluate", s, "--model", m, "-o", m)


@case(6, "CLI evaluate without --model (no random model any more)", names=("--model",), cli=True)
def _(ctx):
    ctx.cli("evaluate", ctx.xyz("s.xyz"))


@case(1, "model.save onto the training file (Python)", names=("train.xyz", "overwrite"), quick=True)
def _(ctx):
    t = ctx.xyz()
    ctx.protect(t)
    ctx.model().save(t)


@case(1, "model.save through a symbolic link to the training file", names=("link.json", "overwrite"))
def _(ctx):
    t = ctx.xyz()
    os.symlink(t, ctx.path("link.json"))
    ctx.protect(t)
    ctx.model().save(ctx.path("link.json"))


@case(1, "model.save onto an existing model file (negative control)", expect="ok")
def _(ctx):
    import torchace

    p = ctx.model_file()
    m = ctx.model(seed=7)
    m.save(p)
    return torch_equal(torchace.load(p).coefficients, m.coefficients)


@case(1, "model.save into a missing directory", names=("nodir", "does not exist"))
def _(ctx):
    ctx.model().save(ctx.path("nodir/m.json"))


@case(1, "model.save onto a directory", names=("adir", "directory"))
def _(ctx):
    os.mkdir(ctx.path("adir"))
    ctx.model().save(ctx.path("adir"))


@case(1, "model.save with unserialisable metadata: target kept, no temp file", names=("metadata",))
def _(ctx):
    p = ctx.model_file()
    ctx.protect(p)
    ctx.model().save(p, metadata={"when": {1, 2}})


@case(1, "model.save on a full disk (RLIMIT_FSIZE): target kept, no temp file", names=("m.json",))
def _(ctx):
    p = ctx.model_file()
    ctx.protect(p)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    ctx.model(td=8, seed=3).save(p)


@case(1, "atomic_write interrupted (KeyboardInterrupt mid-write): target kept, no temp file", expect="ok")
def _(ctx):
    from torchace.atomic import atomic_write

    p = ctx.model_file()
    before = sha(p)

    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write("{half")
        raise KeyboardInterrupt

    try:
        atomic_write(p, write)
    except KeyboardInterrupt:
        pass
    return sha(p) == before


@case(1, "assemble_checkpointed with the training file as checkpoint path", names=("train.xyz", "checkpoint"))
def _(ctx):
    import torchace
    from torchace.fit.checkpoint import assemble_checkpointed

    t = ctx.xyz()
    ctx.protect(t)
    m = torchace.ace_model(["Si"], 2, 5)
    assemble_checkpointed(m, t, None, t)


@case(1, "two threads save different models to one path at once", expect="ok")
def _(ctx):
    import threading

    import torchace

    p = ctx.path("m.json")
    ms = [ctx.model(seed=s) for s in (1, 2)]
    th = [threading.Thread(target=lambda m=m: [m.save(p) for _ in range(20)]) for m in ms]
    [t.start() for t in th]
    [t.join() for t in th]
    c = torchace.load(p).coefficients
    return any(torch_equal(c, m.coefficients) for m in ms)


@case(1, "torchace.export (TorchScript) onto the training file", names=("train.xyz", "TorchScript"))
def _(ctx):
    import torchace

    t = ctx.xyz()
    ctx.protect(t)
    torchace.export(ctx.model(), t)


@case(1, "torchace.export onto an earlier export (negative control)", expect="ok")
def _(ctx):
    import torchace

    torchace.export(ctx.model(), ctx.path("m.pt"))
    torchace.export(ctx.model(seed=5), ctx.path("m.pt"))
    return True


@case(1, "model.save(..., overwrite=True) onto another file (asked for)", expect="ok")
def _(ctx):
    import torchace

    p = ctx.xyz_text("notes.txt", "scratch")
    ctx.model().save(p, overwrite=True)
    return torchace.load(p).basis_size > 0


@case(1, "model.save with NaN in metadata", names=("metadata",))
def _(ctx):
    p = ctx.model_file()
    ctx.protect(p)
    ctx.model().save(p, metadata={"score": math.nan})


@case(1, "CLI fit: output.model is an existing file that is not a model (not an input)",
      names=("notes.txt", "output.model"), cli=True)
def _(ctx):
    notes = ctx.xyz_text("notes.txt", "my notes")
    _fit_cli_refused(ctx, {"model": "notes.txt", "errors": None}, extra_inputs=(notes,))


def torch_equal(a, b) -> bool:
    return bool((a.detach().cpu() == b.detach().cpu()).all())


# ================================================================ class 2: pathological parameters

def _ace(*a, **kw):
    import torchace

    return torchace.ace_model(*a, **kw)


for _wl, _names in ((0, ("wL",)), (1e-9, ("wL", "l =")), (-1.0, ("wL",)), (math.nan, ("wL",)), (math.inf, ("wL",))):
    case(2, f"ace_model wL={_wl}", names=_names)(lambda ctx, w=_wl: _ace(["Si"], 3, 12, wL=w))

case(2, "ace_model order 3, totaldegree 1e6", names=("totaldegree",), quick=True)(
    lambda ctx: _ace(["Si"], 3, 1e6))
case(2, "ace_model order 1, totaldegree 1e8 (radial degree 10^8)", names=("totaldegree",))(
    lambda ctx: _ace(["Si"], 1, 1e8))
case(2, "ace_model order 2, totaldegree 5000, wL 1e4 (10^4 radial functions, no harmonics)", names=("totaldegree",))(
    lambda ctx: _ace(["Si"], 2, 5000, wL=1e4))
case(2, "ace_model totaldegree 10**400 (an integer too large for a float)", names=("totaldegree",))(
    lambda ctx: _ace(["Si"], 2, 10 ** 400))
case(2, "ace_model order 10**6 (totaldegree 2)", names=("order",))(lambda ctx: _ace(["Si"], 10 ** 6, 2))
case(2, "ace_model order 6, totaldegree 16, 3 elements (9·10^5 products, ~3·10^6 functions)",
     names=("product functions",))(lambda ctx: _ace(["Si", "Ge", "C"], 6, 16))
case(2, "ace_model order 6, totaldegree 20, wL 1.7, 3 elements (4·10^6 products)", names=("product functions",))(
    lambda ctx: _ace(["Si", "Ge", "C"], 6, 20, wL=1.7))
case(2, "TORCHACE_MAX_PRODUCTS=abc in the environment", names=("TORCHACE_MAX_PRODUCTS",))(
    lambda ctx: (os.environ.__setitem__("TORCHACE_MAX_PRODUCTS", "abc"), _ace(["Si"], 2, 6)))


@case(2, "evaluate: periodic cell 5.43 × 5.43 × 1e-6 Å (pbc all)", names=("structure 0", "neighbour pairs"))
def _(ctx):
    import torchace

    torchace.evaluate(ctx.model(), _flat((True, True, True)))


@case(2, "evaluate: pbc (T, T, F) cell with a 1e-6 Å in-plane vector", names=("structure 0", "neighbour"), quick=True)
def _(ctx):
    import torchace

    torchace.evaluate(ctx.model(), _flat((True, True, False)))


@case(2, "evaluate: pbc (F, T, F) (1-D periodic) along a 1e-6 Å vector", names=("structure 0", "neighbour"))
def _(ctx):
    import torchace

    torchace.evaluate(ctx.model(), _flat((False, True, False)))


@case(2, "calculator: pbc (T, T, F) cell with a 1e-6 Å in-plane vector", names=("neighbour",))
def _(ctx):
    from torchace.calculators import TorchACECalculator

    a = _flat((True, True, False))
    a.calc = TorchACECalculator(ctx.model())
    a.get_potential_energy()


@case(2, "evaluate: pbc (T, T, F), open axis 1e12 Å long (two atoms far apart)", expect="either",
      names=("structure 0",))
def _(ctx):
    import torchace
    from ase import Atoms

    a = Atoms("Si2", positions=[[0, 0, 0], [1, 1, 1e12]], cell=[5, 5, 0], pbc=(True, True, False))
    e = float(torchace.evaluate(ctx.model(), a)["energy"][0])
    e1 = float(torchace.evaluate(ctx.model(), Atoms("Si", cell=[5, 5, 0], pbc=(True, True, False)))["energy"][0])
    return abs(e - 2 * e1) < 1e-8


@case(2, "evaluate: 3000 atoms spread over 1e9 Å (open boundaries)", expect="either", names=("structure 0",))
def _(ctx):
    import torchace
    from ase import Atoms

    rng = np.random.default_rng(1)
    a = Atoms("Si3000", positions=rng.uniform(0, 1e9, (3000, 3)))
    e = float(torchace.evaluate(ctx.model(), a, forces=False, virials=False)["energy"][0])
    return abs(e - 3000 * float(ctx.model().E0[0])) < 1e-6


@case(2, "evaluate: coordinates 1e300 (finite; two atoms apart: energy 2 E0)", expect="either",
      names=("structure 0",))
def _(ctx):
    import torchace
    from ase import Atoms

    m = ctx.model(E0={"Si": -2.0})
    out = torchace.evaluate(m, Atoms("Si2", positions=[[0, 0, 0], [1e300, -1e300, 1e300]]))
    return float(out["energy"][0]) == -4.0 and bool((out["forces"] == 0).all())


@case(2, "evaluate: cubic lattice given with a 10^7·a shear vector (strongly skewed cell)", expect="either",
      names=("structure 0",))
def _(ctx):
    import torchace

    a = _si8(seed=2)
    b = a.copy()
    b.set_cell([[5.43, 0, 0], [1e7 * 5.43, 5.43, 0], [0, 0, 5.43]], scale_atoms=False)
    e = [float(torchace.evaluate(ctx.model(), x)["energy"][0]) for x in (a, b)]
    return abs(e[0] - e[1]) < 1e-5


@case(2, "evaluate: 10^5 atoms in a 10 Å periodic box", names=("structure 0", "neighbour pairs"))
def _(ctx):
    import torchace
    from ase import Atoms

    rng = np.random.default_rng(0)
    torchace.evaluate(ctx.model(), Atoms("Si100000", positions=rng.uniform(0, 10, (100000, 3)), cell=[10] * 3,
                                         pbc=True))


@case(2, "calculator skin = 1e4 Å", names=("skin",))
def _(ctx):
    from torchace.calculators import TorchACECalculator

    a = _si8()
    a.calc = TorchACECalculator(ctx.model(), skin=1e4)
    a.get_potential_energy()


@case(2, "fit config: a recursive YAML alias", names=("fit.yaml", "alias"))
def _(ctx):
    from torchace.fit.config import FitConfig

    FitConfig.load(ctx.xyz_text("fit.yaml", "model: &m {elements: [Si], order: 2, totaldegree: 6, x: *m}\n"
                                            "data: {train: a.xyz}\n"))


@case(2, "fit config: YAML alias bomb inside model.elements", names=("fit.yaml",), quick=True)
def _(ctx):
    from torchace.fit.config import FitConfig

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for k in range(1, 9):
        lines.append(f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 9) + "]")
    text = "model: {elements: *a8, order: 2, totaldegree: 6}\ndata: {train: a.xyz}\n"
    p = ctx.xyz_text("fit.yaml", "x: {" + ", ".join(lines) + "}\n" + text)
    FitConfig.load(p)


@case(2, "fit config: YAML with a harmless anchor/alias (weights reused)", expect="ok")
def _(ctx):
    from torchace.fit.config import FitConfig

    p = ctx.xyz_text("fit.yaml", "model: {elements: [Si], order: 2, totaldegree: 6}\ndata: {train: a.xyz}\n"
                                 "weights: {liq: &w {E: 10, F: 1}, dia: *w}\n")
    return FitConfig.load(p).weights["dia"] == {"E": 10, "F": 1}


@case(2, "fit config: JSON nested 10^5 deep", names=("fit.json", "nested"))
def _(ctx):
    from torchace.fit.config import FitConfig

    FitConfig.load(ctx.xyz_text("fit.json", '{"model": ' + "[" * 100000 + "]" * 100000 + "}"))


@case(2, "fit config: YAML nested 10^4 deep", names=("fit.yaml", "nested"))
def _(ctx):
    from torchace.fit.config import FitConfig

    FitConfig.load(ctx.xyz_text("fit.yaml", "model: " + "[" * 10000 + "]" * 10000 + "\n"))


@case(2, "fit config is /dev/zero (endless)", names=("/dev/zero",))
def _(ctx):
    from torchace.fit.config import FitConfig

    FitConfig.load("/dev/zero")


@case(2, "torchace.load('/dev/zero') (endless model file)", names=("/dev/zero",))
def _(ctx):
    import torchace

    torchace.load("/dev/zero")


@case(2, "read_yace('/dev/zero')", names=("/dev/zero",))
def _(ctx):
    from torchace.io import read_yace

    read_yace("/dev/zero")


@case(2, "model file: 'coefficients' a 10^6-deep list", names=("bad.json",))
def _(ctx):
    import torchace

    d = ctx.doc()
    text = json.dumps(d).replace('"coefficients": [', '"coefficients": [' + "[" * 10 ** 6, 1)
    torchace.load(ctx.write_doc(text.replace('], "nl_scale"', "]" * (10 ** 6 + 1) + ', "nl_scale"', 1)))


@case(2, "error message for a 10^5-element nested bad value", names=("elements", "characters"))
def _(ctx):
    _ace([[["Si"] * 100] * 1000], 2, 6)


@case(2, ".yace: a 10^4-deep nested value", names=("deep.yace",))
def _(ctx):
    from torchace.io import read_yace

    text = open(_yace(ctx)).read()
    read_yace(ctx.xyz_text("deep.yace", "x: " + "[" * 10000 + "]" * 10000 + "\n" + text))


@case(2, "BLR(committee_size=10**9) in a fit", names=("committee_size",))
def _(ctx):
    import torchace

    ctx.fit(solver=torchace.solvers.BLR(committee_size=10 ** 9))


# ================================================================ class 3: files parsed strictly

def _load_doc(ctx, change, name="bad.json"):
    import torchace

    d = ctx.doc()
    change(d)
    return torchace.load(ctx.write_doc(d, name))


@case(3, "model file: truncated", names=("bad.json", "JSON"))
def _(ctx):
    import torchace

    text = open(ctx.model_file()).read()
    torchace.load(ctx.write_doc(text[: len(text) // 2]))


@case(3, "model file: empty", names=("bad.json",))
def _(ctx):
    import torchace

    torchace.load(ctx.write_doc(""))


@case(3, "model file: an unknown top-level key", names=("bad.json", "colour"), quick=True)
def _(ctx):
    _load_doc(ctx, lambda d: d.__setitem__("colour", "red"))


@case(3, "model file: an unknown config key", names=("bad.json", "rcutt"))
def _(ctx):
    _load_doc(ctx, lambda d: d["config"].__setitem__("rcutt", 5.0))


@case(3, "model file: coefficients one too short", names=("bad.json", "coefficients"))
def _(ctx):
    _load_doc(ctx, lambda d: d["coefficients"].pop())


@case(3, "model file: coefficients a string", names=("bad.json", "coefficients"))
def _(ctx):
    _load_doc(ctx, lambda d: d.__setitem__("coefficients", "0.1 0.2"))


@case(3, "model file: coefficients null", names=("bad.json", "coefficients"))
def _(ctx):
    _load_doc(ctx, lambda d: d.__setitem__("coefficients", None))


@case(3, "model file: coefficients ragged nested lists", names=("bad.json", "coefficients"))
def _(ctx):
    _load_doc(ctx, lambda d: d.__setitem__("coefficients", [[1.0], [1.0, 2.0]]))


@case(3, "model file: a coefficient 1e400 (read as inf)", names=("bad.json", "coefficients"))
def _(ctx):
    import torchace

    text = json.dumps(ctx.doc())
    i = text.index('"coefficients": [') + len('"coefficients": [')
    j = text.index(",", i)
    torchace.load(ctx.write_doc(text[:i] + "1e400" + text[j:]))


@case(3, "model file: config.order = true", names=("bad.json", "order"))
def _(ctx):
    _load_doc(ctx, lambda d: d["config"].__setitem__("order", True))


@case(3, "model file: config.order = \"2\"", names=("bad.json", "order"))
def _(ctx):
    _load_doc(ctx, lambda d: d["config"].__setitem__("order", "2"))


@case(3, "model file: config.order = 10**400", names=("bad.json", "order"))
def _(ctx):
    import torchace

    text = json.dumps(ctx.doc()).replace('"order": 2', '"order": 1' + "0" * 400, 1)
    torchace.load(ctx.write_doc(text))


@case(3, "model file: config.rcut = \"5.5\"", names=("bad.json", "rcut"))
def _(ctx):
    _load_doc(ctx, lambda d: d["config"].__setitem__("rcut", "5.5"))


@case(3, "model file: config.totaldegree = []", names=("bad.json", "totaldegree"))
def _(ctx):
    _load_doc(ctx, lambda d: d["config"].__setitem__("totaldegree", []))


@case(3, "model file: config.E0 = [true]", names=("bad.json", "E0"))
def _(ctx):
    _load_doc(ctx, lambda d: d["config"].__setitem__("E0", [True]))


@case(3, "model file: config.pure2b = \"yes\"", names=("bad.json", "pure2b"))
def _(ctx):
    _load_doc(ctx, lambda d: d["config"].__setitem__("pure2b", "yes"))


@case(3, "model file: format_version 3 (a later torchace's)", names=("bad.json", "format_version"))
def _(ctx):
    _load_doc(ctx, lambda d: d.__setitem__("format_version", 3))


@case(3, "model file: basis_size \"K\" as a string", names=("bad.json", "basis_size"))
def _(ctx):
    _load_doc(ctx, lambda d: d.__setitem__("basis_size", str(d["basis_size"])))


@case(3, "model file: committee of the wrong width", names=("bad.json", "committee"))
def _(ctx):
    _load_doc(ctx, lambda d: d.__setitem__("committee", [[0.0] * 3]))


@case(3, "model file: metadata a list, not a mapping", names=("bad.json", "metadata"))
def _(ctx):
    _load_doc(ctx, lambda d: d.__setitem__("metadata", [1, 2]))


@case(3, "model file: prior a number", names=("bad.json", "prior"))
def _(ctx):
    _load_doc(ctx, lambda d: d.__setitem__("prior", 5))


@case(3, "model file: a JSON list instead of an object", names=("bad.json", "not a torchace model file"))
def _(ctx):
    import torchace

    torchace.load(ctx.write_doc("[1, 2, 3]"))


@case(3, "model file: NaN literal in nl_scale", names=("bad.json",))
def _(ctx):
    import torchace

    text = json.dumps(ctx.doc())
    i = text.index('"nl_scale": [[') + len('"nl_scale": [[')
    torchace.load(ctx.write_doc(text[:i] + "NaN, " + text[i:].split(",", 1)[1]))


@case(3, "model file: the key 'rcut' given twice", names=("bad.json", "rcut"))
def _(ctx):
    import torchace

    text = json.dumps(ctx.doc()).replace('"rcut": ', '"rcut": 3.0, "rcut": ', 1)
    torchace.load(ctx.write_doc(text))


@case(3, "model file: a .yace file given to torchace.load (documented: read as a PACEModel)", expect="ok")
def _(ctx):
    import torchace
    from torchace.model.pace import PACEModel

    assert isinstance(torchace.load(_yace(ctx)), PACEModel)


@case(3, "fit config: an unknown top-level key", names=("fit.json", "solvr"))
def _(ctx):
    from torchace.fit.config import FitConfig

    FitConfig.load(ctx.config(solvr={"name": "QR"}))


@case(3, "fit config: weights.default.E = true", names=("fit.json", "weights.default.E"))
def _(ctx):
    from torchace.fit.config import FitConfig

    FitConfig.load(ctx.config(weights={"default": {"E": True}}))


@case(3, "fit config: weights a list", names=("fit.json", "weights"))
def _(ctx):
    from torchace.fit.config import FitConfig

    FitConfig.load(ctx.config(weights=[1, 2]))


@case(3, "fit config: E0: isolatd (typo)", names=("fit.json", "E0"))
def _(ctx):
    from torchace.fit.config import FitConfig

    FitConfig.load(ctx.config(E0="isolatd"))


@case(3, "fit config: solver QR with lam \"0.1\" (a string)", names=("fit.json", "lam"))
def _(ctx):
    from torchace.fit.config import FitConfig

    FitConfig.load(ctx.config(solver={"name": "QR", "lam": "0.1"}))


@case(3, "fit config: solver name 'qr' (lower case)", names=("fit.json", "qr", "QR"))
def _(ctx):
    from torchace.fit.config import FitConfig

    FitConfig.load(ctx.config(solver={"name": "qr"}))


@case(3, "fit config: prior algebraic_smoothness p = -1", names=("fit.json", "p"))
def _(ctx):
    from torchace.fit.config import FitConfig

    FitConfig.load(ctx.config(prior={"name": "algebraic_smoothness", "p": -1}))


@case(3, "fit config: prior with an unknown argument 'q'", names=("fit.json", "q"))
def _(ctx):
    from torchace.fit.config import FitConfig

    FitConfig.load(ctx.config(prior={"name": "algebraic_smoothness", "q": 4}))


@case(3, "fit config: assembly.device 'gpu'", names=("fit.json", "assembly.device"))
def _(ctx):
    from torchace.fit.config import FitConfig

    FitConfig.load(ctx.config(assembly={"device": "gpu"}))


@case(3, "fit config: assembly.device 'cuda' without CUDA", names=("fit.json", "assembly.device"))
def _(ctx):
    import torch
    from torchace.fit.config import FitConfig

    if torch.cuda.is_available():
        return True
    FitConfig.load(ctx.config(assembly={"device": "cuda"}))


@case(3, "fit config: data.train = []", names=("fit.json", "data.train"))
def _(ctx):
    from torchace.fit.config import FitConfig

    FitConfig.load(ctx.config(data={"train": []}))


@case(3, "fit config: data.keys.energy = 5", names=("fit.json", "data.keys.energy"))
def _(ctx):
    from torchace.fit.config import FitConfig

    FitConfig.load(ctx.config(data={"train": "a.xyz", "keys": {"energy": 5}}))


@case(3, "fit config (JSON): lam NaN literal", names=("fit.json", "lam"))
def _(ctx):
    from torchace.fit.config import FitConfig

    p = ctx.config()
    ctx.xyz_text("fit.json", open(p).read().replace('"lam": 0.001', '"lam": NaN'))
    FitConfig.load(p)


@case(3, "fit config (YAML): totaldegree: 1e1 (YAML 1.1 reads it as text)", names=("fit.yaml", "totaldegree"))
def _(ctx):
    from torchace.fit.config import FitConfig

    FitConfig.load(ctx.xyz_text("fit.yaml", "model: {elements: [Si], order: 2, totaldegree: 1e1}\n"
                                            "data: {train: a.xyz}\n"))


@case(3, "fit config (YAML): empty file", names=("fit.yaml",))
def _(ctx):
    from torchace.fit.config import FitConfig

    FitConfig.load(ctx.xyz_text("fit.yaml", ""))


@case(3, "fit config (YAML): a list at the top", names=("fit.yaml", "mapping"))
def _(ctx):
    from torchace.fit.config import FitConfig

    FitConfig.load(ctx.xyz_text("fit.yaml", "- model\n- data\n"))


@case(3, "fit config: repulsion_restraint with a misspelt argument", names=("fit.json", "repulsion_restraint"))
def _(ctx):
    from torchace.fit.config import FitConfig

    FitConfig.load(ctx.config(repulsion_restraint={"wieght": 1.0}))


@case(3, ".yace: rcut: true", names=("bad.yace", "rcut"))
def _(ctx):
    from torchace.io import read_yace

    text = open(_yace(ctx)).read()
    import re

    read_yace(ctx.xyz_text("bad.yace", re.sub(r"rcut: [0-9.e+-]+", "rcut: true", text, count=1)))


@case(3, "CLI fit: YAML syntax error (one line)", names=("fit.yaml",), cli=True)
def _(ctx):
    ctx.cli("fit", ctx.xyz_text("fit.yaml", "model: {elements: [Si], order: 2\n  totaldegree: [6\ndata: x\n"))


@case(3, "model file: committee with a NaN literal", names=("bad.json",))
def _(ctx):
    import torchace

    d = ctx.doc()
    d["committee"] = [[0.0] * len(d["coefficients"])]
    text = json.dumps(d)
    i = text.index('"committee": [[') + len('"committee": [[')
    torchace.load(ctx.write_doc(text[:i] + "NaN" + text[i + 3:]))


@case(3, "model file: basis_size true", names=("bad.json", "basis_size"))
def _(ctx):
    _load_doc(ctx, lambda d: d.__setitem__("basis_size", True))


@case(3, ".yace: truncated", names=("bad.yace",))
def _(ctx):
    from torchace.io import read_yace

    text = open(_yace(ctx)).read()
    read_yace(ctx.xyz_text("bad.yace", text[: len(text) // 2]))


def _yace_edit(ctx, edit):
    """The .yace of a small model with its text edited line by line (top-level keys are one line each)."""
    from torchace.io import read_yace

    lines = open(_yace(ctx)).read().split("\n")
    read_yace(ctx.xyz_text("bad.yace", "\n".join(edit(lines))))


@case(3, ".yace: 'bonds' missing", names=("bad.yace", "bonds"))
def _(ctx):
    def drop(lines):
        k = lines.index("bonds:")
        return lines[:k] + lines[k + 2:]
    _yace_edit(ctx, drop)


case(3, ".yace: E0: [.nan]", names=("bad.yace", "E0"))(lambda ctx: _yace_edit(
    ctx, lambda lines: ["E0: [.nan]" if x.startswith("E0:") else x for x in lines]))
case(3, ".yace: elements [Si, Si]", names=("bad.yace", "elements"))(lambda ctx: _yace_edit(
    ctx, lambda lines: ["elements: [Si, Si]" if x.startswith("elements:") else x for x in lines]))
case(3, ".yace: E0: [true]", names=("bad.yace", "E0"))(lambda ctx: _yace_edit(
    ctx, lambda lines: ["E0: [true]" if x.startswith("E0:") else x for x in lines]))


XYZ_HEAD = 'Lattice="5.43 0 0 0 5.43 0 0 0 5.43" Properties=species:S:1:pos:R:3:forces:R:3 pbc="T T T"'


def _xyz2(energy="-40.0", head=XYZ_HEAD, rows=None):
    rows = rows or ["Si 0 0 0 0 0 0", "Si 1.36 1.36 1.36 0 0 0"]
    return f"{len(rows)}\n{head} energy={energy}\n" + "\n".join(rows) + "\n"


def _read(ctx, text, name="d.xyz", elements=("Si",)):
    from torchace.fit.data import read_data

    return read_data(ctx.xyz_text(name, text), elements=list(elements))


case(3, ".xyz: energy=nan in frame 1", names=("d.xyz", "frame 1", "energy"))(
    lambda ctx: _read(ctx, _xyz2() + _xyz2("nan")))
case(3, ".xyz: energy=inf", names=("d.xyz", "frame 0", "energy"))(lambda ctx: _read(ctx, _xyz2("inf")))
case(3, ".xyz: energy=abc (text)", names=("d.xyz", "frame 0", "energy"))(lambda ctx: _read(ctx, _xyz2("abc")))
case(3, ".xyz: energy=T (boolean)", names=("d.xyz", "frame 0", "energy"))(lambda ctx: _read(ctx, _xyz2("T")))
case(3, ".xyz: forces with 2 columns", names=("d.xyz", "frame 0", "forces"))(lambda ctx: _read(
    ctx, _xyz2(head=XYZ_HEAD.replace("forces:R:3", "forces:R:2"), rows=["Si 0 0 0 0 0", "Si 1.36 1.36 1.36 0 0"])))
case(3, ".xyz: forces nan", names=("d.xyz", "frame 0", "forces"))(lambda ctx: _read(
    ctx, _xyz2(rows=["Si 0 0 0 nan 0 0", "Si 1.36 1.36 1.36 0 0 0"])))
case(3, ".xyz: positions nan", names=("d.xyz", "frame 0", "position"))(lambda ctx: _read(
    ctx, _xyz2(rows=["Si nan 0 0 0 0 0", "Si 1.36 1.36 1.36 0 0 0"])))
case(3, ".xyz: a row short of a column", names=("d.xyz", "frame 0"))(lambda ctx: _read(
    ctx, _xyz2(rows=["Si 0 0 0 0 0", "Si 1.36 1.36 1.36 0 0 0"])))
case(3, ".xyz: atom count larger than the rows (truncated)", names=("d.xyz", "frame 1"))(lambda ctx: _read(
    ctx, _xyz2() + _xyz2().replace("2\n", "5\n", 1)))
case(3, ".xyz: empty file", names=("d.xyz",))(lambda ctx: _read(ctx, ""))
case(3, ".xyz: only blank lines", names=("d.xyz",))(lambda ctx: _read(ctx, "\n\n"))
case(3, ".xyz: unknown element symbol Xx", names=("d.xyz", "frame 0"))(lambda ctx: _read(
    ctx, _xyz2(rows=["Xx 0 0 0 0 0 0", "Si 1.36 1.36 1.36 0 0 0"])))
case(3, ".xyz: virial with 5 values", names=("d.xyz", "frame 0", "virial"))(lambda ctx: _read(
    ctx, _xyz2("-40.0 virial=\"1 2 3 4 5\"")))
case(3, ".xyz: stress for a non-periodic frame", names=("d.xyz", "frame 0", "stress"))(lambda ctx: _read(
    ctx, _xyz2("-40.0 stress=\"1 0 0 0 1 0 0 0 1\"", head=XYZ_HEAD.replace('pbc="T T T"', 'pbc="F F F"'))))


@case(3, ".xyz: one frame without energy (forces only: used as forces)", expect="ok")
def _(ctx):
    ds = _read(ctx, _xyz2() + _xyz2().replace(" energy=-40.0", ""))
    return ds.structures[1].energy is None and ds.structures[1].forces is not None


@case(3, ".xyz: a key given twice in a comment line (energy=-40 energy=-41)", names=("d.xyz", "frame 1", "energy"))
def _(ctx):
    _read(ctx, _xyz2() + _xyz2("-40.0 energy=-41.0"))


@case(3, ".xyz.gz: a key given twice in a comment line", names=("d.xyz.gz", "frame 0", "energy"))
def _(ctx):
    import gzip

    from torchace.fit.data import read_data

    with gzip.open(ctx.path("d.xyz.gz"), "wt") as fh:
        fh.write(_xyz2("-40.0 energy=-41.0"))
    read_data(ctx.path("d.xyz.gz"))


@case(3, ".xyz: gzip file with garbage", names=("d.xyz.gz",))
def _(ctx):
    from torchace.fit.data import read_data

    with open(ctx.path("d.xyz.gz"), "wb") as fh:
        fh.write(b"\x1f\x8b\x08\x00garbage" * 10)
    read_data(ctx.path("d.xyz.gz"))


# ================================================================ class 4: the Python API validates

for _label, _args, _kw, _names in [
    ("order 0", (["Si"], 0, 6), {}, ("order",)),
    ("order -1", (["Si"], -1, 6), {}, ("order",)),
    ("order 1.5", (["Si"], 1.5, 6), {}, ("order",)),
    ("order True", (["Si"], True, 6), {}, ("order",)),
    ("totaldegree -3", (["Si"], 2, -3), {}, ("totaldegree",)),
    ("totaldegree [10, 8, 6] for order 2", (["Si"], 2, [10, 8, 6]), {}, ("totaldegree",)),
    ("totaldegree 'ten'", (["Si"], 2, "ten"), {}, ("totaldegree",)),
    ("rcut 0", (["Si"], 2, 6), dict(rcut=0), ("rcut",)),
    ("rcut -5", (["Si"], 2, 6), dict(rcut=-5.0), ("rcut",)),
    ("rcut nan", (["Si"], 2, 6), dict(rcut=math.nan), ("rcut",)),
    ("rcut 1.0 (smaller than r0 = 2.35 Å)", (["Si"], 2, 6), dict(rcut=1.0), ("rcut", "r0")),
    ("r0 0", (["Si"], 2, 6), dict(r0=0.0), ("r0",)),
    ("r0 dict without the Si-Ge pair", (["Si", "Ge"], 2, 6), dict(r0={("Si", "Si"): 2.3}), ("r0", "Si-Ge")),
    ("E0 {'C': 1} (not an element of the model)", (["Si"], 2, 6), dict(E0={"C": 1.0}), ("E0", "C")),
    ("E0 {'Si': nan}", (["Si"], 2, 6), dict(E0={"Si": math.nan}), ("E0",)),
    ("E0 [1, 2] for one element", (["Si"], 2, 6), dict(E0=[1.0, 2.0]), ("E0",)),
    ("r0 {('Si', 'Si'): True}", (["Si"], 2, 6), dict(r0={("Si", "Si"): True}), ("r0",)),
    ("zbl_outer True", (["Si"], 2, 6), dict(zbl=True, zbl_outer=True), ("zbl_outer",)),
    ("pair 'no'", (["Si"], 2, 6), dict(pair="no"), ("pair",)),
    ("zbl 1", (["Si"], 2, 6), dict(zbl=1), ("zbl",)),
    ("zbl_inner > zbl_outer", (["Si"], 2, 6), dict(zbl=True, zbl_inner=2.0, zbl_outer=1.0), ("zbl_inner",)),
    ("elements []", ([], 2, 6), {}, ("elements",)),
    ("elements 'Si' (a string)", ("Si", 2, 6), {}, ("elements",)),
    ("elements ['Si', 14] (a duplicate)", (["Si", 14], 2, 6), {}, ("elements", "duplicate")),
    ("elements [0]", ([0], 2, 6), {}, ("atomic number",)),
    ("an unknown option 'cutoff'", (["Si"], 2, 6), dict(cutoff=5.0), ("cutoff",)),
    ("dtype torch.int64", (["Si"], 2, 6), "int64", ("dtype",)),
]:
    def _mk(args=_args, kw=_kw):
        def run(ctx):
            import torch

            k = dict(dtype=torch.int64) if kw == "int64" else kw
            _ace(*args, **k)
        return run
    case(4, f"ace_model {_label}", names=_names, quick=_label == "order 1.5")(_mk())


def _fit_fails(**kw):
    def run(ctx):
        ctx.fit(**kw)
    return run


for _label, _kw, _names in [
    ("weights NaN", dict(weights={"default": {"E": math.nan}}), ("weights", "E")),
    ("weights negative", dict(weights={"default": {"F": -1.0}}), ("weights", "F")),
    ("weights '30' (a string)", dict(weights={"default": {"E": "30"}}), ("weights", "E")),
    ("weights a list", dict(weights=[30, 1, 1]), ("weights",)),
    ("E0 NaN", dict(E0={"Si": math.nan}), ("E0", "Si")),
    ("E0 'isolatd' (typo)", dict(E0="isolatd"), ("E0", "isolatd")),
    ("E0 -158.5 (a number, not a dict)", dict(E0=-158.5), ("E0",)),
    ("solver 'QR' (a string)", dict(solver="QR"), ("solver",)),
    ("prior 'smoothness' (a string)", dict(prior="smoothness"), ("prior",)),
    ("keys a dict {'energy': 'nrg'}", dict(keys={"energy": "nrg"}), ("energy", "nrg")),
    ("batch_atoms 0", dict(batch_atoms=0), ("batch_atoms",)),
    ("batch_atoms 2.5", dict(batch_atoms=2.5), ("batch_atoms",)),
    ("streaming 'QR'", dict(streaming="QR"), ("streaming",)),
    ("min_distance nan", dict(min_distance=math.nan), ("min_distance",)),
    ("backend 'fast'", dict(backend="fast"), ("fast",)),
]:
    case(4, f"fit {_label}", names=_names)(_fit_fails(**_kw))

for _label, _make, _names in [
    ("QR(lam=nan)", lambda s: s.QR(lam=math.nan), ("QR", "lam")),
    ("QR(lam=inf)", lambda s: s.QR(lam=math.inf), ("QR", "lam")),
    ("QR(lam='1')", lambda s: s.QR(lam="1"), ("QR", "lam")),
    ("BLR(committee_size=-1)", lambda s: s.BLR(committee_size=-1), ("BLR", "committee_size")),
    ("LSQR(damp=True)", lambda s: s.LSQR(damp=True), ("LSQR", "damp")),
]:
    case(4, f"solvers.{_label}", names=_names)(lambda ctx, mk=_make: mk(__import__("torchace").solvers))


@case(4, "fit device='gpu'", names=("device", "gpu"))
def _(ctx):
    ctx.fit(device="gpu")


@case(4, "read_data keys={'energi': 'x'} (unknown field)", names=("energi",))
def _(ctx):
    from torchace.fit.data import read_data

    read_data(ctx.frames(), keys={"energi": "x"})


@case(4, "torchace.load(None)", names=("None",))
def _(ctx):
    import torchace

    torchace.load(None)


@case(4, "evaluate: a structure with no atoms in a list", names=("structure 1", "no atoms"))
def _(ctx):
    import torchace
    from ase import Atoms

    torchace.evaluate(ctx.model(), [_si8(), Atoms()])


@case(4, "calculator: periodic cell of zero volume", names=("structure 0", "degenerate"))
def _(ctx):
    from ase import Atoms
    from torchace.calculators import TorchACECalculator

    a = Atoms("Si2", positions=[[0, 0, 0], [1.2, 1.3, 0.4]], cell=[[3, 0, 0], [0, 3, 0], [3, 3, 0]], pbc=True)
    a.calc = TorchACECalculator(ctx.model())
    a.get_potential_energy()


@case(4, "calculator: NaN position after a first call", names=("structure 0", "non-finite"))
def _(ctx):
    from torchace.calculators import TorchACECalculator

    a = _si8()
    a.calc = TorchACECalculator(ctx.model())
    a.get_potential_energy()
    a.positions[3, 2] = math.nan
    a.get_potential_energy()


@case(4, "fit weights E = 1e308 (finite, overflows the rows)", names=("weights",))
def _(ctx):
    ctx.fit(weights={"default": {"E": 1e308}})


@case(4, "fit skip_bad='no' (a string)", names=("skip_bad",))
def _(ctx):
    ctx.fit(skip_bad="no")


@case(4, "calculator skin=True / min_distance=True", names=("skin",))
def _(ctx):
    from torchace.calculators import TorchACECalculator

    TorchACECalculator(ctx.model(), skin=True)


@case(4, "evaluate(model, None)", names=("structures",))
def _(ctx):
    import torchace

    torchace.evaluate(ctx.model(), None)


@case(4, "evaluate(model, 'file.xyz') (a path, not structures)", names=("file.xyz",))
def _(ctx):
    import torchace

    torchace.evaluate(ctx.model(), "file.xyz")


@case(4, "evaluate(model, atoms, min_distance=-1)", names=("min_distance",))
def _(ctx):
    import torchace

    torchace.evaluate(ctx.model(), _si8(), min_distance=-1.0)


@case(4, "model.coefficients = [nan] * K", names=("coefficients",))
def _(ctx):
    m = ctx.model()
    m.coefficients = [math.nan] * m.basis_size


@case(4, "model.coefficients = 'abc'", names=("coefficients",))
def _(ctx):
    ctx.model().coefficients = "abc"


@case(4, "calculator skin=nan", names=("skin",))
def _(ctx):
    from torchace.calculators import TorchACECalculator

    TorchACECalculator(ctx.model(), skin=math.nan)


@case(4, "calculator device='gpu'", names=("device", "gpu"))
def _(ctx):
    from torchace.calculators import TorchACECalculator

    TorchACECalculator(ctx.model(), device="gpu")


@case(4, "calculator on a non-model object", names=("model",))
def _(ctx):
    from torchace.calculators import TorchACECalculator

    TorchACECalculator(42)


@case(4, "calculator: atoms with an element not in the model", names=("Ge", "Si"))
def _(ctx):
    from torchace.calculators import TorchACECalculator

    a = _si8()
    a.symbols[2] = "Ge"
    a.calc = TorchACECalculator(ctx.model())
    a.get_potential_energy()


@case(4, "calculator: the number of atoms changes between calls", expect="ok")
def _(ctx):
    import torchace
    from torchace.calculators import TorchACECalculator

    m = ctx.model()
    calc = TorchACECalculator(m)
    a = _si8(seed=1)
    b = a.repeat((2, 1, 1))
    e = []
    for at in (a, b, a):
        at.calc = calc
        e.append(at.get_potential_energy())
    ref = [float(torchace.evaluate(m, x)["energy"][0]) for x in (a, b)]
    return abs(e[0] - ref[0]) < 1e-8 and abs(e[1] - ref[1]) < 1e-8 and abs(e[2] - ref[0]) < 1e-8


@case(4, "evaluate an isolated atom (energy E0, zero force)", expect="ok")
def _(ctx):
    import torchace
    from ase import Atoms

    m = ctx.model(E0={"Si": -3.5})
    out = torchace.evaluate(m, Atoms("Si", positions=[[0, 0, 0]]))
    return abs(float(out["energy"][0]) + 3.5) < 1e-12 and float(out["forces"].abs().max()) == 0.0


@case(4, "design_matrix_rows(model, [])", names=("no structures",))
def _(ctx):
    import torchace

    torchace.design_matrix_rows(ctx.model(), [])


# ================================================================ class 5: ill-posed fits reported

@case(5, "fit E0='fit' with every structure Si4Ge4", names=("E0='fit'", "ill-posed"))
def _(ctx):
    import torchace

    fr = ctx.frames()
    for a in fr:
        a.numbers[::2] = 32
    ctx.fit(fr, model=torchace.ace_model(["Si", "Ge"], 2, 5), E0="fit")


@case(5, "fit E0='fit' with forces-only data", names=("E0='fit'",))
def _(ctx):
    from ase.calculators.singlepoint import SinglePointCalculator

    fr = ctx.frames()
    for a in fr:
        a.calc = SinglePointCalculator(a, forces=a.get_forces())
    ctx.fit(fr, E0="fit")


@case(5, "fit weights for an absent config_type 'liquid'", names=("liquid", "config_type"), quick=True)
def _(ctx):
    ctx.fit(weights={"liquid": {"E": 10}})


@case(5, "fit with all weights zero", names=("no rows",))
def _(ctx):
    ctx.fit(weights={"default": {"E": 0, "F": 0, "V": 0}})


@case(5, "fit forces-only data with F weight 0", names=("no rows",))
def _(ctx):
    from ase.calculators.singlepoint import SinglePointCalculator

    fr = ctx.frames()
    for a in fr:
        a.calc = SinglePointCalculator(a, forces=a.get_forces())
    ctx.fit(fr, weights={"default": {"F": 0}})


@case(5, "fit on an empty list", names=("no", "structures"))
def _(ctx):
    ctx.fit([])


@case(5, "fit on isolated atoms only", names=("isolated",))
def _(ctx):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    a = Atoms("Si", positions=[[0, 0, 0]])
    a.info["config_type"] = "isolated_atom"
    a.calc = SinglePointCalculator(a, energy=-3.0)
    ctx.fit([a], E0=None)


@case(5, "fit where no atom has a neighbour within rcut (dimers at 8 Å, rcut 5 Å)", names=("neighbour", "rcut"))
def _(ctx):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    fr = []
    for k in range(4):
        a = Atoms("Si2", positions=[[0, 0, 0], [8.0 + k, 0, 0]])
        a.calc = SinglePointCalculator(a, energy=-10.0 - k, forces=np.zeros((2, 3)))
        fr.append(a)
    ctx.fit(fr, model=__import__("torchace").ace_model(["Si"], 2, 5, rcut=5.0))


@case(5, "fit E0 given for Si only in a Si/Ge model", names=("E0", "Ge"))
def _(ctx):
    import torchace

    fr = ctx.frames(elements=("Si", "Ge"))
    ctx.fit(fr, model=torchace.ace_model(["Si", "Ge"], 2, 5), E0={"Si": -5.0})


@case(5, "fit with a training frame whose atoms are 0.5 Å apart (min_distance 1.5)",
      names=("train.xyz", "frame 2", "0.5"))
def _(ctx):
    fr = ctx.frames(3)
    fr[2].positions[1] = fr[2].positions[0] + [0.5, 0, 0]
    ctx.fit(ctx.xyz(frames=fr), min_distance=1.5)


@case(5, "fit a structure with unknown elements", names=("frame 1", "Ge"))
def _(ctx):
    fr = ctx.frames(3)
    fr[1].symbols[0] = "Ge"
    ctx.fit(ctx.xyz(frames=fr))


@case(5, "fit two isolated_atom frames with different energies", names=("frame 1", "isolated_atom"))
def _(ctx):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    iso = []
    for e in (-3.0, -3.5):
        a = Atoms("Si", positions=[[0, 0, 0]])
        a.info["config_type"] = "isolated_atom"
        a.calc = SinglePointCalculator(a, energy=e)
        iso.append(a)
    ctx.fit(ctx.xyz(frames=iso + ctx.frames(2)), E0=None)


# ================================================================ class 6: errors name the file and frame

@case(6, "fit: atoms on top of each other in frame 3 of the file, batched", names=("train.xyz", "frame 3"))
def _(ctx):
    fr = ctx.frames(4)
    fr[3].positions[1] = fr[3].positions[0] + [1e-3, 0, 0]
    ctx.fit(ctx.xyz(frames=fr), batch_atoms=64)


@case(6, "fit: NaN cell in frame 2 of the file", names=("train.xyz", "frame 2", "cell"))
def _(ctx):
    fr = ctx.frames(3)
    t = ctx.xyz(frames=fr)
    text = open(t).read().split("\n")
    heads = [k for k, line in enumerate(text) if line.startswith("Lattice=")]
    text[heads[2]] = text[heads[2]].replace('Lattice="', 'Lattice="nan ', 1).replace(' 0.0 ', ' ', 1)
    import re

    text[heads[2]] = re.sub(r'Lattice="[^"]*"', 'Lattice="nan 0 0 0 5.43 0 0 0 5.43"', text[heads[2]])
    open(t, "w").write("\n".join(text))
    ctx.fit(t)


@case(6, "fit: pbc T T T without a Lattice in frame 1", names=("train.xyz", "frame 1"))
def _(ctx):
    t = ctx.xyz_text("train.xyz", _xyz2() + _xyz2(head='Properties=species:S:1:pos:R:3:forces:R:3 pbc="T T T"'))
    ctx.fit(t)


@case(6, "fit: nearly flat cell in frame 1 (found in the neighbour list)", names=("train.xyz", "frame 1"))
def _(ctx):
    t = ctx.xyz_text("train.xyz", _xyz2() + _xyz2(head=XYZ_HEAD.replace("0 0 0 5.43\"", "0 0 0 1e-7\"")))
    ctx.fit(t)


@case(6, "fit: data.train is a directory", names=("adir",))
def _(ctx):
    os.mkdir(ctx.path("adir"))
    ctx.fit(ctx.path("adir"))


@case(6, "fit: data item an int", names=("data item 1",))
def _(ctx):
    ctx.fit([_si8(), 5])


@case(6, "totaldegree 0.5 (no basis functions)", names=("totaldegree",))
def _(ctx):
    _ace(["Si"], 2, 0.5)


@case(6, "fit config: solver name 'field' (a dataclass helper)", names=("field",))
def _(ctx):
    from torchace.fit.config import FitConfig

    FitConfig.load(ctx.config(solver={"name": "field"}))


@case(6, "CLI fit: a config that does not exist", names=("nope.yaml",), cli=True)
def _(ctx):
    ctx.cli("fit", ctx.path("nope.yaml"))


@case(6, "CLI fit: bad frame in the test file", names=("test.xyz", "frame 1"), cli=True)
def _(ctx):
    ctx.xyz()
    ctx.xyz_text("test.xyz", _xyz2() + _xyz2("nan"))
    ctx.cli("fit", ctx.config(data={"train": "train.xyz", "test": "test.xyz"}), "-q")


@case(6, "CLI fit: order 2.5 in the config", names=("fit.json", "order"), cli=True, quick=True)
def _(ctx):
    ctx.cli("fit", ctx.config(model={"order": 2.5}), "-q")


@case(6, "CLI fit: NaN cell in frame 1 of the test file", names=("test.xyz", "frame 1", "cell"), cli=True)
def _(ctx):
    import re

    ctx.xyz()
    text = _xyz2() + re.sub(r'Lattice="[^"]*"', 'Lattice="nan 0 0 0 5.43 0 0 0 5.43"', _xyz2())
    ctx.xyz_text("test.xyz", text)
    ctx.cli("fit", ctx.config(data={"train": "train.xyz", "test": "test.xyz"}), "-q")


@case(6, "CLI evaluate: a structure file that does not exist", names=("none.xyz",), cli=True)
def _(ctx):
    ctx.cli("evaluate", ctx.path("none.xyz"), "--model", ctx.model_file())


@case(6, "CLI evaluate: --model a truncated file", names=("m.json",), cli=True)
def _(ctx):
    p = ctx.model_file()
    ctx.xyz_text("m.json", open(p).read()[:100])
    ctx.cli("evaluate", ctx.xyz("s.xyz"), "--model", p)


@case(6, "CLI evaluate: --model is a structure file", names=("s.xyz",), cli=True)
def _(ctx):
    ctx.cli("evaluate", ctx.xyz("s.xyz"), "--model", ctx.xyz("s.xyz"))


@case(6, "CLI export: a model file that is not JSON", names=("m.json",), cli=True)
def _(ctx):
    ctx.cli("export", ctx.xyz_text("m.json", "garbage"), ctx.path("o.pt"), "--format", "torchscript")


@case(6, "evaluate: unknown element in structure 1 of a list", names=("structure 1", "C"))
def _(ctx):
    import torchace

    b = _si8()
    b.symbols[0] = "C"
    torchace.evaluate(ctx.model(), [_si8(), b])


# ================================================================ class 7: concurrency and loading

@case(7, "one calculator shared by two threads", expect="ok", quick=True)
def _(ctx):
    import threading

    from torchace.calculators import TorchACECalculator

    m = ctx.model()
    calc = TorchACECalculator(m, skin=0.0)
    structs = [_si8(seed=s) for s in (1, 2)]
    ref = [TorchACECalculator(m).get_potential_energy(a) for a in structs]
    bad = []

    def run(k):
        at = structs[k].copy()
        for step in range(40):
            at.positions[0, 0] += 1e-7 * (1 if step % 2 else -1)
            try:
                if abs(calc.get_potential_energy(at) - ref[k]) > 1e-3:
                    bad.append(k)
            except Exception:  # noqa: BLE001
                bad.append(k)

    th = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    [t.start() for t in th]
    [t.join() for t in th]
    return not bad


@case(7, "two calculators on one model, in two threads", expect="ok")
def _(ctx):
    import threading

    from torchace.calculators import TorchACECalculator

    m = ctx.model()
    structs = [_si8(seed=s) for s in (1, 2)]
    ref = [TorchACECalculator(m).get_forces(a) for a in structs]
    bad = []

    def run(k):
        calc = TorchACECalculator(m, skin=0.0)
        at = structs[k].copy()
        at.calc = calc
        for step in range(30):
            at.positions[0, 0] += 1e-9 * (1 if step % 2 else -1)
            if float(np.abs(at.get_forces() - ref[k]).max()) > 1e-5:
                bad.append(k)

    th = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    [t.start() for t in th]
    [t.join() for t in th]
    return not bad


@case(7, "torchace.evaluate from two threads with one model", expect="ok")
def _(ctx):
    import threading

    import torchace

    m = ctx.model()
    structs = [_si8(seed=s) for s in (1, 2)]
    ref = [float(torchace.evaluate(m, a)["energy"][0]) for a in structs]
    bad = []

    def run(k):
        for _ in range(20):
            if abs(float(torchace.evaluate(m, structs[k])["energy"][0]) - ref[k]) > 1e-9:
                bad.append(k)

    th = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    [t.start() for t in th]
    [t.join() for t in th]
    return not bad


class _Evil:
    def __reduce__(self):
        return (open, (os.path.join(os.getcwd(), "PWNED"), "w"))


def _pickle(ctx, name):
    import pickle

    with open(ctx.path(name), "wb") as fh:
        pickle.dump(_Evil(), fh)
    return ctx.path(name)


def _no_code_run(ctx):
    if os.path.exists(ctx.path("PWNED")):
        raise AssertionError("code in the file was executed")


@case(7, "torchace.load of a pickle (no code runs)", names=("m.json",))
def _(ctx):
    import torchace

    try:
        torchace.load(_pickle(ctx, "m.json"))
    finally:
        _no_code_run(ctx)


@case(7, "calculator on a pickle file (no code runs)", names=("m.pt",))
def _(ctx):
    from torchace.calculators import TorchACECalculator

    try:
        TorchACECalculator(_pickle(ctx, "m.pt"))
    finally:
        _no_code_run(ctx)


@case(7, "torchace.load of a TorchScript archive", names=("m.pt", "TorchScript"))
def _(ctx):
    import torchace

    torchace.export(ctx.model(), ctx.path("m.pt"))
    torchace.load(ctx.path("m.pt"))


@case(7, "calculator on a TorchScript archive without backend='torchscript'", names=("m.pt", "TorchScript"))
def _(ctx):
    import torchace
    from torchace.calculators import TorchACECalculator

    torchace.export(ctx.model(), ctx.path("m.pt"))
    TorchACECalculator(ctx.path("m.pt"))


@case(7, "fit config with !!python/object/apply (no code runs)", names=("fit.yaml",))
def _(ctx):
    from torchace.fit.config import FitConfig

    try:
        FitConfig.load(ctx.xyz_text("fit.yaml", "model: !!python/object/apply:builtins.open ['PWNED', 'w']\n"))
    finally:
        _no_code_run(ctx)


@case(7, ".yace with !!python/object/apply (no code runs)", names=("bad.yace",))
def _(ctx):
    from torchace.io import read_yace

    text = open(_yace(ctx)).read()
    try:
        read_yace(ctx.xyz_text("bad.yace", "x: !!python/object/apply:builtins.open ['PWNED', 'w']\n" + text))
    finally:
        _no_code_run(ctx)


@case(7, "assembly checkpoint holding a pickled object array (no code runs)", names=("ck.npz",))
def _(ctx):
    import torchace
    from torchace.fit.checkpoint import assemble_checkpointed

    np.savez(ctx.path("ck.npz"), fingerprint=np.array([_Evil()], dtype=object))
    try:
        assemble_checkpointed(torchace.ace_model(["Si"], 2, 5), ctx.frames(2), None, ctx.path("ck.npz"))
    finally:
        _no_code_run(ctx)


# ------------------------------------------------------------------------------------------------ runner

def _child(c: Case, d: str, mem: int, out: str) -> None:
    """Run one case in the forked child; write the raw result to ``out``."""
    res = {"raised": False}
    try:
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        log = os.open(os.path.join(d, ".output.txt"), os.O_WRONLY | os.O_CREAT, 0o644)
        os.dup2(log, 1)  # the case's own printing (CLI tables, progress) stays out of the report
        os.dup2(log, 2)
        import torch

        torch.set_num_threads(1)
        os.chdir(d)
        import warnings

        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            ret = c.fn(Ctx(d))
        res.update(ret=ret if isinstance(ret, (bool, str)) or ret is None else bool(ret),
                   warnings=[str(x.message)[:200] for x in w][:3])
    except BaseException as exc:  # noqa: BLE001 — classified by the parent
        msg = str(exc) if not isinstance(exc, SystemExit) or not isinstance(exc.code, int) else f"exit {exc.code}"
        res.update(raised=True, type=type(exc).__name__, module=type(exc).__module__, message=msg[:5000],
                   user_type=isinstance(exc, USER_TYPES) or type(exc).__module__.startswith("torchace"),
                   oom=isinstance(exc, MemoryError), tb=traceback.format_exc()[-1500:])
    try:
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # a case may have lowered it (full-disk case)
        with open(out + ".part", "w") as fh:
            json.dump(res, fh)
        os.replace(out + ".part", out)
    finally:
        os._exit(0)


def classify(c: Case, raw: dict, d: str) -> dict:
    def rel(m: str) -> str:
        return m.replace(d + os.sep, "").replace(d, ".")

    if raw.get("killed"):
        return {"outcome": "hang/OOM", "message": raw["killed"]}
    prot = os.path.join(d, ".protect.json")
    if os.path.exists(prot):
        for p, h in json.load(open(prot)).items():
            if sha(p) != h:
                return {"outcome": "data loss", "message": f"{rel(p)} changed or removed"}
    left = [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs if f.startswith(".tmp_")]
    if left:
        return {"outcome": "wrong/silent", "message": f"left a temporary file {rel(left[0])}"}
    if raw.get("raised"):
        msg = rel(raw["message"])
        text = f"{raw['type']}: {msg}"
        if raw["oom"] or any(s in text for s in OOM):
            return {"outcome": "hang/OOM", "message": text}
        if c.expect == "ok":
            return {"outcome": "unhelpful error", "message": "refused a valid input: " + text}
        problems = []
        if not raw["user_type"]:
            problems.append("internal exception type")
        problems += [f"internal wording {s!r}" for s in INTERNAL if s.lower() in msg.lower()]
        problems += [f"does not name {n!r}" for n in c.names if n.lower() not in msg.lower()]
        if c.cli and (raw["type"] != "SystemExit" or "\n" in msg.strip()):
            problems.append("not a one-line CLI error")
        if len(msg) > MAX_MESSAGE:
            problems.append(f"{len(msg)} characters")
        if problems:
            return {"outcome": "unhelpful error", "message": text, "problems": problems}
        return {"outcome": "clear error", "message": text}
    ret = raw.get("ret")
    if c.expect == "error":
        return {"outcome": "wrong/silent", "message": "no error" + (f" ({ret})" if isinstance(ret, str) else "")}
    if ret is False or isinstance(ret, str):
        return {"outcome": "wrong/silent", "message": "wrong result" + (f": {ret}" if isinstance(ret, str) else "")}
    w = raw.get("warnings") or []
    return {"outcome": "correct", "message": ("warning: " + w[0]) if w else ""}


def run(cases: List[Case], jobs: int, timeout: float, mem: int, verbose: bool = False) -> List[dict]:
    import importlib

    for mod in ("torchace", "torchace.calculators", "torchace.cli", "torchace.fit.checkpoint",
                "torchace.fit.config", "ase.io", "ase.calculators.singlepoint"):
        importlib.import_module(mod)  # imported once in the parent; every child inherits them

    root = tempfile.mkdtemp(prefix="torchace_hostile_")
    pending = list(enumerate(cases))
    running = {}  # pid -> (index, case, dir, out, t0)
    results = [None] * len(cases)
    try:
        while pending or running:
            while pending and len(running) < jobs:
                k, c = pending.pop(0)
                d = os.path.join(root, f"case{k:03d}")
                os.mkdir(d)
                out = os.path.join(root, f"result{k:03d}.json")
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _child(c, d, mem, out)
                running[pid] = (k, c, d, out, time.perf_counter())
            time.sleep(0.005)
            for pid, (k, c, d, out, t0) in list(running.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                elapsed = time.perf_counter() - t0
                if done == 0 and elapsed < (c.timeout or timeout):
                    continue
                if done == 0:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    raw = {"killed": f"no result within {c.timeout or timeout:g} s (killed)"}
                elif os.path.exists(out):
                    try:
                        raw = json.load(open(out))
                    except ValueError:
                        raw = {"killed": "the child's result could not be read"}
                else:
                    sig = -status if status < 0 else (os.WTERMSIG(status) if os.WIFSIGNALED(status) else None)
                    raw = {"killed": f"child died (status {status}, signal {sig})"}
                del running[pid]
                r = dict(id=c.id, cls=c.cls, input=c.name, seconds=round(elapsed, 2), **classify(c, raw, d))
                if verbose and raw.get("tb") and r["outcome"] != "clear error":
                    r["traceback"] = raw["tb"]
                results[k] = r
                if verbose:
                    print(f"[{c.id}] {r['outcome']:<15} {elapsed:5.1f}s {c.name}: {r['message'][:160]}",
                          file=sys.stderr, flush=True)
    finally:
        for pid in running:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        shutil.rmtree(root, ignore_errors=True)
    return results


def markdown(results: List[dict], before: Optional[dict] = None) -> str:
    lines = []
    counts = {o: sum(r["outcome"] == o for r in results) for o in OUTCOMES}
    lines.append("Outcomes: " + ", ".join(f"{o} {n}" for o, n in counts.items()) + f" (of {len(results)})")
    if before:
        bc = {o: sum(b["outcome"] == o for b in before.values()) for o in OUTCOMES}
        lines.append("")
        lines.append("Before the fixes: " + ", ".join(f"{o} {n}" for o, n in bc.items()) + f" (of {len(before)})")
    for cls, title in CLASSES.items():
        rows = [r for r in results if r["cls"] == cls]
        if not rows:
            continue
        lines += ["", f"**{cls}. {title}**", ""]
        head = "| id | input | outcome | message (excerpt) |"
        if before:
            head = "| id | input | outcome | was (if different) | message (excerpt) |"
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for r in rows:
            msg = r["message"].replace("\n", " ").replace("|", "\\|")
            msg = msg if len(msg) <= 100 else msg[:97] + "..."
            cells = [r["id"], r["input"].replace("|", "\\|"), r["outcome"]]
            if before:
                b = before.get(r["id"], {}).get("outcome", "—")
                cells.append("" if b == r["outcome"] else b)
            cells.append(f"`{msg}`" if msg else "")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def load_case_modules() -> None:
    """Register the cases of ``scripts/tools/hostile_cases/*.py`` (each module imports ``case``, ``Ctx`` and the
    helpers from this module, which is registered as ``hostile_inputs`` also when run as a script)."""
    import glob
    import importlib.util

    sys.modules.setdefault("hostile_inputs", sys.modules[__name__])
    for path in sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hostile_cases", "*.py"))):
        name = "hostile_cases_" + os.path.splitext(os.path.basename(path))[0]
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)


def main(argv=None) -> int:
    load_case_modules()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="only the ~10 cases marked quick")
    ap.add_argument("-k", help="only cases whose id or input contains this text")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per case")
    ap.add_argument("--memory", type=float, default=4.0, help="address-space limit per case, GiB")
    ap.add_argument("--json", help="write the results as JSON")
    ap.add_argument("--markdown", help="write the Markdown table here (default: stdout)")
    ap.add_argument("--before", help="JSON of an earlier run: adds its outcome as a column")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    for n in range(len(CASES)):  # ids: class.number within the class, in the order of definition
        c = CASES[n]
        c.id = f"{c.cls}.{sum(1 for x in CASES[:n] if x.cls == c.cls) + 1:02d}"
    cases = [c for c in CASES if (not args.quick or c.quick)
             and (not args.k or args.k.lower() in (c.id + " " + c.name).lower())]
    t0 = time.perf_counter()
    results = run(cases, args.jobs, args.timeout, int(args.memory * 2 ** 30), args.verbose)
    before = None
    if args.before:
        before = {r["id"]: r for r in json.load(open(args.before))["results"]}
    md = markdown(results, before)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(md)
    else:
        print(md)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"seconds": round(time.perf_counter() - t0, 1), "results": results}, fh, indent=1)
    print(f"{len(results)} cases in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    bad = sum(r["outcome"] not in ("clear error", "correct") for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
