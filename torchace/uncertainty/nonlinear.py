"""Committee (uncertainty) of an ``ACEModel`` with any readout: the exact Bayesian linear-regression posterior of the
parameters the energy is linear in, at the trained values of everything else (docs/nonlinear.md,
"Committee (uncertainty)").

With the FS embedding, a density whose exponent is m_p = 1 enters as a_p·ρ_p = a_p c_p·B (ML-PACE's identity
branch, f(ρ; 1) = ρ exactly), and the pair part is linear too, so at fixed radials W, embedding weights a and
other densities

    E = E_rest + θ·b,    θ[z] = Σ_{p: m_p[z] = 1} a_p[z] c_p[z],   θ_pair = the pair coefficients,

with b the *linear model's* design row evaluated on the learned one-particle basis.  θ has the layout of a
linear model's flat coefficients, [NZ × n_b | NZ × NZ × n_pair], and ``model.committee`` [n, K] holds samples
of it.  ``committee_linear_model(model)`` is that linear model: ``model.linear_model()`` with coefficients
θ̄ (the trained values) whose embedding is ``LearnedBasis`` (``EdgeEmbedding``'s interface evaluating the
learned radials: ``forward``, ``with_grad``, ``vjp``, ``dphi``), so the linear rows code
(``torchace.model.backends.torch_rows``, and the registry's backends with fixed radials) produces the rows,
and ``torchace.uncertainty.committee`` turns rows into member predictions: E_k = E(θ̄) + (θ_k − θ̄)·b (exact,
E is linear in θ).

``fit_committee`` assembles the weighted system of ``torchace.fit`` (same weights, 1/√N rule, data reading)
with targets = labels − E_rest, solves it with BLR and stores the samples; by default centred on the trained
θ̄ (the model's energies do not change), or with ``mean="posterior"`` moving θ̄ to the posterior mean.
"""
from __future__ import annotations

import copy
import time
from typing import Dict, List, Optional

import torch
from torch import nn

from .. import keys as K
from ..basis.embedding import EdgeEmbedding
from ..fieldcheck import check_int, check_str
from ..fit.assembly import LinearSystem, check_memory, fitting_structures, structure_batches
from .committee import committee_predictions as linear_committee_predictions
from .committee import spread
from ..fit.data import read_data
from ..fit.driver import solve_system
from ..fit.rows import DEFAULT_MEMORY_BUDGET, batch_rows
from ..fit.solvers import BLR, Solver
from ..fit.weights import resolve_weights, weighted_system
from ..structures.batch import DEFAULT_MIN_DISTANCE, collate
from ..model.backends import AUTO
from ..model.contract import ACE_READOUTS, capabilities
from ..model.evaluate import evaluate_batch, model_inputs
from ..model.readout.embedding import FS, IDENTITY_TOL
from ..model.readout.radials import LearnableRadials

__all__ = ["LearnedBasis", "linear_weights", "linear_coefficients", "set_linear_coefficients",
           "committee_linear_model", "linear_rows", "committee_rows", "fully_linear", "committee_system",
           "fit_committee", "committee_predictions", "uncertainty", "member_model"]

MEANS = ("trained", "posterior")


class LearnedBasis(nn.Module):
    """The learned one-particle basis φ_a = δ(s_a = z_j) R_{n_a l_a}(r; z_i, z_j) Y_{l_a m_a} behind
    ``EdgeEmbedding``'s interface (``forward`` [E, n_a]; ``with_grad`` / ``vjp`` / ``dphi`` feature-major), so an
    ``ACEModel`` holding it evaluates and differentiates the linear model on the learned radials.

    It has no fixed ``radials`` (``radials`` raises): the fused C++ kernel reads ``base`` and ``learned``
    (``products.fixed_embedding``: the learned radials as a mixing of the polynomial radials); the Triton kernels,
    which read the polynomial radials directly, refuse it (use ``analytic``, ``reference`` or ``fused``)."""

    def __init__(self, base: EdgeEmbedding, learned: LearnableRadials):
        super().__init__()
        self.base = base
        self.learned = learned

    @property
    def radials(self):
        raise ValueError("the learned one-particle basis of a nonlinear model has no fixed polynomial radials: "
                         "its rows and energies need the 'analytic' or 'reference' backend")

    @property
    def n_a(self) -> int:
        return self.base.n_a

    @property
    def max_l(self) -> int:
        return self.base.max_l

    @property
    def nl_scale(self) -> torch.Tensor:
        return self.base.nl_scale

    # the learned radials take the base basis's evaluations as tensors (as ACEModel.one_particle_*)
    def forward(self, vectors: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        b = self.base
        r = torch.linalg.norm(vectors, dim=-1)
        return self.learned(b.radials(r, zi, zj), b.sh(vectors), b.nl_scale, zi, zj)

    def with_grad(self, vectors: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor):
        b = self.base
        r = torch.linalg.norm(vectors, dim=-1)
        R, dR = b.radials.with_grad(r, zi, zj)
        return self.learned.with_grad(vectors, r, R, dR, b.sph(vectors, False)[0], b.nl_scale, zi, zj)

    def vjp(self, g: torch.Tensor, saved: List[torch.Tensor]) -> torch.Tensor:
        return self.learned.vjp(g, saved)

    def dphi(self, saved: List[torch.Tensor]) -> torch.Tensor:
        """∂φ[a, e]/∂r_e[c] as [3, n_a, E]: u (R' Y − l R Y / r) + R (∇S)/r (as ``EdgeEmbedding.dphi``, with
        the prior scale inside the learned R instead of on Y)."""
        u, r, Rsel, dRsel, Ysel, Y = saved
        b = self.base
        rinv = 1.0 / r.clamp_min(1e-300)
        dS = b.solid_gradients(Y).index_select(1, b.lm_std)  # [3, n_a, E]
        sign = b.lm_sign.to(Y.dtype).unsqueeze(1)
        l_a = b.l_std.to(Y.dtype).index_select(0, b.lm_std).unsqueeze(1)
        along_u = dRsel * Ysel - l_a * Ysel * Rsel * rinv
        return torch.addcmul(u.unsqueeze(1) * along_u.unsqueeze(0), dS, (Rsel * sign * rinv).unsqueeze(0))


# ---- the linear parametrisation θ ----

def linear_weights(model) -> torch.Tensor:
    """a_lin [NZ, P]: the weight with which density p enters E linearly for centre element z (a_p for the
    identity branch m_p = 1, 0 otherwise; 1 for embedding None).  ValueError, with the reason, for models in
    which E is not linear in any density of some element (MLP embedding, no m_p = 1, or a_p = 0)."""
    if capabilities(model).readout not in ACE_READOUTS:
        raise TypeError(f"expected an ACEModel, got {type(model).__name__} (linear models: torchace.fit "
                        "with solvers.BLR(committee_size=n))")
    f = model.embedding_fn
    if f is None:
        return torch.ones(model.nz, 1, dtype=torch.float64, device=model.density_coefficients.device)
    if f.name != FS:
        raise ValueError(f"no committee for embedding {f.name!r}: F = ρ_1 + Σ_h w_h tanh(W ρ + b) depends "
                         "nonlinearly on every density, so no coefficients enter E linearly (use embedding=None "
                         "or 'fs' with an exponent m_p = 1)")
    a = f.weights.detach().to(torch.float64)
    ident = (f.exponents.to(torch.float64) - 1.0).abs() < IDENTITY_TOL
    a_lin = torch.where(ident, a, torch.zeros_like(a))
    for z, el in enumerate(model.elements):
        if not bool((a_lin[z] != 0).any()):
            why = ("no density has the FS exponent m_p = 1 (the identity branch)" if not bool(ident[z].any())
                   else "every density with m_p = 1 has weight a_p = 0")
            raise ValueError(f"no committee: for element {el}, {why}, so E is not linear in its many-body "
                             f"coefficients (fs_parameters {f.fs_parameters()[z]}); pacemaker's [1, 1, 1, 0.5] has "
                             "one")
    return a_lin


def linear_coefficients(model) -> torch.Tensor:
    """θ̄ [K] = [Σ_p a_lin[z, p] c_p[z] (NZ × n_b) | pair coefficients (NZ × NZ × n_pair)],
    K = ``model.basis_size``."""
    a = linear_weights(model).to(model.density_coefficients)
    theta = torch.einsum("zp,pzb->zb", a, model.density_coefficients.detach())
    return torch.cat([theta.reshape(-1), model.pair_coefficients.detach().reshape(-1)])


def set_linear_coefficients(model, theta: torch.Tensor) -> None:
    """Set the model's θ to ``theta`` [K] in place: the pair part directly, the many-body change Δθ[z] added to
    the identity density with the largest |a_p[z]| (c_p[z] += Δθ[z]/a_p[z]); nothing else changes, so the
    energies change by exactly Δθ·b."""
    a = linear_weights(model)
    theta = torch.as_tensor(theta).to(model.density_coefficients).reshape(-1)
    k_mb = model.nz * model.n_b
    if theta.shape[0] != k_mb + model.pair_coefficients.numel() or not bool(torch.isfinite(theta).all()):
        raise ValueError(f"theta must be {k_mb + model.pair_coefficients.numel()} finite numbers, got "
                         f"{tuple(theta.shape)}")
    delta = (theta - linear_coefficients(model))[:k_mb].view(model.nz, model.n_b)
    p0 = a.abs().argmax(dim=1)
    with torch.no_grad():
        for z in range(model.nz):
            p = int(p0[z])
            model.density_coefficients[p, z] += delta[z] / a[z, p].to(delta)
        model.pair_coefficients.copy_(theta[k_mb:].view_as(model.pair_coefficients))


def committee_linear_model(model):
    """The linear ``ACEModel`` of the parameters E is linear in: ``model``'s basis (E0, prior scale,
    pair, ZBL) with the learned radials (``LearnedBasis``) when they are learnable, coefficients θ̄, and the
    model's committee.  Its design rows are ∂(E, F, W)/∂θ of ``model``; its energies differ from the model's by
    the densities with m_p ≠ 1 (none for embedding None).  A snapshot: rebuild it after changing the model."""
    theta = linear_coefficients(model)
    lin = model.linear_model()
    if model.radials is not None:
        lin.embedding = LearnedBasis(lin.embedding, copy.deepcopy(model.radials))
    lin.coefficients = theta.to(lin.coefficients)
    comm = getattr(model, "committee", None)
    lin.committee = None if comm is None else comm.detach().to(lin.coefficients)
    return lin.eval()


def linear_rows(lin, batch: Dict[str, torch.Tensor], backend: str = AUTO,
                memory_budget: int = DEFAULT_MEMORY_BUDGET) -> Dict[str, torch.Tensor]:
    """Design rows (``torchace.design_matrix_rows`` layout) of a ``committee_linear_model`` on a collated batch,
    through the registry's backends (the fused kernel reads learned radials too: ``products.fixed_embedding``)."""
    return batch_rows(lin, batch, memory_budget, backend)


def committee_rows(model, structures, *, backend: str = AUTO,
                   min_distance: float = DEFAULT_MIN_DISTANCE) -> Dict[str, torch.Tensor]:
    """∂(E, F, W)/∂θ of ``model`` for ``structures``: ``energy`` [S, K], ``forces`` [3ΣN, K], ``virial``
    [S, 6, K] (the layout of ``torchace.design_matrix_rows``)."""
    lin = committee_linear_model(model)
    p = lin.coefficients
    batch = collate(structures, model.config.numbers, model.rcut, dtype=p.dtype, device=p.device,
                    min_distance=min_distance)
    return linear_rows(lin, batch, backend)


# ---- the weighted system and the fit ----

def _evaluation_copy(model):
    return model if not model.training else copy.deepcopy(model).eval()


def fully_linear(model) -> bool:
    """Whether E = E0 + θ·b (+ ZBL) exactly: no embedding, or every density with m_p ≠ 1 has weight a_p = 0."""
    f = model.embedding_fn
    if f is None:
        return True
    ident = (f.exponents.to(torch.float64) - 1.0).abs() < IDENTITY_TOL
    return bool((f.weights.detach()[~ident] == 0).all())


def _rest(model, lin, batch, rows, theta):
    """E_rest [S], F_rest [3N], W_rest [S, 6]: the model's outputs minus rows·θ̄ (E0, ZBL and the densities with
    m_p ≠ 1).  A fully linear model's rest is E0 + ZBL, computed directly (as ``torchace.fit``'s targets)."""
    if fully_linear(model):
        inputs = model_inputs(lin, batch)
        species, sid, n_s = inputs[1], inputs[2], inputs[6]
        e0 = torch.zeros(n_s, dtype=theta.dtype, device=theta.device).index_add_(0, sid, lin.E0[species].to(theta))
        if lin.zbl is None:
            return e0, torch.zeros_like(rows[K.FORCES][:, 0]), torch.zeros_like(rows[K.VIRIAL][:, :, 0])
        with torch.enable_grad():
            base = {k: v.detach() for k, v in lin.baseline(*inputs).items()}
        return e0 + base[K.ENERGY], base[K.FORCES].reshape(-1), K.to_voigt(base[K.VIRIAL])
    out = evaluate_batch(model, batch, backend="analytic")
    return (out[K.ENERGY] - rows[K.ENERGY] @ theta, out[K.FORCES].reshape(-1) - rows[K.FORCES] @ theta,
            K.to_voigt(out[K.VIRIAL]) - rows[K.VIRIAL] @ theta)


def committee_system(model, data, weights=None, *, keys=None, skip_bad: bool = False, batch_atoms: int = 512,
                     backend: str = AUTO, min_distance: float = DEFAULT_MIN_DISTANCE,
                     memory_budget: int = DEFAULT_MEMORY_BUDGET) -> LinearSystem:
    """The dense weighted system A θ ≈ y of ``torchace.fit`` for θ: per fitting structure (isolated atoms
    excluded) the energy row × w_E/√N, 3N force rows × w_F, 6 Voigt virial rows × w_V/√N
    (``fit.weights.weighted_system``), targets = labels − E_rest with E_rest = E(model) − b·θ̄ (E0, ZBL and the
    densities with m_p ≠ 1; likewise for forces and virials)."""
    resolved = resolve_weights(weights)
    ds = read_data(data, keys=keys, elements=model.elements, skip_bad=skip_bad)
    unknown = sorted(set(weights or {}) - {"default"} - set(ds.config_types))
    if unknown:
        raise ValueError(f"weights given for config_type(s) {unknown} that the data do not contain (its "
                         f"config_types: {sorted(set(ds.config_types))}); a typo?")
    check_int("committee", "batch_atoms", batch_atoms, minimum=1)
    structs = fitting_structures(ds)
    if not structs:
        raise ValueError("no structures to fit: every structure given is an isolated_atom structure")
    m = _evaluation_copy(model)
    lin = committee_linear_model(m)
    theta = lin.coefficients.detach()
    dtype, dev = theta.dtype, theta.device
    check_memory(structs, theta.shape[0], device=dev, dense=True)
    blocks, targets = [], []
    for part in structure_batches(structs, batch_atoms):
        batch = collate([s.atoms for s in part], model.config.numbers, model.rcut, dtype=dtype, device=dev,
                        names=[s.source for s in part], min_distance=min_distance)
        rows = linear_rows(lin, batch, backend, memory_budget)
        rest_e, rest_f, rest_v = _rest(m, lin, batch, rows, theta)

        def target(kind, k, s, f0):  # the label minus the model's part that θ does not carry
            if kind == "E":
                return s.energy - rest_e[k:k + 1]
            if kind == "F":
                return torch.as_tensor(s.forces.reshape(-1), dtype=dtype, device=dev) - rest_f[f0:f0 + 3 * s.n_atoms]
            return K.to_voigt(torch.as_tensor(s.virial, dtype=dtype, device=dev)) - rest_v[k]

        b, t, _ = weighted_system(part, rows, resolved, target)
        blocks += b
        targets += t
    if not blocks:
        raise ValueError("the committee fit has no rows: every structure's labels have zero weight (or none are "
                         "labelled)")
    A = torch.cat(blocks)
    return LinearSystem(A=A, y=torch.cat(targets), n_obs=int(A.shape[0]))


def _plain(v):
    """A JSON-friendly hyperparameter (ARD's prior variances are a vector)."""
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else (v.tolist() if v.numel() <= 64 else f"tensor{tuple(v.shape)}")
    return v


def fit_committee(model, data, *, weights=None, committee_size: int = 16, solver: Optional[Solver] = None,
                  seed: int = 0, mean: str = "trained", keys=None, skip_bad: bool = False, batch_atoms: int = 512,
                  backend: str = AUTO, min_distance: float = DEFAULT_MIN_DISTANCE) -> Dict:
    """Set ``model.committee`` [n, K] to samples of the BLR posterior of θ for ``data`` (as ``torchace.fit``
    reads and weights it: ``weights``, ``keys``, ``skip_bad``), everything else at its trained value.

    ``solver``: default ``solvers.BLR(committee_size=committee_size, seed=seed)``; another BLR/ARD object
    brings its own committee size and seed.  ``mean="trained"`` (default): the samples are centred on the
    trained θ̄ (committee = θ̄ + (samples − μ), μ the posterior mean), so the model and the energies the
    calculator returns stay the trained model's; ``"posterior"``: θ is moved to μ first (the model changes to
    the refit of its linear part) and the committee is the samples.  Returns an info dict (also kept in
    ``model.metadata["committee"]``).  ValueError for models with no parameters E is linear in (MLP, no
    m_p = 1)."""
    check_str("fit_committee", "mean", mean, choices=MEANS)
    linear_weights(model)  # refuse before reading data
    if solver is None:
        check_int("fit_committee", "committee_size", committee_size, minimum=2)
        solver = BLR(committee_size=committee_size, seed=seed)
    elif not isinstance(solver, Solver) or not int(getattr(solver, "committee_size", 0) or 0):
        raise ValueError(f"solver must draw a committee (solvers.BLR(committee_size=n) or ARD(...)), got {solver!r}")
    t0 = time.perf_counter()
    system = committee_system(model, data, weights, keys=keys, skip_bad=skip_bad, batch_atoms=batch_atoms,
                              backend=backend, min_distance=min_distance)
    t_assemble = time.perf_counter() - t0
    t0 = time.perf_counter()
    sol = solve_system(system, solver)
    t_solve = time.perf_counter() - t0
    if sol.committee is None or not bool(torch.isfinite(sol.committee).all()):
        raise ValueError(f"{type(solver).__name__} returned no (finite) committee")
    theta = linear_coefficients(model).to(torch.float64)
    mu = sol.coefficients.to(theta)
    A, y = system.A.to(torch.float64), system.y.to(torch.float64)
    rss_trained = float(((A @ theta - y) ** 2).sum())
    if mean == "posterior":
        set_linear_coefficients(model, mu)
        committee = sol.committee.to(theta)
    else:
        committee = sol.committee.to(theta) - mu + theta
    model.committee = committee.to(model.density_coefficients)
    res = sol.result
    info = {"solver": type(solver).__name__, "committee_size": int(committee.shape[0]),
            "basis_size": int(committee.shape[1]), "mean": mean, "n_obs": system.n_obs,
            "hyperparameters": {k: _plain(v) for k, v in res.hyperparameters.items()},
            "effective_parameters": res.info.get("effective_parameters"),
            "rss_trained": rss_trained, "rss_posterior_mean": float(res.info["rss"]),
            "relative_shift": float((mu - theta).norm() / theta.norm().clamp_min(1e-300)),
            "identity_densities": [[p for p, v in enumerate(row) if v != 0]
                                   for row in linear_weights(model).tolist()],
            "timings": {"assemble": t_assemble, "solve": t_solve}}
    if isinstance(getattr(model, "metadata", None), dict):
        model.metadata["committee"] = info
    return info


# ---- member predictions ----

def committee_predictions(model, structures, *, backend: str = AUTO) -> Dict[str, torch.Tensor]:
    """Per-member energy [n, S], forces [n, ΣN, 3] and Voigt virial [n, S, 6] of ``structures``:
    the model's outputs + (θ_k − θ̄)·rows (exact: E is linear in θ); ``torchace.uncertainty.committee``'s
    ``committee_predictions`` with the rows of ``committee_linear_model``."""
    if getattr(model, "committee", None) is None:
        raise ValueError("the model has no committee: fit_committee(model, data) draws one")
    m = _evaluation_copy(model)
    lin = committee_linear_model(m)
    rows_backend = "analytic" if isinstance(lin.embedding, LearnedBasis) and backend == AUTO else backend
    return linear_committee_predictions(m, structures, rows_model=lin, backend=rows_backend)


def uncertainty(model, structures, *, backend: str = AUTO) -> Dict[str, torch.Tensor]:
    """Committee standard deviations: ``energy`` [S] (eV), ``forces`` [ΣN, 3] (eV/Å), ``virial`` [S, 6] (eV)."""
    return {k: spread(v) for k, v in committee_predictions(model, structures, backend=backend).items()}


def member_model(model, k: int):
    """A copy of ``model`` with θ = ``model.committee[k]`` (no committee): the k-th member, explicitly."""
    comm = getattr(model, "committee", None)
    if comm is None:
        raise ValueError("the model has no committee")
    n = int(comm.shape[0])
    if isinstance(k, bool) or not isinstance(k, int) or not -n <= k < n:
        raise ValueError(f"member index must be an integer in [0, {n}), got {k!r}")
    m = copy.deepcopy(model)
    m.committee = None
    set_linear_coefficients(m, comm[k])
    return m

