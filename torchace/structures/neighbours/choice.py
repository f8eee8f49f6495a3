"""Which neighbour search builds a list: the one rule, written once, for every engine and for collate.

The searches (all give the same set of pairs (i, j, S), |x_j − x_i + S·cell| < cutoff):

- ``dense``: all atom pairs × all lattice images that can be within the cutoff, vectorised in torch
  (``pairs.dense_neighbour_list``); its cost grows as candidates = n_atoms² × images.
- ``batched``: the same all-pairs search over many systems at once, on their device (``batched``).
- ``vesin``: vesin's C++ cell list on the host (optional: the ``fast``/``dev`` extras); periodic along all
  three axes or none.
- ``ase``: ASE's binned list (any boundaries; Python-heavy).
- ``cell_list``: the binned list in torch on the device of the positions (``cell_list``).

The rule, from the timings of ``scripts/bench_neighbours.py`` (docs/performance.md, "Neighbour lists"):
on the host, ``dense`` while candidates ≤ ``DENSE_MAX_PAIRS``, else vesin where it is installed and the
boundaries allow, else ASE's list; on a GPU the device cell list (no host round trip); many systems at once:
those with candidates ≤ ``BATCHED_MAX_CANDIDATES`` in one batched search, the others one by one.  Without
vesin every rule still has a search: ``vesin`` is only ever chosen when it is importable.
"""
from __future__ import annotations

from typing import Sequence

import torch

# one structure on the host: the dense path while atoms² × images stays below this
DENSE_MAX_PAIRS = 4_000_000
# many systems (TorchSim): a system with atoms² × images at or below this joins the batched all-pairs search
# (up to ~50 atoms of Si at 5.5 Å); larger ones are searched one by one
BATCHED_MAX_CANDIDATES = 2 ** 16

DENSE, BATCHED, VESIN, ASE, CELL_LIST = "dense", "batched", "vesin", "ase", "cell_list"
HOST = "host"  # a host search (dense / vesin / ASE: ``host_search``) copied to the device


def have_vesin() -> bool:
    """Whether vesin (an optional extra) can be imported."""
    try:
        import vesin  # noqa: F401
    except ImportError:
        return False
    return True


def host_search(candidates: int, pbc: Sequence[bool], vesin: bool) -> str:
    """The host search of one structure with ``candidates`` = atoms² × images: ``dense``, ``vesin`` or ``ase``."""
    uniform = all(pbc) or not any(pbc)  # vesin and the dense path: periodic along all axes or none
    if uniform and candidates <= DENSE_MAX_PAIRS:
        return DENSE
    if uniform and vesin:
        return VESIN
    return ASE


def device_search(device: torch.device) -> str:
    """One structure for an engine on ``device``: the device cell list on a GPU, else the host rule."""
    return CELL_LIST if torch.device(device).type == "cuda" else HOST


def joins_batch(candidates: int) -> bool:
    """Whether a system of a batch goes into the one batched all-pairs search (else searched alone)."""
    return candidates <= BATCHED_MAX_CANDIDATES
