"""Where training starts (torchace.train): which initialisation (``init="auto"``: keep a trained model's
parameters, else the linear warm start), the prior (a basis prior rescales the basis, a column prior is Γ in the
penalty), the linear warm start itself and the λ it implies, labels whose weighted squares overflow, and a
starting loss that is not finite — each refused naming the structure and the label, before any epoch (issue 26,
class 10).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..fit.data import DataError, Dataset
from ..fit.weights import label_weights
from .loss import make_batches, residuals


def resolve_init(model, init: str):
    """(init, why): "auto" is "model" when the model holds trained coefficients (loaded from a trained file,
    fitted, trained before), else "linear" (a new model: all coefficients zero)."""
    if init != "auto":
        return init, "given"
    if bool((model.coefficients.detach() != 0).any()):
        return "model", "the model holds trained coefficients"
    return "linear", "the model's coefficients are all zero"


def linear_warm_start(model, ds, train_structs, o) -> Dict[str, Any]:
    """``init="linear"``: ``torchace.fit`` of density 1 and the pair part (``o.solver``, BLR by default; E0 as in
    the fit) on the training structures and the isolated atoms, radials at the identity, the other densities at
    zero (or N(0, init_scale²)).  Returns the fit's summary (the result's ``init``)."""
    from ..fit.assembly import fitting_structures
    from ..fit.driver import fit

    lin = model.linear_model()
    fitting_ids = {id(s) for s in fitting_structures(ds)}
    keep = Dataset(list(train_structs) + [s for s in ds if id(s) not in fitting_ids])  # + isolated atoms
    fres = fit(lin, keep, weights=o.weights, prior=o.prior, solver=o.solver, E0=o.E0, device=o.device,
               compute_errors=False, close_contact=0.0,  # checked before, once
               **({} if o.min_distance is None else {"min_distance": o.min_distance}))
    info = {"solver": fres.solver, "hyperparameters": fres.to_dict()["hyperparameters"], "E0": fres.E0,
            "seconds": sum(fres.timings.values())}
    c = lin.coefficients.detach().to(model.density_coefficients)
    with torch.no_grad():
        model.E0.copy_(lin.E0.to(model.E0))
        model.density_coefficients.zero_()
        model.density_coefficients[0] = c[: model.nz * model.n_b].view(model.nz, model.n_b)
        model.pair_coefficients.copy_(c[model.nz * model.n_b:].view_as(model.pair_coefficients))
        if model.radials is not None:
            model.radials.weights.copy_(model.radials.identity())
    if o.init_scale and model.densities > 1:
        model.randomize_densities(o.init_scale, o.seed)
    return info


def lam_from_init(init_info) -> Optional[float]:
    """λ = √(σ²/σ_p²) of a BLR warm start (its ridge equivalent: the regularisation the linear fit chose)."""
    h = (init_info or {}).get("hyperparameters") or {}
    nv, pv = h.get("noise_var"), h.get("prior_var")
    if isinstance(nv, (int, float)) and isinstance(pv, (int, float)) and nv > 0 and pv > 0:
        return float((nv / pv) ** 0.5)
    return None


def init_line(init: str, why: str, init_info, keep_E0: bool) -> str:
    if init == "linear":
        return (f"init: linear warm start ({init_info['solver']} fit of density 1 and the pair part; "
                f"{'init=linear' if why == 'given' else why})")
    how = "init=model" if why == "given" else why + "; init=linear re-does the linear warm start"
    return f"init: the model's parameters kept ({how}{'; its E0 kept for E0=fit' if keep_E0 else ''})"


def check_label_range(structs, weights) -> None:
    """DataError naming the structure and label whose weighted square overflows (an energy of 1e200 eV, say):
    the loss, a sum of such squares, would be inf or NaN from the start, and the linear warm start garbage."""
    from .. import keys as K

    with np.errstate(over="ignore", invalid="ignore"):
        for s in structs:
            w = label_weights(weights, s)
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
