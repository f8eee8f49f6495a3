#!/usr/bin/env python
"""Gradient training of a torchace model's coefficients on CPU or CUDA (docs/training.md).

The loss is the weighted least-squares objective of ``torchace.fit`` written as a function of the model:

    L(c) = ( Σ_s [ (wE/√N)² (E_s − Ê_s)² + wF² ‖F_s − F̂_s‖² + (wV/√N)² ‖W_s − Ŵ_s‖²_Voigt ] + λ²‖c‖² ) / n_rows

evaluated with the model's own forward in train mode (forces and virials differentiable in c), so its
minimiser is the ``solvers.QR(lam=λ)`` solution of the same weights: training and fitting are one problem.

    python scripts/train.py data.xyz --elements Si --order 3 --totaldegree 12 --epochs 200 --device cuda
    python scripts/train.py data.xyz --model start.json --init-fit --optimizer lbfgs --output trained.json
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time

import numpy as np
import torch

import torchace
from torchace.fit import solvers
from torchace.fit.assembly import fitting_structures
from torchace.fit.data import isolated_atom_energies, read_data
from torchace.train.loss import full_loss_and_grad, make_batches, metrics, penalty, residuals
from torchace.fit.weights import resolve_weights


def build_model(args, ds):
    if args.model:
        return torchace.load(args.model)
    els = args.elements or sorted({sym for s in ds for sym in s.atoms.get_chemical_symbols()})
    E0 = json.loads(args.E0) if args.E0 else (isolated_atom_energies(ds) or None)
    return torchace.ace_model(els, args.order, args.totaldegree, rcut=args.rcut, E0=E0)


def train(model, train_b, val_b, *, optimizer="adam", lr=1e-3, epochs=100, lam=0.0, patience=20,
          output=None, log=None, verbose=True):
    """Train ``model.coefficients``; keeps (and saves to ``output``) the best model by validation loss."""
    c = model.coefficients
    opt = (torch.optim.Adam([c], lr=lr) if optimizer == "adam"
           else torch.optim.LBFGS([c], lr=lr, max_iter=20, history_size=20, line_search_fn="strong_wolfe"))
    n_train = sum(b["n_rows"] for b in train_b)
    history, best, best_c, bad = [], math.inf, c.detach().clone(), 0
    if verbose:
        print(f"{'epoch':>5} {'train loss':>12} {'val loss':>12} {'val E meV/at':>12} {'val F eV/Å':>11} "
              f"{'val V meV/at':>12} {'s':>6}")
    for epoch in range(epochs + 1):
        t0 = time.perf_counter()
        if epoch > 0:  # epoch 0 reports the starting point
            if optimizer == "adam":
                model.train()
                for b in train_b:
                    opt.zero_grad()
                    loss = residuals(model, b)[1] / b["n_rows"] + penalty(model, lam) / n_train
                    loss.backward()
                    opt.step()
            else:
                opt.step(lambda: torch.tensor(full_loss_and_grad(model, train_b, lam)))
        tr = metrics(model, train_b, lam)
        va = metrics(model, val_b, 0.0) if val_b else tr  # held-out misfit: the penalty is θ's, not the data's
        rec = {"epoch": epoch, "train": tr, "val": va, "time": time.perf_counter() - t0}
        history.append(rec)
        if verbose:
            print(f"{epoch:5d} {tr['loss']:12.5g} {va['loss']:12.5g} {va['E']:12.4g} {va['F']:11.4g} "
                  f"{va['V']:12.4g} {rec['time']:6.2f}", flush=True)
        if va["loss"] < best:
            best, best_c, bad = va["loss"], c.detach().clone(), 0
            if output:
                save_model(model, output, {"training": {"epoch": epoch, "val_loss": best}})
        else:
            bad += 1
            if bad > patience:
                if verbose:
                    print(f"early stop: no improvement for {patience} epochs")
                break
        if log:
            write_log(log, history, best)
    model.coefficients = best_c
    model.eval()
    if log:
        write_log(log, history, best)
    return history


def save_model(model, path, extra):
    m = copy.deepcopy(model).to("cpu", torch.float64).eval()
    m.metadata = {**(model.metadata or {}), **extra}
    m.save(path)  # atomic (temporary file + rename)


def write_log(path, history, best):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"history": history, "best_val_loss": best}, fh, indent=1)
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", nargs="+", help="extended-XYZ file(s) with energies/forces (virials)")
    p.add_argument("--model", help="start from this model file (else build one from the options below)")
    p.add_argument("--elements", nargs="+")
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--totaldegree", type=int, nargs="+", default=[12])
    p.add_argument("--rcut", type=float)
    p.add_argument("--E0", help='JSON {"Si": -158.5}; default: isolated_atom structures, else the model\'s')
    p.add_argument("--weights", help='JSON, torchace.fit format, e.g. {"default": {"E": 30, "F": 1, "V": 1}}')
    p.add_argument("--init-fit", action="store_true", help="initialise with the linear fit (solvers.QR(lam))")
    p.add_argument("--lam", type=float, default=0.0, help="ridge λ: penalty λ²‖c‖² (QR(lam) convention)")
    p.add_argument("--optimizer", choices=["adam", "lbfgs"], default="adam")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8, help="structures per batch")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--patience", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.add_argument("--output", default="trained_model.json")
    p.add_argument("--log", default="train_log.json")
    a = p.parse_args(argv)
    a.totaldegree = a.totaldegree[0] if len(a.totaldegree) == 1 else a.totaldegree

    torch.manual_seed(a.seed)
    ds = read_data(a.data)
    model = build_model(a, ds)
    weights = resolve_weights(json.loads(a.weights) if a.weights else None)
    structs = fitting_structures(ds)
    perm = np.random.default_rng(a.seed).permutation(len(structs))
    n_val = int(round(a.val_fraction * len(structs)))
    val_s, train_s = [structs[i] for i in perm[:n_val]], [structs[i] for i in perm[n_val:]]
    if a.init_fit:  # linear fit on the training split (same weights and λ): the minimiser of the loss
        torchace.fit(model, [s.atoms for s in train_s], weights=weights, E0={k: float(v) for k, v in
                     zip(model.elements, model.E0.tolist())}, solver=solvers.QR(lam=a.lam), compute_errors=False)
    dtype = getattr(torch, a.dtype)
    model.to(a.device, dtype)
    train_b = make_batches(model, train_s, weights, a.batch_size, a.device, dtype)
    val_b = make_batches(model, val_s, weights, a.batch_size, a.device, dtype) if val_s else []
    print(f"ACEModel({model.extra_repr()})\n{len(train_s)} training / {len(val_s)} validation structures on "
          f"{a.device} ({a.dtype})")
    hist = train(model, train_b, val_b, optimizer=a.optimizer, lr=a.lr, epochs=a.epochs, lam=a.lam,
                 patience=a.patience, output=a.output, log=a.log)
    print(f"best validation loss {min(h['val']['loss'] for h in hist):.6g}; model: {a.output}, log: {a.log}")
    return model, hist


if __name__ == "__main__":
    main()
