"""``torchace.structures.neighbours.tiled``: the supercell list built from the base cell's list is the list of
the supercell, edge for edge."""
import numpy as np
import torch

from torchace.structures.neighbours.pairs import neighbour_list
from torchace.structures.neighbours.tiled import tiled_neighbours
from torchace.testing import rattled_bulk


def test_tiled_neighbour_list_is_exact():
    base = rattled_bulk(["Si"], reps=(1, 2, 1), rattle=0.05, seed=3)
    bpos, bcell = base.positions, np.asarray(base.cell)
    pos, cell, (i, j, S) = tiled_neighbours(bpos, bcell, [2, 1, 3], 6.0, torch.device("cpu"))
    ref = neighbour_list(pos.numpy(), cell, (True, True, True), 6.0)
    got = set(zip(i.tolist(), j.tolist(), map(tuple, S.tolist())))
    assert got == set(zip(ref[0].tolist(), ref[1].tolist(), map(tuple, ref[2].tolist())))
    assert len(got) == len(i)  # no edge twice
    assert bool((i[1:] >= i[:-1]).all())
    d = np.linalg.norm(pos.numpy()[j] - pos.numpy()[i] + S.numpy() @ cell, axis=1)
    assert d.max() < 6.0
