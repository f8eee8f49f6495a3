"""The engines' skin list (structures/neighbours/skin.py), the batched search and the choice rule: rebuild rules
(an atom moving more than skin/2, a cell, boundary or element change), lattice jumps of wrapped atoms followed,
and a calculator with a reused list equal to fresh lists at every step of a short NVE run."""
import numpy as np
import pytest
import torch
from ase import units
from ase.md.verlet import VelocityVerlet

import torchace
from torchace.calculators.ase import TorchACECalculator
from torchace.structures.neighbours import choice
from torchace.structures.neighbours.batched import batch_neighbour_search
from torchace.structures.neighbours.pairs import neighbour_list
from torchace.structures.neighbours.search import neighbour_search
from torchace.structures.neighbours.skin import SkinList
from torchace.testing import randomize_coefficients, rattled_bulk

pytestmark = pytest.mark.usefixtures("one_thread")
RCUT, SKIN = 4.0, 0.4


def _builder(atoms, calls):
    def build():
        calls.append(1)
        return neighbour_search(atoms.positions, atoms.cell.array, atoms.pbc, RCUT + SKIN, "cpu", torch.float64)
    return build


def _pairs(edge_index, shifts, offset=0):
    return {(int(i) - offset, int(j) - offset, tuple(int(x) for x in s))
            for (i, j), s in zip(edge_index.T.tolist(), shifts.tolist())}


def test_rebuild_rules():
    at = rattled_bulk(["Si"], reps=(2, 2, 2), rattle=0.05, seed=1)
    nl, calls = SkinList(RCUT, SKIN), []
    update = lambda: nl.update(at.positions, at.cell.array, at.pbc, _builder(at, calls), key=(at.numbers,))  # noqa: E731
    assert update() and nl.n_builds == 1
    assert not update()                                       # nothing moved
    at.positions[3] += [0.99 * SKIN / 2, 0.0, 0.0]           # within skin/2: kept
    assert not update()
    at.positions[3] += [0.02 * SKIN / 2, 0.0, 0.0]           # now beyond skin/2 since the build: rebuilt
    assert update() and nl.n_builds == 2
    at.set_cell(at.cell.array * 1.001, scale_atoms=False)    # a cell change (atoms not moved): rebuilt
    assert update() and nl.n_builds == 3
    at.pbc = (True, True, False)                              # boundaries
    assert update() and nl.n_builds == 4
    at.numbers[0] = 14 if at.numbers[0] != 14 else 32        # elements
    assert update() and nl.n_builds == 5
    assert len(calls) == 5
    zero = SkinList(RCUT, 0.0)                                # skin 0: any move rebuilds
    b = lambda: zero.update(at.positions, at.cell.array, at.pbc, _builder(at, []))  # noqa: E731
    assert b() and not b()
    at.positions[0] += 1e-9
    assert b() and zero.n_builds == 2


@pytest.mark.parametrize("as_tensor", [False, True])
def test_wrapped_atoms_keep_the_list(as_tensor):
    """follow_wraps (LAMMPS, TorchSim): atoms moved by whole lattice vectors keep the list, whose shifts make every
    edge vector the same; a real move beyond skin/2 still rebuilds."""
    at = rattled_bulk(["Si"], reps=(2, 2, 2), rattle=0.05, seed=2)
    nl = SkinList(RCUT, SKIN, follow_wraps=True)
    conv = (lambda x: torch.as_tensor(x)) if as_tensor else (lambda x: np.array(x))
    cell = at.cell.array
    batch = torch.zeros(len(at), dtype=torch.long) if as_tensor else None
    x0 = at.positions.copy()
    nl.update(conv(x0), cell, at.pbc, _builder(at, []), batch=batch)
    ref = _pairs(nl.edge_index, nl.unit_shifts)
    vec = lambda x: (x[nl.edge_index[1].numpy()] - x[nl.edge_index[0].numpy()]  # noqa: E731
                     + nl.unit_shifts.numpy() @ cell)
    v0 = vec(x0)
    x1 = x0.copy()
    x1[[1, 5]] += [[1, 0, -1], [0, 2, 0]] @ cell              # wrapped by LAMMPS / torch_sim
    assert not nl.update(conv(x1), cell, at.pbc, _builder(at, []), batch=batch)
    assert nl.n_wrapped == 1 and nl.n_builds == 1
    assert np.abs(vec(x1) - v0).max() < 1e-12
    assert _pairs(nl.edge_index, nl.unit_shifts) != ref     # the shifts followed the jumps
    x2 = x1.copy()
    x2[1] += [0.6 * SKIN, 0.0, 0.0]
    at.positions = x2
    assert nl.update(conv(x2), cell, at.pbc, _builder(at, []), batch=batch) and nl.n_builds == 2


def test_reused_list_equals_fresh_lists_in_nve():
    m = torchace.ace_model(["Si", "Ge"], 2, 6, rcut=RCUT)
    randomize_coefficients(m, 0.01, seed=3)
    at = rattled_bulk(["Si", "Ge"], reps=(2, 2, 2), rattle=0.05, seed=4)
    rng = np.random.default_rng(1)
    at.set_momenta(rng.normal(0, 1, (len(at), 3)) * np.sqrt(at.get_masses()[:, None] * units.kB * 3000))
    calc = TorchACECalculator(m, skin=SKIN)
    at.calc = calc
    fresh = TorchACECalculator(m, skin=0.0)
    dyn = VelocityVerlet(at, 2 * units.fs)
    for _ in range(25):
        dyn.run(1)
        probe = at.copy()
        probe.calc = fresh
        fresh.reset()                                           # a fresh list at rcut
        e_ref = probe.get_potential_energy()
        assert abs(at.get_potential_energy() - e_ref) <= 1e-12 * abs(e_ref)
        assert np.abs(at.get_forces() - probe.get_forces()).max() <= 1e-12 * np.abs(probe.get_forces()).max()
        assert np.abs(at.get_stress() - probe.get_stress()).max() <= 1e-12 * np.abs(probe.get_stress()).max()
    assert 1 < calc.n_neighbour_list_builds < 20               # reused, and rebuilt when atoms moved skin/2


def test_batched_search_equals_per_system_lists():
    systems = [rattled_bulk(["Si"], reps=(1, 1, 1), rattle=0.1, seed=s) for s in range(3)]
    systems.append(rattled_bulk(["Si"], reps=(2, 2, 2), rattle=0.05, seed=9))  # beyond the batched size (auto)
    pos = torch.as_tensor(np.concatenate([a.positions for a in systems]))
    cells_h = np.stack([a.cell.array for a in systems])
    counts = [len(a) for a in systems]
    batch = torch.repeat_interleave(torch.arange(len(systems)), torch.as_tensor(counts))
    offsets = np.cumsum(counts) - counts
    for method in ("auto", "batched", "cell_list", "host"):
        ei, S = batch_neighbour_search(pos, torch.as_tensor(cells_h), cells_h, [True] * 3, batch,
                                       torch.arange(len(pos)), counts, RCUT, torch.float64, method)
        for s, a in enumerate(systems):
            mine = ((batch[ei[0]] == s).numpy())
            i, j, sh = neighbour_list(a.positions, a.cell.array, a.pbc, RCUT)
            assert _pairs(ei[:, mine], S[mine], offsets[s]) == _pairs(np.stack([i, j]), sh), (method, s)


def test_choice_rule_needs_no_vesin():
    per, mixed = [True] * 3, [True, True, False]
    assert choice.search_for(10, per, "cpu", vesin=True) == choice.VESIN
    assert choice.search_for(10, per, "cpu", vesin=False) == choice.DENSE
    assert choice.search_for(10 ** 6, per, "cpu", vesin=False) == choice.CELL_LIST
    assert choice.search_for(10 ** 6, per, "cpu", vesin=False, cell_list=False) == choice.DENSE
    assert choice.search_for(10 ** 9, per, "cpu", vesin=False, cell_list=False) == choice.ASE
    assert choice.search_for(10, mixed, "cpu", vesin=True) == choice.ASE
    assert choice.search_for(10, per, "cuda", vesin=True) == choice.CELL_LIST
    assert choice.joins_batch(8 * 8 * 125) and not choice.joins_batch(10 ** 6)
