#!/usr/bin/env python
"""Nonlinear ACE on Zuo et al. (2020) Cu / Ni / Si against torchace's own linear BLR fit (issue 16).

For each element: the linear model of ``scripts/benchmarks/benchmark_zuo.py`` ("sm": order 3, total degrees
[20, 16, 12],
weights E 30 / F 1 / V 0, E0 fitted, BLR), then ``torchace.train`` of a nonlinear model on the same basis
(``--densities`` P = 2, pacemaker's FS embedding [1, 1, 1, 0.5], learnable radials) warm-started from that
linear fit.  The validation split (``--validation`` of the *training* file, seeded) chooses the epoch; the
test files are read only for the final numbers.  Prints a table and writes JSON (atomically).

    python scripts/benchmarks/benchmark_zuo_nonlinear.py --elements Si Cu Ni --out docs/benchmarks_zuo_nonlinear.json
    python scripts/benchmarks/benchmark_zuo_nonlinear.py --table docs/benchmarks_zuo_nonlinear.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

import torchace
from torchace.atomic import write_json_atomic
from torchace.fit.data import read_data
from torchace.fit.metrics import errors
from torchace.train.trainer import OPTIMIZERS
from torchace.model import from_linear

SIZES = {"sm": [20, 16, 12], "lge": [25, 21, 17]}
PAPER = {("Ni", "sm"): (0.416, 0.018), ("Ni", "lge"): (0.34, 0.015), ("Cu", "sm"): (0.292, 0.007),
         ("Cu", "lge"): (0.228, 0.005), ("Si", "sm"): (3.501, 0.086), ("Si", "lge"): (1.985, 0.066)}


def run(el, args):
    weights = {"default": {"E": args.wE, "F": args.wF, "V": 0.0}}
    train_path = os.path.join(args.data, f"{el}_train.xyz.gz")
    test = read_data(os.path.join(args.data, f"{el}_test.xyz.gz"), elements=[el])
    lin = torchace.ace_model([el], 3, SIZES[args.size])
    t0 = time.perf_counter()
    torchace.fit(lin, train_path, weights=weights, E0="fit", compute_errors=False)
    t_lin = time.perf_counter() - t0
    e_lin = errors(lin, test)["all"]
    nl = from_linear(lin, densities=args.densities, embedding="fs", learnable_radials=not args.fixed_radials)
    t0 = time.perf_counter()
    res = torchace.train(nl, train_path, weights=weights, E0="fit", init="linear", optimizer=args.optimizer,
                         epochs=args.epochs if len(args.epochs) > 1 else args.epochs[0], lr=args.lr, lam=args.lam,
                         init_scale=args.init_scale, init_split=args.init_split, validation=args.validation,
                         patience=args.patience,
                         batch_size=args.batch_size, seed=args.seed, progress=True, compute_errors=False,
                         checkpoint=args.checkpoint and f"{args.checkpoint}_{el}.pt")
    t_nl = time.perf_counter() - t0
    e_nl = errors(nl, test)["all"]
    n_train = [h for h in res.history if h["phase"] != "init"]
    row = {
        "element": el, "size": args.size, "basis_size": lin.basis_size, "densities": args.densities,
        "learnable_radials": not args.fixed_radials, "n_parameters": res.n_parameters,
        "linear_test_mae_E": e_lin["E"]["mae"], "linear_test_mae_F": e_lin["F"]["mae"],
        "nonlinear_test_mae_E": e_nl["E"]["mae"], "nonlinear_test_mae_F": e_nl["F"]["mae"],
        "ratio_E": e_nl["E"]["mae"] / e_lin["E"]["mae"], "ratio_F": e_nl["F"]["mae"] / e_lin["F"]["mae"],
        "paper_sm": PAPER[(el, "sm")], "paper_lge": PAPER[(el, "lge")],
        "linear_fit_seconds": t_lin, "train_seconds": t_nl,
        "seconds_per_epoch": (sum(h["seconds"] for h in n_train) / len(n_train)) if n_train else None,
        "epochs_run": len(n_train), "chosen_epoch": res.chosen_epoch, "stopped": res.stopped,
        "hyperparameters": res.hyperparameters,
        "history": [{"epoch": h["epoch"], "phase": h["phase"], "train_loss": h["train"]["loss"],
                     "val_loss": h["val"]["loss"] if h["val"] else None,
                     "val_rmse_E": h["val"]["E"] if h["val"] else None,
                     "val_rmse_F": h["val"]["F"] if h["val"] else None, "seconds": h["seconds"]}
                    for h in res.history],
    }
    if args.save_model:
        nl.save(f"{args.save_model}_{el}.json", overwrite=True)
    return row


def warm_start_only(el, args):
    """Test MAE of the warm start alone: the BLR fit of the same 90 % training split ``train`` fits first (the
    nonlinear model at epoch 0), separating the split's effect from the training's."""
    from torchace.fit.data import Dataset
    from torchace.fit.assembly import fitting_structures
    from torchace.train.validation import split_fraction

    weights = {"default": {"E": args.wE, "F": args.wF, "V": 0.0}}
    ds = read_data(os.path.join(args.data, f"{el}_train.xyz.gz"), elements=[el])
    test = read_data(os.path.join(args.data, f"{el}_test.xyz.gz"), elements=[el])
    tr, _ = split_fraction(fitting_structures(ds), args.validation, args.seed)
    lin = torchace.ace_model([el], 3, SIZES[args.size])
    torchace.fit(lin, Dataset(tr), weights=weights, E0="fit", compute_errors=False)
    e = errors(lin, test)["all"]
    return {"element": el, "warm_start_test_mae_E": e["E"]["mae"], "warm_start_test_mae_F": e["F"]["mae"]}


def markdown(rows) -> str:
    """The rows of docs/benchmarks.md's "Nonlinear ACE" table (pasted from here, not typed)."""
    out = ["| element | linear E / F | nonlinear E / F | ratio E / F | ACE(sm) paper | ACE(lge) paper "
           "| epochs (chosen) | train (s) | s/epoch |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['element']} | {r['linear_test_mae_E']:.3f} / {r['linear_test_mae_F']:.4f} "
                   f"| {r['nonlinear_test_mae_E']:.3f} / {r['nonlinear_test_mae_F']:.4f} "
                   f"| {r['ratio_E']:.3f} / {r['ratio_F']:.3f} | {r['paper_sm'][0]} / {r['paper_sm'][1]} "
                   f"| {r['paper_lge'][0]} / {r['paper_lge'][1]} | {r['epochs_run']} ({r['chosen_epoch']}) "
                   f"| {r['train_seconds']:.0f} | {r['seconds_per_epoch'] or 0:.1f} |")
    return "\n".join(out)


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--elements", nargs="+", default=["Si", "Cu", "Ni"])
    ap.add_argument("--size", default="sm", choices=list(SIZES))
    ap.add_argument("--data", default=os.path.join(here, "..", "..", "..", "shared", "data", "zuo2020"))
    ap.add_argument("--densities", type=int, default=2)
    ap.add_argument("--fixed-radials", action="store_true")
    ap.add_argument("--optimizer", default="auto", choices=list(OPTIMIZERS))
    ap.add_argument("--epochs", type=int, nargs="+", default=[100])
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--lam", type=float, default=None, help="default: the BLR warm start's √(σ²/σ_p²)")
    ap.add_argument("--init-scale", type=float, default=0.0)
    ap.add_argument("--init-split", type=float, default=0.1)
    ap.add_argument("--validation", type=float, default=0.1)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--wE", type=float, default=30.0)
    ap.add_argument("--wF", type=float, default=1.0)
    ap.add_argument("--checkpoint", default=None, help="checkpoint prefix (<prefix>_<el>.pt)")
    ap.add_argument("--save-model", default=None, help="model file prefix (<prefix>_<el>.json)")
    ap.add_argument("--out", default="benchmarks_zuo_nonlinear.json")
    ap.add_argument("--table", metavar="JSON")
    ap.add_argument("--warm-start-only", action="store_true",
                    help="only the test MAE of the warm start (BLR on the training split), as JSON lines")
    args = ap.parse_args(argv)
    if args.table:
        with open(args.table) as fh:
            print(markdown(json.load(fh)["results"]))
        return
    if args.warm_start_only:
        for el in args.elements:
            print(json.dumps(warm_start_only(el, args)), flush=True)
        return
    rows = []
    for el in args.elements:
        r = run(el, args)
        rows.append(r)
        print(f"{el}: linear {r['linear_test_mae_E']:.3f} / {r['linear_test_mae_F']:.4f}, nonlinear "
              f"{r['nonlinear_test_mae_E']:.3f} / {r['nonlinear_test_mae_F']:.4f} (ratio {r['ratio_E']:.3f} / "
              f"{r['ratio_F']:.3f}), {r['train_seconds']:.0f} s", flush=True)
        cmd = ["python", "scripts/benchmarks/benchmark_zuo_nonlinear.py"] + (argv or sys.argv[1:])
        meta = {"command": " ".join(cmd),
                "machine": f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores",
                "torch": torch.__version__, "threads": torch.get_num_threads(), "torchace": torchace.__version__}
        write_json_atomic(args.out, {"meta": meta, "results": rows})
    print(markdown(rows))


if __name__ == "__main__":
    main()
