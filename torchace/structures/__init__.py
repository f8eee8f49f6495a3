"""Stage 1, structures: validation and collation of ``ase.Atoms`` into flat batch tensors, neighbour lists,
edge vectors r_ij = x_j − x_i + S·cell."""
from .batch import DEFAULT_MIN_DISTANCE, collate, validate
from .geometry import edge_vectors
from .neighbours import cell_list_neighbours, neighbour_list

__all__ = ["DEFAULT_MIN_DISTANCE", "collate", "validate", "edge_vectors", "neighbour_list",
           "cell_list_neighbours"]
