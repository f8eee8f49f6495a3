"""Short-range repulsion data for fitting: two kinds of synthetic dimers (docs/repulsion.md); the ZBL baseline
itself is ``torchace.model.zbl``.

* ``synthetic_dimers``: the augmentation of Darby et al., "Regularity priors for the linear atomic cluster
  expansion" (2026): one dimer per element pair at r_syn where the pair envelope reaches E_syn (100 eV),
  energy label E_syn (above the isolated atoms), energy weight 0.01.
* ``restraint_data``: ACEpotentials.jl's ``acefit!(...; repulsion_restraint = true)``
  (``_rep_dimer_data_atomsbase``): one dimer per element pair at r_in = 0.01 Å labelled with the pair
  envelope's value there, energy weight ``restraint_weight`` = 0.01.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional

import numpy as np
from ase import Atoms


SYNTHETIC_DIMER = "synthetic_dimer"
RESTRAINT = "restraint"


class Augmentation(NamedTuple):
    """Extra training structures and the ``weights`` entry that goes with them (``fit(weights=...)``)."""

    structures: List[Atoms]
    weights: Dict[str, Dict[str, float]]


def pair_envelope(model, r, a: int, b: int):
    """The pair basis envelope s^-2 − s_c^-2 + 2 s_c^-3 (s − s_c), s = r/r0 (radial.PairBasis), numpy."""
    r0 = float(model.pair.transform.r0[a, b])
    rcut = float(model.rcut)
    s, sc = np.asarray(r, dtype=np.float64) / r0, rcut / r0
    env = s ** -2.0 - sc ** -2.0 + 2.0 * sc ** -3.0 * (s - sc)
    return np.where(np.asarray(r) < rcut, env, 0.0)


def envelope_distance(model, a: int, b: int, value: float) -> float:
    """r in (0, rcut) where the pair envelope of elements (a, b) equals ``value`` (it decreases monotonically
    from +∞ at r = 0 to 0 at rcut)."""
    if not value > 0:
        raise ValueError(f"the envelope value must be positive, got {value}")
    lo, hi = 1e-8, float(model.rcut)
    for _ in range(200):  # bisection to machine precision
        mid = 0.5 * (lo + hi)
        if float(pair_envelope(model, mid, a, b)) > value:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    return 0.5 * (lo + hi)


def _pairs(model):
    nz = len(model.elements)
    return [(a, b) for a in range(nz) for b in range(a, nz)]


def _dimer(model, a: int, b: int, r: float, energy: float, energy_key: str, config_type: str) -> Atoms:
    els = model.elements
    at = Atoms([els[a], els[b]], positions=[[0.0, 0.0, 0.0], [r, 0.0, 0.0]], pbc=False)
    at.info[energy_key] = float(energy)
    at.info["config_type"] = config_type
    return at


def _e0_pair(model, a: int, b: int) -> float:
    return model.reference_energy([model.config.numbers[a], model.config.numbers[b]])


def synthetic_dimers(model, E_syn: float = 100.0, weight: float = 0.01, *, relative_to_E0: bool = True,
                     energy_key: str = "energy", config_type: str = SYNTHETIC_DIMER) -> Augmentation:
    """One synthetic dimer per unordered element pair (Darby et al. 2026, §"Fitting"): separation r_syn with
    f_env(r_syn) = E_syn for the pair envelope of ``model``, energy label E_syn, energy weight ``weight``.

    The label is the energy above the isolated atoms, E0(z1) + E0(z2) + E_syn, with the model's current E0
    (``relative_to_E0=False``: the total energy E_syn, as ACEpotentials.jl's restraint labels its dimers).
    No force or virial labels; the returned weights entry is ``{config_type: {"E": weight, "F": 0, "V": 0}}``
    (the energy row is then weighted by weight/√2 as every energy row, w_E/√N).
    """
    if not E_syn > 0:
        raise ValueError(f"E_syn must be positive, got {E_syn}")
    out = []
    for a, b in _pairs(model):
        r = envelope_distance(model, a, b, E_syn)
        e = E_syn + (_e0_pair(model, a, b) if relative_to_E0 else 0.0)
        out.append(_dimer(model, a, b, r, e, energy_key, config_type))
    return Augmentation(out, {config_type: {"E": float(weight), "F": 0.0, "V": 0.0}})


synthetic_dimers_fn = synthetic_dimers  # ``augment`` has an argument of the same name


def restraint_data(model, weight: float = 0.01, *, r_in: float = 0.01, relative_to_E0: bool = False,
                   energy_key: str = "energy", config_type: str = RESTRAINT) -> Augmentation:
    """ACEpotentials.jl's repulsion restraint (``acefit!(...; repulsion_restraint = true, restraint_weight)``,
    ``_rep_dimer_data_atomsbase``): one dimer per unordered element pair at r_in = r0_est/100 = 0.01 Å,
    labelled with the pair envelope there, env(r_in), as its (total) energy — ACEpotentials subtracts the
    reference potential (E0, and ZBL if present) from the label like from any other, so the fitted part is
    asked for env(r_in) − E0(z1) − E0(z2); ``relative_to_E0=True`` adds E0(z1) + E0(z2) to the label instead.
    Energy weight ``weight``, no force or virial observations, config_type "restraint".
    """
    from ..structures.batch import DEFAULT_MIN_DISTANCE

    if not r_in >= DEFAULT_MIN_DISTANCE:
        raise ValueError(f"r_in = {r_in} Å is below the minimum pair distance {DEFAULT_MIN_DISTANCE} Å")
    out = []
    for a, b in _pairs(model):
        env = float(pair_envelope(model, r_in, a, b))
        e = env + (_e0_pair(model, a, b) if relative_to_E0 else 0.0)
        out.append(_dimer(model, a, b, r_in, e, energy_key, config_type))
    return Augmentation(out, {config_type: {"E": float(weight), "F": 0.0, "V": 0.0}})


def dimer_curve(model, el1: str, el2: str, r) -> np.ndarray:
    """Energy of an isolated dimer minus the isolated atoms' energies, at distances ``r`` (Å)."""
    from ..model.evaluate import evaluate

    r = np.asarray(r, dtype=np.float64).reshape(-1)
    structs = [Atoms([el1, el2], positions=[[0.0, 0.0, 0.0], [x, 0.0, 0.0]], pbc=False) for x in r]
    e = evaluate(model, structs, forces=False, virials=False)["energy"].detach().cpu().numpy()
    i, j = model.elements.index(el1), model.elements.index(el2)
    return e - _e0_pair(model, i, j)


# ---- torchace.fit options ----


def _option(value, name: str) -> Optional[dict]:
    """``synthetic_dimers`` / ``repulsion_restraint`` of ``fit`` (and the fit config): False/None, True or a dict of
    keyword arguments of ``synthetic_dimers`` / ``restraint_data``, whose names are checked here (a misspelt
    argument is named, not a TypeError from inside the fit)."""
    import inspect

    if value is False or value is None:
        return None
    if value is True:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be true, false or a mapping of keyword arguments, got {value!r}")
    fn = synthetic_dimers if name == "synthetic_dimers" else restraint_data
    allowed = [p for p in inspect.signature(fn).parameters if p != "model"]
    unknown = sorted(set(map(str, value)) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown argument(s) {unknown}; allowed: {allowed}")
    return dict(value)


check_option = _option  # the fit config checks its sections with the same function


def augment(model, ds, weights: Dict[str, Dict[str, float]], *, synthetic_dimers=False, repulsion_restraint=False,
            fit_e0: bool = False):
    """The training set and weights of ``torchace.fit`` with the requested dimer data appended.

    ``synthetic_dimers`` / ``repulsion_restraint``: False, True or a dict of keyword arguments of
    ``synthetic_dimers`` / ``restraint_data``.  Labels relative to E0 use the model's E0, which must be
    known (not ``E0="fit"``).  The returned weights get each augmentation's entry unless ``weights`` already
    has one for that config_type.  Returns (dataset, weights, the appended ``Labelled`` structures).
    """
    import warnings

    from .data import Dataset, DataKeys, label

    syn = _option(synthetic_dimers, "synthetic_dimers")
    res = _option(repulsion_restraint, "repulsion_restraint")
    if syn is None and res is None:
        return ds, weights, []
    augs = []
    if syn is not None:
        if fit_e0 and syn.get("relative_to_E0", True):
            raise ValueError("synthetic dimers are labelled relative to E0, which E0='fit' leaves unknown: "
                             "give E0 (or isolated atoms), or pass synthetic_dimers={'relative_to_E0': False}")
        augs.append((synthetic_dimers_fn(model, **syn), syn.get("energy_key", "energy")))
    if res is not None:
        if fit_e0 and res.get("relative_to_E0", False):
            raise ValueError("repulsion_restraint with relative_to_E0=True needs E0 (not E0='fit')")
        augs.append((restraint_data(model, **res), res.get("energy_key", "energy")))
    if getattr(model, "zbl", None) is not None:
        warnings.warn("dimer augmentation with a ZBL baseline: the baseline is subtracted from the dimers' "
                      "labels like from all data (as in ACEpotentials.jl), which asks the fitted part to cancel "
                      "most of the ZBL repulsion at the dimer distance; see docs/repulsion.md")
    weights = {k: dict(v) for k, v in weights.items()}
    extra = []
    for aug, key in augs:
        for ct, w in aug.weights.items():
            weights.setdefault(ct, dict(w))
        for at in aug.structures:
            pair = "-".join(at.get_chemical_symbols())
            extra.append(label(at, f"{at.info['config_type']} {pair}", DataKeys(energy=key), model.elements))
    return Dataset(list(ds) + extra, list(getattr(ds, "skipped", []))), weights, extra



def augmentation_report(model, extra) -> List[Dict[str, object]]:
    """Distance, label and fitted energy of each appended dimer (for ``FitResult.info``)."""
    if not extra:
        return []
    from ..model.evaluate import evaluate

    e = evaluate(model, [s.atoms for s in extra], forces=False, virials=False)["energy"].detach().cpu().tolist()
    return [{"config_type": s.config_type, "pair": "-".join(s.atoms.get_chemical_symbols()),
             "r": float(s.atoms.get_distance(0, 1)), "label": s.energy, "predicted": float(p)}
            for s, p in zip(extra, e)]
