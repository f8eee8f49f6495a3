"""ML-PACE (pacemaker / LAMMPS ``pair_style pace``) C-tilde potentials evaluated in torch.

``radial`` (g_k, inner cutoff, core repulsion), ``harmonics`` (PACE's complex Y_lm), ``embedding``
(Finnis–Sinclair F(ρ)), ``pair_table`` (an overlaid LAMMPS pair table), ``model`` (``PACEModel``).  Load a file
with ``torchace.io.read_yace``.
"""
from .model import PACEConfig, PACEModel, PACESpec
from .pair_table import TabulatedPair

__all__ = ["PACEConfig", "PACEModel", "PACESpec", "TabulatedPair"]
