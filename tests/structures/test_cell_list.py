"""The torch cell list (structures.cell_list) against ASE's neighbour list: exact (i, j, S) sets on triclinic,
small, mixed-boundary, open, unwrapped, empty and float32 structures, on every available device."""
import numpy as np
import pytest
import torch
from ase.build import bulk

from torchace.structures.neighbours import cell_list
from torchace.structures.neighbours.cell_list import cell_list_neighbours
from torchace.structures.neighbours.pairs import ase_neighbour_list


def _rows(i, j, S):
    a = np.column_stack([np.asarray(i), np.asarray(j), np.asarray(S).reshape(-1, 3)]).astype(np.int64)
    return a[np.lexsort(a.T[::-1])] if len(a) else a.reshape(0, 5)


def _check(pos, cell, pbc, rcut, device, dtype=torch.float64):
    pos_t = torch.as_tensor(pos, dtype=dtype, device=device)
    i, j, S = cell_list_neighbours(pos_t, torch.as_tensor(cell, dtype=dtype, device=device), pbc, rcut)
    for t in (i, j, S):
        assert t.dtype == torch.int64 and t.device == pos_t.device
    assert S.shape == (len(i), 3) and j.shape == i.shape
    i, j, S = i.cpu().numpy(), j.cpu().numpy(), S.cpu().numpy()
    assert np.all(np.diff(i) >= 0)  # sorted by centre
    assert not np.any((i == j) & (S == 0).all(1))  # no self pair
    # the reference sees the same numbers (float32 input: the float32 values, in float64)
    ref_pos = pos_t.cpu().to(torch.float64).numpy()
    ref_cell = torch.as_tensor(cell, dtype=dtype).to(torch.float64).numpy()
    got, ref = _rows(i, j, S), _rows(*ase_neighbour_list(ref_pos, ref_cell, np.asarray(pbc, dtype=bool), rcut))
    assert len(np.unique(got, axis=0)) == len(got)  # no pair twice
    assert got.shape == ref.shape and np.array_equal(got, ref)
    return got


def _triclinic_si(seed, reps=(2, 2, 2), rattle=0.1):
    rng = np.random.default_rng(seed)
    at = bulk("Si", "diamond", a=5.43, cubic=True).repeat(reps)
    at.rattle(rattle, seed=seed)
    at.set_cell(at.cell.array @ (np.eye(3) + rng.uniform(-0.2, 0.2, (3, 3))), scale_atoms=True)
    return at


@pytest.mark.parametrize("seed", range(3))
def test_triclinic_periodic(seed, device):
    at = _triclinic_si(seed, reps=[(2, 2, 2), (3, 2, 2), (2, 3, 4)][seed])
    got = _check(at.positions, at.cell.array, (True, True, True), [4.0, 5.0, 5.5][seed], device)
    assert len(got) >= 8 * len(at)


def test_small_cells_many_images(device):
    prim = bulk("Si", "diamond", a=5.43)  # 2 atoms, spacing ≈ 3.1 Å < rcut: an atom sees its own images
    prim.rattle(0.05, seed=1)
    got = _check(prim.positions, prim.cell.array, (True, True, True), 6.0, device)
    assert np.any(got[:, 0] == got[:, 1])
    rng = np.random.default_rng(7)  # one atom in a skewed cell much smaller than rcut
    cell = np.eye(3) * 2.2 + rng.uniform(-0.6, 0.6, (3, 3))
    _check(rng.uniform(0, 1, (1, 3)) @ cell, cell, (True, True, True), 5.5, device)
    _check(rng.uniform(0, 1, (3, 3)) @ cell, cell, (True, False, True), 5.5, device)  # small and mixed


@pytest.mark.parametrize("pbc", [(True, True, False), (False, True, True), (True, False, False), (False, True, False)])
def test_mixed_boundaries(pbc, device):
    at = _triclinic_si(3, reps=(2, 2, 2))
    pos = at.positions.copy()
    open_ax = [a for a in range(3) if not pbc[a]]
    pos[:, open_ax] += 8.0 * np.random.default_rng(3).uniform(-1, 1, (len(pos), len(open_ax)))  # beyond the cell
    _check(pos, at.cell.array, pbc, 5.0, device)


def test_slab_with_zero_open_vector(device):
    at = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 2, 1))
    at.rattle(0.05, seed=4)
    cell = at.cell.array.copy()
    cell[2] = 0.0  # a slab: no third lattice vector at all
    _check(at.positions, cell, (True, True, False), 5.0, device)


def test_open_cluster(device):
    at = bulk("Si", "diamond", a=5.43, cubic=True).repeat((3, 3, 3))
    at.rattle(0.1, seed=5)
    pos = at.positions[np.linalg.norm(at.positions - at.positions.mean(0), axis=1) < 7.0]
    one = _check(pos, np.zeros((3, 3)), (False, False, False), 5.0, device)
    # two copies far apart (ASE's dense bins could not take this box): the bins follow the atoms
    n = len(pos)
    far = torch.as_tensor(np.concatenate([pos, pos + np.array([1e5, -3e4, 2e5])]), device=device)
    two = _rows(*(t.cpu().numpy() for t in cell_list_neighbours(far, torch.zeros((3, 3)), (False,) * 3, 5.0)))
    assert np.array_equal(two, np.concatenate([one, one + np.array([n, n, 0, 0, 0])]))


def test_unwrapped_positions(device):
    at = _triclinic_si(6, reps=(2, 2, 2))
    moved = at.positions + np.random.default_rng(6).integers(-3, 4, (len(at), 3)) @ at.cell.array
    _check(moved, at.cell.array, (True, True, True), 5.0, device)
    _check(moved, at.cell.array, (True, False, True), 5.0, device)


def test_empty_and_float32(device):
    i, j, S = cell_list_neighbours(torch.zeros((0, 3), device=device), torch.eye(3, device=device) * 5.0,
                                   (True, True, True), 5.0)
    assert i.shape == j.shape == (0,) and S.shape == (0, 3) and S.dtype == torch.int64
    at = _triclinic_si(8, reps=(2, 2, 1))
    _check(at.positions, at.cell.array, torch.tensor([True, True, True]), 5.0, device, dtype=torch.float32)


@pytest.mark.parametrize("max_candidates", [1000, 3])  # 3: rows larger than a chunk
def test_chunked_equals_unchunked(max_candidates, device, monkeypatch):
    at = _triclinic_si(9, reps=(2, 2, 1))
    pos, cell = torch.tensor(at.positions, device=device), torch.tensor(at.cell.array, device=device)
    whole = cell_list_neighbours(pos, cell, (True, True, True), 5.0)
    monkeypatch.setattr(cell_list, "MAX_CANDIDATES", max_candidates)
    monkeypatch.setattr(cell_list, "ROW_BLOCK", 300)
    parts = cell_list_neighbours(pos, cell, (True, True, True), 5.0)
    for a, b in zip(whole, parts):
        assert torch.equal(a, b)


def test_bad_input_refused(device):
    cell = torch.eye(3, device=device) * 5.0
    pos = torch.rand((4, 3), device=device, dtype=torch.float64)
    with pytest.raises(ValueError, match="positions"):
        cell_list_neighbours(torch.where(torch.arange(4, device=device)[:, None] == 2, float("nan"), pos), cell,
                             (True, True, True), 5.0)
    with pytest.raises(ValueError, match="cell"):
        cell_list_neighbours(pos, cell * float("nan"), (True, True, True), 5.0)
    with pytest.raises(ValueError, match="neighbour pairs"):  # collapsed cell: refused with the estimate
        cell_list_neighbours(pos, torch.diag(torch.tensor([5.0, 5.0, 1e-9], device=device)), (True, True, True), 5.0)
    # a nearly zero periodic axis in a mixed cell: the pair estimate (which now sees the positions of partly
    # periodic cells too) refuses it before the bin-offset count would
    with pytest.raises(ValueError, match=r"neighbour pairs within rcut = 5 Å, more than the limit"):
        cell_list_neighbours(pos, torch.diag(torch.tensor([1e-9, 5.0, 5.0], device=device)), (True, False, False), 5.0)
