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
# # 1. Fitting a linear ACE potential
#
# Build a linear ACE model (ACEpotentials.jl `ace1_model` conventions), fit it to Si data with Bayesian
# linear regression, look at the errors, evaluate it, and save/load the model file.
#
# Data: `Si_tiny.xyz` (the ACEpotentials.jl tutorial set) when it is found in the shared data folder next
# to this repository (`../shared/data/acedata/`); otherwise a small labelled data set is generated from a
# random model so that the notebook runs anywhere.  `TORCHACE_QUICK=1` selects the smallest setting (the
# test suite runs every notebook that way, `tests/test_notebook.py`).  Open with jupytext
# (`jupytext --to ipynb 01_fit_potential.py`) or run as a script.

# %%
import os
from pathlib import Path

import torch
from ase.calculators.singlepoint import SinglePointCalculator

import torchace
from torchace import keys as K
from torchace.fit import solvers
from torchace.testing import randomize_coefficients, rattled_bulk

QUICK = os.environ.get("TORCHACE_QUICK", "0") == "1"
try:
    HERE = Path(__file__).resolve().parent          # run as a script
except NameError:
    HERE = Path.cwd()                               # in Jupyter: the notebooks/ folder
SI_TINY = HERE.parent.parent / "shared" / "data" / "acedata" / "Si_tiny.xyz"
torch.manual_seed(0)

# %% [markdown]
# ## Data

# %%
if SI_TINY.exists() and not QUICK:
    data = str(SI_TINY)                     # energies, forces, virials; E0 from its isolated_atom frame
    order, totaldegree, weights = 3, 12, {"liq": {"E": 10, "F": 0.66, "V": 0.25}}
else:
    # labelled stand-in: rattled diamond Si labelled by a random-coefficient model
    order, totaldegree, weights = 2, 6, None
    reference = torchace.ace_model(["Si"], order, totaldegree, rcut=5.5)
    randomize_coefficients(reference, 0.05, seed=1)
    data = []
    for k in range(4 if QUICK else 12):
        atoms = rattled_bulk(["Si"], seed=k, rattle=0.15)
        out = torchace.evaluate(reference, atoms)
        stress = out[K.STRESS][0].numpy()[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]   # Voigt
        atoms.calc = SinglePointCalculator(atoms, energy=float(out[K.ENERGY][0]),
                                           forces=out[K.FORCES].numpy(), stress=stress)
        data.append(atoms)
print("data:", data if isinstance(data, str) else f"{len(data)} generated structures")

# %% [markdown]
# ## Build and fit
#
# Bayesian linear regression (the default solver of ACEpotentials.jl's `acefit!`) with a committee of
# posterior samples, which the ASE calculator and the metatomic export turn into uncertainties.

# %%
model = torchace.ace_model(["Si"], order=order, totaldegree=totaldegree, rcut=5.5)
print(model.basis_size, "basis functions")
res = torchace.fit(model, data, weights=weights, solver=solvers.BLR(committee_size=4),
                   E0=None if isinstance(data, str) else {"Si": 0.0})
print(res.table())                            # RMSE / MAE per config_type: E, V meV/atom, F eV/Å
print(res.hyperparameters)

# %% [markdown]
# ## Evaluate

# %%
labelled = [s for s in torchace.fit.data.read_data(data) if s.n_atoms > 1][:4]   # labels as the fit read them
structures = [s.atoms for s in labelled]
out = torchace.evaluate(model, structures)    # energy [S], forces [ΣN, 3], virial, stress (ASE sign)
for s, e in zip(labelled, out[K.ENERGY]):
    print(f"{s.atoms.get_chemical_formula():>8}  E = {float(e):14.6f} eV   reference {s.energy:14.6f} eV")
print("forces", tuple(out[K.FORCES].shape), "stress", tuple(out[K.STRESS].shape))

# %% [markdown]
# ## Save and load
#
# One JSON file; loading executes no code and reproduces the model bit for bit.  The other notebooks
# (MD, export) start from this file when it is in their working directory.

# %%
model.save("Si_model.json")
loaded = torchace.load("Si_model.json")
same = torch.equal(torchace.evaluate(loaded, structures)[K.ENERGY], out[K.ENERGY])
print("reloaded model identical:", same)
assert same
