"""The model a calculator evaluates, kept in step with the caller's model (issue 26, class 3).

The ASE calculator, the TorchSim model and the LAMMPS driver evaluate the caller's model object itself when
it is on their device and dtype and in eval mode: the backend's caches then follow any change of it
(``torchace.model.watch``).  Otherwise they evaluate a private copy there (the caller's model is never
modified), made again whenever the caller's model changed (a refit, a committee replaced, ``.data`` writes,
replaced buffers, ``load_state_dict``, a move to another device or dtype, train/eval).  Every call runs
inside ``BoundModel.held()``: one comparison of the model's tensors for the whole call, and a token that
changes whenever the evaluated model changed (the ASE calculator drops its stored results then).
"""
from __future__ import annotations

import copy
from contextlib import ExitStack, contextmanager
from typing import Callable, Iterator

import torch

from ..model.evaluate import model_device_dtype
from ..model.watch import watch


class BoundModel:
    """``model`` as evaluated on ``device`` in ``dtype``: ``bound.model`` (the model itself or a copy) and
    ``bound.forward`` = ``make_forward(bound.model)`` (the backend callable, made again for each new copy)."""

    def __init__(self, model, device, dtype: torch.dtype, make_forward: Callable):
        self.source = model
        self.device, self.dtype = torch.device(device), dtype
        self._make = make_forward
        self._watch = watch(model)
        self._generation = None  # of the source, when the copy was made
        self.n_copies = 0
        self.model = self.forward = None
        self._update(self._watch.check())

    def _fits(self) -> bool:
        return model_device_dtype(self.source) == (self.device, self.dtype) and not self.source.training

    def _update(self, generation: int) -> None:
        if self._fits():
            if self.model is not self.source:
                self.model, self.forward = self.source, self._make(self.source)
        elif self.model is None or self.model is self.source or generation != self._generation:
            self.model = copy.deepcopy(self.source).to(device=self.device, dtype=self.dtype).eval()
            self.forward = self._make(self.model)
            self.n_copies += 1
        self._generation = generation

    @contextmanager
    def held(self) -> Iterator[tuple]:
        """Bring ``model``/``forward`` up to date with the caller's model, then hold the watches for the call;
        yields a token that changes whenever the evaluated model changed."""
        with ExitStack() as stack:
            gen = stack.enter_context(self._watch.held())
            if gen != self._generation or (self.model is self.source) != self._fits():
                self._update(gen)
            token = (gen, self.n_copies)
            if self.model is not self.source:  # the copy is public (calc.model): watched as well
                token += (stack.enter_context(watch(self.model).held()),)
            yield token
