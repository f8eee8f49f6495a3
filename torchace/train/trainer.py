"""``torchace.train``: gradient training of a (nonlinear) ACE model on the weighted E/F/V loss of ``torchace.fit``
(docs/training.md, issue 16 part 2).

    L(θ) = ( Σ_s [ (wE/√N)² (E_s − Ê_s)² + wF² ‖F_s − F̂_s‖² + (wV/√N)² ‖W_s − Ŵ_s‖²_Voigt ] + λ² R(θ) ) / n_rows
    R(θ) = Σ_p ‖Γ ⊙ c_p‖² + ‖Γ_pair ⊙ c_pair‖² + ‖W − I‖²

with the rows, weights and 1/√N scaling of the linear fit (``loss.make_batches`` / ``fit.weights.label_weights``).
The prior is the same rescaling as in the fit: a *basis* prior rescales the one-particle basis inside the model
(``prior.apply``; Γ = 1 then, and the learnable radials are expanded in the rescaled polynomials), a *column*
prior is Γ (c = Γ⁻¹c′, so ‖c′‖² = ‖Γc‖²).  With one density, no embedding and fixed radials L is exactly
``(‖Ac − y‖² + λ²‖Γc‖²)/n_rows`` of the fit's design matrix, whose minimiser is ``solvers.QR(lam=λ)`` with
that prior (tests/test_trainer.py).

Warm start (``init="linear"``): ``torchace.fit`` of density 1 and the pair part (BLR by default, E0 as in the
fit), radials at the identity, the other densities at zero (or N(0, init_scale²)); epoch 0 is that model, and
the first step starts from ``ACEModel.split_densities(init_split)`` (off the saddle).  λ: given, or
the BLR warm start's √(σ²/σ_p²).  Optimisers: Levenberg–Marquardt on the density and pair coefficients
(``gauss_newton``; "auto" for separable embeddings), Adam on mini-batches (``batch_size`` structures, batch
order shuffled per epoch from ``seed``), full-batch L-BFGS (strong Wolfe; one iteration per epoch), or Gauss–
Newton / Adam then L-BFGS.  Early stopping on a validation set; the model
returned holds the parameters of the epoch with the lowest validation loss (training loss without one).
``init="auto"`` (default) keeps the parameters of a model that holds trained coefficients (continuing a run)
and does the linear warm start for a new one.
Checkpoints (``checkpoint=path``) are written atomically after every epoch and resumed from when present
(``state``); a diverging run stops at the best epoch, an interrupted one says what its checkpoint keeps
(``interrupt``).  The options and their defaults: ``options.TrainOptions``; the run: ``Trainer``, in phases.
"""
from __future__ import annotations

import copy
import inspect
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from ..fit.assembly import fitting_structures
from ..fit.contacts import check_close_contacts
from ..fit.data import Dataset, read_data
from ..fit.metrics import errors as error_table
from ..fit.metrics import format_table
from ..fit.priors import use_prior
from ..fit.weights import resolve_weights
from ..jobs import announce, job_options
from .gauss_newton import check_memory as check_gn_memory
from .interrupt import TrainingInterrupted, interrupted_message, sigterm_as_interrupt, signal_of
from .loss import Penalty, loss_metrics, make_batches, total_loss
from .options import DTYPES, INITS, OPTIMIZERS, PAIRED, TrainOptions, signature  # noqa: F401 (public here too)
from .phases import Optimizers, phase_list, resolve_optimizer
from .refit import refit_linear
from .scaling import CachedClosure, ScaledParameters, curvature_scale
from .start import check_label_range, init_line, lam_from_init, linear_warm_start, refuse_start, \
    resolve_init
from .state import TrainCheckpoint, fingerprint, resume_epoch
from .validation import validation_split

log = logging.getLogger("torchace")

__all__ = ["TrainResult", "TrainingDivergedWarning", "Trainer", "train", "trainable", "Penalty",
           "resolve_optimizer", "OPTIMIZERS"]


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


def _progress_line(rec, n_epochs, has_val) -> str:
    v = rec["val"] if has_val else rec["train"]
    tag = "val" if has_val else "train"
    return (f"epoch {rec['epoch']:>4}/{n_epochs} {rec['phase']:<5} train loss {rec['train']['loss']:.6g}"
            + (f"  val loss {rec['val']['loss']:.6g}" if has_val else "")
            + "".join(f" {k} {v[k]:.4g} {u}" if v[k] is not None else "" for k, u in
                      (("E", "meV/atom"), ("F", "eV/Å"), ("V", "meV/atom"))).replace(" E", f"  {tag} RMSE E", 1)
            + f"  {rec['seconds']:.1f} s")


class Trainer:
    """One training run of an ``ACEModel`` with checked options (``train`` checks them and resolves
    ``init`` and ``optimizer``), in phases: ``read`` (data, validation split, label checks), ``open_checkpoint``
    (resume), ``warm_start`` (prior, linear warm start, λ), ``prepare`` (batches, penalty, preconditioning,
    optimisers), ``train_epochs`` (epoch 0 is the starting point; then the optimiser phases, validation, the
    checkpoint after every epoch, the stop reasons: epochs, early stop, divergence) and ``finish`` (the best
    epoch, refit of the linear part, committee, error tables).  ``where``: the epoch, the last checkpointed
    epoch and the best epoch, for the interrupt handler."""

    def __init__(self, model, data, options: TrainOptions, *, init_reason: str, keep_E0: bool,
                 where: Dict[str, Any], stacklevel: int = 2):
        self.model, self.data, self.o = model, data, options
        self.init_reason, self.keep_E0, self.where, self.stacklevel = init_reason, keep_E0, where, stacklevel
        self.timings: Dict[str, float] = {}
        self.stopped = "epochs"

    def run(self) -> TrainResult:
        self.read()
        self.open_checkpoint()
        self.warm_start()
        self.prepare()
        self.train_epochs()
        return self.finish()

    def say(self, line: str) -> None:  # printed with progress, always in the job's log (torchace.jobs)
        announce(line, self.o.progress)

    # ---- before the first epoch ----

    def read(self) -> None:
        from ..fit.driver import check_weights_match

        o, model = self.o, self.model
        t_start = time.perf_counter()
        self.resolved = resolve_weights(o.weights)
        self.ds = read_data(self.data, keys=o.keys, elements=model.elements, skip_bad=o.skip_bad)
        check_weights_match(o.weights, self.ds)
        check_close_contacts(fitting_structures(self.ds), o.close_contact, o.close_contact_error)
        self.train_structs, self.val_structs = validation_split(self.ds, self.data, o.validation, o.seed,
                                                                keys=o.keys, elements=model.elements,
                                                                skip_bad=o.skip_bad)
        if not self.train_structs:
            raise ValueError("train: no training structures (only isolated atoms?)")
        check_label_range(list(self.train_structs) + list(self.val_structs), self.resolved)
        self.timings["read"] = time.perf_counter() - t_start

    def open_checkpoint(self) -> None:
        """The checkpoint of the same inputs, if one is there: the epoch to continue from."""
        o = self.o
        fp = fingerprint(self.model, self.train_structs, self.val_structs, self.resolved, dict(
            prior=None if o.prior is None else o.prior.to_dict(), E0=o.E0 if not isinstance(o.E0, dict) else dict(o.E0),
            init=o.init, optimizer=o.optimizer, lr=o.lr, lam=o.lam, init_scale=o.init_scale, init_split=o.init_split,
            batch_size=o.batch_size, seed=o.seed,
            dtype=str(o.dtype), solver=None if o.solver is None else repr(o.solver), precondition=o.precondition))
        self.ckpt = TrainCheckpoint(o.checkpoint, fp) if o.checkpoint is not None else None
        self.saved = saved = self.ckpt.load(self.model) if self.ckpt is not None else None
        self.phases = phase_list(o.optimizer, o.epochs)
        self.n_epochs = n = len(self.phases)
        self.start = resume_epoch(saved, self.phases, self.ckpt.path) if saved is not None else 0
        self.resumed = None if saved is None else {"checkpoint": self.ckpt.path, "epochs_done": self.start - 1}
        if saved is not None:
            self.where["saved"] = self.start - 1
            self.say(f"resuming from {self.ckpt.path} at epoch {self.start} of {n} (epochs 0-{self.start - 1} done)"
                     if self.start <= n else f"resuming from {self.ckpt.path}: it holds all {n} epochs, nothing to "
                     "train")

    def warm_start(self) -> None:
        """The prior, then where the parameters start (the checkpoint, the linear warm start or the model's),
        and λ (given, the BLR warm start's, else 1e-3)."""
        from ..fit.driver import set_E0

        o, model = self.o, self.model
        t0 = time.perf_counter()
        # a basis prior rescales the basis, a column prior is Γ in the penalty
        self.gamma = use_prior(model, o.prior)
        self.init_info = None
        if self.saved is not None:
            self.init_info = self.saved["init"]
        elif o.init == "linear":
            n_cols = model.nz * model.n_b + model.pair_coefficients.numel()
            self.say(f"train: linear warm start (torchace.fit of density 1 and the pair part, "
                     f"{len(self.train_structs)} structures, {n_cols:,} columns) ...")
            self.init_info = linear_warm_start(model, self.ds, self.train_structs, o)
        elif not self.keep_E0:
            set_E0(model, self.ds, o.E0)
        if self.saved is None:
            self.say(init_line(o.init, self.init_reason, self.init_info, self.keep_E0))
        self.timings["init"] = time.perf_counter() - t0
        self.lam, self.lam_from = o.lam, "given"
        if self.lam is None:  # the regularisation the BLR warm start chose, else the fixed default
            lam = lam_from_init(self.init_info)
            self.lam, self.lam_from = (lam, "BLR warm start") if lam is not None else (1e-3, "default 1e-3")

    def prepare(self) -> None:
        """Device and dtype, batches, the penalty, the preconditioner (θ = d ⊙ u, fixed for the run) and the
        optimisers (the saved one continues a checkpointed phase)."""
        o, model, saved = self.o, self.model, self.saved
        if o.device is not None:
            model.to(o.device)
        self.dev = dev = model.density_coefficients.device
        model.to(o.dtype)
        self.params = trainable(model)
        if saved is not None:
            model.load_state_dict(saved["model"])
        self.penalty = Penalty(model, self.lam, self.gamma)
        self.say(f"train: loss batches of {len(self.train_structs)} training, {len(self.val_structs)} validation "
                 "structures ...")
        self.batches = make_batches(model, self.train_structs, self.resolved, o.batch_size, dev, o.dtype)
        self.val_batches = (make_batches(model, self.val_structs, self.resolved, o.batch_size, dev, o.dtype)
                            if self.val_structs else [])
        if sum(b["n_rows"] for b in self.batches) == 0:
            raise ValueError("train: every training label has zero weight; check the weights and the data's keys")
        self.history = saved["history"] if saved is not None else []
        self.best = self.where["best"] = saved["best"] if saved is not None else None
        t0 = time.perf_counter()
        if saved is not None and saved.get("scales") is not None:
            self.scales = saved["scales"]
        else:  # θ = d ⊙ u with unit curvature in u (scaling.py)
            self.scales = curvature_scale(model, self.params, self.batches, self.penalty, seed=o.seed) \
                if o.precondition else [torch.ones_like(p) for p in self.params]
        self.timings["precondition"] = time.perf_counter() - t0
        self.scaled = ScaledParameters(self.params, self.scales)
        self.closure = CachedClosure(model, self.scaled, lambda: total_loss(model, self.batches, self.penalty,
                                                                             backward=True))
        self.optimizers = Optimizers(model, self.batches, self.penalty, self.scaled, self.closure, o.lr, o.seed)
        start = self.start
        if saved is not None and saved.get("optimizer") is not None and 0 < start <= self.n_epochs \
                and saved.get("phase") == self.phases[start - 1]:  # the next epoch continues the saved optimiser
            self.optimizers.restore(self.phases[start - 1], saved["optimizer"])
        self.has_val = bool(self.val_batches)
        # densities 2 … P all zero (the linear warm start, or a kept linear model): a saddle; start off it
        self.split_at_1 = not o.init_scale and model.densities > 1 \
            and not bool(model.density_coefficients.detach()[1:].any())
        self.early = f"early stop: no better validation loss for {o.patience} epochs"
        if self.has_val and self.best is not None and start - 1 - self.best["epoch"] >= o.patience:
            self.stopped, self.start = self.early, self.n_epochs + 1  # the saved run had stopped early: it stays

    # ---- the epochs ----

    def train_epochs(self) -> None:
        t_train = time.perf_counter()
        for epoch in range(self.start, self.n_epochs + 1):  # epoch 0 is the starting point
            if not self.epoch(epoch):
                break
        self.where["epoch"] = "after"
        self.timings["train"] = time.perf_counter() - t_train

    def epoch(self, epoch: int) -> bool:
        """One epoch (0: evaluate the start); False when training stops here."""
        self.where["epoch"] = epoch
        t0 = time.perf_counter()
        phase = "init" if epoch == 0 else self.phases[epoch - 1]
        if epoch == 1 and self.split_at_1:
            self.model.split_densities(self.o.init_split)
            self.scaled.pull()
        opt, step_info = (None, None) if phase == "init" else self.optimizers.step(phase, epoch)
        tr, va, what = self.evaluate(phase)
        if what is not None:
            self.diverged(epoch, phase, what)
            return False
        rec = {"epoch": epoch, "phase": phase, "train": tr, "val": va, "seconds": time.perf_counter() - t0}
        if step_info is not None:
            rec["gn"] = step_info
        self.history.append(rec)
        score = (va or tr)["loss"]
        if self.best is None or score < self.best["score"]:
            self.best = self.where["best"] = {"score": score, "epoch": epoch, "state": {
                k: v.detach().clone() for k, v in self.model.state_dict().items()}}
        if self.ckpt is not None:
            self.ckpt.save({"model": self.model.state_dict(), "optimizer": None if opt is None else opt.state_dict(),
                            "scales": self.scales, "phase": phase, "history": self.history, "best": self.best,
                            "init": self.init_info})
            self.where["saved"] = epoch
        self.say(_progress_line(rec, self.n_epochs, self.has_val))  # after the save: a printed epoch is saved
        if self.has_val and epoch - self.best["epoch"] >= self.o.patience:
            self.stopped = self.early
            return False
        return True

    def evaluate(self, phase: str):
        """(training metrics, validation metrics, None) or, if the parameters or a loss are not finite, what
        became non-finite in the third place."""
        model = self.model
        finite = all(bool(torch.isfinite(p).all()) for p in self.params)
        tr = va = None
        if finite:
            gn = self.optimizers.gn
            # an accepted Gauss–Newton step has just evaluated these (same parameters, same function)
            tr = gn.metrics if phase == "gn" and gn.metrics is not None else loss_metrics(model, self.batches,
                                                                                          self.penalty)
            va = loss_metrics(model, self.val_batches) if self.has_val else None  # held-out misfit: no penalty
            finite = math.isfinite(tr["loss"]) and (va is None or math.isfinite(va["loss"]))
        if finite:
            return tr, va, None
        return tr, va, ("the parameters" if tr is None else ("the training loss" if not math.isfinite(tr["loss"])
                                                            else "the validation loss"))

    def diverged(self, epoch: int, phase: str, what: str) -> None:
        """Stop: the caller gets the best epoch, the checkpoint keeps the last finite one (epoch 0: refused,
        naming the structures or the parameters)."""
        if epoch == 0:
            refuse_start(self.model, self.train_structs, self.val_structs, self.resolved, self.o.batch_size,
                         self.dev, self.o.dtype, self.o.init)
        self.model.load_state_dict(self.best["state"])
        self.scaled.pull()
        self.stopped = (f"diverged: {what} became non-finite at epoch {epoch} ({phase}); stopped there and kept "
                        f"epoch {self.best['epoch']}, the best; lower lr or raise lam")
        if self.o.progress:
            self.say(f"train: {self.stopped}")
        else:
            warnings.warn(f"train: {self.stopped}", TrainingDivergedWarning, stacklevel=self.stacklevel + 4)

    # ---- after the last epoch ----

    def finish(self) -> TrainResult:
        o, model = self.o, self.model
        self.say(f"train: stopped: {'all epochs done' if self.stopped == 'epochs' else self.stopped}; "
                 f"best epoch {self.best['epoch']}")
        model.load_state_dict(self.best["state"])
        model.eval()
        refit = None
        if o.refit_linear and (model.densities > 1 or model.radials is not None):
            t0 = time.perf_counter()
            refit = refit_linear(model, self.train_structs, o.weights, o.solver, self.lam, self.gamma, self.batches,
                                 self.val_batches, self.penalty)
            self.timings["refit_linear"] = time.perf_counter() - t0
            self.say(f"refit of the linear part at the trained radials/densities: {refit['result']} "
                     f"({'val' if self.has_val else 'train'} loss {refit['before']:.6g} -> {refit['after']:.6g})")
        committee = None
        if o.committee_size:
            from ..uncertainty.nonlinear import fit_committee

            t0 = time.perf_counter()
            committee = fit_committee(model, Dataset(list(self.train_structs)), weights=o.weights,
                                      committee_size=o.committee_size, seed=o.seed)
            self.timings["committee"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        errs = error_table(model, Dataset(list(self.train_structs))) if o.compute_errors else {}
        verrs = error_table(model, Dataset(list(self.val_structs))) if (o.compute_errors and self.val_structs) \
            else None
        self.timings["errors"] = time.perf_counter() - t0
        result = TrainResult(history=self.history, chosen_epoch=self.best["epoch"], errors=errs,
                             validation_errors=verrs, hyperparameters=self.hyperparameters(refit, committee),
                             init=self.init_info, n_parameters=sum(p.numel() for p in self.params),
                             stopped=self.stopped, timings=self.timings, resumed=self.resumed)
        model.metadata = dict(model.metadata or {}, training={k: v for k, v in result.to_dict().items()
                                                              if k not in ("history", "errors", "validation_errors")})
        return result

    def hyperparameters(self, refit, committee) -> Dict[str, Any]:
        o, gn = self.o, self.optimizers.gn
        return {"optimizer": o.optimizer, "epochs": list(o.epochs) if isinstance(o.epochs, tuple) else o.epochs,
                "batch_size": o.batch_size, "lr": o.lr or (1e-3 if o.optimizer == "adam" else 1.0), "lam": self.lam,
                "lam_from": self.lam_from, "init_split": o.init_split,
                "init": o.init, "init_from": self.init_reason, "init_scale": o.init_scale, "patience": o.patience,
                "seed": o.seed, "dtype": str(o.dtype), "device": str(self.dev), "n_train": len(self.train_structs),
                "n_validation": len(self.val_structs),
                "lbfgs_evaluations": self.closure.evaluations,
                "gn_evaluations": gn.evaluations if gn is not None else 0,
                "gn_radials": gn.radials if gn is not None else None,
                "gn_radials_reason": gn.radials_reason if gn is not None else None, "refit_linear": refit,
                "committee_size": o.committee_size, "committee": committee}


def train(model, data, **options) -> TrainResult:
    """Train ``model`` (an ``ACEModel`` with any readout: the linear model trains as it is) in place on ``data``
    (paths, ``ase.Atoms`` list or ``Dataset``); see the module docstring.

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
    training structures (seeded split) or other data (``validation``: the training data again is refused);
    early stopping after ``patience`` epochs without improvement.
    ``checkpoint``: a path written after every epoch and resumed from (same inputs, or an error; a checkpoint
    past the epochs asked is refused), saying so in one line.  A loss or parameters that become non-finite stop
    training: the model gets the best epoch, ``stopped`` says "diverged: ..." (``TrainingDivergedWarning``
    without progress output).  Ctrl-C / SIGTERM raise ``interrupt.TrainingInterrupted`` whose message says
    what the checkpoint keeps; the model holds the best epoch so far.
    ``threads`` / ``log``: as ``torchace.fit`` (``torchace.jobs``); the log gets the progress lines also without
    ``progress``.
    ``precondition``: optimise u with θ = d ⊙ u, d from the Gauss–Newton diagonal (``scaling``); False:
    the raw parameters (the default: on the ill-conditioned ACE least-squares problems measured so far the
    Jacobi-scaled L-BFGS converged more slowly, docs/training.md).  ``refit_linear``: after training, re-solve
    the parameters the model is linear in at the trained radials and densities (kept if the validation loss
    improves).  ``committee_size`` > 0: a committee of that many BLR posterior samples of the linear part at
    the trained model (``torchace.uncertainty.nonlinear.fit_committee``; the calculator's uncertainties).
    """
    # stacklevel 3: the caller, above this function and the job_options wrapper
    return _train(model, TrainOptions.from_keywords(options), data, stacklevel=3)


train.__signature__ = signature(inspect.signature(train))
train = job_options("train", default_threads=None)(train)  # threads, log (torchace.jobs); the CLI uses "auto"


def _train(model, o: TrainOptions, data, stacklevel: int) -> TrainResult:
    from ..model.contract import ACE_READOUTS, capabilities

    if capabilities(model).readout not in ACE_READOUTS:
        raise TypeError(f"train needs an ACEModel (torchace.ace_model), got {type(model).__name__}")
    optimizer = resolve_optimizer(model, o.optimizer)
    if "gn" in phase_list(optimizer, o.epochs):
        check_gn_memory(model, o.device)
    if o.prior is not None and not (hasattr(o.prior, "kind") and hasattr(o.prior, "to_dict")):
        raise TypeError(f"prior must be a torchace.priors object, got {o.prior!r}")
    init, init_reason = resolve_init(model, o.init)
    # E0='fit' was fitted with the parameters a kept model holds: keep it (init="model" given: refused, as before)
    E0_fit = isinstance(o.E0, str) and o.E0 == "fit"
    keep_E0 = init_reason != "given" and init == "model" and E0_fit
    if init == "model" and E0_fit and not keep_E0:
        raise ValueError("train: E0='fit' is determined by the linear warm start; use init='linear' or give E0")
    if o.checkpoint is not None:
        from ..atomic import check_outputs

        check_outputs([p for p in ([data] if isinstance(data, str) else (data if isinstance(data, list) else []))
                       if isinstance(p, str)], {"checkpoint": o.checkpoint}, "train")
    where = {"epoch": None, "saved": None, "best": None}  # where an interrupt finds the run (None: not begun)
    with sigterm_as_interrupt():
        try:
            return Trainer(model, data, o.replace(optimizer=optimizer, init=init), init_reason=init_reason,
                           keep_E0=keep_E0, where=where, stacklevel=stacklevel + 1).run()
        except KeyboardInterrupt as exc:
            if where["best"] is not None:  # the caller's model holds the best epoch, not a half-taken step
                model.load_state_dict(where["best"]["state"])
            raise TrainingInterrupted(signal_of(exc), interrupted_message(exc, where, o.checkpoint)) from None
