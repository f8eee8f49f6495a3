"""The ``triton`` backend: energies, site energies, forces and virials of a linear ACE model on the GPU.

One step (ACEpotentials.jl paper §II; the algebra of ``ACEModel.analytic_forward`` and of the fused C++
kernel) runs as: edge vectors, sorted by centre atom (a stable argsort and CSR offsets, all on the device) →
per-edge radials R, R' and standard real harmonics Y, ∇S in torch (O(E·(max_n + n_y)), elementwise) →
three Triton kernels for the heavy stages (``triton_kernels``: A pooling, the product DAG with its reverse
sweep, ∂E/∂r per edge) → pair basis and ZBL baseline (``ACEModel.pair_site_terms``) and the force/virial
scatters (``strain.edge_gradient_outputs``) in torch.  Edges beyond rcut (a skin list) are not removed: their
envelopes are exactly zero, and removing them would need a data-dependent shape (a host synchronisation).
With one chunk (the common case) a step has no host synchronisation; systems whose scratch exceeds the
memory budget run in chunks of centre atoms (exact: a site energy depends only on its own edges).

With ``committee=True`` (the calculator's default for a model with a committee) the members' structure
energies come from the same pass (``COMMITTEE_ENERGY``), one extra energy pass over the stored DAG nodes each.
Design rows on this backend are the ``analytic`` torch rows (batched GEMMs: cuBLAS-bound on a GPU).
Not differentiable (inference and rows only).  On CPU tensors the kernels run only under Triton's
interpreter (``TRITON_INTERPRET=1`` set before Triton is imported): that is how CI checks them.
"""
from __future__ import annotations

import importlib
import os
import time
from typing import Dict, Optional

import torch
from torch import nn

from ...structures.geometry import edge_vectors
from ..strain import edge_gradient_outputs
from ..watch import Derived
from ... import keys as K
from .fused import COMMITTEE_ENERGY
from .products import cached_dag, cached_pairs, node_coefficients, product_coefficients

INTERPRET_ENV = "TRITON_INTERPRET"
# default scratch budget on CPU (interpreter) and fraction of free memory on CUDA per call
CPU_BUDGET = 256 * 2**20
CUDA_FRACTION = 0.4
# product-DAG kernels: "levels" (tiles of independent nodes × atoms, one launch per level; the default) or
# "lanes" (one atom per lane, the nodes in sequence: fewer launches, no parallelism across nodes)
# "pairs" (the coupled-pair scheme of torchace/basis/recoupling.py, one atom per lane; linear models whose basis it
# covers: orders ≤ 4): not the default, no GPU has timed it yet
DAG_VARIANTS = ("levels", "lanes", "pairs")


def interpreter_on() -> bool:
    return os.environ.get(INTERPRET_ENV, "0") not in ("", "0")


def triton_error() -> Optional[str]:
    """None if Triton imports, else why not."""
    try:
        importlib.import_module("triton")
    except Exception as exc:  # noqa: BLE001 — any import failure means: no Triton here
        return f"Triton is not importable ({type(exc).__name__}: {exc}); CUDA builds of torch include it"
    return None


def unavailable(device: torch.device) -> Optional[str]:
    """None if the Triton kernels can run on ``device``, else the reason."""
    if device.type == "cpu":
        if not interpreter_on():
            return ("a GPU backend: on CPU tensors its kernels run only under Triton's interpreter "
                    f"({INTERPRET_ENV}=1, for tests)")
    elif device.type != "cuda":
        return f"Triton kernels run on CUDA devices, not {device.type}"
    why = triton_error()
    if why is None and device.type == "cpu":
        import triton.language as tl

        if type(tl.sum).__name__ != "InterpretedFunction":  # Triton read the variable at its import
            why = f"{INTERPRET_ENV}=1 was set after Triton was imported (set it before starting Python)"
    return why


def _kernels():
    return importlib.import_module(".triton_kernels", __package__)


class DagPlan:
    """The product DAG of ``products.product_dag`` (nodes numbered level by level, each node's children
    contiguous) with what the level-parallel kernels need: ``levels`` [(first node, end, most children of a
    node)], and the nodes grouped by their last factor (``by_last``, CSR ``last_start`` [n_a + 1])."""

    def __init__(self, model, device: torch.device):
        parent, last, child_start, self.node_of_aa = cached_dag(model)
        n_a = model.embedding.n_a
        par = parent.tolist()
        depth = [0] * len(par)
        for k in range(1, len(par)):  # parents precede children
            depth[k] = depth[par[k]] + 1
        bounds = torch.cumsum(torch.bincount(torch.tensor(depth)), 0).tolist()
        n_children = child_start[1:] - child_start[:-1]
        self.levels = []
        k0 = 0
        for k1 in bounds:
            self.levels.append((k0, k1, int(n_children[k0:k1].max()) if k1 > k0 else 0))
            k0 = k1
        # nodes below the top level are stored ([n_stored, N] scratch); the top level (all leaves) is not
        self.n_stored = self.levels[-1][0]
        by_last = torch.argsort(last[1:], stable=True) + 1
        last_start = torch.zeros(n_a + 1, dtype=torch.long)
        last_start[1:] = torch.cumsum(torch.bincount(last[1:], minlength=n_a), 0)
        seg = _kernels().SEGMENT
        t = lambda x: x.to(device).contiguous()  # noqa: E731
        # the reverse sweep per level (top-1 … 1): g[p] += Σ_{children c} g[c] A[last[c]], as work items
        self.child_items = [tuple(t(x) for x in _items(torch.arange(k0, k1), child_start[k0:k1],
                                                      child_start[k0 + 1:k1 + 1], seg))
                            for k0, k1, _ in self.levels[1:-1]]
        # ∂E/∂A_a = Σ_{k: last[k] = a} g[k] val[parent[k]]
        self.last_items = tuple(t(x) for x in _items(torch.arange(n_a), last_start[:-1], last_start[1:], seg))
        self.parent, self.last, self.child_start = t(parent), t(last), t(child_start)
        self.by_last, self.identity = t(by_last), t(torch.arange(parent.shape[0]))


def _items(target: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, size: int):
    """Segments [lo, hi) of each target split into work items of at most ``size`` terms: (target, lo, hi)."""
    n = (hi - lo + size - 1) // size  # empty segments give no item
    tgt = torch.repeat_interleave(target, n)
    first = torch.repeat_interleave(lo, n)
    offset = torch.arange(int(n.sum())) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)
    item_lo = first + offset * size
    return tgt, item_lo, torch.minimum(item_lo + size, torch.repeat_interleave(hi, n))


class TritonEvaluator(nn.Module):
    """``ACEModel.forward``'s signature and outputs (eval mode) through the Triton kernels.

    Holds no copy of the model: the constants derived from it (coefficients, committee, DAG plans) are
    rebuilt whenever any of its tensors changed (``torchace.model.watch``: however changed), so a refit, a
    ``.data`` write or a replaced buffer is seen.  ``memory_budget`` (bytes of scratch per
    chunk; None: 40 % of the free device memory on CUDA, 256 MiB on CPU); ``dag``: the product-DAG kernels
    (``DAG_VARIANTS``).  Set ``profile = True`` to accumulate device-synchronised seconds per stage in
    ``timings`` (scripts/benchmarks/bench_gpu.py reports them)."""

    def __init__(self, model, memory_budget: Optional[int] = None, dag: str = "levels", committee: bool = False):
        super().__init__()
        if dag not in DAG_VARIANTS:
            raise ValueError(f"dag must be one of {DAG_VARIANTS}, got {dag!r}")
        self.model = model
        # committee energies from the same pass (levels variant): E_k = E(c̄) + E_lin(c_k − c̄), one extra
        # energy pass over the stored DAG nodes per member; forces and virials stay the mean model's
        self.committee = bool(committee) and dag == "levels"
        if dag == "pairs" and cached_pairs(model) is None:
            raise ValueError("dag='pairs': the coupled-pair scheme does not apply to this basis (order above 4, or a "
                             "block without all its m)")
        self.memory_budget = memory_budget
        self.dag = dag
        self.kernels = _kernels()
        # per (dtype, device) and per device, for the model generation they were built from (_refresh)
        self._consts: Dict[tuple, Dict[str, torch.Tensor]] = {}
        self._committee_consts: Dict[tuple, Optional[tuple]] = {}
        self._plans: Dict[torch.device, DagPlan] = {}
        self._derived = Derived(model, self._rebuild)
        self._refresh = self._derived.refresh
        self._refresh()
        # profile=True: seconds per stage of the last calls (device-synchronised; slows a step, for benchmarks)
        self.profile = False
        self.timings: Dict[str, float] = {}

    def _mark(self, stage: str, device: torch.device, t0: list) -> None:
        if not self.profile:
            return
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - t0[0]
        t0[0] = now

    def _rebuild(self) -> None:
        """Drop every constant derived from the model (one of its tensors changed since they were built)."""
        self._consts.clear()
        self._committee_consts.clear()
        self._plans.clear()
        self.parent, self.last, _, self.node_of_aa = cached_dag(self.model)

    def _constants(self, dtype: torch.dtype, device: torch.device) -> Dict[str, torch.Tensor]:
        hit = self._consts.get((dtype, device))
        if hit is not None:
            return hit
        m = self.model
        emb = m.embedding
        c = m.coefficients.detach()
        n_nodes = self.parent.shape[0]
        f = dict(dtype=dtype, device=device)
        with torch.no_grad():
            w = emb.lm_sign * emb.nl_scale[emb.n_idx, emb.l_idx]
            consts = {
                "c_node": node_coefficients(m, c, self.node_of_aa, n_nodes).to(**f).contiguous(),
                "parent": self.parent.to(device), "last": self.last.to(device),
                "n_idx": emb.n_idx.to(device).contiguous(), "lm": emb.lm_std.to(device).contiguous(),
                "w": w.to(**f).contiguous(), "l": emb.l_std.index_select(0, emb.lm_std.to(emb.l_std.device)).to(**f),
                "E0": m.E0.detach().to(**f),
            }
            if self.dag == "pairs":
                plan = cached_pairs(m)
                n_a = int(emb.n_a)
                pi = plan.pair_index.clone()
                pi[:, 2] += n_a + 1  # absolute rows of Z = [A | 1 | P]
                consts.update(pair_index=pi.to(device).contiguous(), pair_coef=plan.pair_coef.to(**f).contiguous(),
                              terms=plan.terms.to(device).contiguous(), z_size=n_a + 1 + plan.n_p,
                              pair_w=product_coefficients(m, c, "pairs").to(**f).contiguous())
        self._consts[(dtype, device)] = consts
        return consts

    def _members(self, dtype: torch.dtype, device: torch.device):
        """(Δc_node [n, nz, n_nodes], Δc_pair [n, nz, nz, n_pair]) of the committee members relative to the mean
        coefficients, or None without a committee (rebuilt when either changes)."""
        key = (dtype, device)
        if key in self._committee_consts:
            return self._committee_consts[key]
        m = self.model
        comm = getattr(m, "committee", None) if self.committee else None
        members = None
        if comm is not None:
            if comm.dim() != 2 or comm.shape[1] != m.basis_size:
                raise ValueError(f"TritonEvaluator: model.committee must have shape (n_members, {m.basis_size}), "
                                 f"got {tuple(comm.shape)}")
            c = m.coefficients.detach()
            with torch.no_grad():
                dc = comm.detach().to(torch.float64) - c.to(device=comm.device, dtype=torch.float64)
                n = dc.shape[0]
                f = dict(dtype=dtype, device=device)
                c_node = node_coefficients(m, dc, self.node_of_aa, self.parent.shape[0]).to(**f).contiguous()
                c_pair = dc[:, m.n_manybody:].reshape(n, m.nz, m.nz, m.n_pair).to(**f)
            members = (c_node, c_pair)
        self._committee_consts[key] = members
        return members

    def _plan(self, device: torch.device) -> DagPlan:
        plan = self._plans.get(device)
        if plan is None:
            plan = self._plans[device] = DagPlan(self.model, device)
        return plan

    def _budget(self, device: torch.device) -> int:
        if self.memory_budget is not None:
            return int(self.memory_budget)
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            return int(CUDA_FRACTION * free)
        return CPU_BUDGET

    def forward(self, positions: torch.Tensor, species: torch.Tensor, batch: torch.Tensor, edge_index: torch.Tensor,
                unit_shifts: torch.Tensor, cell: torch.Tensor, n_structures: int, compute_forces: bool = True,
                compute_virials: bool = True) -> Dict[str, torch.Tensor]:
        m = self.model
        dtype, device = positions.dtype, positions.device
        n_atoms = species.shape[0]
        need_grad = bool(compute_forces or compute_virials)
        self._refresh()
        k = self._constants(dtype, device)
        members = self._members(dtype, device)
        with torch.no_grad():
            t0 = [time.perf_counter()]
            positions = positions.detach()
            vectors = edge_vectors(positions, edge_index, unit_shifts.to(dtype), cell.to(dtype), batch)
            order = torch.argsort(edge_index[0], stable=True)
            vectors = vectors.index_select(0, order)
            edge_index = edge_index.index_select(1, order)
            start = torch.zeros(n_atoms + 1, dtype=torch.long, device=device)
            start[1:] = torch.cumsum(torch.bincount(edge_index[0], minlength=n_atoms), 0)
            n_edges = vectors.shape[0]
            emb = m.embedding
            per_edge = (2 * emb.radials.max_n + 4 * emb.n_y + 16) * vectors.element_size()
            stored = (k["z_size"] if self.dag == "pairs" else self.parent.shape[0] if self.dag == "lanes"
                      else self._plan(device).n_stored)
            per_atom = (2 * stored + 2 * emb.n_a + 4) * vectors.element_size()
            need = n_atoms * per_atom + n_edges * per_edge
            n_chunks = max(1, -(-need // max(1, self._budget(device))))
            self._mark("edge vectors + sort", device, t0)
            if n_chunks == 1:
                e, g_vec, de = self._site_terms(vectors, edge_index, species, start, 0, need_grad, k, members)
            else:
                e = torch.empty(n_atoms, dtype=dtype, device=device)
                g_vec = torch.empty((3, n_edges), dtype=dtype, device=device)
                de = None if members is None else torch.empty((members[0].shape[0], n_atoms), dtype=dtype,
                                                               device=device)
                bounds = start.cpu()  # the one host synchronisation of a chunked call
                step = -(-n_atoms // n_chunks)
                for a0 in range(0, n_atoms, step):
                    a1 = min(a0 + step, n_atoms)
                    s0, s1 = int(bounds[a0]), int(bounds[a1])
                    e_c, g_c, de_c = self._site_terms(vectors[s0:s1], edge_index[:, s0:s1], species,
                                                      start[a0:a1 + 1] - s0, a0, need_grad, k, members)
                    e[a0:a1] = e_c
                    g_vec[:, s0:s1] = g_c
                    if de is not None:
                        de[:, a0:a1] = de_c
            t0 = [time.perf_counter()]
            out = edge_gradient_outputs(e, g_vec, vectors, edge_index, positions, batch, n_structures,
                                        compute_forces, compute_virials)
            if de is not None:  # members' structure energies: the mean's plus their site-energy differences
                out[COMMITTEE_ENERGY] = out[K.ENERGY] + torch.zeros(
                    (de.shape[0], n_structures), dtype=dtype, device=device).index_add_(1, batch, de)
            self._mark("force/virial scatter (torch)", device, t0)
            return out

    def _site_terms(self, vectors, edge_index, species, start, a0: int, need_grad: bool, k, members=None):
        """Site energies of atoms a0 … a0 + len(start) - 2, ∂E/∂r [3, E] of their edges (``vectors``) and, with
        ``members``, the members' site-energy differences from the mean [n_members, n] (else None)."""
        m = self.model
        emb = m.embedding
        kern = self.kernels
        n = start.shape[0] - 1
        dev = vectors.device
        t0 = [time.perf_counter()]
        i_local = edge_index[0] - a0
        zi, zj = species.index_select(0, edge_index[0]), species.index_select(0, edge_index[1])
        sp = species[a0:a0 + n]
        r = torch.linalg.norm(vectors, dim=-1)
        u = (vectors / r.clamp_min(1e-300).unsqueeze(-1)).t().contiguous()
        R, dR = emb.radials.with_grad(r, zi, zj)  # [max_n, E], species-masked
        R, dR = R.contiguous(), dR.contiguous()
        Y = emb.sph(vectors, False)[0].contiguous()  # [n_y, E], standard real harmonics
        self._mark("edge features (torch)", dev, t0)
        A = kern.pool_atomic_basis(R, Y, k["n_idx"], k["lm"], k["w"], start, n)
        self._mark("A pooling", dev, t0)
        de = None
        if self.dag == "levels":
            plan = self._plan(A.device)
            e_mb, gA, val = kern.product_dag_levels(A, plan, k["c_node"], sp.contiguous(), need_grad)
            if members is not None:
                de = torch.stack([kern.dag_energy(val, A, plan, c, sp.contiguous()) for c in members[0]])
                if m.n_pair > 0 and r.shape[0] > 0:
                    V = m.pair.with_grad(r, zi, zj)[0]  # [n_pair, E]
                    pair = (V.unsqueeze(0) * members[1][:, zi, zj].transpose(1, 2)).sum(1)  # [n_members, E]
                    de = de.index_add_(1, i_local, pair)
        elif self.dag == "pairs":
            e_mb, gA = kern.coupled_pairs(A, k["pair_index"], k["pair_coef"], k["terms"], k["z_size"], k["pair_w"],
                                          sp.contiguous(), need_grad)
        else:
            e_mb, gA, _ = kern.product_dag(A, k["parent"], k["last"], k["c_node"], sp.contiguous(), need_grad)
        e = k["E0"].index_select(0, sp) + e_mb
        self._mark("product DAG", dev, t0)
        if need_grad:
            DY = emb.solid_gradients(Y).contiguous()
            g_vec = kern.edge_gradients(gA, i_local.contiguous(), R, dR, Y, DY, u, r.contiguous(), k["n_idx"], k["lm"],
                                        k["w"], k["l"])
        else:
            g_vec = torch.zeros((3, r.shape[0]), dtype=r.dtype, device=r.device)
        self._mark("dE/dr per edge", dev, t0)
        e_p, g_p = m.pair_site_terms(r, u, i_local, zi, zj, n, need_grad)
        self._mark("pair + ZBL (torch)", dev, t0)
        return e + e_p, g_vec + g_p, de
