"""Neighbour list vs brute force over lattice images: triclinic, small cells, mixed boundaries."""
import itertools

import numpy as np
import pytest

from torchace.structures.neighbours.pairs import (_vesin, ase_neighbour_list, dense_neighbour_list, neighbour_list,
                                            vesin_neighbour_list)


def brute_force(pos, cell, pbc, rcut, margin=1):
    inv_h = [np.linalg.norm(np.cross(cell[(a + 1) % 3], cell[(a + 2) % 3])) for a in range(3)]
    reps = []
    for a in range(3):
        if pbc[a]:
            h = abs(np.linalg.det(cell)) / inv_h[a]  # interplanar spacing
            reps.append(range(-int(np.ceil(rcut / h)) - margin, int(np.ceil(rcut / h)) + margin + 1))
        else:
            reps.append([0])
    out = set()
    for S in itertools.product(*reps):
        shift = np.array(S) @ cell
        d = pos[None, :, :] + shift - pos[:, None, :]
        r = np.linalg.norm(d, axis=-1)
        for i, j in zip(*np.nonzero(r < rcut)):
            if i == j and S == (0, 0, 0):
                continue
            out.add((int(i), int(j), S))
    return out


@pytest.mark.parametrize("impl", [neighbour_list, ase_neighbour_list, dense_neighbour_list, vesin_neighbour_list])
@pytest.mark.parametrize("case", range(7))
def test_neighbour_list_matches_brute_force(case, impl):
    rng = np.random.default_rng(case)
    n = [1, 2, 5, 9, 4, 6, 5][case]
    cell = np.eye(3) * rng.uniform(2.0, 4.0) + rng.uniform(-0.8, 0.8, (3, 3))  # triclinic, smaller than rcut
    pbc = [(True, True, True), (True, True, True), (True, False, True), (False, False, False),
           (True, True, False), (True, True, True), (True, True, True)][case]
    if impl in (dense_neighbour_list, vesin_neighbour_list) and not (all(pbc) or not any(pbc)):
        pytest.skip("the dense and vesin lists handle fully periodic or fully open structures")
    if impl is vesin_neighbour_list and _vesin() is None:
        pytest.skip("vesin (optional accelerator) not installed")
    # case 6: unwrapped positions far outside the cell
    pos = rng.uniform(0, 1, (n, 3)) @ cell + (rng.integers(-3, 4, (n, 3)) @ cell if case == 6 else 0)
    rcut = 5.5
    i, j, S = impl(pos, cell, pbc, rcut)
    got = {(int(a), int(b), tuple(int(x) for x in s)) for a, b, s in zip(i, j, S)}
    assert len(got) == len(i)  # no duplicates
    ref = brute_force(pos, cell, np.array(pbc), rcut, margin=8 if case == 6 else 1)
    assert got == ref
    if case == 0:
        assert any(a == b for a, b, _ in got)  # an atom sees its own images in a small cell


@pytest.mark.parametrize("periodic", [True, False])
def test_vesin_equals_ase_on_large_structures(periodic):
    if _vesin() is None:
        pytest.skip("vesin (optional accelerator) not installed")
    from ase.build import bulk

    at = bulk("Si", "diamond", 5.43, cubic=True) * (4, 3, 3)
    at.rattle(0.1, seed=3)
    cell = at.cell.array @ np.array([[1.0, 0.1, 0.0], [0.0, 1.0, 0.05], [0.0, 0.0, 1.0]])
    pos = at.positions
    pbc = np.array([periodic] * 3)
    sets = []
    for fn in (vesin_neighbour_list, ase_neighbour_list):
        i, j, S = fn(pos, cell, pbc, 6.0)
        assert np.all(np.diff(i) >= 0)  # sorted by centre
        sets.append({(int(a), int(b), tuple(int(x) for x in s)) for a, b, s in zip(i, j, S)})
    assert sets[0] == sets[1] and len(sets[0]) > 10 * len(pos)
