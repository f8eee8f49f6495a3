#!/usr/bin/env python
"""Zuo et al. (2020) benchmark: fit Cu, Ni, Si with torchace and compare test MAE with the
ACEpotentials.jl paper (Table II) — energies and forces only, as the paper did.

    python scripts/benchmark_zuo.py --elements Si Cu Ni --sizes sm lge --out docs/benchmarks_zuo.json

Reads ../shared/data/zuo2020 (or --data DIR).  Prints a table and writes JSON (atomically).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

import torchace
from torchace import priors, solvers
from torchace.serialization import write_json_atomic

SIZES = {"sm": [20, 16, 12], "lge": [25, 21, 17]}
# ACEpotentials.jl paper, Table II (DATA.md): test MAE, E meV/atom, F eV/Å
PAPER = {("Ni", "sm"): (0.416, 0.018), ("Ni", "lge"): (0.34, 0.015), ("Cu", "sm"): (0.292, 0.007),
         ("Cu", "lge"): (0.228, 0.005), ("Si", "sm"): (3.501, 0.086), ("Si", "lge"): (1.985, 0.066)}


SOLVERS = {"BLR": lambda: solvers.BLR(), "QR": lambda: solvers.QR(lam=1e-3),
           "RRQR": lambda: solvers.RRQR(rtol=1e-15)}  # ACEfit's RRQR default rtol
PRIORS = {"none": lambda: None, "smooth4": lambda: priors.algebraic_smoothness(p=4)}


def run(element: str, size: str, data_dir: str, solver_name: str, weights, batch_atoms: int, rcut=None,
        prior_name: str = "none", purify: str = "none"):
    train = os.path.join(data_dir, f"{element}_train.xyz.gz")
    test = os.path.join(data_dir, f"{element}_test.xyz.gz")
    model = torchace.ace_model([element], 3, SIZES[size], rcut=rcut, pure2b=purify == "pure2b",
                               pure=purify == "pure")
    solver = SOLVERS[solver_name]()
    t0 = time.perf_counter()
    res = torchace.fit(model, train, weights=weights, solver=solver, prior=PRIORS[prior_name](), E0="fit",
                       batch_atoms=batch_atoms,
                       progress=sys.stderr.isatty(), compute_errors=False)
    t_fit = time.perf_counter() - t0
    err = torchace.errors(model, test)["all"]
    return {
        "element": element, "size": size, "totaldegree": SIZES[size], "basis_size": model.basis_size,
        "rcut": model.rcut, "solver": solver_name, "prior": prior_name, "purify": purify, "hyperparameters": res.hyperparameters,
        "E0": res.E0, "test_mae_E_meV_per_atom": err["E"]["mae"], "test_mae_F_eV_per_A": err["F"]["mae"],
        "test_rmse_E_meV_per_atom": err["E"]["rmse"], "test_rmse_F_eV_per_A": err["F"]["rmse"],
        "paper_mae_E": PAPER[(element, size)][0], "paper_mae_F": PAPER[(element, size)][1],
        "fit_seconds": t_fit, "timings": res.timings,
    }


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--elements", nargs="+", default=["Si", "Cu", "Ni"])
    ap.add_argument("--sizes", nargs="+", default=["sm", "lge"], choices=list(SIZES))
    ap.add_argument("--data", default=os.path.join(here, "..", "..", "shared", "data", "zuo2020"))
    ap.add_argument("--solver", default="BLR", choices=list(SOLVERS))
    ap.add_argument("--prior", default="none", choices=list(PRIORS),
                    help="smooth4: ACEpotentials' algebraic smoothness prior, p = 4 (acefit!'s default)")
    ap.add_argument("--wE", type=float, default=30.0)
    ap.add_argument("--wF", type=float, default=1.0)
    ap.add_argument("--rcut", type=float, default=None, help="default: ACEpotentials' 2.5·r0")
    ap.add_argument("--batch-atoms", type=int, default=2048)
    ap.add_argument("--purify", default="none", choices=["none", "pure2b", "pure"],
                    help="purified basis (docs/purification.md); ACE1x's acemodel defaulted to pure2b")
    ap.add_argument("--out", default="benchmarks_zuo.json")
    args = ap.parse_args(argv)
    weights = {"default": {"E": args.wE, "F": args.wF, "V": 0.0}}
    rows = []
    print(f"{'el':<3} {'size':<4} {'K':>5} {'MAE E':>8} {'paper':>7} {'MAE F':>8} {'paper':>7} {'fit s':>7}")
    for el in args.elements:
        for size in args.sizes:
            r = run(el, size, args.data, args.solver, weights, args.batch_atoms, args.rcut, args.prior, args.purify)
            rows.append(r)
            print(f"{el:<3} {size:<4} {r['basis_size']:>5} {r['test_mae_E_meV_per_atom']:>8.3f} {r['paper_mae_E']:>7.3f} "
                  f"{r['test_mae_F_eV_per_A']:>8.4f} {r['paper_mae_F']:>7.3f} {r['fit_seconds']:>7.1f}", flush=True)
    meta = {"command": " ".join(["python", "scripts/benchmark_zuo.py"] + (argv or sys.argv[1:])),
            "machine": f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores",
            "torch": torch.__version__, "threads": torch.get_num_threads(), "torchace": torchace.__version__}
    write_json_atomic(args.out, {"meta": meta, "results": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
