#!/usr/bin/env python
"""µs per atom-step of the LAMMPS route (fix external + torchace) against torchace alone and ML-PACE.

    python scripts/benchmarks/bench_lammps.py                       # 512 and 4096 atoms, 1 and 2 threads
    python scripts/benchmarks/bench_lammps.py --reps 8 --threads 1 --json docs/bench_lammps.json

Model: Si, order 3, totaldegree 12 (223 functions), float64, fitted to the bundled Zuo et al. Si training set
(≈ 30 s; --model-file caches it; --random: random coefficients of scale 1e-3 instead).
Structures: ase.build.bulk('Si', 'diamond', 5.43, cubic=True) * (r, r, r), r in --reps (4: 512 atoms,
8: 4096 atoms), rattled 0.05 Å (seed 1), velocities of 300 K.  Cases, each a median over --repeats blocks of
--steps steps after a warm-up block:

  lammps+torchace   LAMMPS (pair_style zero, fix nve, LAMMPS's default neighbor settings) with torchace as its
                    fix external (torchace.calculators.lammps, skin 0.5 Å); NVE steps (``run N pre no post no``)
  ase+torchace      ASE VelocityVerlet NVE steps with TorchACECalculator (same backend, skin 0.5 Å)
  torchace kernel   the backend evaluator alone on a prebuilt neighbour list (energy, forces, virial)
  ml-pace           python-ace's PyACECalculator (ML-PACE's C++ evaluator) on the exported .yace
                    (torchace.export(model, path, format="yace")): energy + forces + stress per step of atoms
                    moved by ≤ 1e-4 Å (its neighbour list is rebuilt every call); the pair part, which LAMMPS
                    would add from the exported pair table, is not included; ML-PACE ignores torch's threads
  ml-pace evaluator the same C++ evaluator alone on a prebuilt atomic environment (ACECalculator.compute)

torch threads are set with torch.set_num_threads for each row (LAMMPS itself runs serially; no -sf omp).
Prints a Markdown table; --json writes the numbers and the machine.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import tempfile
import time

import numpy as np
import torch

import torchace
from torchace.calculators.lammps import attach, lammps_input_lines, new_lammps
from torchace.testing import randomize_coefficients

SKIN = 0.5
TEMPERATURE = 300.0
TIMESTEP = 0.001  # ps
BEST: list = []


def structure(reps: int):
    from ase.build import bulk

    atoms = bulk("Si", "diamond", 5.43, cubic=True) * (reps, reps, reps)
    atoms.rattle(0.05, seed=1)
    return atoms


def make_model(order: int, td: float, random: bool = False, path=None):
    """Fitted to the bundled Zuo et al. Si training set (E0 fitted, default weights, BLR), so that MD at 300 K
    is a crystal's (neighbour-list rebuilds as in a production run); ``random``: coefficients of scale 1e-3
    (seed 0).  ``path``: load the model from there if it exists, else save it there."""
    if path and os.path.exists(path):
        return torchace.load(path).eval()
    model = torchace.ace_model(["Si"], order, td)
    if random:
        randomize_coefficients(model, 1e-3, seed=0)
    else:
        t0 = time.perf_counter()
        torchace.fit(model, torchace.example_data("zuo2020/Si_train.xyz.gz"), E0="fit", compute_errors=False)
        print(f"fitted the model to the bundled Zuo Si training set in {time.perf_counter() - t0:.1f} s", flush=True)
    if path:
        model.save(path)
    return model.eval()


def blocks(step_block, steps: int, repeats: int, after_warmup=None):
    """Median seconds per step over ``repeats`` blocks of ``steps`` steps, after one warm-up block (then
    ``after_warmup()`` is called); also the total timed seconds.  The fastest block per step goes into
    ``BEST`` (a shared machine: the median is the number reported, the best one shows the noise)."""
    step_block(steps)
    if after_warmup is not None:
        after_warmup()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step_block(steps)
        times.append(time.perf_counter() - t0)
    BEST.append(min(times) / steps)
    return statistics.median(times) / steps, sum(times)


def bench_lammps(model, atoms, backend: str, steps: int, repeats: int):
    lmp = new_lammps()
    L = atoms.cell.array.diagonal().tolist()
    lmp.commands_list(["units metal", "atom_style atomic", "atom_modify map array",
                       f"region box block 0 {L[0]!r} 0 {L[1]!r} 0 {L[2]!r}", "create_box 1 box"])
    n = len(atoms)
    lmp.create_atoms(n, list(range(1, n + 1)), [1] * n, atoms.positions.reshape(-1).tolist())
    lmp.commands_list(lammps_input_lines(model, ["Si"]))
    driver = attach(lmp, model, ["Si"], backend=backend, skin=SKIN)
    lmp.commands_list([f"velocity all create {TEMPERATURE} 4928459 mom yes rot yes dist gaussian",
                       f"timestep {TIMESTEP}", "fix nve all nve", "thermo 0"])
    driver.run(0)
    snap = {}

    def mark():
        snap.update(driver.timings, calls=driver.n_calls, builds=driver.n_neighbour_list_builds)

    t, total = blocks(lambda k: driver.run(k, "pre no post no"), steps, repeats, mark)
    calls = driver.n_calls - snap["calls"]
    info = {"backend": driver.backend, "calls": calls,
            "neighbour_list_builds": driver.n_neighbour_list_builds - snap["builds"],
            "callback_fraction": (driver.timings["callback"] - snap["callback"]) / total,
            "evaluate_s_per_call": (driver.timings["evaluate"] - snap["evaluate"]) / calls,
            "neighbours_s_per_call": (driver.timings["neighbours"] - snap["neighbours"]) / calls}
    lmp.close()
    return t, info


def bench_ase(model, atoms, backend: str, steps: int, repeats: int):
    from ase import units
    from ase.md.verlet import VelocityVerlet

    a = atoms.copy()
    calc = torchace.calculators.TorchACECalculator(model, backend=backend, skin=SKIN)
    a.calc = calc
    sigma = np.sqrt(units.kB * TEMPERATURE / a.get_masses())[:, None]  # Maxwell-Boltzmann momenta
    a.set_momenta(np.random.default_rng(2).normal(size=(len(a), 3)) * sigma * a.get_masses()[:, None])
    dyn = VelocityVerlet(a, timestep=TIMESTEP * 1000 * units.fs)
    b0 = []
    t, _ = blocks(dyn.run, steps, repeats, lambda: b0.append(calc.n_neighbour_list_builds))
    return t, {"backend": calc.backend, "neighbour_list_builds": calc.n_neighbour_list_builds - b0[0]}


def bench_kernel(model, atoms, backend: str, steps: int, repeats: int):
    from torchace.model.backends import EVALUATE, select
    from torchace.structures import collate

    b = select(model, "cpu", backend, EVALUATE)
    fn = b.evaluator(model)
    batch = collate([atoms], model.config.numbers, model.rcut + SKIN, dtype=torch.float64)
    args = [batch[k] for k in ("positions", "species", "batch", "edge_index", "unit_shifts", "cell")]

    def run(k):
        for _ in range(k):
            fn(*args, 1, True, True)

    return blocks(run, steps, repeats)[0], {"backend": b.name}


def bench_pace(yace: str, atoms, steps: int, repeats: int):
    from pyace import PyACECalculator

    a = atoms.copy()
    a.calc = PyACECalculator(yace)
    rng = np.random.default_rng(3)

    def run(k):
        for _ in range(k):
            a.positions += rng.uniform(-1e-4, 1e-4, a.positions.shape)
            a.get_forces()
            a.get_stress()

    return blocks(run, steps, repeats)[0], {}


def bench_pace_evaluator(yace: str, atoms, steps: int, repeats: int):
    from pyace import PyACECalculator

    calc = PyACECalculator(yace)
    calc.get_atomic_env(atoms)  # the neighbour list once (what LAMMPS would hand over)

    def run(k):
        for _ in range(k):
            calc.ace.compute(calc.ae, compute_projections=False)

    return blocks(run, steps, repeats)[0], {}


def versions():
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "lammps", "mpich", "python-ace", "ase", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def machine():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "versions": versions()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, nargs="+", default=[4, 8], help="supercell repeats (4: 512, 8: 4096 atoms)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--totaldegree", type=float, default=12)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--random", action="store_true", help="random coefficients instead of the quick fit")
    ap.add_argument("--model-file", help="load the model from here if it exists, else save it here")
    ap.add_argument("--steps", type=int, default=10, help="steps per timed block")
    ap.add_argument("--repeats", type=int, default=5, help="timed blocks (median)")
    ap.add_argument("--pace-steps", type=int, default=3, help="steps per timed block for ML-PACE (slow)")
    ap.add_argument("--no-pace", action="store_true", help="skip ML-PACE (python-ace)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    from torchace.model.backends.runtime import tune_malloc

    tune_malloc()
    model = make_model(args.order, args.totaldegree, args.random, args.model_file)
    yace = None
    if not args.no_pace:
        try:
            importlib.import_module("pyace")
            yace = torchace.export(model, os.path.join(tempfile.mkdtemp(), "Si.yace"), format="yace")
        except ImportError as exc:
            print(f"ML-PACE skipped: {exc} (pip install -e \".[pace]\")")
    rows = []
    for reps in args.reps:
        atoms = structure(reps)
        n = len(atoms)
        for threads in args.threads:
            torch.set_num_threads(threads)
            cases = [("lammps+torchace", lambda: bench_lammps(model, atoms, args.backend, args.steps, args.repeats)),
                     ("ase+torchace", lambda: bench_ase(model, atoms, args.backend, args.steps, args.repeats)),
                     ("torchace kernel", lambda: bench_kernel(model, atoms, args.backend, args.steps, args.repeats))]
            if yace is not None:
                cases.append(("ml-pace", lambda: bench_pace(yace, atoms, args.pace_steps, args.repeats)))
                cases.append(("ml-pace evaluator",
                              lambda: bench_pace_evaluator(yace, atoms, args.pace_steps, args.repeats)))
            for name, fn in cases:
                t, info = fn()
                rows.append({"case": name, "atoms": n, "threads": threads, "s_per_step": t,
                             "us_per_atom_step": t / n * 1e6, "best_us_per_atom_step": BEST[-1] / n * 1e6, **info})
                print(f"{name:<16} {n:>5} atoms, {threads} thread(s): {t * 1e3:8.2f} ms/step, "
                      f"{t / n * 1e6:7.2f} µs/atom-step {info}", flush=True)
    print()
    print(f"Si order {args.order} totaldegree {args.totaldegree:g} ({model.basis_size} functions, "
          f"{'random' if args.random else 'fitted'}), float64, "
          f"median of {args.repeats} × {args.steps} steps; µs per atom-step")
    print()
    sizes = sorted({r["atoms"] for r in rows})
    head = [f"{n} atoms, {t} thr" for n in sizes for t in args.threads]
    print("| case | " + " | ".join(head) + " |")
    print("|---|" + "---|" * len(head))
    for case in dict.fromkeys(r["case"] for r in rows):
        vals = {(r["atoms"], r["threads"]): r["us_per_atom_step"] for r in rows if r["case"] == case}
        print(f"| {case} | " + " | ".join(f"{vals[(n, t)]:.2f}" if (n, t) in vals else "—"
                                           for n in sizes for t in args.threads) + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"model": {"elements": ["Si"], "order": args.order, "totaldegree": args.totaldegree,
                                 "basis_size": model.basis_size, "rcut": model.rcut,
                                 "coefficients": "random" if args.random else "fit (Zuo Si train)"},
                       "skin": SKIN, "steps": args.steps, "repeats": args.repeats, "machine": machine(),
                       "results": rows}, fh, indent=1)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
