"""Change detection for everything cached from a model: ``watch(model).check()`` (issue 26, class 3).

Backends and calculators keep state derived from a model's parameters and buffers: the fused and Triton
kernels' coefficient tables and those of the committee, a calculator's copy of the model on another device or
dtype, a nonlinear committee's linear model, ASE's stored results.  Keys made of version counters and data
pointers miss changes: a write through ``.data`` or a numpy view bumps no counter, and a replaced buffer
(``model.E0 = torch.tensor(...)``, ``model.committee = ...`` after a refit, ``model.to(...)``) starts a new
counter at the old value, perhaps at the old address.  So a watch keeps what it saw of every tensor of the
model (the parameters and buffers of every submodule, and plain tensor attributes such as a nonlinear
model's ``committee``) and compares the model with it on each look: the same objects in the same places
(``Slots``), then, for CPU tensors, the same memory (data pointers) holding the same bytes (``_HostCopy``: two
numpy calls for all tensors), or elsewhere equal values (``_DeviceCopy``: one flattened comparison, one
synchronisation on CUDA).  Any difference, however made, gives a new ``generation``; the test is conservative
(an equal tensor put in place of another counts).

Cost: ≈ 20 µs warm, ≈ 30-50 µs right after a kernel call, for the 33 tensors of an order-3 Si model (≈ 3 %
of a 64-atom fused calculator call of ≈ 1 ms on one thread).  So there is one watch per model object
(``watch(model)``), shared by every cache of that model, and the outermost consumer of a call (a
calculator) compares once for everything it calls on its thread: ``with w.held(): ...`` (inside,
``check()`` returns the generation just compared).
"""
from __future__ import annotations

import operator
import threading
import weakref
from contextlib import contextmanager
from typing import Iterator, List, Optional

import numpy as np
import torch
from torch import nn

# plain (non-buffer) tensor attributes that caches read: a nonlinear model's committee
ATTRIBUTES = ("committee",)

_SHAPE = operator.attrgetter("shape")
_WATCHES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


class Slots:
    """Where a model keeps its tensors: every (dict, key) of its module tree — each module's parameters,
    buffers and submodules, unset ones (None) included, and the root's plain ``ATTRIBUTES`` — with the value
    found there.  ``same_objects()`` tells, with two C-level loops (no walk of the tree), whether every slot
    still holds the same object: a replaced buffer, parameter or submodule, a committee set or removed."""

    def __init__(self, model: nn.Module):
        dicts, keys = [], []
        stack = [model]
        while stack:
            m = stack.pop()
            for d in (m._parameters, m._buffers, m._modules):
                dicts.extend([d] * len(d))
                keys.extend(d)
            stack.extend(c for c in m._modules.values() if c is not None)
        dicts.extend([model.__dict__] * len(ATTRIBUTES))
        keys.extend(ATTRIBUTES)
        self.dicts, self.keys = dicts, keys
        self.values = list(map(dict.get, dicts, keys))
        self.tensors = [v for v in self.values if isinstance(v, torch.Tensor)]

    def same_objects(self) -> bool:
        return all(map(operator.is_, map(dict.get, self.dicts, self.keys), self.values))


def model_tensors(model: nn.Module) -> List[torch.Tensor]:
    """Every tensor a cache of ``model`` may depend on, in a fixed order: parameters and buffers of every
    submodule and the plain tensor attributes named in ``ATTRIBUTES``."""
    return Slots(model).tensors


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


def _host_bytes(t: torch.Tensor) -> Optional[np.ndarray]:
    """A flat uint8 numpy view of a contiguous CPU tensor's memory (None where there is none)."""
    if t.device.type != "cpu" or not t.is_contiguous():
        return None
    try:
        return t.detach().numpy().reshape(-1).view(np.uint8)
    except (TypeError, RuntimeError, ValueError):  # no numpy dtype (bfloat16, ...)
        return None


class _HostCopy:
    """The bytes of the model's tensors when all are contiguous CPU tensors, read through numpy views of
    their memory: two numpy calls (a concatenation of the views and one ``==`` of bytes) instead of one
    torch call per tensor; with the tensors' data pointers (``.data = x`` and ``.to()`` keep a parameter
    object but move its memory)."""

    def __init__(self, tensors: List[torch.Tensor], views: List[np.ndarray]):
        self.tensors = tensors
        self.pointers = list(map(torch.Tensor.data_ptr, tensors))
        self.views = views
        self.bytes = np.concatenate(views).tobytes() if views else b""

    def unchanged(self) -> bool:
        return (list(map(torch.Tensor.data_ptr, self.tensors)) == self.pointers
                and (np.concatenate(self.views).tobytes() if self.views else b"") == self.bytes)


class _DeviceCopy:
    """Private clones of the model's tensors elsewhere (CUDA, non-contiguous, no numpy dtype), compared by
    value (flattened into one tensor: one device synchronisation on CUDA), NaN equal to NaN."""

    def __init__(self, tensors: List[torch.Tensor]):
        self.tensors = tensors
        with torch.no_grad():
            self.clones = [t.detach().clone() for t in tensors]
            self.flat = self._flatten(self.clones)

    @staticmethod
    def _flatten(tensors: List[torch.Tensor]) -> Optional[torch.Tensor]:
        try:  # one concatenation, values promoted to a common dtype
            return torch.cat([t.detach().reshape(-1) for t in tensors]) if tensors else None
        except RuntimeError:  # tensors on several devices
            return None

    def unchanged(self) -> bool:
        current = self.tensors
        if list(map(_SHAPE, current)) != list(map(_SHAPE, self.clones)):
            return False
        with torch.no_grad():
            flat = self._flatten(current)
            if flat is not None and self.flat is not None and flat.device == self.flat.device:
                if flat.dtype == self.flat.dtype and torch.equal(flat, self.flat):
                    return True
            return all(map(_same, current, self.clones))


def _contents(tensors: List[torch.Tensor]):
    """What ``ModelWatch`` keeps of the values of ``tensors``: a ``_HostCopy`` where every tensor allows one,
    else a ``_DeviceCopy``."""
    views = [_host_bytes(t) for t in tensors]
    if all(v is not None for v in views):
        return _HostCopy(tensors, views)
    return _DeviceCopy(tensors)


class ModelWatch:
    """Tells whether a model's tensors changed since the last look (see the module docstring).

    ``check()`` → the current generation: an int that grows by one whenever the model's tensors differ from
    those of the previous look (the first look is generation 1).  A cache stores the generation it was built
    for and rebuilds when ``check()`` returns another.  Holds the model weakly."""

    def __init__(self, model: nn.Module):
        self._model = weakref.ref(model)
        self._slots: Optional[Slots] = None
        self._copy = None
        self.generation = 0
        self._lock = threading.Lock()
        self._local = threading.local()  # depth of held() on this thread

    def check(self) -> int:
        """The model's current generation (compares every tensor, unless held on this thread)."""
        if getattr(self._local, "depth", 0):
            return self.generation
        model = self._model()
        if model is None:
            raise RuntimeError("the watched model no longer exists")
        with self._lock:
            # the same objects in the same places (a cheap test), then the same memory and values
            if self._slots is None or not (self._slots.same_objects() and self._copy.unchanged()):
                self._slots = Slots(model)
                self._copy = _contents(self._slots.tensors)
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


class Derived:
    """State derived from a model (a kernel's coefficient tables, its DAG), rebuilt by ``rebuild()`` the first
    time and whenever ``refresh()`` finds that a model tensor changed since the last build (the model's watch)."""

    def __init__(self, model: nn.Module, rebuild) -> None:
        self._watch = watch(model)
        self._rebuild = rebuild
        self._generation: Optional[int] = None

    def refresh(self) -> None:
        gen = self._watch.check()
        if gen != self._generation:
            self._rebuild()
            self._generation = gen
