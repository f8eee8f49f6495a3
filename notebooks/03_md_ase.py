# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Molecular dynamics with the ASE calculator
#
# `TorchACECalculator` gives energies, forces and stresses (autograd; docs/calculator.md) and, for a model
# with a committee (a Bayesian fit), their committee spreads.  We run NVE dynamics with velocity Verlet
# and watch the total energy and the committee uncertainties.
#
# The model: `Si_model.json` from notebook 1 when it is in the working directory, otherwise a tiny fit to
# generated data.  `TORCHACE_QUICK=1`: a few steps only (the test suite's setting).

# %%
import os
from pathlib import Path

import numpy as np
from ase import units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md import velocitydistribution
from ase.md.verlet import VelocityVerlet

import torchace
from torchace import keys as K
from torchace.fit import solvers
from torchace.calculators.ase import TorchACECalculator
from torchace.testing import randomize_coefficients, rattled_bulk

QUICK = os.environ.get("TORCHACE_QUICK", "0") == "1"

if Path("Si_model.json").exists():
    model = torchace.load("Si_model.json")
else:  # a stand-in: fit to a handful of structures labelled by a random model
    reference = torchace.ace_model(["Si"], 2, 6, rcut=5.5)
    randomize_coefficients(reference, 0.05, seed=1)
    data = []
    for k in range(4):
        a = rattled_bulk(["Si"], seed=k, rattle=0.15)
        o = torchace.evaluate(reference, a)
        a.calc = SinglePointCalculator(a, energy=float(o[K.ENERGY][0]), forces=o[K.FORCES].numpy())
        data.append(a)
    model = torchace.ace_model(["Si"], 2, 6, rcut=5.5)
    torchace.fit(model, data, solver=solvers.BLR(committee_size=4), E0={"Si": 0.0})
print(model.extra_repr())

# %% [markdown]
# ## NVE dynamics
#
# Velocity Verlet conserves the total energy up to O(Δt²) fluctuations when forces are exact derivatives
# of the energy; a drift would point to inconsistent forces.

# %%
atoms = rattled_bulk(["Si"], reps=(1, 1, 1) if QUICK else (2, 2, 2), seed=100, rattle=0.05)
atoms.calc = TorchACECalculator(model)
# thermalize_momenta is ASE >= 3.25's name for MaxwellBoltzmannDistribution
thermalize = (getattr(velocitydistribution, "thermalize_momenta", None)
              or velocitydistribution.MaxwellBoltzmannDistribution)
thermalize(atoms, temperature_K=300, rng=np.random.default_rng(0))
etot = []
dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
dyn.attach(lambda: etot.append(atoms.get_potential_energy() + atoms.get_kinetic_energy()), interval=1)
dyn.run(5 if QUICK else 200)
etot = np.array(etot)
print(f"{len(etot) - 1} steps; total energy fluctuation (max - min) {np.ptp(etot):.2e} eV "
      f"for {len(atoms)} atoms; temperature {atoms.get_temperature():.0f} K")
assert np.ptp(etot) < 1e-2 * len(atoms)

# %% [markdown]
# ## Committee uncertainties along the trajectory
#
# With a committee the calculator also returns `energy_std`, `forces_std` and `stress_std`
# (sample standard deviations over the members).

# %%
print("energy_std (eV):", atoms.calc.results.get("energy_std"))
print("largest force std (eV/Å):",
      None if "forces_std" not in atoms.calc.results else float(np.max(atoms.calc.results["forces_std"])))
print("stress (eV/Å^3, Voigt):", np.round(atoms.get_stress(), 5))
