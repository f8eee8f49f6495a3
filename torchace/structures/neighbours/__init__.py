"""Neighbour lists: all pairs (i, j, S) with |x_j − x_i + S·cell| < rcut, one package for every engine.

``pairs``: the host lists (dense torch, ASE's binned list, vesin) and the pair-count estimates; ``cell_list``:
the binned list on the device of the positions."""
from .cell_list import cell_list_neighbours
from .pairs import (ase_neighbour_list, check_pair_count, dense_neighbour_list, estimate_pairs, neighbour_list,
                    sparse_neighbour_list, vesin_neighbour_list)

__all__ = ["neighbour_list", "dense_neighbour_list", "sparse_neighbour_list", "vesin_neighbour_list",
           "ase_neighbour_list", "cell_list_neighbours", "estimate_pairs", "check_pair_count"]
