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
# # 4. Exporting to LAMMPS, metatomic and TorchScript
#
# `torchace.export(model, path, format=...)` (or `torchace export MODEL.json OUT --format ...` on the
# command line) writes
#
# - `torchscript`: a `torch.jit` archive with JSON metadata, loadable without torchace (docs/export.md);
# - `metatomic`: a metatomic `AtomisticModel` for LAMMPS `pair_style metatomic`, i-PI and ASE
#   (`pip install "torchace[metatomic]"`);
# - `yace`: an ML-PACE potential for LAMMPS `pair_style pace`.
#
# Each export is checked here against torchace's own numbers.  The model: `Si_model.json` from notebook 1
# when present, otherwise a small random-coefficient model with a committee.

# %%
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

import torchace
from torchace import keys as K
from torchace.io.torchscript import load_torchscript
from torchace.testing import randomize_coefficients, rattled_bulk

QUICK = os.environ.get("TORCHACE_QUICK", "0") == "1"
if Path("Si_model.json").exists():
    model = torchace.load("Si_model.json")
else:
    model = torchace.ace_model(["Si"], 2, 6, rcut=5.5)
    randomize_coefficients(model, 0.05, seed=1)
    model.committee = model.coefficients.detach() + 1e-3 * torch.randn(4, model.basis_size, dtype=torch.float64)
atoms = rattled_bulk(["Si"], reps=(1, 1, 1) if QUICK else (2, 2, 2), seed=7, rattle=0.1)
ref = torchace.evaluate(model, atoms)
e_ref, f_ref = float(ref[K.ENERGY][0]), ref[K.FORCES].numpy()
print(model.extra_repr(), f"\nreference energy {e_ref:.8f} eV")

# %% [markdown]
# ## TorchScript
#
# The archive's `forward` takes flat batch tensors (positions, species, batch, edge_index, unit_shifts,
# cell, ...; the contract is stored in its metadata); `TorchACECalculator("model.pt", backend="torchscript")`
# wraps it for ASE (TorchScript is code: only on request).

# %%
torchace.export(model, "Si_model.pt", format="torchscript")
module, meta = load_torchscript("Si_model.pt")
out = torchace.evaluate(model, atoms, module=module)
print("metadata:", {k: meta[k] for k in ("elements", "rcut", "dtype", "units")})
print("TorchScript |ΔE| =", abs(float(out[K.ENERGY][0]) - e_ref), "eV")
assert abs(float(out[K.ENERGY][0]) - e_ref) <= 1e-10 * abs(e_ref)

# %% [markdown]
# ## metatomic (LAMMPS `pair_style metatomic`, i-PI, ASE)
#
# The exported file is a self-contained TorchScript `AtomisticModel`; in LAMMPS (built with the metatomic
# package):
#
# ```
# pair_style metatomic Si_model-metatomic.pt
# pair_coeff * * 14
# ```
#
# With a committee the model also offers `energy_ensemble` and `energy_uncertainty`.  Here we run it
# through `metatomic-ase`'s calculator.

# %%
if importlib.util.find_spec("metatomic_ase") is not None:
    from metatomic_ase import MetatomicCalculator

    torchace.export(model, "Si_model-metatomic.pt", format="metatomic")
    calc = MetatomicCalculator("Si_model-metatomic.pt", uncertainty_threshold=None)
    print("outputs:", sorted(calc.model().capabilities().outputs.keys()))
    at = atoms.copy()
    at.calc = calc
    de, df = abs(at.get_potential_energy() - e_ref), np.abs(at.get_forces() - f_ref).max()
    print(f"metatomic |ΔE| = {de:.2e} eV, max |ΔF| = {df:.2e} eV/Å")
    assert de <= 1e-10 * abs(e_ref) and df < 1e-10
else:
    print("metatomic-ase is not installed: pip install 'torchace[metatomic]'")

# %% [markdown]
# ## ML-PACE `.yace` (LAMMPS `pair_style pace`)
#
# ```
# pair_style pace
# pair_coeff * * Si_model.yace Si
# ```

# %%
if importlib.util.find_spec("torchace.io.yace_write") is not None:
    torchace.export(model, "Si_model.yace", format="yace")
    print("wrote Si_model.yace,", Path("Si_model.yace").stat().st_size, "bytes")
else:
    print("this torchace has no .yace writer yet")
