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
from torchace import keys as K
from torchace.fitting import solvers
from torchace.fitting.assembly import fitting_structures
from torchace.structures.batch import collate
from torchace.fitting.data import isolated_atom_energies, read_data
from torchace.fitting.weights import resolve_weights, weights_for
from torchace.model.evaluate import model_inputs


def make_batches(model, structs, weights, batch_size, device, dtype):
    """Collate ``structs`` (Labelled) into batches with targets and per-row weights; missing labels weigh 0."""
    batches = []
    for b0 in range(0, len(structs), batch_size):
        chunk = structs[b0:b0 + batch_size]
        batch = collate([s.atoms for s in chunk], model.config.numbers, model.rcut, dtype=dtype, device=device)
        n = np.array([s.n_atoms for s in chunk], dtype=float)
        w = np.array([weights_for(weights, s.config_type) for s in chunk], dtype=float)  # [S, 3]
        has_e = np.array([s.energy is not None for s in chunk])
        has_v = np.array([s.virial is not None for s in chunk])
        E = np.array([s.energy if s.energy is not None else 0.0 for s in chunk])
        F = np.concatenate([s.forces if s.forces is not None else np.zeros((s.n_atoms, 3)) for s in chunk])
        wF = np.concatenate([np.full(s.n_atoms, w[k, 1] if s.forces is not None else 0.0)
                             for k, s in enumerate(chunk)])
        V = np.stack([[(s.virial if s.virial is not None else np.zeros((3, 3)))[a, b] for a, b in K.VOIGT]
                      for s in chunk])
        t = dict(dtype=dtype, device=device)
        batch.update(E=torch.tensor(E, **t), wE=torch.tensor(has_e * w[:, 0] / np.sqrt(n), **t),
                     F=torch.tensor(F, **t), wF=torch.tensor(wF, **t),
                     V=torch.tensor(V, **t), wV=torch.tensor(has_v * w[:, 2] / np.sqrt(n), **t),
                     n=torch.tensor(n, **t))
        # rows of the linear system this batch contributes (as torchace.assembly counts them)
        batch["n_rows"] = int((batch["wE"] != 0).sum() + 3 * (batch["wF"] != 0).sum() + 6 * (batch["wV"] != 0).sum())
        batches.append(batch)
    return batches


def residuals(model, batch):
    """Model predictions minus labels on one batch: (unweighted errors dict, weighted squared sum)."""
    virials = bool((batch["wV"] != 0).any())
    out = model(*model_inputs(model, batch), True, virials)
    dE = out[K.ENERGY] - batch["E"]
    dF = out[K.FORCES] - batch["F"]
    rss = ((batch["wE"] * dE) ** 2).sum() + ((batch["wF"][:, None] * dF) ** 2).sum()
    err = {"E": dE / batch["n"], "F": dF, "mE": batch["wE"] != 0, "mF": batch["wF"] != 0}
    if virials:
        W = out[K.VIRIAL]
        dV = torch.stack([W[:, a, b] for a, b in K.VOIGT], 1) - batch["V"]
        rss = rss + ((batch["wV"][:, None] * dV) ** 2).sum()
        err.update(V=dV / batch["n"][:, None], mV=batch["wV"] != 0)
    return err, rss


def penalty(model, lam):
    return lam * lam * (model.coefficients ** 2).sum()


def full_loss_and_grad(model, batches, lam, backward=True):
    """L(c) over all batches (train mode) and, with ``backward``, its gradient accumulated in ``.grad``."""
    model.train()
    n_rows = sum(b["n_rows"] for b in batches)
    total = 0.0
    if backward:
        model.coefficients.grad = None
    for b in batches:
        loss = residuals(model, b)[1] / n_rows
        if backward:
            loss.backward()
        total += float(loss.detach())
    loss = penalty(model, lam) / n_rows
    if backward:
        loss.backward()
    return total + float(loss.detach())


def metrics(model, batches, lam):
    """Loss (no gradient) and RMSEs: E, V meV/atom, F eV/Å (only labelled, non-zero-weight rows)."""
    model.eval()
    se = {"E": [0.0, 0], "F": [0.0, 0], "V": [0.0, 0]}
    rss, n_rows = 0.0, 0
    for b in batches:
        err, r = residuals(model, b)
        rss, n_rows = rss + float(r.detach()), n_rows + b["n_rows"]
        for key in se:
            if key in err and bool(err["m" + key].any()):
                sel = err[key][err["m" + key]].detach()
                se[key][0] += float((sel ** 2).sum())
                se[key][1] += sel.numel()
    out = {"loss": (rss + float(penalty(model, lam).detach())) / max(n_rows, 1)}
    for key, (s, m) in se.items():
        out[key] = math.sqrt(s / m) * (1e3 if key != "F" else 1.0) if m else float("nan")
    return out


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
        va = metrics(model, val_b, lam) if val_b else tr
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
    print(f"ACEModel({model.extra_repr()})\n{len(train_s)} training / {len(val_s)} validation structures on {a.device} ({a.dtype})")
    hist = train(model, train_b, val_b, optimizer=a.optimizer, lr=a.lr, epochs=a.epochs, lam=a.lam,
                 patience=a.patience, output=a.output, log=a.log)
    print(f"best validation loss {min(h['val']['loss'] for h in hist):.6g}; model: {a.output}, log: {a.log}")
    return model, hist


if __name__ == "__main__":
    main()
