"""Analysis tools: cuts through the PES (dimer/trimer, rigid decohesion, E–V, arbitrary paths), MD stability
runs with a bond-breaking/forming criterion, and matplotlib PNGs (``plots``, lazily imported).

After Darby et al., *Regularity priors for the linear atomic cluster expansion* (2026), §3 (the tests of
figures 5, 6, 13, S8); see docs/regularity_priors.md.
"""
from .curves import (DecohesionCurve, EVCurve, PathEnergies, as_calculator, decohesion_curve, decohesion_slab,
                     dimer_curve, dimer_curves, element_pairs, ev_curve, isolated_energy, path_energies,
                     silicon_phases, trimer_curve)
from .md import BondCriterion, MDResult, md_stability

__all__ = ["as_calculator", "isolated_energy", "dimer_curve", "dimer_curves", "trimer_curve", "ev_curve", "EVCurve",
           "decohesion_slab", "decohesion_curve", "DecohesionCurve", "path_energies", "PathEnergies",
           "element_pairs", "silicon_phases", "BondCriterion", "MDResult", "md_stability"]
