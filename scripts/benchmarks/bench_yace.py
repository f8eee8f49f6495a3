"""Speed of ML-PACE's own evaluator on torchace's ``.yace`` exports: the original full-grid writer
(``write_yace(lean=False)``) against the lean one (default), both run by python-ace's C++ ``ACECTildeEvaluator``
and ``ACERecursiveEvaluator`` (the two evaluators LAMMPS offers, ``pair_style pace product`` / ``pace
recursive``) on a rattled diamond Si cell, one thread.

Times ``PyACECalculator(...).ace.compute(environment, compute_projections=False)`` (energy, forces, virial; the
neighbour environment is built once, outside the timing, as LAMMPS builds its neighbour list itself): median of
``--repeats`` calls after one warm-up call, the variants interleaved call by call, in µs per atom and step.
Also reports the export's radial base, nradbase, nradmax, lmax, used (n, l) channels, the splines ML-PACE
evaluates per neighbour, the potential's load time (spline tabulation) and the energy/force error against
``torchace.evaluate`` on the same cell (the pair part is not timed: it is LAMMPS ``pair_style table``).  Needs
``pip install python-ace==0.4.0rc1``.

    OMP_NUM_THREADS=1 python scripts/benchmarks/bench_yace.py [--order 3 --totaldegree 12] [--reps 6] [--repeats 7]
        [--model FILE.json] [--json out.json]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import torchace  # noqa: E402
from torchace.io.yace.write import write_yace  # noqa: E402
from torchace.testing import rattled_bulk  # noqa: E402

# (export options, evaluator): "product" = ACECTildeEvaluator (LAMMPS ``pair_style pace product``),
# "recursive" = ACERecursiveEvaluator (``pair_style pace recursive``)
VARIANTS = {"full grid (lean=False), product": ({"lean": False}, "product"),
            "lean (default), product": ({"lean": True}, "product"),
            "full grid (lean=False), recursive": ({"lean": False}, "recursive"),
            "lean (default), recursive": ({"lean": True}, "recursive")}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def prepare_variant(model, atoms, path, options, evaluator):
    from pyace import PyACECalculator

    t0 = time.perf_counter()
    info = write_yace(model, path, **options)
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    rec = evaluator == "recursive"
    calc = PyACECalculator(info["yace"], recursive_evaluator=rec, recursive=rec)
    t_load = time.perf_counter() - t0
    ae = calc.get_atomic_env(atoms)
    calc.ace.compute(ae, compute_projections=False)                      # warm-up
    return {"info": info, "calc": calc, "ae": ae, "write_s": t_write, "load_s": t_load, "times": []}


def time_once(v) -> None:
    t0 = time.perf_counter()
    v["calc"].ace.compute(v["ae"], compute_projections=False)
    v["times"].append(time.perf_counter() - t0)


def summary(v, atoms, ref, options, evaluator) -> dict:
    info, calc, times = v["info"], v["calc"], v["times"]
    e = float(calc.ace.energy)
    f = np.array(calc.ace.forces)
    e_ref, f_ref = float(ref["energy"][0]), ref["forces"].numpy()
    return {"options": options, "evaluator": evaluator, "radbasename": info["radbasename"],
            "nradbase": info["nradbase"],
            "nradmax": info["nradmax"], "lmax": info["lmax"], "channels_used": info["channels_used"],
            "channels_grid": info["nradmax"] * (info["lmax"] + 1),
            "splines_per_neighbour": info["splines_per_neighbour"],
            "radial_error": info["radial_error"], "yace_MB": os.path.getsize(info["yace"]) / 1e6,
            "write_s": v["write_s"], "load_s": v["load_s"], "times_s": times, "median_s": statistics.median(times),
            "us_per_atom_step": 1e6 * statistics.median(times) / len(atoms),
            "rel_err_E": abs(e - e_ref) / abs(e_ref), "rel_err_F": float(np.abs(f - f_ref).max() / np.abs(f_ref).max())}


def table(results, n_atoms):
    base = {}
    for r in results.values():          # speed-up against the full-grid export with the same evaluator
        base.setdefault(r["evaluator"], r["median_s"])
    rows = ["| export | radial base, nradbase | nradmax × (lmax+1) (used n,l channels) | splines / neighbour | "
            "µs / atom-step | speed-up | load (s) | rel. err E / F vs torchace |",
            "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        rows.append(f"| {name} | {r['radbasename']}, {r['nradbase']} | {r['nradmax']} × {r['lmax'] + 1} "
                    f"({r['channels_used']}) | {r['splines_per_neighbour']} | {r['us_per_atom_step']:.1f} | "
                    f"{base[r['evaluator']] / r['median_s']:.2f}× | {r['load_s']:.1f} | "
                    f"{r['rel_err_E']:.1e} / {r['rel_err_F']:.1e} |")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--totaldegree", type=float, nargs="+", default=[12])
    ap.add_argument("--model", help="a saved torchace model (.json) instead of random coefficients")
    ap.add_argument("--reps", type=int, default=6, help="diamond cubic cell repeated reps³ times (8·reps³ atoms)")
    ap.add_argument("--rattle", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.model:
        model = torchace.load(args.model)
    else:
        td = args.totaldegree[0] if len(args.totaldegree) == 1 else args.totaldegree
        model = torchace.ace_model(["Si"], order=args.order, totaldegree=td)
        g = torch.Generator().manual_seed(args.seed)
        c = torch.randn(model.basis_size, generator=g, dtype=torch.float64) * 0.01
        c[model.n_manybody:] = 0.0          # the pair part is LAMMPS pair_style table, not timed here
        model.coefficients = c
    atoms = rattled_bulk(model.elements, reps=(args.reps,) * 3, rattle=args.rattle, seed=args.seed)
    ref = torchace.evaluate(model, [atoms])
    results = {}
    with tempfile.TemporaryDirectory() as d:
        prepared = {name: prepare_variant(model, atoms, os.path.join(d, f"m{i}.yace"), *v)
                    for i, (name, v) in enumerate(VARIANTS.items())}
        for _ in range(args.repeats):          # interleaved, so that load drift affects every variant alike
            for v in prepared.values():
                time_once(v)
        for name, (opts, evaluator) in VARIANTS.items():
            results[name] = summary(prepared[name], atoms, ref, opts, evaluator)
            print(f"{name}: {results[name]['us_per_atom_step']:.1f} µs/atom-step", flush=True)
    import pyace

    meta = {"model": model.extra_repr(), "n_atoms": len(atoms), "repeats": args.repeats,
            "cpu": cpu_name(), "threads": 1, "python_ace": getattr(pyace, "__version__", "0.4.0rc1"),
            "torch": torch.__version__, "torchace": torchace.__version__}
    print(f"\n{meta['model']}; {len(atoms)}-atom rattled Si cell; {meta['cpu']}, one thread; "
          f"median of {args.repeats}\n")
    print(table(results, len(atoms)))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=1)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
