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
# # Batched molecular dynamics with TorchSim
#
# `torchace.calculators.torchsim.TorchACEModel` is a TorchSim `ModelInterface` (docs/torchsim.md): one call
# evaluates every system of a `torch_sim.SimState` — energies [n_systems], forces [n_atoms, 3], stresses
# [n_systems, 3, 3] — so TorchSim's integrators and optimizers advance several cells at once, on CPU or CUDA.
# Here: a few Si and SiGe cells of different sizes, checked against the ASE calculator, a short Langevin
# (NVT) run, then NVE, then a FIRE relaxation, all batched.
#
# The model: `SiGe_model.json` when it is in the working directory, otherwise a stand-in with small random
# coefficients (an illustration of the interface, not a physical SiGe potential).  Needs
# `pip install "torchace[torchsim]"`.  `TORCHACE_QUICK=1`: a few steps only (the test suite's setting).

# %%
import os
from pathlib import Path

import numpy as np
import torch
import torch_sim as ts
from torch_sim.units import MetalUnits

import torchace
from torchace.calculators.ase import TorchACECalculator
from torchace.calculators.torchsim import TorchACEModel
from torchace.testing import randomize_coefficients, rattled_bulk

QUICK = os.environ.get("TORCHACE_QUICK", "0") == "1"
device = "cuda" if torch.cuda.is_available() else "cpu"

if Path("SiGe_model.json").exists():
    model = torchace.load("SiGe_model.json")
else:
    model = torchace.ace_model(["Si", "Ge"], 2, 8, rcut=5.5)
    randomize_coefficients(model, 0.005, seed=1)
print(model.extra_repr())
ts_model = TorchACEModel(model, device=device)      # or TorchACEModel("model.json", device=...)
print(f"device {ts_model.device}, backend {ts_model.backend}")

# %% [markdown]
# ## Several systems in one state
#
# `ts.io.atoms_to_state` stacks ASE structures; TorchSim stores the cell with lattice vectors as columns,
# `TorchACEModel` hands torchace the rows (`state.row_vector_cell`).  The stress has ASE's sign (σ = −W/V).

# %%
systems = [rattled_bulk(["Si"], rattle=0.05, seed=1),                        # 8 atoms
           rattled_bulk(["Si", "Ge"], reps=(2, 1, 1), rattle=0.05, seed=2),  # 16 atoms
           rattled_bulk(["Si", "Ge"], rattle=0.05, seed=3)]                  # 8 atoms
if not QUICK:
    systems.append(rattled_bulk(["Si", "Ge"], reps=(2, 2, 2), rattle=0.05, seed=4))  # 64 atoms
state = ts.io.atoms_to_state(systems, device, torch.float64)
out = ts_model(state)
calc = TorchACECalculator(model, device=device)
e_ase = np.array([calc.get_potential_energy(a) for a in systems])
dev = np.abs(out["energy"].cpu().numpy() - e_ase).max() / np.abs(e_ase).max()
print("energies (eV):", np.round(out["energy"].cpu().numpy(), 6))
print(f"relative deviation from the ASE calculator: {dev:.1e}")
assert dev < 1e-10

# %% [markdown]
# ## Langevin (NVT) then NVE
#
# `ts.integrate` takes the temperature in K and the timestep in ps.  For NVE we keep the thermalised momenta
# and use the integrator's init/update functions directly to record the total energy of every system.

# %%
n_nvt, n_nve = (10, 20) if QUICK else (200, 500)
state = ts.integrate(state, ts_model, integrator=ts.nvt_langevin, n_steps=n_nvt, temperature=600.0,
                     timestep=0.001, seed=0)
kT = ts.calc_kT(masses=state.masses, momenta=state.momenta, system_idx=state.system_idx)
print("temperatures after NVT (K):", np.round((kT / float(MetalUnits.temperature)).cpu().numpy(), 1))

init, update = ts.nve(model=ts_model, dt=torch.tensor(0.001 * float(MetalUnits.time), dtype=torch.float64,
                                                      device=device),
                      kT=torch.tensor(600.0 * float(MetalUnits.temperature), dtype=torch.float64, device=device))
momenta = state.momenta
md = init(state)
md.momenta = momenta
n_atoms = md.n_atoms_per_system.to(torch.float64)
etot = []
for _step in range(n_nve):
    md = update(md)
    ke = ts.calc_kinetic_energy(masses=md.masses, momenta=md.momenta, system_idx=md.system_idx)
    etot.append(((md.energy + ke) / n_atoms).cpu().numpy())
etot = np.array(etot)
print("potential energies (eV):", np.round(md.energy.cpu().numpy(), 4))
print("NVE total-energy fluctuation per system (eV/atom, max - min):", np.ptp(etot, axis=0))
assert (np.ptp(etot, axis=0) < 1e-3).all()

# %% [markdown]
# ## Batched relaxation (FIRE)

# %%
relaxed = ts.optimize(md, ts_model, optimizer=ts.optimizers.fire, max_steps=50 if QUICK else 500,
                      convergence_fn=ts.generate_force_convergence_fn(force_tol=0.05, include_cell_forces=False))
final = ts_model(relaxed)
print("energies before (eV):", np.round(md.energy.cpu().numpy(), 4))
print("energies after  (eV):", np.round(final["energy"].cpu().numpy(), 4))
assert (final["energy"] <= md.energy + 1e-8).all()
