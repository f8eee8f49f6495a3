#!/usr/bin/env python
"""Design-matrix rows (energy, forces, virial of every basis function) per atom: torchace
``design_matrix_rows`` against ace-jax's linear-rows assembly (``ace_jax.fit.rows.chunked_rows_fn``, jitted,
the function its fitting pipeline uses), on the same structure and basis.

    python scripts/benchmarks/bench_assembly.py                          # si3_10 (120 functions) and si4_12 (350)
    python scripts/benchmarks/bench_assembly.py --models si3_10 --repeats 5

Structure as scripts/benchmarks/bench_eval.py (216-atom rattled diamond Si, rcut 6 Å).  torchace timings include
collation and the neighbour list (what a fit does per structure); ace-jax timings exclude building its
padded Dataset (neighbour list done once, outside the timer) and jit compilation (warm-up), so they favour
ace-jax.  Median of --repeats after --warmup.  Prints a table and writes JSON (--out).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_eval import (MODELS, acejax_model, have_acejax, machine_info, peak_memory,  # noqa: E402
                        structure, torchace_model)

import torchace  # noqa: E402


def timed(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def acejax_rows_fn(order, td, atoms):
    """(fn() -> rows computed and blocked, n_columns) for ace-jax's jitted linear rows on ``atoms``."""
    import jax
    from ace_jax.fit.data import Config, build_dataset
    from ace_jax.fit.inducing import GPConfig
    from ace_jax.fit.rows import chunked_rows_fn

    jm, meta = acejax_model(order, td)
    n = len(atoms)
    cfgs = [Config(positions=atoms.get_positions(), numbers=atoms.get_atomic_numbers(),
                   cell=atoms.cell.array, pbc=atoms.get_pbc(), energy=0.0, forces=np.zeros((n, 3)),
                   virial=np.zeros((3, 3)), w_E=1.0, w_F=1.0, w_V=1.0)]
    ds = build_dataset(cfgs, meta, np.zeros(len(meta["elements"])), 1, log=lambda *a: None)
    b = jax.tree.map(lambda x: x[0], ds)
    gc = GPConfig(r0=2.4, rcut=float(meta["rcut"]), n_B=meta["n_B"], n_pair=meta["n_pair"],
                  NZ=len(meta["elements"]), C=int(ds.y_E.shape[1]))
    f = chunked_rows_fn(jm, gc)

    def run():
        r = f(b)
        jax.block_until_ready(r)
        return r
    return run, gc.len_basis


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["si3_10", "si4_12"], choices=list(MODELS))
    ap.add_argument("--no-tune-malloc", action="store_true", help="leave glibc's malloc thresholds alone")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-acejax", action="store_true")
    ap.add_argument("--no-fused", action="store_true", help="skip the fused C++ kernel case (builds ~30 s once)")
    ap.add_argument("--out", default="bench_assembly.json")
    a = ap.parse_args(argv)
    if not a.no_tune_malloc:
        from torchace.model.backends.runtime import tune_malloc
        tune_malloc()
    dev = torch.device("cpu")
    atoms = structure(reps=a.reps)
    n = len(atoms)
    rows = []
    for name in a.models:
        order, td = MODELS[name]
        model = torchace_model(order, td)
        K = model.basis_size
        print(f"{name}: order {order} totaldegree {td}, K = {K}; {n} atoms", flush=True)
        med, ts = timed(lambda: torchace.design_matrix_rows(model, atoms), a.warmup, a.repeats)
        r_t = {"case": "torchace design_matrix_rows (default: backend auto)", "library": "torchace", "model": name,
               "basis_size": K,
               "device": "cpu", "dtype": "float64", "atoms": n, "median_s": med, "min_s": min(ts),
               "repeats": len(ts), "atom_rows_per_s": n / med, "us_per_atom": 1e6 * med / n, **peak_memory(dev)}
        rows.append(r_t)
        print(f"  torchace: {1e3 * med:.1f} ms ({1e6 * med / n:.0f} µs/atom)", flush=True)
        r_f = None
        if not a.no_fused:
            from torchace.model.backends import fused
            if fused.available():
                med_f, ts_f = timed(lambda: torchace.design_matrix_rows(model, atoms, backend="fused"), a.warmup,
                                    a.repeats)
                r_f = {"case": "torchace rows, fused C++ kernel", "library": "torchace", "model": name,
                       "basis_size": K, "device": "cpu", "dtype": "float64", "atoms": n, "median_s": med_f,
                       "min_s": min(ts_f), "repeats": len(ts_f), "atom_rows_per_s": n / med_f,
                       "us_per_atom": 1e6 * med_f / n, **peak_memory(dev)}
                rows.append(r_f)
                print(f"  torchace fused: {1e3 * med_f:.1f} ms ({1e6 * med_f / n:.0f} µs/atom)", flush=True)
            else:
                print("  fused C++ kernel not buildable here: case skipped")
        # the forward-AD reference path for ∂φ/∂r (what the analytic derivatives replaced)
        from torchace.structures.batch import collate
        from torchace.fit.rows import batch_rows

        def ref_rows():
            b = collate(atoms, model.config.numbers, model.rcut)
            return batch_rows(model, b, backend="reference")
        med_r, ts_r = timed(ref_rows, a.warmup, a.repeats)
        rows.append({"case": "torchace rows, forward-AD dphi", "library": "torchace", "model": name, "basis_size": K,
                     "device": "cpu", "dtype": "float64", "atoms": n, "median_s": med_r, "min_s": min(ts_r),
                     "repeats": len(ts_r), "atom_rows_per_s": n / med_r, "us_per_atom": 1e6 * med_r / n,
                     **peak_memory(dev)})
        print(f"  torchace (forward-AD reference): {1e3 * med_r:.1f} ms ({1e6 * med_r / n:.0f} µs/atom)", flush=True)
        if not a.no_acejax and have_acejax():
            t0 = time.perf_counter()
            fn, L = acejax_rows_fn(order, td, atoms)
            t_build = time.perf_counter() - t0
            t0 = time.perf_counter()
            fn()
            t_first = time.perf_counter() - t0
            med, ts = timed(fn, a.warmup, a.repeats)
            r_j = {"case": "ace-jax chunked_rows_fn (jit)", "library": "ace-jax", "model": name, "basis_size": L,
                   "device": "cpu", "dtype": "float64", "atoms": n, "median_s": med, "min_s": min(ts),
                   "repeats": len(ts), "atom_rows_per_s": n / med, "us_per_atom": 1e6 * med / n,
                   "build_s": t_build, "first_call_s_incl_compile": t_first, **peak_memory(dev)}
            rows.append(r_j)
            r_t["speedup_vs_peer"] = r_j["median_s"] / r_t["median_s"]
            if r_f is not None:
                r_f["speedup_vs_peer"] = r_j["median_s"] / r_f["median_s"]
            print(f"  ace-jax: {1e3 * med:.1f} ms ({1e6 * med / n:.0f} µs/atom), first call {t_first:.1f} s",
                  flush=True)
    print(f"\nDesign-matrix rows (E, F, virial), {n} atoms, CPU float64, median of {a.repeats} after {a.warmup} "
          "warm-up  (torchace/peer = peer time / torchace time: >1 means torchace faster)")
    hdr = f"{'model':8s} {'case':32s} {'K':>5s} {'median ms':>10s} {'atoms/s':>9s} {'µs/atom':>9s} " \
          f"{'peak MiB':>9s} {'torchace/peer':>13s}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        s = r.get("speedup_vs_peer")
        print(f"{r['model']:8s} {r['case']:32s} {r['basis_size']:5d} {1e3 * r['median_s']:10.1f} "
              f"{r['atom_rows_per_s']:9.0f} {r['us_per_atom']:9.0f} {r['peak_memory_MiB']:9.0f} "
              f"{('%.2fx' % s) if s else '':>13s}")
    with open(a.out, "w") as f:
        json.dump({"benchmark": "bench_assembly", "machine": machine_info(dev), "argv": sys.argv[1:],
                   "structure": f"Si diamond 5.43 cubic x{a.reps}^3, rattle 0.05 seed 1", "rows": rows}, f, indent=1)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
