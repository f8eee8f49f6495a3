"""Dual-form (kernel) Tikhonov solver for bases larger than the data (K > rows), where the K×K Gram matrix does
not fit but the n×n kernel does.

For min ‖A c − y‖² + λ‖Γ c‖² (A: the fit's n weighted rows, Γ: a column prior) the solution is

    c = Γ⁻² Aᵀ (A Γ⁻² Aᵀ + λ I)⁻¹ y

(the push-through identity (AᵀA + λΓ²)⁻¹Aᵀ = Γ⁻²Aᵀ(AΓ⁻²Aᵀ + λI)⁻¹).  ``assemble_kernel`` accumulates the kernel
𝒦 = A Γ⁻² Aᵀ in panels: the block of batches (i, j ≤ i) is (A_i Γ⁻¹)(A_j Γ⁻¹)ᵀ, the rows of batch j recomputed
for every panel i, or kept where the memory plan allows them; with ``checkpoint`` it resumes after the last
finished panel row.  ``TikhonovDual`` diagonalises 𝒦 = U W Uᵀ once and gives every λ of a scan:
α(λ) = U (W + λ)⁻¹ Uᵀ y, c(λ) = Γ⁻¹ Σ_i (A_i Γ⁻¹)ᵀ α_i(λ) (one more pass over the rows for all λ together); where
the eigendecomposition's memory (4 n²) does not fit, one Cholesky factor of 𝒦 + λI per λ (2 n²).

Fitted E0 (count columns Z, unregularised) enter as the free part of the same problem: α = (𝒦 + λI)⁻¹ (y − Z e0)
with Zᵀα = 0, i.e. e0 = (Zᵀ(𝒦 + λ)⁻¹Z)⁺ Zᵀ(𝒦 + λ)⁻¹ y, an NZ × NZ system per λ in the kernel's eigenbasis (more
accurate than projecting Z out of 𝒦 by subtraction: measured 2e-12 against 6e-9 at λ = 1e-3·mean diag).  Equal
to the primal solution (``fit.gram.TikhonovGram``) where both fit.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..atomic import atomic_write, check_outputs
from ..resources import ResourceLimitError, gib
from .checkpoint import fingerprint, resume_steps
from .streams import MemoryPlan, RowSource, choose_method, make_plan


@dataclass
class KernelSystem:
    """The kernel 𝒦 = AΓ⁻²Aᵀ [n, n] of a ``RowSource``'s rows, its targets y [n] and E0 columns Z [n, NZ] (or
    None), Γ [K], and the rows A_iΓ⁻¹ of each batch where they were kept (else recomputed when needed)."""

    kernel: torch.Tensor
    y: torch.Tensor
    Z: Optional[torch.Tensor]
    gamma: torch.Tensor
    source: RowSource
    kept: Optional[Dict[int, torch.Tensor]] = None
    plan: Optional[MemoryPlan] = None
    spill: Optional[str] = None  # a directory holding the rows of each batch (.npy) instead of memory
    spill_tag: str = ""  # the inputs' fingerprint in the file names: rows of other inputs are never read

    @property
    def n_basis(self) -> int:
        return self.source.n_basis

    @property
    def n_e0(self) -> int:
        return 0 if self.Z is None else int(self.Z.shape[1])

    @property
    def width(self) -> int:
        return self.n_basis + self.n_e0

    def spill_path(self, i: int) -> Optional[str]:
        return None if self.spill is None else os.path.join(self.spill, f"rows_{self.spill_tag}_{i}.npy")

    def scaled_rows(self, i: int) -> torch.Tensor:
        """A_i Γ⁻¹ of batch i (kept, read back from the spill directory, or recomputed from the source)."""
        if self.kept is not None and i in self.kept:
            return self.kept[i]
        path = self.spill_path(i)
        if path is not None and os.path.exists(path):
            return torch.from_numpy(np.load(path, allow_pickle=False)).to(self.gamma.device)
        M, _, _ = self.source.batch(i)
        return self.store(i, M[:, :self.n_basis] / self.gamma)

    def store(self, i: int, rows: torch.Tensor) -> torch.Tensor:
        """Keep batch i's scaled rows in memory or write them to the spill directory (atomically), if either."""
        if self.kept is not None:
            self.kept[i] = rows
        elif self.spill is not None and not os.path.exists(self.spill_path(i)):
            def write(tmp: str) -> None:
                with open(tmp, "wb") as fh:  # a file object: np.save would append ".npy" to a bare name
                    np.save(fh, rows.cpu().numpy())

            atomic_write(self.spill_path(i), write, ".npy")
        return rows

    def remove_spill(self) -> None:
        """Delete the spilled rows of this system."""
        for i in range(len(self.source.batches)):
            path = self.spill_path(i)
            if path is not None and os.path.exists(path):
                os.unlink(path)


def dual_plan(source: RowSource, keep_rows: bool, *, available: Optional[int] = None) -> MemoryPlan:
    """The kernel, one n×n factor (the least a solve needs), two panels of rows with working copies and, with
    ``keep_rows``, every row of A."""
    n, W = source.n_rows, source.width
    parts = {"kernel": 8 * n * n, "factor (Cholesky; eigh where 2 n² more fit)": 8 * n * n,
             "two panels of rows": 32 * source.max_batch_rows() * W}
    if keep_rows:
        parts["kept rows"] = 8 * n * source.n_basis
    return make_plan("the dual (kernel) solver", source.n_basis, n, parts, source.device, available)


def _gamma_hash(gamma: torch.Tensor) -> str:
    return hashlib.sha256(gamma.detach().cpu().to(torch.float64).numpy().tobytes()).hexdigest()


def assemble_kernel(model, train, weights=None, *, gamma: Optional[torch.Tensor] = None, fit_e0: bool = False,
                    batch_atoms: int = 2048, device=None, keep_rows="auto", spill: Optional[str] = None,
                    checkpoint: Optional[str] = None, every: int = 1, on_step=None,
                    memory_budget: int = 256 * 2**20, backend: str = "auto", available: Optional[int] = None
                    ) -> KernelSystem:
    """𝒦 = AΓ⁻²Aᵀ of ``train``'s weighted rows (``fit``'s), panel by panel (one panel = one batch of ``batch_atoms``).

    ``gamma``: the column prior Γ [K] (None: 1; a basis prior's ``prior.column_scale(model)`` on the unscaled
    model).  ``keep_rows``: True, False or "auto" (kept where the memory plan allows: each batch's rows are then
    computed once, else once per panel pair).  Refused before any work if even the kernel cannot fit (the plan
    names n, K and the bytes).  ``checkpoint``: saved after every ``every`` panel rows; a killed run resumes."""
    source = RowSource(model, train, weights, fit_e0=fit_e0, batch_atoms=batch_atoms, device=device,
                       memory_budget=memory_budget, backend=backend)
    if not source.structs:
        raise ValueError("assemble_kernel: no training structures (isolated atoms only define E0)")
    if keep_rows not in (True, False, "auto"):
        raise ValueError(f"assemble_kernel: keep_rows must be True, False or 'auto', got {keep_rows!r}")
    advice = "use fewer training structures (rows), or the Gram solver (torchace.fit.gram) when K < rows"
    if keep_rows == "auto":
        plan = dual_plan(source, True, available=available)
        keep = plan.available is None or plan.need <= plan.available
        plan = plan if keep else dual_plan(source, False, available=available).check(advice)
    else:
        keep = bool(keep_rows)
        plan = dual_plan(source, keep, available=available).check(advice)
    dev, K, n = source.device, source.n_basis, source.n_rows
    g = torch.ones(K, dtype=torch.float64, device=dev) if gamma is None else \
        torch.as_tensor(gamma, dtype=torch.float64).to(dev)
    if g.shape != (K,):
        raise ValueError(f"gamma must have one entry per basis function ({K}), got {tuple(g.shape)}")
    offsets = [0]
    for b in source.batches:
        offsets.append(offsets[-1] + len(source.layout(b)[0]))
    fp = fingerprint(model, source.structs, source.weights, "dual", batch_atoms)
    fp.update(fit_e0=bool(fit_e0), gamma=_gamma_hash(g))
    f64 = dict(dtype=torch.float64, device=dev)
    state = {"kernel": torch.zeros(n, n, **f64), "y": torch.zeros(n, **f64),
             "Z": torch.zeros(n, source.width - K, **f64)}
    ks = KernelSystem(state["kernel"], state["y"], None, g, source, {} if keep else None, plan)
    if spill is not None and not keep:
        need, free = 8 * n * K, shutil.disk_usage(spill).free
        if need > free:
            raise ResourceLimitError(f"spilling the dual solver's rows ({n:,} rows × K = {K:,}) needs {gib(need)} "
                                     f"on disk, more than the {gib(free)} free in {spill!r}; choose another spill "
                                     "directory, or recompute the rows (spill=None)")
        ks.spill = spill
        ks.spill_tag = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]

    def step(i: int, st: Dict[str, torch.Tensor]) -> None:
        M, y, _ = source.batch(i)
        a, b = offsets[i], offsets[i + 1]
        Ai = M[:, :K] / g
        st["y"][a:b], st["Z"][a:b] = y, M[:, K:]
        ks.store(i, Ai)
        for j in range(i + 1):
            Aj = Ai if j == i else ks.scaled_rows(j)
            blk = Ai @ Aj.T
            if j == i:  # a product A Aᵀ is symmetric only to rounding; the solvers read one triangle
                blk = 0.5 * (blk + blk.T)
            st["kernel"][a:b, offsets[j]:offsets[j + 1]] = blk
            st["kernel"][offsets[j]:offsets[j + 1], a:b] = blk.T

    if checkpoint is not None:
        check_outputs([], {"checkpoint": checkpoint}, "assemble_kernel")
    resume_steps(len(source.batches), step, state, path=checkpoint, every=every, on_step=on_step, device=dev, fp=fp)
    ks.kernel, ks.y = state["kernel"], state["y"]
    ks.Z = state["Z"] if fit_e0 else None
    return ks


class TikhonovDual:
    """Every λ of a scan on one kernel; ``solve(lams)`` → full solutions C [K + NZ, p] (basis coefficients on the
    unscaled basis, then the E0 corrections).  ``method``: "eigh" (one eigendecomposition for all λ: 4 n² while
    it runs), "cholesky" (one factor per λ in a reused buffer beside the kernel: 2 n²) or "auto" (eigh where it
    fits, ``streams.choose_method``).  ``consume=True`` (eigh) hands the system's kernel to the eigensolver and
    drops it from the system (one n×n buffer less; read ``lams_relative`` first)."""

    def __init__(self, ks: KernelSystem, method: str = "auto", consume: bool = False):
        self.ks = ks
        self.method = choose_method(method, int(ks.kernel.shape[0]), ks.kernel.device, "TikhonovDual")
        rhs = ks.y[:, None] if ks.Z is None else torch.cat([ks.y[:, None], ks.Z], 1)  # [y | Z]
        if self.method == "cholesky":
            self.diag, self.L, self.rhs = ks.kernel.diagonal().clone(), torch.empty_like(ks.kernel), rhs
            return
        Kmat = ks.kernel  # eigh copies it (the copy LAPACK overwrites becomes U): no clone of our own
        if consume:
            ks.kernel = None
        self.w, self.U = torch.linalg.eigh(Kmat)
        del Kmat
        self.Ur = self.U.T @ rhs  # [Uᵀy | UᵀZ]

    def _solves(self, lam: torch.Tensor):
        """(𝒦 + λ)⁻¹ [y | Z] for every λ: [n, p, 1 + NZ]."""
        if self.method == "eigh":
            return torch.stack([self.U @ (self.Ur / (self.w + x)[:, None]) for x in lam], 1)
        out, K = [], self.ks.kernel
        for x in lam.tolist():
            K.diagonal().add_(x)
            _, info = torch.linalg.cholesky_ex(K, out=(self.L, torch.empty((), dtype=torch.int32, device=K.device)))
            K.diagonal().copy_(self.diag)  # restored exactly
            out.append(torch.cholesky_solve(self.rhs, self.L) if int(info) == 0
                       else torch.full_like(self.rhs, float("nan")))
        return torch.stack(out, 1)

    def alphas(self, lams: Sequence[float]):
        """(α [n, p], e0 [NZ, p] or None) for every λ: α = (𝒦 + λ)⁻¹ (y − Z e0) with Zᵀα = 0 (E0 free)."""
        lam = torch.as_tensor([float(x) for x in lams], dtype=torch.float64, device=self.ks.y.device)
        X = self._solves(lam)
        if self.ks.Z is None:
            return X[:, :, 0], None
        Z = self.ks.Z
        e0 = torch.stack([torch.linalg.pinv(Z.T @ X[:, j, 1:], hermitian=True) @ (Z.T @ X[:, j, 0])
                          for j in range(len(lam))], 1)  # NZ × NZ per λ; pseudo-inverse for one composition
        return X[:, :, 0] - torch.einsum("npz,zp->np", X[:, :, 1:], e0), e0

    def solve(self, lams: Sequence[float]) -> torch.Tensor:
        ks = self.ks
        alpha, e0 = self.alphas(lams)
        Cb = torch.zeros(ks.n_basis, alpha.shape[1], dtype=torch.float64, device=alpha.device)
        a = 0
        for i in range(len(ks.source.batches)):  # c = Γ⁻¹ Σ_i (A_iΓ⁻¹)ᵀ α_i, all λ in one pass
            Ai = ks.scaled_rows(i)
            Cb.addmm_(Ai.T, alpha[a:a + Ai.shape[0]])
            a += Ai.shape[0]
        Cb /= ks.gamma[:, None]
        return Cb if e0 is None else torch.cat([Cb, e0], 0)


def lams_relative(ks: KernelSystem) -> float:
    """mean(diag AΓ⁻²Aᵀ)·n/K = mean(diag Γ⁻¹AᵀAΓ⁻¹): the same unit of λ as ``fit.gram.mean_diag`` (trace 𝒦 is
    trace Γ⁻¹GΓ⁻¹), so that relative λ of a Gram scan and a dual scan agree."""
    return float(torch.diagonal(ks.kernel).sum()) / ks.n_basis


__all__: List[str] = ["KernelSystem", "assemble_kernel", "dual_plan", "TikhonovDual", "lams_relative"]
