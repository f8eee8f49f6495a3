"""The evaluation backends: one named implementation per way of computing the same numbers.

| backend     | energy/forces/virials                     | design rows                      | devices  |
|-------------|-------------------------------------------|----------------------------------|----------|
| `reference` | autograd of ``ACEModel.node_energies``     | forward-mode ∂φ/∂r (jvp)          | any      |
| `analytic`  | hand adjoints in torch ops                 | analytic ∂φ/∂r, batched GEMM      | any      |
| `fused`     | C++ kernel, one pass per centre atom       | C++ kernel                        | CPU      |
| `triton`    | Triton kernels (A, product DAG, ∂E/∂r)     | analytic torch rows (GEMMs)       | CUDA     |

``select(model, device, backend="auto", task=...)`` returns the fastest backend that supports the model,
the device and the task; every backend is tested against ``reference`` (``torchace.testing``).  To add a
backend: subclass ``Backend``, implement ``own_reason`` / ``evaluator`` / ``rows``, add it to ``BACKENDS``, to
``AUTO_ORDER`` at the place its speed earns and to the ``Capabilities.backends`` of the models it runs
(docs/architecture.md).
"""
from __future__ import annotations

import functools
from typing import Callable, Dict, Optional

import torch

from ... import keys as K
from ..contract import capabilities
from . import fused as fused_kernel
from . import fused_nonlinear
from . import triton_backend
from .torch_rows import torch_rows

EVALUATE, ROWS = "evaluate", "rows"
TASKS = (EVALUATE, ROWS)
AUTO = "auto"
# preference order of ``backend="auto"`` per device type (fastest first)
AUTO_ORDER = {"cpu": ("fused", "analytic", "reference"), "cuda": ("triton", "analytic", "reference")}


class Backend:
    name = ""
    description = ""

    def reason(self, model, device: torch.device, task: str) -> Optional[str]:
        """None if this backend can run ``task`` for ``model`` on ``device``, else why not: the model's declared
        capabilities (``Capabilities.backends`` and ``rows``), then the backend's own rules (``own_reason``)."""
        caps = capabilities(model)
        if self.name not in caps.backends:
            return f"linear models only (this model runs on {'/'.join(caps.backends)})"
        if task == ROWS and not caps.rows:
            return "a nonlinear model has no design-matrix rows"
        return self.own_reason(model, device, task)

    def own_reason(self, model, device: torch.device, task: str) -> Optional[str]:
        raise NotImplementedError

    def evaluator(self, model, committee: bool = False) -> Callable[..., Dict[str, torch.Tensor]]:
        """A callable with ``ACEModel.forward``'s signature returning the same dictionary (and, with
        ``committee``, ``committee_energy`` [n_members, S] when the backend computes it)."""
        raise NotImplementedError

    def rows(self, model, batch: Dict[str, torch.Tensor], memory_budget: int) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<torchace backend {self.name!r}>"


class TorchPath(Backend):
    """One of the derivative driver's two paths in torch ops (``torchace.model.derivatives``): ``reference``
    (autograd of ``node_energies``) or ``analytic`` (the hand adjoint ``site_terms``, which the driver's rule
    allows in training mode only for models whose adjoint is differentiable, ``Capabilities.adjoint_graph``)."""

    def __init__(self, name: str, description: str, analytic: bool):
        self.name, self.description, self.analytic = name, description, analytic

    def own_reason(self, model, device, task):
        if self.analytic and task == EVALUATE and model.training and not capabilities(model).adjoint_graph:
            return "training mode needs differentiable forces (the reference backend)"
        return None

    def evaluator(self, model, committee=False):
        return model.analytic_forward if self.analytic else model.reference_forward

    def rows(self, model, batch, memory_budget):
        return torch_rows(model, batch, memory_budget, analytic=self.analytic)


class Fused(Backend):
    name = "fused"
    description = "C++ CPU kernel: one pass per centre atom, shared-prefix product DAG (torchace.model.backends.fused)"

    def own_reason(self, model, device, task):
        if device.type != "cpu":
            return "a CPU kernel"
        if task == EVALUATE and model.training:
            return "not differentiable (training mode needs the analytic or reference backend)"
        if capabilities(model).nonlinear:
            return fused_nonlinear.nonlinear_supported(model)
        why = fused_kernel.supported(model, with_baseline=False)  # the baseline is added here (_WithBaseline)
        if why is not None:
            return why
        if not fused_kernel.available():
            return fused_kernel.build_error() or "the C++ extension could not be built"
        return None

    def evaluator(self, model, committee=False):
        if capabilities(model).nonlinear:  # the ZBL baseline is added inside
            return functools.partial(fused_nonlinear.nonlinear_forward, model)
        ev = fused_kernel.FusedEvaluator(model, committee=committee, skip_baseline=model.zbl is not None)
        return ev if model.zbl is None else _WithBaseline(model, ev)

    def rows(self, model, batch, memory_budget):
        return fused_kernel.design_rows(model, batch)  # the ZBL baseline has no columns


class Triton(Backend):
    name = "triton"
    description = ("Triton GPU kernels for A, the product DAG and ∂E/∂r (torchace.model.backends.triton_backend); "
                   "design rows: the analytic torch rows (GEMM-bound)")

    def own_reason(self, model, device, task):
        if task == EVALUATE and model.training:
            return "not differentiable (training mode needs the analytic or reference backend)"
        return triton_backend.unavailable(device)

    def evaluator(self, model, committee=False):
        return triton_backend.TritonEvaluator(model, committee=committee)

    def rows(self, model, batch, memory_budget):
        return torch_rows(model, batch, memory_budget, analytic=True)


class _WithBaseline:
    """The fused kernel's outputs plus the ZBL baseline's, computed with the analytic pair formula in torch
    (a pair term: a small fraction of a step), so models with a baseline keep the fused speed."""

    def __init__(self, model, ev):
        self.model, self.ev = model, ev

    def __call__(self, positions, species, batch, edge_index, unit_shifts, cell, n_structures,
                 compute_forces: bool = True, compute_virials: bool = True):
        out = self.ev(positions, species, batch, edge_index, unit_shifts, cell, n_structures, compute_forces,
                      compute_virials)
        base = fused_kernel.add_baseline(self.model, out, positions, species, batch, edge_index, unit_shifts, cell,
                                         n_structures, compute_forces, compute_virials)
        if fused_kernel.COMMITTEE_ENERGY in out:
            out[fused_kernel.COMMITTEE_ENERGY] = out[fused_kernel.COMMITTEE_ENERGY] + base[K.ENERGY]
        return out


class OwnForward(Backend):
    """Models that declare only "module" (``Capabilities.backends``: an ML-PACE model read from ``.yace``,
    ``torchace.model.pace``) evaluate with their own ``forward``; they have no design rows."""

    name = "module"
    description = "the model's own forward (non-ACEModel modules, e.g. read_yace)"

    def reason(self, model, device, task):
        return None if task == EVALUATE else "no design rows for this model family"

    def evaluator(self, model, committee=False):
        return model

    def rows(self, model, batch, memory_budget):
        raise ValueError(f"{type(model).__name__} has no design-matrix rows")


BACKENDS: Dict[str, Backend] = {b.name: b for b in (
    TorchPath("reference", "autograd of the site energies (the readable definition); design rows by forward-mode AD",
              False),
    TorchPath("analytic", "hand-written adjoints in torch ops (eval mode, or training for models with a "
              "differentiable adjoint; any device)", True),
    Fused(), Triton())}
OWN_FORWARD = OwnForward()


def _device(model, device) -> torch.device:
    if device is None:
        return model.coefficients.device if model is not None else torch.device("cpu")
    return torch.device(device)


def available(model=None, device="cpu", task: str = EVALUATE) -> Dict[str, Optional[str]]:
    """Each backend's name with None (it can run) or the reason it cannot, for ``model`` (None: a plain
    linear model) on ``device`` and ``task`` ("evaluate" or "rows")."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if model is None:
        from ..build import ace_model

        model = ace_model(["Si"], 2, 4)
    dev = _device(model, device)
    return {name: b.reason(model, dev, task) for name, b in BACKENDS.items()}


def select(model, device=None, backend: str = AUTO, task: str = EVALUATE) -> Backend:
    """The backend ``backend`` (checked), or for "auto" the first of ``AUTO_ORDER`` that supports the model,
    the device and the task.  Raises ValueError naming the reason when a named backend cannot run."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    dev = _device(model, device)
    if OWN_FORWARD.name in capabilities(model).backends:  # its own forward is its only evaluator
        if backend not in (AUTO, OWN_FORWARD.name):
            raise ValueError(f"backend {backend!r}: {type(model).__name__} evaluates only with its own forward")
        why = OWN_FORWARD.reason(model, dev, task)
        if why is not None:
            raise ValueError(f"{type(model).__name__}: {why}")
        return OWN_FORWARD
    if backend != AUTO:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose 'auto' or one of {sorted(BACKENDS)}")
        why = BACKENDS[backend].reason(model, dev, task)
        if why is not None:
            raise ValueError(f"backend {backend!r} cannot {task} this model on {dev.type}: {why}")
        return BACKENDS[backend]
    for name in AUTO_ORDER.get(dev.type, ("analytic", "reference")):
        if BACKENDS[name].reason(model, dev, task) is None:
            return BACKENDS[name]
    return BACKENDS["reference"]
