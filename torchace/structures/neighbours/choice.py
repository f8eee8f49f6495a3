"""Which neighbour search builds a list: the one rule, written once, for every engine and for collate.

The searches (all give the same set of pairs (i, j, S), |x_j − x_i + S·cell| < cutoff):

- ``dense``: all atom pairs × all lattice images that can be within the cutoff, vectorised in torch
  (``pairs.dense_neighbour_list``); its cost grows as candidates = n_atoms² × images.
- ``batched``: the same all-pairs search over many systems at once, on their device (``batched``).
- ``vesin``: vesin's C++ cell list on the host (optional: the ``fast``/``dev`` extras); periodic along all
  three axes or none.
- ``ase``: ASE's binned list (any boundaries; Python-heavy).
- ``cell_list``: the binned list in torch on the device of the positions (``cell_list``).

The rule, from the timings of ``scripts/benchmarks/bench_neighbours.py`` (CPU, one thread; docs/performance.md,
"Neighbour lists"): on a GPU the device cell list (no host round trip).  On the CPU vesin wherever it is
installed and the boundaries allow (0.2-0.9 ms for 60-216 atoms, 85 ms for 8,000, against 46 ms for the dense
path on 64 periodic atoms and 3.4 s for ASE's on 8,000); without it the dense path while candidates ≤
``DENSE_MAX_PAIRS`` (C60: 0.24 ms against the cell list's 1.8 ms), then the torch cell list (5.8 ms for 64
periodic atoms, 191 ms for 8,000), and ASE's list for mixed boundaries.  A host caller that cannot use the torch
cell list (``pairs.neighbour_list``, which the cell list itself imports) keeps the dense path up to
``DENSE_MAX_PAIRS_HOST`` (where it stops beating ASE's).  Many systems at once: those with candidates ≤
``BATCHED_MAX_CANDIDATES`` in one batched search, the others one by one by this rule.  Without vesin every
case still has a search: ``vesin`` is only ever chosen when it is importable.
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch

# the dense path while atoms² × images stays below this (beyond it the cell list is faster: 46k candidates
# 1.6 ms against 5.9 ms, 512k candidates 46 ms against 5.8 ms)
DENSE_MAX_PAIRS = 50_000
# ... or below this where the alternative is ASE's list (216 periodic Si atoms, 5.8M candidates: 530 ms against 250)
DENSE_MAX_PAIRS_HOST = 2_000_000
# many systems (TorchSim): a system with atoms² × images at or below this joins the batched all-pairs search
# (up to ~50 atoms of Si at 5.5 Å); larger ones are searched one by one
BATCHED_MAX_CANDIDATES = 2 ** 16

DENSE, BATCHED, VESIN, ASE, CELL_LIST = "dense", "batched", "vesin", "ase", "cell_list"


@functools.lru_cache(maxsize=None)
def have_vesin() -> bool:
    """Whether vesin (an optional extra) can be imported (asked once per process)."""
    try:
        import vesin  # noqa: F401
    except ImportError:
        return False
    return True


def search_for(candidates: int, pbc: Sequence[bool], device, vesin: bool, cell_list: bool = True) -> str:
    """The search of one structure (module docstring): ``candidates`` = atoms² × images of the dense path,
    ``vesin``: whether it is installed, ``cell_list``: whether the caller can use the torch cell list."""
    if cell_list and torch.device(device).type == "cuda":
        return CELL_LIST
    uniform = all(pbc) or not any(pbc)  # vesin and the dense path: periodic along all axes or none
    if uniform and vesin:
        return VESIN
    if uniform and candidates <= (DENSE_MAX_PAIRS if cell_list else DENSE_MAX_PAIRS_HOST):
        return DENSE
    return CELL_LIST if uniform and cell_list else ASE


def joins_batch(candidates: int) -> bool:
    """Whether a system of a batch goes into the one batched all-pairs search (else searched alone)."""
    return candidates <= BATCHED_MAX_CANDIDATES
