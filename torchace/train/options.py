"""TrainOptions: every option of ``torchace.train`` with its default, written once (issue 30; docs/training.md).

``torchace.train(model, data, **options)`` takes these fields as keywords (its signature is built from them) and
validates them here, once; the ``training:`` section of the ``torchace train`` config (``config.TrainingSection``)
is the fields marked ``TRAINING``, derived from this class, and ``TrainConfig.train_kwargs`` hands every field
back by name.  Adding a training option is one line here (with ``metadata=TRAINING`` it is a config key too).

The other sections of the metadata say where the config file takes a field from: ``FIT`` (the fit config's
sections: weights, prior, E0, solver, data.keys / skip_bad / min_distance / close_contact*), ``DATA``
(data.validation), ``OUTPUT`` (output.checkpoint); fields without metadata are keywords of the API only.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from ..fieldcheck import check_bool, check_device, check_float, check_int, check_str
from ..fit.contacts import DEFAULT_CLOSE_CONTACT

OPTIMIZERS = ("auto", "gn", "lbfgs", "adam", "gn+lbfgs", "adam+lbfgs")
PAIRED = ("gn+lbfgs", "adam+lbfgs")  # two phases: epochs [first, second]
INITS = ("auto", "linear", "model")
DTYPES = {"float64": torch.float64, "float32": torch.float32}

# the training's default epoch budget (early stopping on the validation loss ends most runs sooner): Gauss–Newton
# needed ~60 epochs on Zuo Cu before the validation loss stopped improving (docs/benchmarks.md)
DEFAULT_EPOCHS = 100

TRAINING = {"section": "training"}
FIT = {"section": "fit"}
DATA = {"section": "data"}
OUTPUT = {"section": "output"}


@dataclass
class TrainOptions:
    """The keywords of ``torchace.train`` (their meaning: its docstring and docs/training.md)."""

    weights: Optional[Dict[str, Dict[str, float]]] = field(default=None, metadata=FIT)
    prior: Any = field(default=None, metadata=FIT)
    E0: Any = field(default=None, metadata=FIT)
    init: str = field(default="auto", metadata=TRAINING)
    solver: Any = field(default=None, metadata=FIT)
    epochs: Union[int, List[int], Tuple[int, int]] = field(default=DEFAULT_EPOCHS, metadata=TRAINING)
    batch_size: int = field(default=8, metadata=TRAINING)
    optimizer: str = field(default="auto", metadata=TRAINING)
    lr: Optional[float] = field(default=None, metadata=TRAINING)  # None: Adam 1e-3, L-BFGS 1
    lam: Optional[float] = field(default=None, metadata=TRAINING)  # None: the BLR warm start's, else 1e-3
    init_scale: float = field(default=0.0, metadata=TRAINING)
    init_split: float = field(default=0.1, metadata=TRAINING)
    patience: int = field(default=10, metadata=TRAINING)
    device: Any = field(default=None, metadata=TRAINING)  # None: the model's device
    dtype: Any = field(default="float64", metadata=TRAINING)  # a name of DTYPES or the torch dtype
    validation: Any = field(default=None, metadata=DATA)
    checkpoint: Optional[str] = field(default=None, metadata=OUTPUT)
    progress: bool = True
    seed: int = field(default=0, metadata=TRAINING)
    keys: Any = field(default=None, metadata=FIT)
    skip_bad: bool = field(default=False, metadata=FIT)
    min_distance: Optional[float] = field(default=None, metadata=FIT)
    compute_errors: bool = True
    precondition: bool = False
    refit_linear: bool = True
    committee_size: int = field(default=0, metadata=TRAINING)
    close_contact: float = field(default=DEFAULT_CLOSE_CONTACT, metadata=FIT)
    close_contact_error: bool = field(default=False, metadata=FIT)

    @classmethod
    def from_keywords(cls, options: Dict[str, Any]) -> "TrainOptions":
        """The options of ``train(model, data, **options)``, checked; TypeError for an unknown keyword (as
        Python's for a function that does not take it)."""
        names = {f.name for f in dataclasses.fields(cls)}
        for k in options:
            if k not in names:
                raise TypeError(f"train() got an unexpected keyword argument {k!r}")
        return cls(**options).checked()

    def checked(self, where: str = "train", prefix: str = "") -> "TrainOptions":
        """A copy with the options checked, ``epochs`` a pair for the paired optimisers and ``dtype`` the torch
        dtype.  ``where``/``prefix``: how the messages name the field (``train: 'lr'``, ``train config:
        'training.lr'``); the config file's own rules (a list of epochs only with a paired optimiser, numbers
        stored as floats) apply for ``where="train config"``."""
        config = where != "train"
        k = lambda name: prefix + name  # noqa: E731
        o = dataclasses.replace(self)
        check_str(where, k("optimizer"), o.optimizer, choices=OPTIMIZERS)
        if not config:
            from .validation import check_validation

            check_validation(where, "validation", o.validation)
        check_str(where, k("init"), o.init, choices=INITS)
        o.epochs = _check_epochs(where, k("epochs"), o.epochs, o.optimizer, config)
        check_int(where, k("batch_size"), o.batch_size, minimum=1)
        if o.lr is not None:
            lr = check_float(where, k("lr"), o.lr, positive=True)
            o.lr = lr if config else o.lr
        if o.lam is not None:
            lam = check_float(where, k("lam"), o.lam, nonnegative=True)
            o.lam = lam if config else o.lam
        check_int(where, k("patience"), o.patience, minimum=1)
        init_scale = check_float(where, k("init_scale"), o.init_scale, nonnegative=True)
        init_split = check_float(where, k("init_split"), o.init_split, nonnegative=True)
        if config:
            o.init_scale, o.init_split = init_scale, init_split
        if o.init_split >= 1.0:
            raise ValueError(f"{where}: {k('init_split')} must be in [0, 1), got {o.init_split}" if config else
                             f"train: init_split is the share of the linear fit moved to densities 2 … P, in [0, 1); "
                             f"got {o.init_split}")
        check_int(where, k("seed"), o.seed, minimum=0)
        check_int(where, k("committee_size"), o.committee_size, minimum=0)
        if o.device is not None:
            if config:
                check_str(where, k("device"), o.device)
            check_device(where, k("device"), str(o.device))
        if isinstance(o.dtype, str) or config:
            check_str(where, k("dtype"), o.dtype, choices=tuple(DTYPES))
        if not config:
            o.dtype = DTYPES.get(o.dtype, o.dtype) if isinstance(o.dtype, str) else o.dtype
            if o.dtype not in DTYPES.values():
                raise ValueError(f"train: dtype must be torch.float64 or torch.float32, got {o.dtype!r}")
            check_float("train", "close_contact", o.close_contact, nonnegative=True)
            check_bool("train", "close_contact_error", o.close_contact_error)
        return o

    def replace(self, **changes) -> "TrainOptions":
        return dataclasses.replace(self, **changes)


def _check_epochs(where: str, key: str, epochs, optimizer: str, config: bool):
    """An integer, or for the paired optimisers [first, second] (an integer is split in half)."""
    if config and isinstance(epochs, list):
        if optimizer not in PAIRED or len(epochs) != 2:
            raise ValueError(f"train config: {key} is a list [first, lbfgs] only with optimizer "
                             f"{' or '.join(PAIRED)}")
        for e in epochs:
            check_int(where, key, e, minimum=0)
        return epochs
    if config:
        check_int(where, key, epochs, minimum=0)
        return epochs
    if optimizer in PAIRED:
        if not (isinstance(epochs, (list, tuple)) and len(epochs) == 2):
            if isinstance(epochs, bool) or not isinstance(epochs, int):
                raise ValueError(f"train: epochs must be an integer or, for {optimizer}, a pair "
                                 f"[{optimizer.replace('+', ', ')}], got {epochs!r}")
            epochs = (epochs // 2, epochs - epochs // 2)
        return tuple(check_int(where, key, e, minimum=0) for e in epochs)
    return check_int(where, key, epochs, minimum=0)


def section_fields(section: Dict[str, str]) -> List[dataclasses.Field]:
    """The fields of ``TrainOptions`` the config file takes from ``section`` (``TRAINING``, ``FIT``, ...)."""
    return [f for f in dataclasses.fields(TrainOptions) if f.metadata.get("section") == section["section"]]


def signature(function_signature: inspect.Signature) -> inspect.Signature:
    """``function_signature`` with ``**options`` replaced by the keyword-only ``TrainOptions`` fields (for
    ``help(torchace.train)`` and ``inspect``)."""
    params = [p for p in function_signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
               for f in dataclasses.fields(TrainOptions)]
    return function_signature.replace(parameters=params)
