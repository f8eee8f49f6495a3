"""Issue 26, class 7: limits that match the machine.

Neighbour-pair counts estimated for every cell shape and refused against the available memory before any search;
nonlinear model sizes refused before allocation; close contacts in training data warned naming file:frame:atoms.
Each refusal comes in well under a second (the memory available is patched to a fixed value where the test
would otherwise depend on this machine; one test runs under a real address-space limit in a child process).
"""
from __future__ import annotations

import json
import os
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

import torchace
from torchace import resources
from torchace.fit.contacts import CloseContactWarning, check_close_contacts
from torchace.fit.data import DataError, example_data, read_data
from torchace.resources import ResourceLimitError
from torchace.structures.neighbours.cell_list import cell_list_neighbours
from torchace.structures.neighbours.pairs import estimate_pairs, neighbour_list
from torchace.testing import rattled_bulk, run

GIB = 2**30
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def two_gib(monkeypatch):
    """The machine has 2 GiB free (whatever this one has); records whether the memory was read at all."""
    reads = []

    def fake(device=None):
        reads.append(device)
        return 2 * GIB

    monkeypatch.setattr(resources, "available_bytes", fake)
    return reads


def _model(rcut=5.5):
    return torchace.ace_model(["Si"], 2, 5, rcut=rcut)


def _flat_unwrapped(n=64, hz=1e-3, seed=0):
    """n Si atoms spread over a 10 × 10 × 5 Å box, in a fully periodic 10 × 10 × hz Å cell (positions unwrapped)."""
    rng = np.random.default_rng(seed)
    return Atoms(f"Si{n}", positions=rng.uniform(0, 1, (n, 3)) * [10, 10, 5], cell=[10, 10, hz], pbc=True)


def _bunched(n=200, hz=1e-3):
    """n atoms within 0.5 Å of each other in-plane, in a 100 × 100 × hz Å periodic cell: few pairs by volume, but
    every atom sees 2·rcut/hz images of every other."""
    rng = np.random.default_rng(1)
    return Atoms(f"Si{n}", positions=rng.uniform(0, 0.5, (n, 3)) * [1, 1, 0], cell=[100, 100, hz], pbc=True)


def _timed(fn):
    t0 = time.perf_counter()
    with pytest.raises(ResourceLimitError) as exc:
        fn()
    assert time.perf_counter() - t0 < 1.0
    return str(exc.value)


# ---- neighbour pairs ----

def test_fully_periodic_flat_cell_refused_with_numbers(two_gib):
    # 2.9e7 pairs: under the old fixed limit of 3e8 pairs, so it was built (and died in a 4 GiB allocator)
    msg = _timed(lambda: torchace.evaluate(_model(), _flat_unwrapped()))
    assert msg.startswith("structure 0 (Si64): 64 atoms in a periodic cell")
    for words in ("face spacings 10, 10, 0.001 Å", "neighbour pairs within rcut = 5.5 Å", "2 GiB available",
                  "nearly flat", "more memory"):
        assert words in msg
    assert "e+07 neighbour pairs" in msg


def test_bunched_atoms_in_a_flat_cell_refused(two_gib):
    # the old estimate N²·(4/3)πr³/V said 2.8e6 pairs for this cell; there are ~4.4e8
    a = _bunched()
    assert estimate_pairs(a.positions, a.cell.array, a.pbc, 5.5) > 1e8
    msg = _timed(lambda: torchace.evaluate(_model(), a))
    assert "200 atoms" in msg and "neighbour pairs" in msg


def test_nearly_singular_cell_refused(two_gib):
    # no short lattice vector: a3 = a1 + a2 + 1e-3 ẑ (the reduced cell is 5 × 5 × 0.001 Å)
    rng = np.random.default_rng(2)
    a = Atoms("Si64", positions=rng.uniform(0, 5, (64, 3)), cell=[[5, 0, 0], [0, 5, 0], [5, 5, 1e-3]], pbc=True)
    msg = _timed(lambda: torchace.evaluate(_model(), a))
    assert "neighbour pairs" in msg and "structure 0" in msg


def test_cutoff_far_larger_than_a_tiny_cell(two_gib):
    # rcut 6 Å in a 0.05 Å cube: 1.8e7 pairs per atom pair
    a = Atoms("Si4", positions=np.random.default_rng(3).uniform(0, 0.05, (4, 3)), cell=[0.05] * 3, pbc=True)
    msg = _timed(lambda: torchace.evaluate(_model(rcut=6.0), a, min_distance=0.0))
    assert "rcut = 6 Å" in msg and "neighbour pairs" in msg
    # negative control: one atom in a 1 Å cube, rcut 6 Å: 894 images, evaluated (the memory is not even read)
    two_gib.clear()
    one = Atoms("Si", positions=[[0, 0, 0]], cell=[1, 1, 1], pbc=True)
    assert len(neighbour_list(one.positions, one.cell.array, one.pbc, 6.0)[0]) == 894
    assert np.isfinite(float(torchace.evaluate(_model(rcut=6.0), one)["energy"][0]))
    assert two_gib == []


def test_torch_cell_list_and_calculator_refuse_too(two_gib):
    a = _flat_unwrapped()
    msg = _timed(lambda: cell_list_neighbours(torch.tensor(a.positions), torch.tensor(a.cell.array), a.pbc, 5.5))
    assert "neighbour pairs" in msg and "320 bytes a pair" in msg
    from torchace.calculators import TorchACECalculator

    a.calc = TorchACECalculator(_model(), skin=0.5)
    msg = _timed(a.get_potential_energy)
    assert "neighbour pairs within rcut = 6 Å" in msg and "rcut 5.5 Å + skin 0.5 Å" in msg


@pytest.mark.parametrize("name", ["si64", "slab", "tiny_cube", "flat", "flat_unwrapped", "bunched", "skewed",
                                  "wire", "open_cluster"])
def test_pair_estimate_within_a_factor_of_the_count(name):
    rng = np.random.default_rng(4)
    si = rattled_bulk(["Si"], reps=(2, 2, 2), seed=1)
    pos, cell, pbc = si.positions, si.cell.array, (True, True, True)
    if name == "slab":
        cell, pbc = cell * [[1], [1], [3]], (True, True, False)
    elif name == "tiny_cube":
        pos, cell = rng.uniform(0, 1, (8, 3)), np.eye(3)
    elif name == "flat":
        pos, cell = rng.uniform(0, 1, (8, 3)) * [5.43, 5.43, 0], np.diag([5.43, 5.43, 1e-2])
    elif name == "flat_unwrapped":
        pos, cell = rng.uniform(0, 5.43, (8, 3)), np.diag([5.43, 5.43, 1e-2])
    elif name == "bunched":
        pos, cell = rng.uniform(0, 0.5, (20, 3)) * [1, 1, 0], np.diag([100, 100, 1e-2])
    elif name == "skewed":  # the cubic lattice given with a 1000·a shear vector
        cell = np.array([[10.86, 0, 0], [10860, 10.86, 0], [0, 0, 10.86]])
    elif name == "wire":
        pos, cell, pbc = rng.uniform(0, 3, (30, 3)), np.diag([2.0, 0, 0]), (True, False, False)
    elif name == "open_cluster":
        pos, cell, pbc = rng.uniform(0, 10, (200, 3)), np.zeros((3, 3)), (False, False, False)
    true = len(neighbour_list(pos, cell, pbc, 5.5)[0])
    est = estimate_pairs(pos, cell, pbc, 5.5)
    assert 0.4 < est / true < 2.0, (est, true)


def test_ordinary_structures_never_read_the_memory(two_gib):
    # the check costs a few µs for ordinary cells: no estimate, no /proc read (negative control)
    si = rattled_bulk(["Si"], reps=(2, 2, 2), seed=1)
    assert np.isfinite(float(torchace.evaluate(_model(), si)["energy"][0]))
    slab = si.copy()
    slab.pbc = (True, True, False)
    torchace.evaluate(_model(), slab)
    assert two_gib == []


def test_available_bytes_sees_the_address_space_limit():
    # a real RLIMIT_AS of 3 GiB in a child: available_bytes is below it, and the flat cell is refused without a
    # patched value (before, it was searched until the allocator failed)
    code = textwrap.dedent("""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        import numpy as np, torchace
        from ase import Atoms
        from torchace.resources import available_bytes
        avail = available_bytes()
        rng = np.random.default_rng(0)
        a = Atoms("Si64", positions=rng.uniform(0, 1, (64, 3)) * [10, 10, 5], cell=[10, 10, 1e-3], pbc=True)
        try:
            torchace.evaluate(torchace.ace_model(["Si"], 2, 5), a)
            out = "evaluated"
        except ValueError as exc:
            out = type(exc).__name__ + ": " + str(exc)
        print(json.dumps({"avail": avail, "out": out}))
    """)
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = run([sys.executable, "-c", code], env=env, timeout=300).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert 0 < res["avail"] < 3 * GIB
    assert res["out"].startswith("ResourceLimitError: structure 0 (Si64): 64 atoms"), res["out"]


# ---- nonlinear model sizes ----

@pytest.mark.parametrize("kw, words", [
    (dict(densities=10**6, embedding="mlp"), ("1,000,000 densities", "17 basis functions", "parameters")),
    (dict(densities=2, embedding="mlp", mlp_hidden=10**7), ("MLP width 10,000,000", "activations per atom")),
    (dict(densities=10**6, fs_parameters=[1.0, 1.0] * 10**6), ("1,000,000 densities",)),
])
def test_nonlinear_sizes_refused_before_allocation(two_gib, kw, words):
    msg = _timed(lambda: torchace.ace_model(["Si"], 2, 6, **kw))
    for w in words + ("2 GiB available", "fewer densities"):
        assert w in msg


def test_nonlinear_evaluation_of_many_atoms_refused(monkeypatch):
    m = torchace.ace_model(["Si"], 2, 5, densities=2, embedding="mlp", mlp_hidden=4096)  # builds (~1 MiB/atom)
    si = rattled_bulk(["Si"], reps=(2, 2, 2), seed=1)
    assert np.isfinite(float(torchace.evaluate(m, si)["energy"][0]))  # negative control
    monkeypatch.setattr(resources, "available_bytes", lambda device=None: 64 * 2**20)
    msg = _timed(lambda: torchace.evaluate(m, si.repeat((2, 2, 2))))
    assert "evaluating 512 atoms" in msg and "MLP width 4,096" in msg and "smaller batches" in msg


def test_default_nonlinear_model_builds(two_gib):
    m = torchace.ace_model(["Si", "Ge"], 3, 10, densities=8, embedding="mlp", mlp_hidden=64, learnable_radials=True)
    assert m.densities == 8


# ---- close contacts in training data ----

def _frames(short: float = 0.0):
    out = []
    for k in range(3):
        a = rattled_bulk(["Si"], seed=k)
        if short and k == 1:
            a.positions[5] = a.positions[2] + [short, 0, 0]
        a.calc = SinglePointCalculator(a, energy=-40.0 - k, forces=np.zeros((len(a), 3)))
        out.append(a)
    return out


def _fit(data, **kw):
    return torchace.fit(torchace.ace_model(["Si"], 2, 5), data, E0={"Si": -5.0},
                        solver=torchace.solvers.QR(lam=1e-3), compute_errors=False, **kw)


def test_close_contact_warned_naming_file_frame_atoms(tmp_path):
    from ase.io import write

    path = str(tmp_path / "train.xyz")
    write(path, _frames(short=0.4))
    with pytest.warns(CloseContactWarning) as rec:
        _fit(path)
    msg = str(rec[0].message)
    assert f"{path}:frame 1: atoms 2 and 5 (Si-Si) are 0.4 Å apart" in msg
    assert "0.5 × their covalent radii (1.11 Å)" in msg and "close_contact" in msg
    with pytest.raises(DataError, match=r"train.xyz:frame 1: atoms 2 and 5 .*close_contact"):
        _fit(path, close_contact_error=True)
    with warnings.catch_warnings():  # an explicit threshold: 0.3 of the radii (0.67 Å) lets 0.4 Å... warn still
        warnings.simplefilter("error", CloseContactWarning)
        _fit(path, close_contact=0.0)  # switched off: no warning
        with pytest.raises(CloseContactWarning):
            _fit(path, close_contact=0.4)  # 0.89 Å threshold: still short


def test_close_contacts_checked_once_in_train():
    data = _frames(short=0.6)
    m = torchace.ace_model(["Si"], 2, 5, densities=2)
    with pytest.warns(CloseContactWarning) as rec:
        torchace.train(m, data, E0={"Si": -5.0}, epochs=1, progress=False, compute_errors=False)
    assert sum(isinstance(w.message, CloseContactWarning) for w in rec) == 1
    assert "structure 1: atoms 2 and 5 (Si-Si) are 0.6 Å apart" in str(rec[0].message)


def test_close_contact_config_fields(tmp_path):
    from ase.io import write
    from torchace.cli import main

    write(str(tmp_path / "train.xyz"), _frames(short=0.4))
    cfg = {"model": {"elements": ["Si"], "order": 2, "totaldegree": 5}, "data": {"train": "train.xyz",
           "close_contact_error": True}, "E0": {"Si": -5.0}, "solver": {"name": "QR", "lam": 1e-3},
           "output": {"model": "out.json", "errors": None}}
    (tmp_path / "fit.json").write_text(json.dumps(cfg))
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(tmp_path / "fit.json")])
    assert "frame 1: atoms 2 and 5" in str(exc.value.code) and "\n" not in str(exc.value.code).strip()
    assert not (tmp_path / "out.json").exists()
    cfg["data"] = {"train": "train.xyz", "close_contact": "half"}
    (tmp_path / "fit.json").write_text(json.dumps(cfg))
    with pytest.raises(SystemExit) as exc:
        main(["fit", str(tmp_path / "fit.json")])
    assert "data.close_contact" in str(exc.value.code)


@pytest.mark.parametrize("name", ["zuo2020/Si_train.xyz.gz", "zuo2020/Si_test.xyz.gz"])
def test_bundled_data_has_no_close_contacts(name):
    ds = list(read_data(example_data(name)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CloseContactWarning)
        check_close_contacts(ds)


def test_synthetic_dimers_are_not_close_contacts():
    # repulsion data are short on purpose and are added after the check
    with warnings.catch_warnings():
        warnings.simplefilter("error", CloseContactWarning)
        _fit(_frames(), synthetic_dimers=True)


def test_reference_evaluation_refused_per_edge(monkeypatch):
    # the neighbour list (4e5 pairs, ~64 MB) fits in 256 MiB, autograd's reference evaluation (~1.5 kB a pair) not
    a = _flat_unwrapped(n=24, hz=1e-2)
    m = _model()
    monkeypatch.setattr(resources, "available_bytes", lambda device=None: 256 * 2**20)
    msg = _timed(lambda: torchace.evaluate(m, a, backend="reference", min_distance=0.0))
    assert "reference (autograd) evaluation of" in msg and "neighbour pairs" in msg and "backend='auto'" in msg
    assert np.isfinite(float(torchace.evaluate(m, a, min_distance=0.0)["energy"][0]))  # auto: the fused kernel


def test_close_contact_options_reach_train_from_its_config(tmp_path):
    from torchace.train.config import TrainConfig

    d = {"model": {"elements": ["Si"], "order": 2, "totaldegree": 5, "densities": 2},
         "data": {"train": "train.xyz", "close_contact": 0.3, "close_contact_error": True}, "E0": {"Si": -5.0}}
    kw = TrainConfig.from_dict(d, str(tmp_path)).train_kwargs()
    assert kw["close_contact"] == 0.3 and kw["close_contact_error"] is True
    with pytest.raises(ValueError, match="close_contact"):
        torchace.train(torchace.ace_model(["Si"], 2, 5, densities=2), _frames(), close_contact=-1.0)
