"""Optimizer phases of ``torchace.train`` (docs/training.md, "Optimisers"): the epoch list of an optimizer choice
("gn+lbfgs" with epochs [a, b]: a Gauss–Newton epochs, then b L-BFGS epochs), the "auto" rule, and one epoch of
each optimiser — Adam on mini-batches (batch order shuffled per epoch from the seed), full-batch L-BFGS (strong
Wolfe; one iteration per epoch), Levenberg–Marquardt on the density and pair coefficients (``gauss_newton``)."""
from __future__ import annotations

from typing import List, Optional

import torch

from .gauss_newton import GaussNewton, embedding_derivatives
from .loss import residuals
from .options import PAIRED

PHASES = ("adam", "lbfgs", "gn")


def phase_list(optimizer: str, epochs) -> List[str]:
    """The optimiser of every epoch 1 … n (``epochs``: an integer, or a pair for the paired optimisers)."""
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


class Optimizers:
    """The optimiser of each phase, made at its first epoch and kept for the rest of the phase (its state
    carries over from epoch to epoch and into the checkpoint).  ``scaled``: the parameters u the first-order
    methods move (θ = d ⊙ u, ``scaling.ScaledParameters``)."""

    def __init__(self, model, batches, penalty, scaled, closure, lr: Optional[float], seed: int):
        self.model, self.batches, self.penalty, self.scaled, self.closure = model, batches, penalty, scaled, closure
        self.lr, self.seed = lr, seed
        self.n_rows = sum(b["n_rows"] for b in batches)
        self.made = dict.fromkeys(PHASES)

    @property
    def gn(self) -> Optional[GaussNewton]:
        return self.made["gn"]

    def make(self, phase: str):
        if phase == "gn":
            return GaussNewton(self.model, self.batches, self.penalty)
        if phase == "adam":
            return torch.optim.Adam(self.scaled.u, lr=self.lr or 1e-3)
        # max_eval: torch derives it from max_iter (1 here), which would leave the line search no evaluations
        return torch.optim.LBFGS(self.scaled.u, lr=self.lr or 1.0, max_iter=1, max_eval=26, history_size=20,
                                 tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")

    def restore(self, phase: str, state) -> None:
        """Continue a checkpointed phase: its optimiser with the saved state."""
        opt = self.make(phase)
        opt.load_state_dict(state)
        self.made[phase] = opt

    def step(self, phase: str, epoch: int):
        """One epoch of ``phase``: (the optimiser, the Gauss–Newton step's info or None)."""
        opt = self.made[phase] = self.made[phase] or self.make(phase)
        if phase == "adam":
            self._adam_epoch(opt, epoch)
            return opt, None
        if phase == "gn":
            info = opt.step()
            self.scaled.pull()
            return opt, info
        opt.step(self.closure)
        self.scaled.push()
        return opt, None

    def _adam_epoch(self, opt, epoch: int) -> None:
        model, scaled = self.model, self.scaled
        model.train()
        order = torch.randperm(len(self.batches), generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))
        for k in order.tolist():
            scaled.zero_model_grads()
            b = self.batches[k]
            loss = residuals(model, b)[1] / b["n_rows"] + self.penalty(model) / self.n_rows
            loss.backward()
            scaled.grads_to_u()
            opt.step()
            scaled.push()
