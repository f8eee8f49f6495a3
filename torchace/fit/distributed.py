"""Distributed assembly of the reduced least-squares system over ``torch.distributed`` ranks.

Every rank reads the same data set; the fitting structures are sharded deterministically by a greedy
atom-count balance (:func:`shard`), each rank assembles its reduced system with
:func:`torchace.fit.assembly.assemble_reduced`, and the reductions are combined:

* ``method="normal"``: ``all_reduce(SUM)`` of AᵀA, Aᵀy, yᵀy and n_obs (cheap, exact up to the order of
  the float64 sums; the normal equations square the condition number — see docs/reliability.md);
* ``method="qr"``: every rank's (k+1)×(k+1) triangular factor of [A | y] is gathered (``all_gather``) and
  the stack of factors is QR-factorised again (a one-level TSQR): the result is the R factor of the whole
  [A | y] up to the signs of its rows, so every solver gives the single-process coefficients to rounding.

All ranks return the same :class:`~torchace.fit.assembly.LinearSystem` (the final k×k work is repeated on each
rank, it is small).  Use gloo on CPU and nccl on GPU (model on ``cuda:LOCAL_RANK``); launch with
``torchrun`` (``scripts/tools/assemble_distributed.py``).  Without an initialised process group this falls back
to a single-process ``assemble_reduced``.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch

from .assembly import LinearSystem, assemble_reduced, fitting_structures
from .data import Dataset, read_data
from .weights import resolve_weights


def shard(n_atoms: Sequence[int], world_size: int) -> List[List[int]]:
    """Deterministic greedy balance: structure indices per rank, each list in the original order.

    Structures are taken largest first (ties: lower index first) and given to the rank with the fewest
    atoms so far (ties: lower rank); depends only on the atom counts and ``world_size``.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    load = [0] * world_size
    parts: List[List[int]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(n_atoms)), key=lambda j: (-int(n_atoms[j]), j)):
        r = min(range(world_size), key=lambda q: (load[q], q))
        parts[r].append(i)
        load[r] += int(n_atoms[i])
    return [sorted(p) for p in parts]


def _empty_state(method: str, k: int, dev) -> Dict[str, torch.Tensor]:
    f64 = dict(dtype=torch.float64, device=dev)
    st = {"n_batches": torch.tensor(0), "n_obs": torch.tensor(0)}
    if method == "qr":
        st["T"] = torch.zeros(0, k + 1, **f64)
    else:
        st.update(AtA=torch.zeros(k, k, **f64), Aty=torch.zeros(k, **f64), yty=torch.zeros((), **f64))
    return st


def local_state(model, ds: Dataset, weights, *, method: str, batch_atoms: int, device=None,
                memory_budget: int = 256 * 2**20, progress: bool = False) -> Dict[str, torch.Tensor]:
    """Raw accumulated state (T, or AtA/Aty/yty; n_obs) of ``assemble_reduced`` on ``ds``."""
    dev = torch.device(device) if device is not None else model.coefficients.device
    st = _empty_state(method, model.basis_size, dev)
    if len(ds):
        assemble_reduced(model, ds, weights, method=method, batch_atoms=batch_atoms, device=dev,
                         memory_budget=memory_budget, progress=progress, state=st)  # fills st in place
    return st


def combine_qr(factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """R factor (≤ k+1 rows) of the row stack of triangular factors [A_r | y_r] (zero rows allowed)."""
    M = torch.cat(list(factors))
    if M.shape[0] == 0:
        return M
    R = torch.linalg.qr(M, mode="r")[1]
    return R[: M.shape[1]]


def finish(model, state: Dict[str, torch.Tensor], method: str) -> LinearSystem:
    """The k×k LinearSystem of an accumulated (combined) state, by ``assemble_reduced``'s own reduction."""
    st = dict(state)
    st["n_batches"] = torch.tensor(0)
    dev = (st["T"] if method == "qr" else st["AtA"]).device
    return assemble_reduced(model, Dataset([]), None, method=method, device=dev, state=st)


def _pad_rows(T: torch.Tensor, n: int) -> torch.Tensor:
    if T.shape[0] >= n:
        return T[:n]
    return torch.cat([T, T.new_zeros(n - T.shape[0], T.shape[1])])


def assemble_distributed(model, ds, weights=None, *, method: str = "normal", batch_atoms: int = 2048,
                         device=None, memory_budget: int = 256 * 2**20, progress: bool = False,
                         group=None) -> LinearSystem:
    """Reduced system of all fitting structures of ``ds``, assembled in shards over the process group.

    Collective: every rank of ``group`` must call it with the same model, data, weights and options.
    Returns the same system on every rank.  ``method``: ``"normal"`` (all_reduce of the normal equations)
    or ``"qr"`` (gathered triangular factors, QR of the stack; recommended when accuracy matters).
    """
    import torch.distributed as dist

    if method not in ("qr", "normal"):
        raise ValueError(f"method must be 'qr' or 'normal', got {method!r}")
    ds = read_data(ds, elements=model.elements)
    weights = resolve_weights(weights)
    dev = torch.device(device) if device is not None else model.coefficients.device
    if not (dist.is_available() and dist.is_initialized()):
        return assemble_reduced(model, ds, weights, method=method, batch_atoms=batch_atoms, device=dev,
                                memory_budget=memory_budget, progress=progress)
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    structs = fitting_structures(ds)
    mine = shard([s.n_atoms for s in structs], world)[rank]
    local = Dataset([structs[i] for i in mine])
    st = local_state(model, local, weights, method=method, batch_atoms=batch_atoms, device=dev,
                     memory_budget=memory_budget, progress=progress and rank == 0)
    k = model.basis_size
    n_obs = st["n_obs"].to(device=dev, dtype=torch.int64).reshape(1)
    dist.all_reduce(n_obs, op=dist.ReduceOp.SUM, group=group)
    out = {"n_obs": n_obs.reshape(()).cpu()}
    if method == "normal":
        for key in ("AtA", "Aty", "yty"):
            t = st[key].contiguous()
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
            out[key] = t
    else:
        T = _pad_rows(st["T"], k + 1).contiguous()
        gathered = [torch.empty_like(T) for _ in range(world)]
        dist.all_gather(gathered, T, group=group)
        out["T"] = combine_qr(gathered)
    return finish(model, out, method)
