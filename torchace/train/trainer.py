"""``torchace.train``: gradient training of a (nonlinear) ACE model on the weighted E/F/V loss of ``torchace.fit``
(docs/training.md, issue 16 part 2).

    L(θ) = ( Σ_s [ (wE/√N)² (E_s − Ê_s)² + wF² ‖F_s − F̂_s‖² + (wV/√N)² ‖W_s − Ŵ_s‖²_Voigt ] + λ² R(θ) ) / n_rows
    R(θ) = Σ_p ‖Γ ⊙ c_p‖² + ‖Γ_pair ⊙ c_pair‖² + ‖W − I‖²

with the rows, weights and 1/√N scaling of the linear fit (``training.make_batches`` / ``weights.row_weights``).
The prior is the same rescaling as in the fit: a *basis* prior rescales the one-particle basis inside the model
(``prior.apply``; Γ = 1 then, and the learnable radials are expanded in the rescaled polynomials), a *column*
prior is Γ (c = Γ⁻¹c′, so ‖c′‖² = ‖Γc‖²).  With one density, no embedding and fixed radials L is exactly
``(‖Ac − y‖² + λ²‖Γc‖²)/n_rows`` of the fit's design matrix, whose minimiser is ``solvers.QR(lam=λ)`` with
that prior (tests/test_trainer.py).

Warm start (``init="linear"``): ``torchace.fit`` of density 1 and the pair part (BLR by default, E0 as in the
fit), radials at the identity, the other densities at zero (or N(0, init_scale²)); epoch 0 is that model, and
the first step starts from ``NonlinearACEModel.split_densities(init_split)`` (off the saddle).  λ: given, or
the BLR warm start's √(σ²/σ_p²).  Optimisers: Levenberg–Marquardt on the density and pair coefficients
(``gauss_newton``; "auto" for separable embeddings), Adam on mini-batches (``batch_size`` structures, batch
order shuffled per epoch from ``seed``), full-batch L-BFGS (strong Wolfe; one iteration per epoch), or Gauss–
Newton / Adam then L-BFGS.  Early stopping on a validation set; the model
returned holds the parameters of the epoch with the lowest validation loss (training loss without one).
``init="auto"`` (default) keeps the parameters of a model that holds trained coefficients (continuing a run)
and does the linear warm start for a new one.
Checkpoints (``checkpoint=path``) are written atomically after every epoch and resumed from when present
(``train_state``); a diverging run stops at the best epoch, an interrupted one says what its checkpoint keeps
(``train_interrupt``).
"""
from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from ..fieldcheck import check_bool, check_float
from ..fit.assembly import fitting_structures
from ..fit.contacts import DEFAULT_CLOSE_CONTACT, check_close_contacts
from ..fit.data import Dataset, read_data
from ..fit.metrics import errors as error_table
from ..fit.metrics import format_table
from .loss import DEFAULT_EPOCHS, Penalty, loss_metrics, make_batches, residuals, total_loss
from .scaling import CachedClosure, ScaledParameters, curvature_scale
from .interrupt import TrainingInterrupted, interrupted_message, sigterm_as_interrupt, signal_of
from .state import TrainCheckpoint, fingerprint, resume_epoch
from .validation import validation_split
from .start import DTYPES, INITS, OPTIMIZERS, PAIRED  # noqa: F401 (public here too)
from .start import check_arguments, check_label_range, init_line, refuse_start, resolve_init
from ..fit.weights import resolve_weights
from ..jobs import announce, job_options
from .gauss_newton import GaussNewton, embedding_derivatives
from .gauss_newton import check_memory as check_gn_memory

log = logging.getLogger("torchace")


@dataclass
class TrainResult:
    """What ``train`` returns: ``history`` (one dict per epoch: epoch, phase, train/val loss and RMSEs, seconds),
    ``chosen_epoch`` (the epoch whose parameters the model holds), ``errors`` (training-set error table of the
    returned model, as ``FitResult.errors``), ``validation_errors``, ``init`` (the warm-start fit's summary),
    ``hyperparameters``, ``timings``, ``stopped`` (why training ended: "epochs", an early stop, or "diverged: ..."),
    ``resumed`` (the checkpoint it continued, None for a fresh run)."""

    history: List[Dict[str, Any]]
    chosen_epoch: int
    errors: Dict[str, Any]
    validation_errors: Optional[Dict[str, Any]]
    hyperparameters: Dict[str, Any]
    init: Optional[Dict[str, Any]]
    n_parameters: int
    stopped: str
    timings: Dict[str, float] = field(default_factory=dict)
    resumed: Optional[Dict[str, Any]] = None  # {"checkpoint": path, "epochs_done": its last epoch} when resumed

    def table(self) -> str:
        out = format_table(self.errors, f"training errors (epoch {self.chosen_epoch})")
        if self.validation_errors:
            out += "\n" + format_table(self.validation_errors, "validation errors")
        return out

    def to_dict(self) -> Dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items()}


class TrainingDivergedWarning(RuntimeWarning):
    """Training stopped at a non-finite loss or parameters; the model holds the best epoch before it."""


def trainable(model) -> List[torch.nn.Parameter]:
    """The parameters ``train`` optimises, in a fixed order (named_parameters order)."""
    return [p for _, p in model.named_parameters() if p.requires_grad]


def _refit_linear(model, train_structs, weights, solver, lam, gamma, batches, val_batches, penalty):
    """Variable projection's last step: the parameters the model is linear in (identity-branch densities and
    the pair part, ``nonlinear_committee``) re-solved exactly at the trained radials and other densities, with
    the warm start's solver (default BLR; ``solvers.QR(lam)`` with a column prior Γ); kept only if the
    validation loss (training loss without validation) goes down."""
    from ..uncertainty.nonlinear import committee_system, fully_linear, linear_coefficients, \
        set_linear_coefficients
    from ..fit import solvers as S
    from ..fit.driver import solve_system

    if model.embedding_fn is not None and model.embedding_name != "fs":
        return {"result": "skipped (the MLP embedding has no linear part)", "before": float("nan"),
                "after": float("nan")}
    def score():  # the held-out misfit (no penalty) with a validation split, else the training objective
        return (loss_metrics(model, val_batches) if val_batches else loss_metrics(model, batches, penalty))["loss"]
    before = score()
    theta0 = linear_coefficients(model).detach().clone()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    dev, dt = model.density_coefficients.device, model.density_coefficients.dtype
    system = committee_system(model.to(torch.float64), Dataset(list(train_structs)), weights)
    sv = solver if solver is not None else (S.QR(lam=lam) if gamma is not None else S.BLR())
    sol = solve_system(system, sv, gamma=gamma)
    set_linear_coefficients(model, sol.coefficients)
    model.to(device=dev, dtype=dt)
    after = score()
    kept = after < before and bool(torch.isfinite(sol.coefficients).all())
    if not kept:
        model.load_state_dict(state)
    return {"result": ("kept" if kept else "discarded (no better)") + f" ({type(sv).__name__}"
            + (", fully linear model" if fully_linear(model) else "") + ")", "before": before,
            "after": after,
            "change": float((sol.coefficients.to(theta0) - theta0).norm() / theta0.norm().clamp_min(1e-300))}


def _phases(optimizer, epochs):
    if optimizer in PAIRED:
        first, second = optimizer.split("+")
        return [first] * epochs[0] + [second] * epochs[1]
    return [optimizer] * epochs


def resolve_optimizer(model, optimizer: str) -> str:
    """"auto": Gauss–Newton for the separable embeddings (none, FS), which it handles exactly and which
    first-order methods barely move (docs/training.md), L-BFGS for the MLP; the others as given."""
    if optimizer != "auto":
        if optimizer.startswith("gn"):
            embedding_derivatives(model)  # refuses the MLP with the reason
        return optimizer
    return "lbfgs" if model.embedding_fn is not None and model.embedding_fn.name != "fs" else "gn"


def _lam_from_init(init_info) -> Optional[float]:
    """λ = √(σ²/σ_p²) of a BLR warm start (its ridge equivalent: the regularisation the linear fit chose)."""
    h = (init_info or {}).get("hyperparameters") or {}
    nv, pv = h.get("noise_var"), h.get("prior_var")
    if isinstance(nv, (int, float)) and isinstance(pv, (int, float)) and nv > 0 and pv > 0:
        return float((nv / pv) ** 0.5)
    return None


def _progress_line(rec, n_epochs, has_val) -> str:
    v = rec["val"] if has_val else rec["train"]
    tag = "val" if has_val else "train"
    return (f"epoch {rec['epoch']:>4}/{n_epochs} {rec['phase']:<5} train loss {rec['train']['loss']:.6g}"
            + (f"  val loss {rec['val']['loss']:.6g}" if has_val else "")
            + "".join(f" {k} {v[k]:.4g} {u}" if v[k] is not None else "" for k, u in
                      (("E", "meV/atom"), ("F", "eV/Å"), ("V", "meV/atom"))).replace(" E", f"  {tag} RMSE E", 1)
            + f"  {rec['seconds']:.1f} s")


@job_options("train")
def train(model, data, *, weights=None, prior=None, E0=None, init: str = "auto", solver=None, epochs=DEFAULT_EPOCHS,
          batch_size: int = 8, optimizer: str = "auto", lr: Optional[float] = None, lam: Optional[float] = None,
          init_scale: float = 0.0, init_split: float = 0.1, patience: int = 10, device=None, dtype=torch.float64,
          validation=None,
          checkpoint: Optional[str] = None, progress: bool = True, seed: int = 0, keys=None, skip_bad: bool = False,
          min_distance: Optional[float] = None, compute_errors: bool = True, precondition: bool = False,
          refit_linear: bool = True, committee_size: int = 0, close_contact: float = DEFAULT_CLOSE_CONTACT,
          close_contact_error: bool = False) -> TrainResult:
    """Train ``model`` (a ``NonlinearACEModel``; an ``ACEModel`` is trained as its one-density equivalent and
    written back) in place on ``data`` (paths, ``ase.Atoms`` list or ``Dataset``); see the module docstring.

    ``weights``, ``prior``, ``E0``, ``keys``, ``skip_bad``, ``close_contact``, ``close_contact_error``: as
    ``torchace.fit``.  ``init``: "auto" (default:
    "model" when the model holds trained coefficients — loaded from a trained file, fitted or trained before —,
    then E0='fit' keeps its E0; else "linear"), "linear" (warm start from ``torchace.fit`` with ``solver``,
    default BLR; re-initialises a trained model) or "model" (the model's current parameters; E0 'fit' then needs
    init="linear"); the progress output says which.
    ``optimizer``: "auto" ("gn" for embedding None / FS, "lbfgs" for the MLP),
    "gn" (one Levenberg–Marquardt iteration per epoch on the density and pair coefficients and, on the fused
    CPU kernel, the learned radial weights; elsewhere the radials stay),
    "lbfgs", "adam", "gn+lbfgs", "adam+lbfgs".  ``epochs``: epochs (Adam: one pass over the batches; L-BFGS /
    GN: one iteration on the full loss); for the paired optimisers an integer (split in half) or [first,
    lbfgs].  ``lr``: Adam 1e-3, L-BFGS 1.  ``lam``: λ of the penalty (``solvers.QR(lam)``'s convention); None:
    √(noise_var/prior_var) of the BLR warm start, else 1e-3.  ``init_split``: the share κ of the linear fit
    moved to densities 2 … P before the first step.  ``validation``: None, a fraction in (0, 1) of the
    training structures (seeded split) or other data (``train_validation``: the training data again is refused);
    early stopping after ``patience`` epochs without improvement.
    ``checkpoint``: a path written after every epoch and resumed from (same inputs, or an error; a checkpoint
    past the epochs asked is refused), saying so in one line.  A loss or parameters that become non-finite stop
    training: the model gets the best epoch, ``stopped`` says "diverged: ..." (``TrainingDivergedWarning``
    without progress output).  Ctrl-C / SIGTERM raise ``train_interrupt.TrainingInterrupted`` whose message says
    what the checkpoint keeps; the model holds the best epoch so far.
    ``precondition``: optimise u with θ = d ⊙ u, d from the Gauss–Newton diagonal (``train_scaling``); False:
    the raw parameters (the default: on the ill-conditioned ACE least-squares problems measured so far the
    Jacobi-scaled L-BFGS converged more slowly, docs/training.md).  ``refit_linear``: after training, re-solve
    the parameters the model is linear in at the trained radials and densities (kept if the validation loss
    improves).  ``committee_size`` > 0: a committee of that many BLR posterior samples of the linear part at
    the trained model (``torchace.uncertainty.nonlinear.fit_committee``; the calculator's uncertainties).
    ``threads`` / ``log``: as ``torchace.fit`` (``torchace.jobs``); the log gets the progress lines also without
    ``progress``.
    """
    from ..model.contract import capabilities
    from ..model.nonlinear import from_linear

    epochs, dtype = check_arguments(optimizer, init, epochs, batch_size, lr, lam, patience, device, dtype,
                                     init_scale, init_split, seed, committee_size, validation)
    check_float("train", "close_contact", close_contact, nonnegative=True)
    check_bool("train", "close_contact_error", close_contact_error)
    if capabilities(model).rows:  # the linear ACEModel: trained as its nonlinear form, copied back
        nl = from_linear(model, densities=1, embedding=None, learnable_radials=False)
        res = train(nl, data, weights=weights, prior=prior, E0=E0, init=init, solver=solver, epochs=epochs,
                    batch_size=batch_size, optimizer=optimizer, lr=lr, lam=lam, init_split=init_split,
                    patience=patience, device=device,
                    dtype=dtype, validation=validation, checkpoint=checkpoint, progress=progress, seed=seed,
                    keys=keys, skip_bad=skip_bad, min_distance=min_distance, compute_errors=compute_errors,
                    precondition=precondition, refit_linear=refit_linear, committee_size=committee_size,
                    close_contact=close_contact, close_contact_error=close_contact_error)
        lin = nl.linear_model()
        with torch.no_grad():
            model.to(lin.coefficients.device, lin.coefficients.dtype)
            model.coefficients = lin.coefficients.detach().clone()
            model.E0.copy_(lin.E0)
            model.set_basis_scale(lin.embedding.nl_scale, lin.pair.scale)
        model.prior_info, model.metadata = nl.prior_info, nl.metadata
        return res
    if not capabilities(model).nonlinear:
        raise TypeError(f"train needs a NonlinearACEModel or ACEModel, got {type(model).__name__}")
    optimizer = resolve_optimizer(model, optimizer)
    if "gn" in _phases(optimizer, epochs):
        check_gn_memory(model, device)
    if prior is not None and not (hasattr(prior, "kind") and hasattr(prior, "to_dict")):
        raise TypeError(f"prior must be a torchace.priors object, got {prior!r}")
    init, init_reason = resolve_init(model, init)
    # E0='fit' was fitted with the parameters a kept model holds: keep it (init="model" given: refused, as before)
    keep_E0 = init_reason != "given" and init == "model" and isinstance(E0, str) and E0 == "fit"
    if init == "model" and isinstance(E0, str) and E0 == "fit" and not keep_E0:
        raise ValueError("train: E0='fit' is determined by the linear warm start; use init='linear' or give E0")
    if checkpoint is not None:
        from ..atomic import check_outputs

        check_outputs([p for p in ([data] if isinstance(data, str) else (data if isinstance(data, list) else []))
                       if isinstance(p, str)], {"checkpoint": checkpoint}, "train")
    run = {"epoch": None, "saved": None, "best": None}  # where an interrupt finds the run (epoch None: not begun)
    with sigterm_as_interrupt():
        try:
            return _train(model, data, run, weights=weights, prior=prior, E0=E0, keep_E0=keep_E0, init=init,
                          init_reason=init_reason, solver=solver, epochs=epochs, batch_size=batch_size,
                          optimizer=optimizer, lr=lr, lam=lam, init_scale=init_scale, init_split=init_split,
                          patience=patience, device=device, dtype=dtype, validation=validation,
                          checkpoint=checkpoint, progress=progress, seed=seed, keys=keys, skip_bad=skip_bad,
                          min_distance=min_distance, compute_errors=compute_errors, precondition=precondition,
                          refit_linear=refit_linear, committee_size=committee_size, close_contact=close_contact,
                          close_contact_error=close_contact_error)
        except KeyboardInterrupt as exc:
            if run["best"] is not None:  # the caller's model holds the best epoch, not a half-taken step
                model.load_state_dict(run["best"]["state"])
            raise TrainingInterrupted(signal_of(exc), interrupted_message(exc, run, checkpoint)) from None


def _train(model, data, run, *, weights, prior, E0, keep_E0, init, init_reason, solver, epochs, batch_size, optimizer,
           lr, lam, init_scale, init_split, patience, device, dtype, validation, checkpoint, progress, seed, keys,
           skip_bad, min_distance, compute_errors, precondition, refit_linear, committee_size, close_contact,
           close_contact_error) -> TrainResult:
    """``train``'s work once the arguments are checked; ``run`` records the epoch, the last checkpointed epoch
    and the best epoch for the interrupt handler."""
    from ..fit.driver import check_weights_match, set_E0, fit

    def say(line: str) -> None:  # printed with progress, always in the job's log (torchace.jobs)
        announce(line, progress)

    t_start = time.perf_counter()
    timings: Dict[str, float] = {}
    resolved = resolve_weights(weights)
    ds = read_data(data, keys=keys, elements=model.elements, skip_bad=skip_bad)
    check_weights_match(weights, ds)
    check_close_contacts(fitting_structures(ds), close_contact, close_contact_error)
    train_structs, val_structs = validation_split(ds, data, validation, seed, keys=keys, elements=model.elements,
                                                  skip_bad=skip_bad)
    if not train_structs:
        raise ValueError("train: no training structures (only isolated atoms?)")
    check_label_range(list(train_structs) + list(val_structs), resolved)
    timings["read"] = time.perf_counter() - t_start

    # the prior: a basis prior rescales the basis (as in fit), a column prior is Γ in the penalty
    gamma = None
    from ..fit.priors import reset_basis_scale

    fp = fingerprint(model, train_structs, val_structs, resolved, dict(
        prior=None if prior is None else prior.to_dict(), E0=E0 if not isinstance(E0, dict) else dict(E0),
        init=init, optimizer=optimizer, lr=lr, lam=lam, init_scale=init_scale, init_split=init_split,
        batch_size=batch_size, seed=seed,
        dtype=str(dtype), solver=None if solver is None else repr(solver), precondition=precondition))
    ckpt = TrainCheckpoint(checkpoint, fp) if checkpoint is not None else None
    saved = ckpt.load(model) if ckpt is not None else None
    phases = _phases(optimizer, epochs)
    n_epochs = len(phases)
    start = resume_epoch(saved, phases, ckpt.path) if saved is not None else 0
    resumed = None if saved is None else {"checkpoint": ckpt.path, "epochs_done": start - 1}
    if saved is not None:
        run["saved"] = start - 1
        say(f"resuming from {ckpt.path} at epoch {start} of {n_epochs} (epochs 0-{start - 1} done)"
            if start <= n_epochs else f"resuming from {ckpt.path}: it holds all {n_epochs} epochs, nothing to train")

    init_info = None
    t0 = time.perf_counter()
    if prior is not None and prior.kind == "basis":
        prior.apply(model)
    else:
        reset_basis_scale(model)
        if prior is not None:
            gamma = prior.column_scale(model.linear).to(torch.float64)
    model.prior_info = prior.to_dict() if prior is not None else None
    if saved is not None:
        init_info = saved["init"]
    elif init == "linear":
        lin = model.linear_model()
        fitting_ids = {id(s) for s in fitting_structures(ds)}
        keep = Dataset(list(train_structs) + [s for s in ds if id(s) not in fitting_ids])  # + isolated atoms
        say(f"train: linear warm start (torchace.fit of density 1 and the pair part, {len(keep)} structures, "
            f"{lin.basis_size:,} columns) ...")
        fres = fit(lin, keep, weights=weights, prior=prior, solver=solver, E0=E0, device=device,
                   compute_errors=False, close_contact=0.0,  # checked above, once
                   **({} if min_distance is None else {"min_distance": min_distance}))
        init_info = {"solver": fres.solver, "hyperparameters": fres.to_dict()["hyperparameters"], "E0": fres.E0,
                     "seconds": sum(fres.timings.values())}
        c = lin.coefficients.detach().to(model.density_coefficients)
        with torch.no_grad():
            model.linear.E0.copy_(lin.E0.to(model.linear.E0))
            model.density_coefficients.zero_()
            model.density_coefficients[0] = c[: model.nz * model.n_b].view(model.nz, model.n_b)
            model.pair_coefficients.copy_(c[model.nz * model.n_b:].view_as(model.pair_coefficients))
            if model.radials is not None:
                model.radials.weights.copy_(model.radials.identity())
        if init_scale and model.densities > 1:
            model.randomize_densities(init_scale, seed)
    elif not keep_E0:
        set_E0(model.linear, ds, E0)
    if saved is None:
        say(init_line(init, init_reason, init_info, keep_E0))
    timings["init"] = time.perf_counter() - t0
    lam_from = "given"
    if lam is None:  # the regularisation the BLR warm start chose, else the fixed default
        lam = _lam_from_init(init_info)
        lam, lam_from = (lam, "BLR warm start") if lam is not None else (1e-3, "default 1e-3")

    if device is not None:
        model.to(device)
    dev = model.density_coefficients.device
    model.to(dtype)
    params = trainable(model)
    if saved is not None:
        model.load_state_dict(saved["model"])
    penalty = Penalty(model, lam, gamma)
    say(f"train: loss batches of {len(train_structs)} training, {len(val_structs)} validation structures ...")
    batches = make_batches(model, train_structs, resolved, batch_size, dev, dtype)
    val_batches = make_batches(model, val_structs, resolved, batch_size, dev, dtype) if val_structs else []
    n_rows = sum(b["n_rows"] for b in batches)
    if n_rows == 0:
        raise ValueError("train: every training label has zero weight; check the weights and the data's keys")

    history = saved["history"] if saved is not None else []
    best = saved["best"] if saved is not None else None
    run["best"] = best
    opt_adam = opt_lbfgs = opt_gn = None

    t0 = time.perf_counter()
    if saved is not None and saved.get("scales") is not None:
        scales = saved["scales"]
    else:  # θ = d ⊙ u with unit curvature in u (train_scaling.py); fixed for the whole run
        scales = curvature_scale(model, params, batches, penalty, seed=seed) if precondition \
            else [torch.ones_like(p) for p in params]
    timings["precondition"] = time.perf_counter() - t0
    scaled = ScaledParameters(params, scales)

    def make_opt(phase):
        if phase == "gn":
            return GaussNewton(model, batches, penalty)
        if phase == "adam":
            return torch.optim.Adam(scaled.u, lr=lr or 1e-3)
        # max_eval: torch derives it from max_iter (1 here), which would leave the line search no evaluations
        return torch.optim.LBFGS(scaled.u, lr=lr or 1.0, max_iter=1, max_eval=26, history_size=20, tolerance_grad=0.0,
                                 tolerance_change=0.0,
                                 line_search_fn="strong_wolfe")

    if saved is not None and saved.get("optimizer") is not None and 0 < start <= n_epochs \
            and saved.get("phase") == phases[start - 1]:  # the next epoch continues the saved optimiser
        opt = make_opt(phases[start - 1])
        opt.load_state_dict(saved["optimizer"])
        opt_adam, opt_lbfgs, opt_gn = [opt if phases[start - 1] == ph else None for ph in ("adam", "lbfgs", "gn")]
    closure = CachedClosure(model, scaled, lambda: total_loss(model, batches, penalty, backward=True))
    stopped = "epochs"
    has_val = bool(val_batches)
    # densities 2 … P all zero (the linear warm start, or a kept linear model): a saddle; start off it
    split_at_1 = not init_scale and model.densities > 1 and not bool(model.density_coefficients.detach()[1:].any())
    early = f"early stop: no better validation loss for {patience} epochs"
    if has_val and best is not None and start - 1 - best["epoch"] >= patience:
        stopped, start = early, n_epochs + 1  # the saved run had stopped early: it stays stopped
    t_train = time.perf_counter()
    for epoch in range(start, n_epochs + 1):  # epoch 0 is the starting point
        run["epoch"] = epoch
        t0 = time.perf_counter()
        phase = "init" if epoch == 0 else phases[epoch - 1]
        opt, step_info = None, None
        if epoch == 1 and split_at_1:
            model.split_densities(init_split)
            scaled.pull()
        if phase == "adam":
            opt_adam = opt_adam or make_opt("adam")
            opt = opt_adam
            model.train()
            order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(seed * 100003 + epoch))
            for k in order.tolist():
                scaled.zero_model_grads()
                b = batches[k]
                loss = residuals(model, b)[1] / b["n_rows"] + penalty(model) / n_rows
                loss.backward()
                scaled.grads_to_u()
                opt.step()
                scaled.push()
        elif phase == "gn":
            opt_gn = opt_gn or make_opt("gn")
            opt = opt_gn
            step_info = opt.step()
            scaled.pull()
        elif phase == "lbfgs":
            opt_lbfgs = opt_lbfgs or make_opt("lbfgs")
            opt = opt_lbfgs
            opt.step(closure)
            scaled.push()
        finite = all(bool(torch.isfinite(p).all()) for p in params)
        tr = va = None
        if finite:
            # an accepted Gauss–Newton step has just evaluated these (same parameters, same function)
            tr = opt_gn.metrics if phase == "gn" and opt_gn.metrics is not None else loss_metrics(model, batches,
                                                                                                   penalty)
            va = loss_metrics(model, val_batches) if has_val else None  # held-out misfit: no penalty
            finite = math.isfinite(tr["loss"]) and (va is None or math.isfinite(va["loss"]))
        if not finite:
            if epoch == 0:
                refuse_start(model, train_structs, val_structs, resolved, batch_size, dev, dtype, init)
            # diverged: the caller gets the best epoch, the checkpoint keeps the last finite one
            what = "the parameters" if tr is None else ("the training loss" if not math.isfinite(tr["loss"])
                                                         else "the validation loss")
            model.load_state_dict(best["state"])
            scaled.pull()
            stopped = (f"diverged: {what} became non-finite at epoch {epoch} ({phase}); stopped there and kept "
                       f"epoch {best['epoch']}, the best; lower lr or raise lam")
            if progress:
                say(f"train: {stopped}")
            else:
                warnings.warn(f"train: {stopped}", TrainingDivergedWarning, stacklevel=3)
            break
        rec = {"epoch": epoch, "phase": phase, "train": tr, "val": va, "seconds": time.perf_counter() - t0}
        if step_info is not None:
            rec["gn"] = step_info
        history.append(rec)
        score = (va or tr)["loss"]
        if best is None or score < best["score"]:
            best = {"score": score, "epoch": epoch,
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
            run["best"] = best
        if ckpt is not None:
            ckpt.save({"model": model.state_dict(), "optimizer": None if opt is None else opt.state_dict(),
                       "scales": scales,
                       "phase": phase, "history": history, "best": best, "init": init_info})
            run["saved"] = epoch
        say(_progress_line(rec, n_epochs, has_val))  # after the save: a printed epoch is in the checkpoint
        if has_val and epoch - best["epoch"] >= patience:
            stopped = early
            break
    run["epoch"] = "after"
    say(f"train: stopped: {'all epochs done' if stopped == 'epochs' else stopped}; best epoch {best['epoch']}")
    timings["train"] = time.perf_counter() - t_train
    model.load_state_dict(best["state"])
    model.eval()
    refit = None
    if refit_linear and (model.densities > 1 or model.radials is not None):
        t0 = time.perf_counter()
        refit = _refit_linear(model, train_structs, weights, solver, lam, gamma, batches, val_batches, penalty)
        timings["refit_linear"] = time.perf_counter() - t0
        say(f"refit of the linear part at the trained radials/densities: {refit['result']} "
            f"({'val' if has_val else 'train'} loss {refit['before']:.6g} -> {refit['after']:.6g})")
    committee = None
    if committee_size:
        from ..uncertainty.nonlinear import fit_committee

        t0 = time.perf_counter()
        committee = fit_committee(model, Dataset(list(train_structs)), weights=weights,
                                  committee_size=committee_size, seed=seed)
        timings["committee"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    errs = error_table(model, Dataset(list(train_structs))) if compute_errors else {}
    verrs = error_table(model, Dataset(list(val_structs))) if (compute_errors and val_structs) else None
    timings["errors"] = time.perf_counter() - t0
    hyper = {"optimizer": optimizer, "epochs": list(epochs) if isinstance(epochs, tuple) else epochs,
             "batch_size": batch_size, "lr": lr or (1e-3 if optimizer == "adam" else 1.0), "lam": lam,
             "lam_from": lam_from, "init_split": init_split,
             "init": init, "init_from": init_reason, "init_scale": init_scale, "patience": patience, "seed": seed,
             "dtype": str(dtype), "device": str(dev), "n_train": len(train_structs), "n_validation": len(val_structs),
             "lbfgs_evaluations": closure.evaluations,
             "gn_evaluations": opt_gn.evaluations if opt_gn is not None else 0,
             "gn_radials": opt_gn.radials if opt_gn is not None else None,
             "gn_radials_reason": opt_gn.radials_reason if opt_gn is not None else None, "refit_linear": refit,
             "committee_size": committee_size, "committee": committee}
    result = TrainResult(history=history, chosen_epoch=best["epoch"], errors=errs, validation_errors=verrs,
                         hyperparameters=hyper, init=init_info, n_parameters=sum(p.numel() for p in params),
                         stopped=stopped, timings=timings,
                         resumed=resumed)
    model.metadata = dict(model.metadata or {}, training={k: v for k, v in result.to_dict().items()
                                                          if k not in ("history", "errors", "validation_errors")})
    return result
