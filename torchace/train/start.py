"""Where training starts (torchace.train): which initialisation (``init="auto"``: keep a trained model's
parameters, else the linear warm start), labels whose weighted squares overflow, and a starting loss that is not
finite — each refused naming the structure and the label, before any epoch (issue 26, class 10).
"""
from __future__ import annotations

from typing import List

import numpy as np
import torch

from ..fieldcheck import check_device, check_float, check_int, check_str
from ..fit.data import DataError
from .validation import check_validation
from .loss import make_batches, residuals

OPTIMIZERS = ("auto", "gn", "lbfgs", "adam", "gn+lbfgs", "adam+lbfgs")
PAIRED = ("gn+lbfgs", "adam+lbfgs")  # two phases: epochs [first, second]
INITS = ("auto", "linear", "model")
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def check_arguments(optimizer, init, epochs, batch_size, lr, lam, patience, device, dtype, init_scale, init_split, seed,
                    committee_size, validation):
    check_str("train", "optimizer", optimizer, choices=OPTIMIZERS)
    check_validation("train", "validation", validation)
    check_str("train", "init", init, choices=INITS)
    if optimizer in PAIRED:
        if not (isinstance(epochs, (list, tuple)) and len(epochs) == 2):
            if isinstance(epochs, bool) or not isinstance(epochs, int):
                raise ValueError(f"train: epochs must be an integer or, for {optimizer}, a pair "
                                 f"[{optimizer.replace('+', ', ')}], got {epochs!r}")
            epochs = (epochs // 2, epochs - epochs // 2)
        epochs = tuple(check_int("train", "epochs", e, minimum=0) for e in epochs)
    else:
        epochs = check_int("train", "epochs", epochs, minimum=0)
    check_int("train", "batch_size", batch_size, minimum=1)
    if lr is not None:
        check_float("train", "lr", lr, positive=True)
    if lam is not None:
        check_float("train", "lam", lam, nonnegative=True)
    check_int("train", "patience", patience, minimum=1)
    check_float("train", "init_scale", init_scale, nonnegative=True)
    check_float("train", "init_split", init_split, nonnegative=True)
    if init_split >= 1.0:
        raise ValueError(f"train: init_split is the share of the linear fit moved to densities 2 … P, in [0, 1); "
                         f"got {init_split}")
    check_int("train", "seed", seed, minimum=0)
    check_int("train", "committee_size", committee_size, minimum=0)
    if device is not None:
        check_device("train", "device", str(device))
    if isinstance(dtype, str):
        check_str("train", "dtype", dtype, choices=tuple(DTYPES))
        dtype = DTYPES[dtype]
    if dtype not in DTYPES.values():
        raise ValueError(f"train: dtype must be torch.float64 or torch.float32, got {dtype!r}")
    return epochs, dtype


def resolve_init(model, init: str):
    """(init, why): "auto" is "model" when the model holds trained coefficients (loaded from a trained file,
    fitted, trained before), else "linear" (a new model: all coefficients zero)."""
    if init != "auto":
        return init, "given"
    c = (model.density_coefficients, model.pair_coefficients)
    if any(bool((p.detach() != 0).any()) for p in c):
        return "model", "the model holds trained coefficients"
    return "linear", "the model's coefficients are all zero"


def init_line(init: str, why: str, init_info, keep_E0: bool) -> str:
    if init == "linear":
        return (f"init: linear warm start ({init_info['solver']} fit of density 1 and the pair part; "
                f"{'init=linear' if why == 'given' else why})")
    how = "init=model" if why == "given" else why + "; init=linear re-does the linear warm start"
    return f"init: the model's parameters kept ({how}{'; its E0 kept for E0=fit' if keep_E0 else ''})"


def check_label_range(structs, weights) -> None:
    """DataError naming the structure and label whose weighted square overflows (an energy of 1e200 eV, say):
    the loss, a sum of such squares, would be inf or NaN from the start, and the linear warm start garbage."""
    from ..fit.weights import row_weights
    from .. import keys as K

    with np.errstate(over="ignore", invalid="ignore"):
        for s in structs:
            w = row_weights(weights, s.config_type, s.n_atoms)
            for name, value, wk in (("energy", s.energy, w[0]), ("forces", s.forces, w[1]),
                                    ("virial", None if s.virial is None else K.to_voigt(np.asarray(s.virial)), w[2])):
                if value is not None and wk and not np.isfinite(np.sum((wk * np.asarray(value, dtype=float)) ** 2)):
                    raise DataError(f"train: {s.source}: the {name} label is out of range (its weighted square "
                                    f"overflows: the loss would be infinite); fix or remove that structure")


def nonfinite_structures(model, structs, resolved, batch_size, dev, dtype) -> List[str]:
    """The sources of the structures whose weighted residuals are not finite (the cause of a NaN/inf loss)."""
    bad = []
    for s in structs:
        b = make_batches(model, [s], resolved, batch_size, dev, dtype)[0]
        with torch.no_grad():
            rss = residuals(model, b, None)[1]
        if not bool(torch.isfinite(rss)):
            bad.append(s.source)
    return bad


def refuse_start(model, train_structs, val_structs, resolved, batch_size, dev, dtype, init) -> None:
    """The starting point's loss is not finite: name the structures that make it so (labels far out of range,
    e.g. an energy of 1e200), else the model's parameters."""
    for what, structs in (("training", train_structs), ("validation", val_structs)):
        bad = nonfinite_structures(model, structs, resolved, batch_size, dev, dtype)
        if bad:
            raise DataError(f"train: the {what} residuals of {len(bad)} structure(s) are not finite at the starting "
                            f"point ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): labels out of range? "
                            "Fix or remove those structures")
    raise ValueError(f"train: the loss of the starting model (init={init}) is not finite; its parameters are out of "
                     "range (init='linear' starts from the linear fit instead)")
