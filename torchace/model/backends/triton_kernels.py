"""Triton kernels of the ``triton`` backend: the three O(E·n_a) / O(N·n_nodes) stages of a linear ACE step.

ACEpotentials.jl paper §II; the same algebra as the fused C++ kernel (csrc/ace_cpu.cpp), laid out for a GPU:

* ``pool_atomic_basis``: A[a, i] = w_a Σ_{e ∈ i} R_{n_a}(r_e) Y_{lm_a}(r̂_e), one program per (atom, block of
  a) over the atom's edges (edges sorted by centre, CSR offsets: no atomics, deterministic).
* ``product_dag``: site energies Σ_k c_{z_i,k} AA_k through the shared-prefix product DAG (node k = node
  parent[k] × A[last[k]]) and, by one reverse sweep, ∂E/∂A.  Atoms are the lanes (one program per block of
  atoms); the node loop is sequential with node-uniform (broadcast) index loads, node values and adjoints in
  a feature-major scratch [n_nodes, N] so that every access is coalesced.
* ``edge_gradients``: ∂E/∂r_e = Σ_a g_{a,i(e)} w_a [u (R'_n Y_lm - l R_n Y_lm / r) + R_n ∇S_lm / r] (the
  reduction of ``EdgeEmbedding.vjp``), edges in lanes, blocks of a in registers.

All arrays are feature-major ([features, edges] / [features, atoms]); offsets are int64 (a 1 M-atom chunk
times thousands of nodes exceeds 2³¹).  The kernels take float32 or float64 (the pointer type); on CPU
tensors they run under Triton's interpreter (``TRITON_INTERPRET=1``, tests only).  Importing this module
imports Triton: the backend imports it lazily (triton_backend.py).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit(do_not_specialize=["E", "N", "n_a"])
def _pool_kernel(R_ptr, Y_ptr, n_ptr, lm_ptr, w_ptr, start_ptr, A_ptr, E, N, n_a,
                 BLOCK_A: tl.constexpr, BLOCK_E: tl.constexpr):
    i = tl.program_id(0)
    a = tl.program_id(1) * BLOCK_A + tl.arange(0, BLOCK_A)
    am = a < n_a
    n = tl.load(n_ptr + a, mask=am, other=0).to(tl.int64)
    lm = tl.load(lm_ptr + a, mask=am, other=0).to(tl.int64)
    w = tl.load(w_ptr + a, mask=am, other=0.0)
    s = tl.load(start_ptr + i)
    t = tl.load(start_ptr + i + 1)
    acc = tl.zeros((BLOCK_A,), dtype=w.dtype)
    for e0 in range(s, t, BLOCK_E):
        e = (e0 + tl.arange(0, BLOCK_E)).to(tl.int64)
        m = am[:, None] & (e < t)[None, :]
        r = tl.load(R_ptr + n[:, None] * E + e[None, :], mask=m, other=0.0)
        y = tl.load(Y_ptr + lm[:, None] * E + e[None, :], mask=m, other=0.0)
        acc += tl.sum(r * y, axis=1)
    tl.store(A_ptr + a.to(tl.int64) * N + i, acc * w, mask=am)


@triton.jit(do_not_specialize=["N", "n_nodes"])
def _dag_kernel(A_ptr, parent_ptr, last_ptr, c_ptr, z_ptr, val_ptr, g_ptr, gA_ptr, e_ptr, N, n_nodes,
                NEED_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    lanes = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = lanes < N
    x = lanes.to(tl.int64)
    cbase = tl.load(z_ptr + lanes, mask=mask, other=0).to(tl.int64) * n_nodes
    one = tl.load(A_ptr + x, mask=mask, other=0.0) * 0.0 + 1.0  # node 0: the empty product
    tl.store(val_ptr + x, one, mask=mask)
    energy = one * 0.0
    for k in range(1, n_nodes):
        p = tl.load(parent_ptr + k).to(tl.int64)
        a = tl.load(last_ptr + k).to(tl.int64)
        v = tl.load(val_ptr + p * N + x, mask=mask, other=0.0) * tl.load(A_ptr + a * N + x, mask=mask, other=0.0)
        tl.store(val_ptr + k * N + x, v, mask=mask)
        c = tl.load(c_ptr + cbase + k, mask=mask, other=0.0)
        energy += c * v
        if NEED_GRAD:
            tl.store(g_ptr + k * N + x, c, mask=mask)
    tl.store(e_ptr + x, energy, mask=mask)
    if NEED_GRAD:
        # reverse sweep: children come after their parents, so g[k] is complete when k is reached
        for t in range(1, n_nodes):
            k = n_nodes - t
            p = tl.load(parent_ptr + k).to(tl.int64)
            a = tl.load(last_ptr + k).to(tl.int64)
            gk = tl.load(g_ptr + k * N + x, mask=mask, other=0.0)
            vp = tl.load(val_ptr + p * N + x, mask=mask, other=0.0)
            Aa = tl.load(A_ptr + a * N + x, mask=mask, other=0.0)
            ga = tl.load(gA_ptr + a * N + x, mask=mask, other=0.0)
            tl.store(gA_ptr + a * N + x, ga + gk * vp, mask=mask)
            gp = tl.load(g_ptr + p * N + x, mask=mask, other=0.0)
            tl.store(g_ptr + p * N + x, gp + gk * Aa, mask=mask)


@triton.jit(do_not_specialize=["E", "N", "n_a", "n_y"])
def _edge_grad_kernel(gA_ptr, i_ptr, R_ptr, dR_ptr, Y_ptr, DY_ptr, u_ptr, r_ptr, n_ptr, lm_ptr, w_ptr, l_ptr,
                      out_ptr, E, N, n_a, n_y, BLOCK_A: tl.constexpr, BLOCK_E: tl.constexpr):
    e = (tl.program_id(0) * BLOCK_E + tl.arange(0, BLOCK_E)).to(tl.int64)
    em = e < E
    i = tl.load(i_ptr + e, mask=em, other=0).to(tl.int64)
    r = tl.load(r_ptr + e, mask=em, other=1.0)
    rinv = 1.0 / tl.maximum(r, 1e-30)
    su = r * 0.0
    sx = su
    sy = su
    sz = su
    for a0 in range(0, n_a, BLOCK_A):
        a = a0 + tl.arange(0, BLOCK_A)
        am = a < n_a
        n = tl.load(n_ptr + a, mask=am, other=0).to(tl.int64)
        lm = tl.load(lm_ptr + a, mask=am, other=0).to(tl.int64)
        w = tl.load(w_ptr + a, mask=am, other=0.0)
        la = tl.load(l_ptr + a, mask=am, other=0.0)
        m = am[:, None] & em[None, :]
        g = tl.load(gA_ptr + a.to(tl.int64)[:, None] * N + i[None, :], mask=m, other=0.0) * w[:, None]
        Rv = tl.load(R_ptr + n[:, None] * E + e[None, :], mask=m, other=0.0)
        dRv = tl.load(dR_ptr + n[:, None] * E + e[None, :], mask=m, other=0.0)
        Yv = tl.load(Y_ptr + lm[:, None] * E + e[None, :], mask=m, other=0.0)
        su += tl.sum(g * Yv * (dRv - la[:, None] * Rv * rinv[None, :]), axis=0)
        gR = g * Rv
        dy = DY_ptr + lm[:, None] * E + e[None, :]
        sx += tl.sum(gR * tl.load(dy, mask=m, other=0.0), axis=0)
        sy += tl.sum(gR * tl.load(dy + n_y * E, mask=m, other=0.0), axis=0)
        sz += tl.sum(gR * tl.load(dy + 2 * n_y * E, mask=m, other=0.0), axis=0)
    ux = tl.load(u_ptr + e, mask=em, other=0.0)
    uy = tl.load(u_ptr + E + e, mask=em, other=0.0)
    uz = tl.load(u_ptr + 2 * E + e, mask=em, other=0.0)
    tl.store(out_ptr + e, ux * su + sx * rinv, mask=em)
    tl.store(out_ptr + E + e, uy * su + sy * rinv, mask=em)
    tl.store(out_ptr + 2 * E + e, uz * su + sz * rinv, mask=em)


def _block(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))


def pool_atomic_basis(R: torch.Tensor, Y: torch.Tensor, n_idx: torch.Tensor, lm_idx: torch.Tensor, w: torch.Tensor,
                      start: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """A [n_a, N] from R [max_n, E], Y [n_y, E] (edges sorted by centre; atom i owns [start[i], start[i+1]))."""
    n_a = n_idx.shape[0]
    A = torch.empty((n_a, n_atoms), dtype=R.dtype, device=R.device)
    if n_atoms == 0 or n_a == 0:
        return A.zero_()
    block_a = _block(n_a, 16, 64)
    _pool_kernel[(n_atoms, triton.cdiv(n_a, block_a))](R, Y, n_idx, lm_idx, w, start, A, R.shape[1], n_atoms, n_a,
                                                      BLOCK_A=block_a, BLOCK_E=32)
    return A


@triton.jit(do_not_specialize=["N", "n_cg", "n_terms"])
def _pairs_kernel(Z_ptr, pi_ptr, pc_ptr, tt_ptr, w_ptr, z_ptr, gZ_ptr, e_ptr, N, n_cg, n_terms,
                  NEED_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    # the coupled-pair scheme (torchace/basis/recoupling.py), one atom per lane: Z [z_size, N] = [A | 1 | 0]
    lanes = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = lanes < N
    x = lanes.to(tl.int64)
    wbase = tl.load(z_ptr + lanes, mask=mask, other=0).to(tl.int64) * n_terms
    for k in range(n_cg):  # pair values P[slot] += c A[a1] A[a2]
        a1 = tl.load(pi_ptr + 3 * k).to(tl.int64)
        a2 = tl.load(pi_ptr + 3 * k + 1).to(tl.int64)
        sl = tl.load(pi_ptr + 3 * k + 2).to(tl.int64)
        c = tl.load(pc_ptr + k)
        v = tl.load(Z_ptr + a1 * N + x, mask=mask, other=0.0) * tl.load(Z_ptr + a2 * N + x, mask=mask, other=0.0)
        old = tl.load(Z_ptr + sl * N + x, mask=mask, other=0.0)
        tl.store(Z_ptr + sl * N + x, old + c * v, mask=mask)
    energy = tl.load(Z_ptr + x, mask=mask, other=0.0) * 0.0
    for t in range(n_terms):  # E = Σ_t w_t Σ_j Z[x_t + j] Z[y_t + j]
        x0 = tl.load(tt_ptr + 3 * t).to(tl.int64)
        y0 = tl.load(tt_ptr + 3 * t + 1).to(tl.int64)
        ln = tl.load(tt_ptr + 3 * t + 2)
        w = tl.load(w_ptr + wbase + t, mask=mask, other=0.0)
        for j in range(ln):
            zx = tl.load(Z_ptr + (x0 + j) * N + x, mask=mask, other=0.0)
            zy = tl.load(Z_ptr + (y0 + j) * N + x, mask=mask, other=0.0)
            energy += w * zx * zy
            if NEED_GRAD:
                gx = tl.load(gZ_ptr + (x0 + j) * N + x, mask=mask, other=0.0)
                tl.store(gZ_ptr + (x0 + j) * N + x, gx + w * zy, mask=mask)
                gy = tl.load(gZ_ptr + (y0 + j) * N + x, mask=mask, other=0.0)
                tl.store(gZ_ptr + (y0 + j) * N + x, gy + w * zx, mask=mask)
    tl.store(e_ptr + x, energy, mask=mask)
    if NEED_GRAD:
        for q in range(n_cg):  # the pair values' reverse sweep (they depend on A only: any order)
            k = n_cg - 1 - q
            a1 = tl.load(pi_ptr + 3 * k).to(tl.int64)
            a2 = tl.load(pi_ptr + 3 * k + 1).to(tl.int64)
            sl = tl.load(pi_ptr + 3 * k + 2).to(tl.int64)
            g = tl.load(gZ_ptr + sl * N + x, mask=mask, other=0.0) * tl.load(pc_ptr + k)
            z1 = tl.load(Z_ptr + a1 * N + x, mask=mask, other=0.0)
            z2 = tl.load(Z_ptr + a2 * N + x, mask=mask, other=0.0)
            g1 = tl.load(gZ_ptr + a1 * N + x, mask=mask, other=0.0)
            tl.store(gZ_ptr + a1 * N + x, g1 + g * z2, mask=mask)
            g2 = tl.load(gZ_ptr + a2 * N + x, mask=mask, other=0.0)
            tl.store(gZ_ptr + a2 * N + x, g2 + g * z1, mask=mask)


def coupled_pairs(A: torch.Tensor, pair_index: torch.Tensor, pair_coef: torch.Tensor, terms: torch.Tensor,
                  z_size: int, weights: torch.Tensor, species: torch.Tensor, need_grad: bool):
    """(Σ_t w_t S_t per atom [N], ∂E/∂A [n_a, N] or None) from A [n_a, N] through the coupled pairs
    (``recoupling.CoupledPairs``; ``pair_index`` slots are absolute rows of Z = [A | 1 | P], weights [nz, n_terms])."""
    n_a, n = A.shape
    Z = torch.zeros((z_size, n), dtype=A.dtype, device=A.device)
    Z[:n_a] = A
    Z[n_a] = 1.0
    gZ = torch.zeros_like(Z) if need_grad else Z
    e = torch.empty(n, dtype=A.dtype, device=A.device)
    if n == 0:
        return e, (gZ[:n_a] if need_grad else None)
    block = 64 if A.is_cuda else _block(n, 16, 1024)
    _pairs_kernel[(triton.cdiv(n, block),)](Z, pair_index, pair_coef, terms, weights, species, gZ, e, n,
                                            pair_index.shape[0], terms.shape[0], NEED_GRAD=bool(need_grad),
                                            BLOCK=block)
    return e, (gZ[:n_a].contiguous() if need_grad else None)


def product_dag(A: torch.Tensor, parent: torch.Tensor, last: torch.Tensor, c_node: torch.Tensor,
                species: torch.Tensor, need_grad: bool):
    """(Σ_k c_k AA_k per atom [N], ∂E/∂A [n_a, N] or None, node values [n_nodes, N]) from A [n_a, N]."""
    n_a, n = A.shape
    n_nodes = parent.shape[0]
    e = torch.empty(n, dtype=A.dtype, device=A.device)
    val = torch.empty((n_nodes, n), dtype=A.dtype, device=A.device)
    g = torch.empty((n_nodes, n), dtype=A.dtype, device=A.device) if need_grad else val
    gA = torch.zeros((n_a, n), dtype=A.dtype, device=A.device) if need_grad else A
    if n == 0:
        return e, (gA if need_grad else None), val
    block = 64 if A.is_cuda else _block(n, 16, 1024)
    _dag_kernel[(triton.cdiv(n, block),)](A, parent, last, c_node, species, val, g, gA, e, n, n_nodes,
                                          NEED_GRAD=bool(need_grad), BLOCK=block)
    return e, (gA if need_grad else None), val


def edge_gradients(gA: torch.Tensor, i: torch.Tensor, R: torch.Tensor, dR: torch.Tensor, Y: torch.Tensor,
                   DY: torch.Tensor, u: torch.Tensor, r: torch.Tensor, n_idx: torch.Tensor, lm_idx: torch.Tensor,
                   w: torch.Tensor, l_of_a: torch.Tensor) -> torch.Tensor:
    """∂E/∂r_e [3, E] from ∂E/∂A [n_a, N] and the edge features (``i``: centre of each edge, local to gA)."""
    n_e = R.shape[1]
    out = torch.empty((3, n_e), dtype=R.dtype, device=R.device)
    n_a = n_idx.shape[0]
    if n_e == 0:
        return out
    if n_a == 0:
        return out.zero_()
    block_e = 32 if R.is_cuda else _block(n_e, 16, 512)
    block_a = _block(n_a, 16, 32 if R.is_cuda else 256)
    _edge_grad_kernel[(triton.cdiv(n_e, block_e),)](gA, i, R, dR, Y, DY, u, r, n_idx, lm_idx, w, l_of_a, out, n_e,
                                                     gA.shape[1], n_a, Y.shape[0], BLOCK_A=block_a, BLOCK_E=block_e)
    return out


# ---- the product DAG level by level: nodes of one level are independent, so tiles [nodes × atoms] ----

@triton.jit(do_not_specialize=["N", "k0", "k1"])
def _level_forward_kernel(A_ptr, parent_ptr, last_ptr, val_ptr, N, k0, k1,
                          BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    # atom blocks on grid axis 0 (axes 1 and 2 are limited to 65,535 programs)
    x = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    k = k0 + tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    km = k < k1
    m = km[:, None] & (x < N)[None, :]
    p = tl.load(parent_ptr + k, mask=km, other=0).to(tl.int64)
    a = tl.load(last_ptr + k, mask=km, other=0).to(tl.int64)
    v = (tl.load(val_ptr + p[:, None] * N + x[None, :], mask=m, other=0.0)
         * tl.load(A_ptr + a[:, None] * N + x[None, :], mask=m, other=0.0))
    tl.store(val_ptr + k.to(tl.int64)[:, None] * N + x[None, :], v, mask=m)


@triton.jit(do_not_specialize=["N", "n_nodes", "S"])
def _dag_energy_kernel(val_ptr, A_ptr, parent_ptr, last_ptr, c_ptr, z_ptr, e_ptr, N, n_nodes, S,
                       BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    # Σ_k c_{z,k} AA_k: stored nodes 1 … S-1 from val, top-level nodes S … n_nodes-1 as val[parent]·A[last]
    x = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    xm = x < N
    cbase = tl.load(z_ptr + x, mask=xm, other=0).to(tl.int64) * n_nodes
    acc = tl.zeros((BLOCK_N,), dtype=tl.float64)  # float64 sums also for float32 inputs (cheap, per atom)
    for k0 in range(1, S, BLOCK_K):
        k = (k0 + tl.arange(0, BLOCK_K)).to(tl.int64)
        m = (k < S)[:, None] & xm[None, :]
        c = tl.load(c_ptr + cbase[None, :] + k[:, None], mask=m, other=0.0)
        acc += tl.sum((c * tl.load(val_ptr + k[:, None] * N + x[None, :], mask=m, other=0.0)).to(tl.float64), axis=0)
    for k0 in range(S, n_nodes, BLOCK_K):
        k = (k0 + tl.arange(0, BLOCK_K)).to(tl.int64)
        km = k < n_nodes
        m = km[:, None] & xm[None, :]
        p = tl.load(parent_ptr + k, mask=km, other=0).to(tl.int64)
        a = tl.load(last_ptr + k, mask=km, other=0).to(tl.int64)
        c = tl.load(c_ptr + cbase[None, :] + k[:, None], mask=m, other=0.0)
        v = (tl.load(val_ptr + p[:, None] * N + x[None, :], mask=m, other=0.0)
             * tl.load(A_ptr + a[:, None] * N + x[None, :], mask=m, other=0.0))
        acc += tl.sum((c * v).to(tl.float64), axis=0)
    tl.store(e_ptr + x, acc.to(e_ptr.dtype.element_ty), mask=xm)


@triton.jit(do_not_specialize=["N", "n_nodes", "S", "n_items"])
def _segment_kernel(node_ptr, factor_idx_ptr, F_ptr, tgt_ptr, lo_ptr, hi_ptr, g_ptr, c_ptr, z_ptr, out_ptr,
                    N, n_nodes, S, n_items, CH: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_N: tl.constexpr):
    # out[tgt] += Σ_{q ∈ [lo, hi)} g[k_q] F[f(k_q)], k_q = node[q], for balanced items of ≤ CH terms; g of a
    # top-level node (k ≥ S, not stored) is its coefficient c_{z,k}.  Items of one target add atomically.
    x = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    it = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    im = it < n_items
    xm = (x < N)[None, :]
    cbase = tl.load(z_ptr + x, mask=x < N, other=0).to(tl.int64) * n_nodes
    lo = tl.load(lo_ptr + it, mask=im, other=0)
    hi = tl.load(hi_ptr + it, mask=im, other=0)
    acc = tl.zeros((BLOCK_I, BLOCK_N), dtype=g_ptr.dtype.element_ty)
    for t in range(0, CH):
        q = lo + t
        qm = im & (q < hi)
        k = tl.load(node_ptr + q, mask=qm, other=0).to(tl.int64)
        f = tl.load(factor_idx_ptr + k, mask=qm, other=0).to(tl.int64)
        m = qm[:, None] & xm
        stored = m & (k < S)[:, None]
        top = m & (k >= S)[:, None]
        gk = (tl.load(g_ptr + k[:, None] * N + x[None, :], mask=stored, other=0.0)
              + tl.load(c_ptr + cbase[None, :] + k[:, None], mask=top, other=0.0))
        acc += gk * tl.load(F_ptr + f[:, None] * N + x[None, :], mask=m, other=0.0)
    tgt = tl.load(tgt_ptr + it, mask=im, other=0).to(tl.int64)
    tl.atomic_add(out_ptr + tgt[:, None] * N + x[None, :], acc, mask=im[:, None] & xm)


def _segments(kernel_args, items, g, c_node, species, out, n, n_nodes, S, bn):
    tgt, lo, hi = items
    n_items = tgt.shape[0]
    if n_items == 0:
        return
    node, factor_idx, F = kernel_args
    bi = 16
    _segment_kernel[(triton.cdiv(n, bn), triton.cdiv(n_items, bi))](
        node, factor_idx, F, tgt, lo, hi, g, c_node, species, out, n, n_nodes, S, n_items,
        CH=SEGMENT, BLOCK_I=bi, BLOCK_N=bn)


# terms per work item of the segmented reductions (a parent's children, the nodes sharing a last factor):
# segments are split into items of at most SEGMENT terms so that uneven segments do not idle the lanes
SEGMENT = 16


def dag_energy(val: torch.Tensor, A: torch.Tensor, plan, c_node: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
    """Σ_k c_{z_i,k} AA_k [N] for another coefficient table ``c_node`` [nz, n_nodes] on the node values ``val``
    of ``product_dag_levels`` (committee members: one pass over the stored nodes each)."""
    n = A.shape[1]
    e = torch.empty(n, dtype=A.dtype, device=A.device)
    if n == 0:
        return e
    bn = 64 if A.is_cuda else _block(n, 16, 256)
    _dag_energy_kernel[(triton.cdiv(n, bn),)](val, A, plan.parent, plan.last, c_node, species, e, n,
                                              plan.parent.shape[0], plan.n_stored, BLOCK_K=32, BLOCK_N=bn)
    return e


def product_dag_levels(A: torch.Tensor, plan, c_node: torch.Tensor, species: torch.Tensor, need_grad: bool):
    """``product_dag`` computed level by level (``plan``: triton_backend.DagPlan, on A's device); the top
    level (most nodes, all leaves) is never stored: its values are formed where they are used."""
    n_a, n = A.shape
    n_nodes = plan.parent.shape[0]
    S = plan.n_stored
    val = torch.empty((S, n), dtype=A.dtype, device=A.device)
    if n == 0:
        return A.new_empty(0), (torch.zeros_like(A) if need_grad else None), val
    val[0] = 1.0
    bk, bn = 16, (64 if A.is_cuda else _block(n, 16, 256))
    gn = triton.cdiv(n, bn)
    for k0, k1, _ in plan.levels[1:-1]:
        _level_forward_kernel[(gn, triton.cdiv(k1 - k0, bk))](A, plan.parent, plan.last, val, n, k0, k1,
                                                             BLOCK_K=bk, BLOCK_N=bn)
    e = dag_energy(val, A, plan, c_node, species)
    if not need_grad:
        return e, None, val
    g = c_node[:, :S].index_select(0, species).t().contiguous()  # [S, N]: ∂E/∂node before the sweep
    for items in reversed(plan.child_items):  # top-1 … 1: g[p] += Σ_children g[c] A[last[c]]
        _segments((plan.identity, plan.last, A), items, g, c_node, species, g, n, n_nodes, S, bn)
    gA = torch.zeros_like(A)
    _segments((plan.by_last, plan.parent, val), plan.last_items, g, c_node, species, gA, n, n_nodes, S, bn)
    return e, gA, val
