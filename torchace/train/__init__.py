"""Stage 4b, train: iterative (gradient and Gauss–Newton) training of ACE models on the weighted E/F/V loss of
``torchace.fit`` (docs/training.md).  The loss (``loss``), the training loop (``trainer``), its configuration
(``config``: the ``torchace train`` file; ``options``: every option and its default, once), the optimizer phases
(``phases``), where training starts (``start``), preconditioning (``scaling``),
Gauss–Newton steps (``gauss_newton``), validation (``validation``), checkpoints (``state``) and interruption
(``interrupt``).

``torchace.train`` is both this package and the train function: calling the module runs ``trainer.train``."""
import inspect
import sys
import types

from .options import TrainOptions
from .trainer import TrainResult, Trainer, train

__all__ = ["TrainResult", "TrainOptions", "Trainer", "train"]
__signature__ = inspect.signature(train)  # inspect.signature(torchace.train): the train function's keywords


class _CallablePackage(types.ModuleType):
    """``torchace.train(...)`` is ``torchace.train.train(...)``."""

    # the function itself (not a wrapper): no extra frame, so warnings point at the caller
    __call__ = staticmethod(train)


sys.modules[__name__].__class__ = _CallablePackage
__signature__ = inspect.signature(train)  # inspect.signature(torchace.train) is the function's
