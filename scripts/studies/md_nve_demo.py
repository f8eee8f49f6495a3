"""NVE molecular dynamics and a geometry optimisation with the torchace ASE calculator.

Fits a small Si model to Si_tiny.xyz (order 2, totaldegree 8, rcut 5.5 Å, QR with λ = 1e-3; a few seconds)
or loads ``--model FILE`` (``model.save`` JSON or a ``torchace.export`` TorchScript archive), then

1. NVE (velocity Verlet) of a rattled diamond supercell started at ``--temperature``: energy drift
   (slope of a linear fit of the total energy, eV/atom/ps), the largest excursion |E(t) − E(0)| per atom,
   time per step and neighbour-list builds (``--compare-skin0`` repeats the run rebuilding every step);
2. BFGS relaxation of a rattled, strained 8-atom cell, positions and cell (``--cell-filter``).

Prints a table and writes the numbers as JSON (``--out``).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python scripts/studies/md_nve_demo.py --steps 1000 --compare-skin0

(Single-threaded BLAS/torch suit these small cells; on a busy machine oversubscribed BLAS threads made the
Frechet cell filter's 3×3 matrix exponentials 50× slower.  See docs/calculator.md for measured numbers.)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.md.velocitydistribution import Stationary
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

import torchace
from torchace.fit import solvers
from torchace.calculators.ase import TorchACECalculator
from torchace.atomic import write_json_atomic
from torchace.testing import rattled_bulk

DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "acedata" / "Si_tiny.xyz"


def get_model(args):
    if args.model:
        return args.model, {"model": args.model}
    data = Path(args.data)
    if not data.exists():
        sys.exit(f"no training data at {data}: pass --data Si_tiny.xyz or --model FILE")
    model = torchace.ace_model(["Si"], args.order, args.totaldegree, rcut=args.rcut)
    t = time.perf_counter()
    res = torchace.fit(model, str(data), solver=solvers.QR(lam=1e-3))
    info = {"data": str(data), "order": args.order, "totaldegree": args.totaldegree, "rcut": args.rcut,
            "basis_size": model.basis_size, "fit_s": time.perf_counter() - t,
            "train_rmse_E_meV_per_atom": res.errors["all"]["E"]["rmse"],
            "train_rmse_F_eV_per_A": res.errors["all"]["F"]["rmse"]}
    return model, info


def thermalize(atoms, temperature_K, seed):
    m = atoms.get_masses()[:, None]
    p = np.random.default_rng(seed).normal(size=(len(atoms), 3)) * np.sqrt(m * units.kB * temperature_K)
    atoms.set_momenta(p)
    Stationary(atoms)


def nve(model, args, skin):
    atoms = rattled_bulk(["Si"], reps=(args.reps,) * 3, rattle=0.05, seed=args.seed)
    atoms.calc = TorchACECalculator(model, device=args.device, dtype=args.dtype, skin=skin)
    thermalize(atoms, args.temperature, args.seed)
    atoms.get_forces()  # first call: list build, warm-up
    dyn = VelocityVerlet(atoms, timestep=args.dt * units.fs)
    n = len(atoms)
    etot, temp = [atoms.get_total_energy() / n], [atoms.get_temperature()]
    t0 = time.perf_counter()
    for _ in range(args.steps):
        dyn.run(1)
        etot.append(atoms.get_total_energy() / n)
        temp.append(atoms.get_temperature())
    wall = time.perf_counter() - t0
    etot = np.array(etot)
    t_ps = np.arange(len(etot)) * args.dt * 1e-3
    slope = float(np.polyfit(t_ps, etot, 1)[0]) if len(etot) > 2 else float("nan")
    return atoms, {
        "n_atoms": n, "steps": args.steps, "dt_fs": args.dt, "skin": skin, "T_start_K": args.temperature,
        "T_mean_K": float(np.mean(temp[len(temp) // 2:])),
        "drift_eV_per_atom_per_ps": slope,
        "max_abs_dE_eV_per_atom": float(np.abs(etot - etot[0]).max()),
        "std_E_eV_per_atom": float(etot.std()),
        "s_per_step": wall / max(args.steps, 1), "us_per_atom_step": 1e6 * wall / max(args.steps, 1) / n,
        "neighbour_list_builds": atoms.calc.n_neighbour_list_builds,
    }


def relax(model, args):
    from ase.filters import FrechetCellFilter, UnitCellFilter

    atoms = rattled_bulk(["Si"], rattle=0.05, seed=args.seed + 1)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + np.diag([0.01, -0.005, 0.0])), scale_atoms=True)
    atoms.calc = TorchACECalculator(model, device=args.device, dtype=args.dtype)
    filt = (FrechetCellFilter if args.cell_filter == "frechet" else UnitCellFilter)(atoms)
    opt = BFGS(filt, logfile=None)
    t0 = time.perf_counter()
    converged = bool(opt.run(fmax=args.fmax, steps=args.relax_steps))
    wall = time.perf_counter() - t0
    return {"n_atoms": len(atoms), "cell_filter": args.cell_filter, "converged": converged, "steps": opt.nsteps,
            "fmax_eV_per_A": float(np.abs(atoms.get_forces()).max()),
            "max_stress_GPa": float(np.abs(atoms.get_stress()).max() / units.GPa),
            "energy_eV_per_atom": float(atoms.get_potential_energy() / len(atoms)),
            "lattice_A": float(atoms.get_volume() ** (1 / 3)), "wall_s": wall}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model file (JSON or TorchScript export); default: fit --data")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--order", type=int, default=2)
    p.add_argument("--totaldegree", type=float, default=8)
    p.add_argument("--rcut", type=float, default=5.5)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--temperature", type=float, default=600.0, help="initial temperature (K)")
    p.add_argument("--dt", type=float, default=1.0, help="time step (fs)")
    p.add_argument("--reps", type=int, default=2, help="cubic diamond cell repeated reps³ times (8·reps³ atoms)")
    p.add_argument("--skin", type=float, default=0.5)
    p.add_argument("--compare-skin0", action="store_true", help="repeat the MD rebuilding the list every step")
    p.add_argument("--device", default="cpu")
    p.add_argument("--float32", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fmax", type=float, default=0.01)
    p.add_argument("--relax-steps", type=int, default=200)
    p.add_argument("--cell-filter", choices=["frechet", "unitcell"], default="frechet")
    p.add_argument("--out", default="md_nve_demo.json")
    args = p.parse_args(argv)
    args.dtype = torch.float32 if args.float32 else torch.float64
    if args.threads:
        torch.set_num_threads(args.threads)

    model, model_info = get_model(args)
    atoms, md = nve(model, args, args.skin)
    out = {"model": model_info, "nve": md, "device": args.device, "dtype": str(args.dtype),
           "threads": torch.get_num_threads(), "torchace_version": torchace.__version__}
    if args.compare_skin0:
        ref_atoms, md0 = nve(model, args, 0.0)
        md0["max_position_difference_A"] = float(np.abs(ref_atoms.positions - atoms.positions).max())
        out["nve_skin0"] = md0
    out["relax"] = relax(model, args)

    rows = [("MD run", "atoms", "steps", "dt fs", "drift eV/atom/ps", "max|dE| eV/atom", "ms/step", "µs/atom/step",
             "NL builds")]
    for name, r in [("skin %.2g" % args.skin, md)] + ([("skin 0", out["nve_skin0"])] if args.compare_skin0 else []):
        rows.append((name, r["n_atoms"], r["steps"], r["dt_fs"], f"{r['drift_eV_per_atom_per_ps']:.2e}",
                     f"{r['max_abs_dE_eV_per_atom']:.2e}", f"{1e3 * r['s_per_step']:.2f}",
                     f"{r['us_per_atom_step']:.0f}", r["neighbour_list_builds"]))
    widths = [max(len(str(r[k])) for r in rows) for k in range(len(rows[0]))]
    if isinstance(model_info, dict) and "fit_s" in model_info:
        print(f"model: Si order {args.order}, totaldegree {args.totaldegree:g}, rcut {args.rcut} Å, "
              f"{model_info['basis_size']} functions, fitted in {model_info['fit_s']:.1f} s "
              f"(train RMSE {model_info['train_rmse_E_meV_per_atom']:.2f} meV/atom, "
              f"{model_info['train_rmse_F_eV_per_A']:.3f} eV/Å)")
    for r in rows:
        print("  ".join(str(v).rjust(w) for v, w in zip(r, widths)))
    if args.compare_skin0:
        print(f"max position difference skin {args.skin:g} vs skin 0 after {args.steps} steps: "
              f"{out['nve_skin0']['max_position_difference_A']:.1e} Å")
    r = out["relax"]
    print(f"BFGS + {r['cell_filter']} cell filter, {r['n_atoms']} atoms: converged={r['converged']} in {r['steps']} "
          f"steps ({r['wall_s']:.2f} s), fmax {r['fmax_eV_per_A']:.1e} eV/Å, max |σ| {r['max_stress_GPa']:.1e} GPa, "
          f"a = {r['lattice_A']:.4f} Å, E = {r['energy_eV_per_atom']:.4f} eV/atom")
    write_json_atomic(args.out, out)
    print(f"wrote {os.path.abspath(args.out)}")
    return out


if __name__ == "__main__":
    main()
