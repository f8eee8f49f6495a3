"""Smoothness and regularity priors for fitting linear ACE (see docs/priors.md).

A prior is a diagonal Tikhonov operator Γ: the regularised fit is min ||A c − y||² + λ ||Γ c||²,
equivalently c ~ N(0, Γ⁻²/λ).  Two families:

* **column priors** (ACEpotentials.jl v0.10 ``src/models/smoothness_priors.jl``):
  ``algebraic_smoothness``, ``exponential_smoothness``, ``gaussian_smoothness``.  Γ is computed per
  column from the (n, l) multiset of the basis function, with ACEpotentials.jl's n: the species-interleaved
  radial index n = k·NZ + s + 1.  They are used by scaling the design-matrix columns (A → A Γ⁻¹, solve a
  plain ridge problem for c' and set c = Γ⁻¹ c'); ``apply`` does nothing.
* **basis priors** (Darby et al., "Regularity priors for the linear atomic cluster expansion", 2026,
  eqs. (9), (10) and §2.3): ``algebraic``, ``exponential``, ``gaussian``.  γ factorises over the
  one-particle functions, γ(n, l) = Π_t γ₁(k_t, l_t), with k_t the radial polynomial degree (0-based,
  species index excluded).  They are applied inside the model as R_nl → R_nl / γ₁ (and the pair basis
  V_k → V_k / γ₁(k, 0)) with ``ACEModel.set_basis_scale``; plain Tikhonov on the rescaled model is then
  the regularised fit and the coefficients refer to the rescaled basis.

Every prior has ``kind`` ("column" or "basis"), ``column_scale(model)`` (Γ on the unscaled basis, float64,
CPU), ``one_particle_scale(model)`` (basis priors: 1/γ₁ as ``(nl_scale, pair_scale)``), ``apply(model)``,
``to_dict()``; ``from_dict`` rebuilds one from its dict.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Dict, Iterable, List, Optional, Tuple

import torch

__all__ = [
    "algebraic_smoothness", "exponential_smoothness", "gaussian_smoothness",
    "algebraic", "exponential", "gaussian",
    "AlgebraicSmoothness", "ExponentialSmoothness", "GaussianSmoothness",
    "AlgebraicPrior", "ExponentialPrior", "GaussianPrior",
    "from_dict", "reset_basis_scale",
]

# exp() of anything above this overflows float64
_LOG_MAX = math.log(torch.finfo(torch.float64).max)


# ----------------------------------------------------------------------------------------------
#  helpers


def _number(name: str, value: Any, prior: str, *, positive: bool = False, allow_none: bool = False) -> Optional[float]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"prior '{prior}': {name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"prior '{prior}': {name} must be finite, got {v}")
    if positive and v <= 0:
        raise ValueError(f"prior '{prior}': {name} must be > 0, got {v}")
    if not positive and v < 0:
        raise ValueError(f"prior '{prior}': {name} must be >= 0, got {v}")
    return v


def _model_sizes(model) -> Tuple[int, int, int, int, int]:
    """(NZ, n_b, n_pair, rows of the one-particle scale (max n), max_l)."""
    nz, n_b, n_pair = int(model.nz), int(model.n_b), int(model.n_pair)
    emb = getattr(model, "embedding", None)
    buf = getattr(emb, "nl_scale", None) if emb is not None else None
    if buf is not None:
        max_n, n_l = int(buf.shape[0]), int(buf.shape[1])
    else:
        max_n, n_l = int(model.spec.max_n), int(model.spec.max_l) + 1
    return nz, n_b, n_pair, max_n, n_l - 1


def _check_finite(log_gamma: List[float], prior: str, hint: str) -> None:
    worst = max(log_gamma, default=0.0)
    if worst > _LOG_MAX:
        raise ValueError(f"prior '{prior}': the largest Γ entry is exp({worst:.4g}), which overflows float64; {hint}")


def _columns_from_logs(model, mb: List[float], pair: List[float], prior: str, hint: str) -> torch.Tensor:
    """Γ [basis_size] from log γ of one centre's many-body columns (repeated for every centre) and the pair columns."""
    nz, n_b, _, _, _ = _model_sizes(model)
    if len(mb) != n_b:
        raise ValueError(f"model.nl_of_b has {len(mb)} entries, expected n_b = {n_b}")
    logs = mb * nz + pair
    _check_finite(logs, prior, hint)
    out = torch.tensor([math.exp(v) for v in logs], dtype=torch.float64)
    if out.shape[0] != int(model.basis_size):
        raise ValueError(f"prior has {out.shape[0]} entries but model.basis_size = {model.basis_size}")
    return out


def _pair_columns(nz: int, n_pair: int) -> Iterable[Tuple[int, int, int]]:
    """(centre, neighbour, degree k) of the pair columns, in column order."""
    for c in range(nz):
        for s in range(nz):
            for k in range(n_pair):
                yield c, s, k


class _Prior:
    """Shared serialisation."""

    NAME: ClassVar[str] = ""
    kind: ClassVar[str] = ""

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"name": self.NAME}
        for f in fields(self):
            d[f.name] = getattr(self, f.name)
        return d

    def apply(self, model) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------
#  column priors: ACEpotentials.jl v0.10 smoothness priors, n = species-interleaved radial index


class _ColumnPrior(_Prior):
    kind: ClassVar[str] = "column"

    def _log_gamma(self, nls: Tuple[Tuple[int, int], ...]) -> float:
        raise NotImplementedError

    def column_scale(self, model) -> torch.Tensor:
        """Γ [basis_size]: many-body column q of every centre element gets γ(model.nl_of_b[q]) with n the
        interleaved index; pair column (centre, neighbour s, degree k) gets γ of the single factor
        (n = k·NZ + s + 1, l = 0), as ACEpotentials.jl's ``_nnll_basis`` (pair spec n = 1..maxq·NZ, one-hot)."""
        nz, _, n_pair, _, _ = _model_sizes(model)
        mb = [self._log_gamma(tuple(nls)) for nls in model.nl_of_b]
        pair = [self._log_gamma(((k * nz + s + 1, 0),)) for _, s, k in _pair_columns(nz, n_pair)]
        return _columns_from_logs(model, mb, pair, self.NAME, "use larger wn / wl")

    def apply(self, model) -> None:
        """Column priors act on the design matrix, not on the model: nothing to do."""
        return None


@dataclass(frozen=True)
class AlgebraicSmoothness(_ColumnPrior):
    """γ = Σ_t (l_t/wl)^p + (n_t/wn)^p (ACEpotentials.jl ``algebraic_smoothness_prior``)."""

    p: float = 4.0
    wl: float = 2.0 / 3.0
    wn: float = 1.0
    NAME: ClassVar[str] = "algebraic_smoothness"

    def __post_init__(self):
        for name in ("p", "wl", "wn"):
            object.__setattr__(self, name, _number(name, getattr(self, name), self.NAME, positive=True))

    def _log_gamma(self, nls):
        return math.log(sum((l / self.wl) ** self.p + (n / self.wn) ** self.p for n, l in nls))


@dataclass(frozen=True)
class ExponentialSmoothness(_ColumnPrior):
    """γ = exp(Σ_t l_t/wl + n_t/wn) (ACEpotentials.jl ``exp_smoothness_prior``)."""

    wl: float = 2.0 / 3.0
    wn: float = 1.0
    NAME: ClassVar[str] = "exponential_smoothness"

    def __post_init__(self):
        for name in ("wl", "wn"):
            object.__setattr__(self, name, _number(name, getattr(self, name), self.NAME, positive=True))

    def _log_gamma(self, nls):
        return sum(l / self.wl + n / self.wn for n, l in nls)


@dataclass(frozen=True)
class GaussianSmoothness(_ColumnPrior):
    """γ = exp(Σ_t (l_t/wl)² + (n_t/wn)²) (ACEpotentials.jl ``gaussian_smoothness_prior``)."""

    wl: float = 1.0 / math.sqrt(2.0)
    wn: float = 1.0 / math.sqrt(2.0)
    NAME: ClassVar[str] = "gaussian_smoothness"

    def __post_init__(self):
        for name in ("wl", "wn"):
            object.__setattr__(self, name, _number(name, getattr(self, name), self.NAME, positive=True))

    def _log_gamma(self, nls):
        return sum((l / self.wl) ** 2 + (n / self.wn) ** 2 for n, l in nls)


# ----------------------------------------------------------------------------------------------
#  basis priors: product-form regularity priors of Darby et al. (2026), k = polynomial degree


class _BasisPrior(_Prior):
    kind: ClassVar[str] = "basis"

    def _sigmas(self, model) -> Tuple[float, float]:
        raise NotImplementedError

    def _log_gamma1(self, k: int, l: int, sn: float, sl: float) -> float:
        raise NotImplementedError

    def one_particle_log_gamma(self, model) -> torch.Tensor:
        """log γ₁ [max_n, max_l + 1]; row n − 1 holds the radial index n, whose degree is k = (n − 1) // NZ."""
        nz, _, _, max_n, max_l = _model_sizes(model)
        sn, sl = self._sigmas(model)
        return torch.tensor([[self._log_gamma1((n - 1) // nz, l, sn, sl) for l in range(max_l + 1)]
                             for n in range(1, max_n + 1)], dtype=torch.float64)

    def column_scale(self, model) -> torch.Tensor:
        """Γ [basis_size] on the unscaled basis: Π_t γ₁(k_t, l_t) for a many-body column with (n_t, l_t)
        multiset ``model.nl_of_b[q]`` (k_t = (n_t − 1) // NZ); γ₁(k, 0) for a pair column of degree k."""
        nz, _, n_pair, _, _ = _model_sizes(model)
        sn, sl = self._sigmas(model)
        mb = [sum(self._log_gamma1((n - 1) // nz, l, sn, sl) for n, l in nls) for nls in model.nl_of_b]
        pair = [self._log_gamma1(k, 0, sn, sl) for _, _, k in _pair_columns(nz, n_pair)]
        return _columns_from_logs(model, mb, pair, self.NAME, "use a smaller sigma")

    def one_particle_scale(self, model) -> Tuple[torch.Tensor, torch.Tensor]:
        """(nl_scale [max_n, max_l + 1], pair_scale [n_pair]) = 1/γ₁, the arguments of ``set_basis_scale``."""
        _, _, n_pair, _, _ = _model_sizes(model)
        lg = self.one_particle_log_gamma(model)
        sn, sl = self._sigmas(model)
        lp = torch.tensor([self._log_gamma1(k, 0, sn, sl) for k in range(n_pair)], dtype=torch.float64)
        _check_finite(lg.flatten().tolist() + lp.tolist(), self.NAME, "use a smaller sigma")
        return torch.exp(-lg), torch.exp(-lp)

    def apply(self, model) -> None:
        """R_nl → R_nl/γ₁(k, l) and V_k → V_k/γ₁(k, 0) inside ``model`` (replaces any earlier scale).
        Existing coefficients are left as they are, so the model's values change."""
        nl_scale, pair_scale = self.one_particle_scale(model)
        model.set_basis_scale(nl_scale=nl_scale, pair_scale=pair_scale)


def _init_sigmas(prior) -> None:
    """Validate σ_n, σ_l of an algebraic/exponential prior; σ_l = 1.5 σ_n by default (paper §2.5)."""
    sn = _number("sigma_n", prior.sigma_n, prior.NAME)
    sl = _number("sigma_l", prior.sigma_l, prior.NAME, allow_none=True)
    object.__setattr__(prior, "sigma_n", sn)
    object.__setattr__(prior, "sigma_l", 1.5 * sn if sl is None else sl)


@dataclass(frozen=True)
class AlgebraicPrior(_BasisPrior):
    """γ₁(k, l) = (1 + σ_n k + σ_l l)^p (paper eq. (9), "p times differentiable"); σ_l = 1.5 σ_n by default."""

    sigma_n: float
    sigma_l: Optional[float] = None
    p: float = 4.0
    NAME: ClassVar[str] = "algebraic"

    def __post_init__(self):
        _init_sigmas(self)
        object.__setattr__(self, "p", _number("p", self.p, self.NAME, positive=True))

    def _sigmas(self, model):
        return self.sigma_n, self.sigma_l

    def _log_gamma1(self, k, l, sn, sl):
        return self.p * math.log1p(sn * k + sl * l)


@dataclass(frozen=True)
class ExponentialPrior(_BasisPrior):
    """γ₁(k, l) = exp(σ_n k + σ_l l) (paper eq. (9), "analytic"); σ_l = 1.5 σ_n by default."""

    sigma_n: float
    sigma_l: Optional[float] = None
    NAME: ClassVar[str] = "exponential"

    def __post_init__(self):
        _init_sigmas(self)

    def _sigmas(self, model):
        return self.sigma_n, self.sigma_l

    def _log_gamma1(self, k, l, sn, sl):
        return sn * k + sl * l


@dataclass(frozen=True)
class GaussianPrior(_BasisPrior):
    """γ₁(k, l) = exp(σ_n² k² + σ_l² l²), σ_n = √5·σ/rcut, σ_l = σ/rcut (paper eq. (10), §2.5, app. B);
    σ in Å, rcut = the model's (global, largest-pair) cutoff unless given."""

    sigma: float
    rcut: Optional[float] = None
    NAME: ClassVar[str] = "gaussian"

    def __post_init__(self):
        object.__setattr__(self, "sigma", _number("sigma", self.sigma, self.NAME))
        object.__setattr__(self, "rcut", _number("rcut", self.rcut, self.NAME, positive=True, allow_none=True))

    def sigmas(self, model) -> Tuple[float, float]:
        """(σ_n, σ_l) for ``model`` (dimensionless)."""
        rc = float(model.rcut) if self.rcut is None else self.rcut
        return math.sqrt(5.0) * self.sigma / rc, self.sigma / rc

    def _sigmas(self, model):
        return self.sigmas(model)

    def _log_gamma1(self, k, l, sn, sl):
        return (sn * k) ** 2 + (sl * l) ** 2


# ----------------------------------------------------------------------------------------------
#  public constructors


def algebraic_smoothness(p: float = 4, wl: float = 2 / 3, wn: float = 1) -> AlgebraicSmoothness:
    """ACEpotentials.jl ``algebraic_smoothness_prior``: γ = Σ_t (l_t/wl)^p + (n_t/wn)^p (column prior)."""
    return AlgebraicSmoothness(p=p, wl=wl, wn=wn)


def exponential_smoothness(wl: float = 2 / 3, wn: float = 1) -> ExponentialSmoothness:
    """ACEpotentials.jl ``exp_smoothness_prior``: γ = exp(Σ_t l_t/wl + n_t/wn) (column prior)."""
    return ExponentialSmoothness(wl=wl, wn=wn)


def gaussian_smoothness(wl: float = 1 / math.sqrt(2), wn: float = 1 / math.sqrt(2)) -> GaussianSmoothness:
    """ACEpotentials.jl ``gaussian_smoothness_prior``: γ = exp(Σ_t (l_t/wl)² + (n_t/wn)²) (column prior)."""
    return GaussianSmoothness(wl=wl, wn=wn)


def algebraic(sigma_n: float, sigma_l: Optional[float] = None, p: float = 4) -> AlgebraicPrior:
    """Regularity prior Π_t (1 + σ_n k_t + σ_l l_t)^p (basis prior); σ_l defaults to 1.5·σ_n."""
    return AlgebraicPrior(sigma_n=sigma_n, sigma_l=sigma_l, p=p)


def exponential(sigma_n: float, sigma_l: Optional[float] = None) -> ExponentialPrior:
    """Regularity prior exp(Σ_t σ_n k_t + σ_l l_t) (basis prior); σ_l defaults to 1.5·σ_n."""
    return ExponentialPrior(sigma_n=sigma_n, sigma_l=sigma_l)


def gaussian(sigma: float, rcut: Optional[float] = None) -> GaussianPrior:
    """Regularity prior exp(Σ_t σ_n² k_t² + σ_l² l_t²), σ_n = √5σ/rcut, σ_l = σ/rcut, σ in Å (basis prior)."""
    return GaussianPrior(sigma=sigma, rcut=rcut)


_REGISTRY = {cls.NAME: cls for cls in (AlgebraicSmoothness, ExponentialSmoothness, GaussianSmoothness,
                                       AlgebraicPrior, ExponentialPrior, GaussianPrior)}


def from_dict(d: Dict[str, Any]):
    """Rebuild a prior from ``prior.to_dict()`` (a JSON object); unknown names or keys are errors."""
    if not isinstance(d, dict):
        raise TypeError(f"a prior dict must be a dict, got {type(d).__name__}")
    if "name" not in d:
        raise ValueError(f"a prior dict needs a 'name' (one of {sorted(_REGISTRY)}), got keys {sorted(d)}")
    name = d["name"]
    if name not in _REGISTRY:
        raise ValueError(f"unknown prior name {name!r}; known: {sorted(_REGISTRY)}")
    cls = _REGISTRY[name]
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(k for k in d if k != "name" and k not in allowed)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} for prior {name!r}; allowed: {allowed}")
    kwargs = {k: v for k, v in d.items() if k != "name"}
    try:
        return cls(**kwargs)
    except TypeError as e:
        if "missing" in str(e):
            raise ValueError(f"prior {name!r}: missing required key(s): {e}") from None
        raise


def use_prior(model, prior) -> Optional[torch.Tensor]:
    """Put ``prior`` on a model about to be fitted or trained (``torchace.fit`` and ``torchace.train`` alike):
    a basis prior rescales the basis inside the model (Γ = 1: returns None); otherwise no leftover rescaling of an
    earlier basis prior stays (the fit defines the basis) and a column prior is returned as Γ (float64) of the
    model's ``basis_size`` columns (density 1 and the pair part).  ``model.prior_info``
    records it."""
    info = prior.to_dict() if prior is not None else None
    gamma = None
    if prior is not None and prior.kind == "basis":
        prior.apply(model)
    else:
        reset_basis_scale(model)
        if prior is not None:
            gamma = prior.column_scale(model).to(torch.float64)
    model.prior_info = info
    return gamma


def reset_basis_scale(model) -> None:
    """Undo ``apply`` of a basis prior: one-particle and pair scales back to 1."""
    nz, _, n_pair, max_n, max_l = _model_sizes(model)
    model.set_basis_scale(nl_scale=torch.ones(max_n, max_l + 1, dtype=torch.float64),
                          pair_scale=torch.ones(n_pair, dtype=torch.float64))
