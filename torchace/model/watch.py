"""Change detection for everything cached from a model: ``watch(model).check()`` (issue 26, class 3).

Backends and calculators keep state derived from a model's parameters and buffers: the fused and Triton
kernels' coefficient tables and those of the committee, a calculator's copy of the model on another device or
dtype, a nonlinear committee's linear model, ASE's stored results.  Keys made of version counters and data
pointers miss changes: a write through ``.data`` or a numpy view bumps no counter, and a replaced buffer
(``model.E0 = torch.tensor(...)``, ``model.committee = ...`` after a refit, ``model.to(...)``) starts a new
counter at the old value, perhaps at the old address.  So a watch keeps a private copy of every tensor of the
model (the parameters and buffers of every submodule, and plain tensor attributes such as a nonlinear model's
``committee``) and compares the model's current tensors with it by value: any change of a value, a shape, a
device, the set of tensors, however made, gives a new ``generation``.  Values are compared after type
promotion (``torch.equal``), as the caches hold them converted to the computation's dtype: a dtype move that
keeps every value needs no rebuild (the calculators compare the model's dtype and device themselves).

Cost: one ``torch.equal`` per tensor, about 0.7 µs each on a CPU (≈ 25 µs for the 32 tensors of a linear
model, a few per cent of a 64-atom call; a one-element sync per tensor on CUDA).  So there is one watch per
model object (``watch(model)``), shared by every cache of that model, and the outermost consumer of a call
(a calculator) compares once for everything it calls on its thread: ``with w.held(): ...`` (inside,
``check()`` returns the generation just compared).
"""
from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import Iterator, List, Optional

import torch
from torch import nn

# plain (non-buffer) tensor attributes that caches read: a nonlinear model's committee
ATTRIBUTES = ("committee",)

_WATCHES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


def _collect(module: nn.Module, out: List[torch.Tensor]) -> None:
    # hand-walked (nn.Module.named_parameters builds names and a memo set: 5x slower); None entries
    # (an unset committee buffer) are skipped: a tensor appearing or disappearing changes the count
    out.extend(t for t in module._parameters.values() if t is not None)
    out.extend(t for t in module._buffers.values() if t is not None)
    for child in module._modules.values():
        if child is not None:
            _collect(child, out)


def model_tensors(model: nn.Module) -> List[torch.Tensor]:
    """Every tensor a cache of ``model`` may depend on, in a fixed order: parameters and buffers of every
    submodule, then the plain tensor attributes named in ``ATTRIBUTES``."""
    out: List[torch.Tensor] = []
    _collect(model, out)
    d = model.__dict__
    for name in ATTRIBUTES:
        v = d.get(name)
        if isinstance(v, torch.Tensor):
            out.append(v)
    return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Value equality of a current tensor and its copy, NaN equal to NaN (a model with NaN values must not
    look changed on every call); False for other shapes or devices."""
    try:
        if torch.equal(a, b):
            return True
        if a.shape != b.shape or not (a.is_floating_point() or a.is_complex()):
            return False
        return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())
    except RuntimeError:  # different devices
        return False


class ModelWatch:
    """Tells whether a model's tensors changed since the last look (see the module docstring).

    ``check()`` → the current generation: an int that grows by one whenever the model's tensors differ from
    those of the previous look (the first look is generation 1).  A cache stores the generation it was built
    for and rebuilds when ``check()`` returns another.  Holds the model weakly."""

    def __init__(self, model: nn.Module):
        self._model = weakref.ref(model)
        self._copy: Optional[List[torch.Tensor]] = None
        self.generation = 0
        self._lock = threading.Lock()
        self._local = threading.local()  # depth of held() on this thread

    def _unchanged(self, current: List[torch.Tensor]) -> bool:
        ref = self._copy
        if ref is None or len(current) != len(ref):
            return False
        try:  # all(map(...)): the loop in C; _same only where torch.equal fails (the rare path)
            if all(map(torch.equal, current, ref)):
                return True
        except RuntimeError:  # a tensor moved to another device
            pass
        with torch.no_grad():
            return all(map(_same, current, ref))

    def check(self) -> int:
        """The model's current generation (compares every tensor, unless held on this thread)."""
        if getattr(self._local, "depth", 0):
            return self.generation
        model = self._model()
        if model is None:
            raise RuntimeError("the watched model no longer exists")
        current = model_tensors(model)
        with self._lock:
            if not self._unchanged(current):
                with torch.no_grad():
                    self._copy = [t.detach().clone() for t in current]
                self.generation += 1
            return self.generation

    @contextmanager
    def held(self) -> Iterator[int]:
        """Compare once, then, on this thread until the block ends, ``check()`` returns that generation
        without comparing (for a consumer whose call reaches several caches of the same model)."""
        gen = self.check()
        loc = self._local
        loc.depth = getattr(loc, "depth", 0) + 1
        try:
            yield gen
        finally:
            loc.depth -= 1


def watch(model: nn.Module) -> ModelWatch:
    """The one ``ModelWatch`` of ``model`` (created on first use; lives as long as the model)."""
    with _REGISTRY_LOCK:
        w = _WATCHES.get(model)
        if w is None:
            w = _WATCHES[model] = ModelWatch(model)
        return w
