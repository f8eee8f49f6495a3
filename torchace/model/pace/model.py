"""ML-PACE C-tilde potential (an ``ACECTildeBasisSet``, the ``.yace`` format) as a torch module.

Site energy of atom i with element μ_i (Drautz, Phys. Rev. B 99, 014104 (2019); Lysogorskiy et al.,
npj Comput. Mater. 7, 97 (2021), Eq. 1–6; ML-PACE ``ACECTildeEvaluator::compute_atom``):

    A1_{μ k}     = Σ_{j: μ_j = μ} g_k(r_ij)                                  (rank 1, Y_00 = 1)
    A_{μ n l m}  = Σ_{j: μ_j = μ} R_nl(r_ij) Y_lm(r̂_ij),   R_nl = Σ_k crad[μ_i, μ, n, l, k] g_k
    ρ_p          = Σ_{rank-1 ν} c̃_{ν p} A1_ν + Σ_{rank>1 ν} Σ_{m ∈ ms_combs(ν)} c̃_{ν m p} Re Π_t A_{μ_t n_t l_t m_t}
    E_i          = F(ρ) · f_cut(ρ_core) + ρ_core + E0(μ_i),   ρ_core = Σ_j c(r_ij)

The .yace lists only half of the m-combinations (the other half is the complex conjugate, already
folded into c̃), so the real part of the product over the listed ones is the full sum.  Neighbours are
taken within the bond cutoff rc(μ_i, μ_j).  Everything runs on flat edge tensors: no Python loop over
atoms or edges; the loops are over element pairs (the crad contraction), elements and ranks (the products).
Forces and virials come from the one derivative driver (``torchace.model.derivatives``: autograd of
``node_energies`` through a symmetric strain; no hand adjoint).
An optional tabulated pair term (``pair``, ``TabulatedPair``: the pair table of ``pair_style hybrid/overlay
pace table``) adds ½ U(r_ij) to the site energy of each atom of a pair.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
from ase.data import atomic_numbers

from ..contract import PACE, Capabilities, EnergyModel
from .embedding import embedding_energy, rho_core_cutoff
from .harmonics import pace_ylm
from .pair_table import TabulatedPair
from .radial import core_repulsion, radial_basis


@dataclass
class PACEConfig:
    """What ``torchace.evaluate`` needs to build batches: the elements (model order)."""
    elements: List[str]
    source: str = ""

    @property
    def numbers(self) -> List[int]:
        return [atomic_numbers[s] for s in self.elements]


@dataclass
class PACESpec:
    """A parsed C-tilde basis (plain numbers; ``torchace.io.read_yace`` fills it from a .yace)."""
    elements: List[str]
    E0: List[float]
    lmax: int
    nradmax: int
    nradbase: int
    inner_cutoff_type: str
    radbasename: List[List[str]]            # [NZ][NZ]
    bond: np.ndarray                        # [NZ, NZ, 7]: λ, rc, dcut, r_in, δ_in, prehc, λ_hc
    crad: np.ndarray                        # [NZ, NZ, nradmax, lmax+1, nradbase]
    ndensity: List[int]                     # per element
    npoti: List[str]                        # per element
    fs_parameters: List[List[float]]        # per element, [w_1, m_1, w_2, m_2, ...]
    rho_core_cut: List[List[float]]         # per element, [ρ_c, Δρ]
    # per element: list of functions (rank, mus, ns, ls, ms [n_ms, rank], ctildes [n_ms, ndensity])
    functions: List[List[dict]] = field(default_factory=list)
    source: str = ""


# a .yace: no design rows, no committee, autograd only, evaluated by its own forward
PACE_CAPABILITIES = Capabilities(readout=PACE)


class PACEModel(EnergyModel):
    """A .yace potential; ``torchace.evaluate(model, atoms)`` gives energy, forces, virial, stress."""

    def __init__(self, spec: PACESpec, dtype: torch.dtype = torch.float64, pair: Optional[TabulatedPair] = None):
        super().__init__()
        self.config = PACEConfig(list(spec.elements), spec.source)
        nz = len(spec.elements)
        self.nz = nz
        self.lmax = int(spec.lmax)
        self.nradmax = int(spec.nradmax)
        self.nradbase = int(spec.nradbase)
        self.n_lm = (self.lmax + 1) ** 2
        self.inner_cutoff_type = spec.inner_cutoff_type
        self.radbasename = [list(r) for r in spec.radbasename]
        self.npoti = list(spec.npoti)
        self.fs_parameters = [list(map(float, p)) for p in spec.fs_parameters]
        self.rho_core_cut = [tuple(map(float, p)) for p in spec.rho_core_cut]
        self.ndensity = [int(p) for p in spec.ndensity]
        self.rcut = float(np.max(spec.bond[..., 1]))
        # the pair table of an overlaid ``pair_style table`` (None: ML-PACE alone); neighbours out to both cutoffs
        self.pair = pair.to(dtype) if pair is not None else None
        if pair is not None:
            self.rcut = max(self.rcut, pair.rcut)
        self.register_buffer("E0", torch.tensor(spec.E0, dtype=dtype))
        self.register_buffer("bond", torch.tensor(spec.bond, dtype=dtype))
        self.register_buffer("crad", torch.tensor(spec.crad, dtype=dtype))
        # l of each (l, m) column, to broadcast R_nl over m
        l_of_lm = [l for l in range(self.lmax + 1) for _ in range(2 * l + 1)]
        self.register_buffer("l_of_lm", torch.tensor(l_of_lm, dtype=torch.long))

        # The C-tilde coefficients, flat in file order (one block per element and rank); `coefficients`
        # also tells `evaluate` the model's device and dtype.
        coeffs, self._blocks = [], []
        offset = 0
        for mu in range(nz):
            P = self.ndensity[mu]
            by_rank: Dict[int, list] = {}
            for f in spec.functions[mu]:
                by_rank.setdefault(f["rank"], []).append(f)
            blocks = []
            for rank in sorted(by_rank):
                idx, cs = [], []
                for f in by_rank[rank]:
                    for ms, c in zip(f["ms"], f["ctildes"]):
                        if rank == 1:
                            idx.append([f["mus"][0] * self.nradbase + f["ns"][0] - 1])
                        else:
                            idx.append([(f["mus"][t] * self.nradmax + f["ns"][t] - 1) * self.n_lm
                                        + f["ls"][t] ** 2 + f["ls"][t] + ms[t] for t in range(rank)])
                        cs.append(c)
                c = np.asarray(cs, dtype=float).reshape(len(cs), P)
                coeffs.append(c.ravel())
                name = f"_idx_{mu}_{rank}"
                self.register_buffer(name, torch.tensor(idx, dtype=torch.long).reshape(len(idx), rank))
                blocks.append((rank, name, offset, c.shape[0], P))
                offset += c.size
            self._blocks.append(blocks)
        flat = np.concatenate(coeffs) if coeffs else np.zeros(0)
        self.register_buffer("coefficients", torch.tensor(flat, dtype=dtype))
        self.zbl = None  # no additive baseline (the pair table is part of the site energy)
        self.init_driver()

    @property
    def elements(self) -> List[str]:
        return list(self.config.elements)

    @property
    def capabilities(self) -> Capabilities:
        return PACE_CAPABILITIES

    # ------------------------------------------------------------------ per edge
    def _edge_terms(self, vectors, zi, zj):
        """g [E, K], Re/Im Y [E, LM], R [E, nradmax, lmax+1] and the core repulsion c [E]."""
        r = torch.linalg.norm(vectors, dim=1)
        b = self.bond[zi, zj]                                     # [E, 7]
        lam, rc, dcut, r_in, d_in, pre, lam_hc = b.unbind(1)
        g = torch.zeros((r.shape[0], self.nradbase), dtype=r.dtype, device=r.device)
        R = torch.zeros((r.shape[0], self.nradmax, self.lmax + 1), dtype=r.dtype, device=r.device)
        for a in range(self.nz):
            for c in range(self.nz):
                sel = torch.nonzero((zi == a) & (zj == c)).flatten()
                if sel.numel() == 0:
                    continue
                ga = radial_basis(self.radbasename[a][c], self.inner_cutoff_type, r[sel], lam[sel], rc[sel],
                                  dcut[sel], r_in[sel], d_in[sel], self.nradbase)
                g = g.index_put((sel,), ga)
                # R_nl = Σ_k crad[a, c, n, l, k] g_k
                R = R.index_put((sel,), torch.einsum("ek,nlk->enl", ga, self.crad[a, c]))
        yr, yi = pace_ylm(vectors / r[:, None], self.lmax)
        cr = core_repulsion(self.inner_cutoff_type, r, pre, lam_hc, rc, r_in, d_in)
        return g, yr, yi, R, cr

    def node_energies(self, vectors: torch.Tensor, species: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        n = species.shape[0]
        i, j = edge_index[0], edge_index[1]
        zi, zj = species[i], species[j]
        r = torch.linalg.norm(vectors, dim=1)
        e_pair = None
        if self.pair is not None:
            # each pair is two directed edges: ½ U to each atom, as LAMMPS's pe/atom does for pair_style table
            e_pair = torch.zeros(n, dtype=r.dtype, device=r.device).index_add_(0, i, 0.5 * self.pair(r, zi, zj))
        # neighbours within the bond cutoff only (the batch's neighbour list uses the largest one)
        keep = r < self.bond[zi, zj, 1]
        vectors, i, zi, zj = vectors[keep], i[keep], zi[keep], zj[keep]
        g, yr, yi, R, cr = self._edge_terms(vectors, zi, zj)

        seg = i * self.nz + zj                                     # (atom, neighbour element)
        A1 = torch.zeros((n * self.nz, self.nradbase), dtype=g.dtype, device=g.device).index_add_(0, seg, g)
        Rm = R[:, :, self.l_of_lm]                                 # [E, nradmax, LM]
        shape = (n * self.nz, self.nradmax, self.n_lm)
        Ar = torch.zeros(shape, dtype=g.dtype, device=g.device).index_add_(0, seg, Rm * yr[:, None, :])
        Ai = torch.zeros(shape, dtype=g.dtype, device=g.device).index_add_(0, seg, Rm * yi[:, None, :])
        A1, Ar, Ai = A1.reshape(n, -1), Ar.reshape(n, -1), Ai.reshape(n, -1)
        rho_core = torch.zeros(n, dtype=g.dtype, device=g.device).index_add_(0, i, cr)

        e_node = torch.zeros(n, dtype=g.dtype, device=g.device)
        for mu in range(self.nz):
            atoms = torch.nonzero(species == mu).flatten()
            if atoms.numel() == 0:
                continue
            rho = torch.zeros((atoms.numel(), self.ndensity[mu]), dtype=g.dtype, device=g.device)
            a1, ar, ai = A1[atoms], Ar[atoms], Ai[atoms]
            for rank, name, off, n_terms, P in self._blocks[mu]:
                idx = getattr(self, name)
                c = self.coefficients[off: off + n_terms * P].reshape(n_terms, P)
                if rank == 1:
                    rho = rho + a1[:, idx[:, 0]] @ c
                    continue
                pr, pi = ar[:, idx[:, 0]], ai[:, idx[:, 0]]
                for t in range(1, rank):
                    qr, qi = ar[:, idx[:, t]], ai[:, idx[:, t]]
                    pr, pi = pr * qr - pi * qi, pr * qi + pi * qr
                rho = rho + pr @ c                                   # Re Π A
            rc_mu = rho_core[atoms]
            ef = embedding_energy(self.npoti[mu], self.fs_parameters[mu], rho)
            rcut, drcut = self.rho_core_cut[mu]
            e = ef * rho_core_cutoff(rc_mu, rcut, drcut) + rc_mu + self.E0[mu]
            e_node = e_node.index_put((atoms,), e)
        return e_node if e_pair is None else e_node + e_pair

    def extra_repr(self) -> str:
        names = sorted({n for row in self.radbasename for n in row})
        return (f"elements={self.config.elements}, radial={'/'.join(names)}, nradbase={self.nradbase}, "
                f"nradmax={self.nradmax}, lmax={self.lmax}, ndensity={self.ndensity}, "
                f"inner_cutoff={self.inner_cutoff_type}, rcut={self.rcut:.4g}, "
                f"n_ctilde={self.coefficients.numel()}"
                + ("" if self.pair is None else f", pair_table={self.pair.source!r}"))
