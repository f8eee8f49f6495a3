"""Accuracy of ``torchace.io.write_yace`` against python-ace's C++ evaluator (the ML-PACE core).

For a Si/Ge model with random coefficients, writes the .yace (and pair table) for several ML-PACE radial
tabulation steps (``delta_spline_bins``) and prints the relative errors of energy, forces and stress of
pyace (+ the pair table read by ``evaluate_pair_table``) against ``torchace.evaluate`` on rattled periodic
SiGe cells (one cubic, one triclinic).  Needs ``pip install python-ace==0.4.0rc1``.

    OMP_NUM_THREADS=1 python scripts/studies/yace_export_accuracy.py [--elements Si Ge] [--totaldegree 8] \
        [--steps 1e-3 5e-4 2e-4 1e-4] [--pair] [--fit FILE.xyz] [--full-grid]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch
from ase.build import bulk

import torchace
from torchace.io.yace.pair_table import evaluate_pair_table
from torchace.io.yace.write import write_yace
from torchace.model import ace_model


def cells(elements, seed=0):
    rng = np.random.default_rng(seed)
    a = bulk("Si", "diamond", a=5.5, cubic=True) * (2, 2, 2)
    b = bulk("Si", "diamond", a=5.5) * (2, 2, 2)            # primitive fcc vectors: triclinic cell
    b.set_cell(b.cell.array @ np.array([[1.0, 0.04, 0.0], [0.0, 1.0, 0.03], [0.02, 0.0, 0.98]]), scale_atoms=True)
    for at in (a, b):
        if len(elements) > 1:
            at.numbers[rng.random(len(at)) < 0.5] = 32
        at.positions += rng.normal(scale=0.12, size=at.positions.shape)
    return [a, b]


def voigt(s):
    s = np.asarray(s)
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


def compare(model, path, structures, **kw):
    from pyace import PyACECalculator

    t0 = time.time()
    info = write_yace(model, path, **kw)
    t_write = time.time() - t0
    t0 = time.time()
    calc = PyACECalculator(info["yace"])
    t_load = time.time() - t0
    ref = torchace.evaluate(model, structures)
    errs = {"E": 0.0, "F": 0.0, "S": 0.0}
    off = 0
    for s, at in enumerate(structures):
        at = at.copy()
        at.calc = calc
        e, f, st = at.get_potential_energy(), at.get_forces(), at.get_stress()
        if info["pair_table"] is not None:
            p = evaluate_pair_table(info["pair_table"], at, model.elements)
            e, f, st = e + p["energy"], f + p["forces"], st + p["stress"]
        n = len(at)
        e_ref = float(ref["energy"][s])
        f_ref = ref["forces"][off:off + n].numpy()
        s_ref = voigt(ref["stress"][s].numpy())
        off += n
        errs["E"] = max(errs["E"], abs(e - e_ref) / abs(e_ref))
        errs["F"] = max(errs["F"], np.abs(f - f_ref).max() / np.abs(f_ref).max())
        errs["S"] = max(errs["S"], np.abs(st - s_ref).max() / np.abs(s_ref).max())
    return info, errs, t_write, t_load, os.path.getsize(info["yace"])


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--elements", nargs="+", default=["Si", "Ge"])
    ap.add_argument("--totaldegree", type=float, nargs="+", default=[8])
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--steps", type=float, nargs="+", default=[1e-3, 5e-4, 2e-4, 1e-4])
    ap.add_argument("--pair", action="store_true", help="random pair coefficients too (pair table overlay)")
    ap.add_argument("--fit", metavar="XYZ", help="fit the model to this labelled file instead (smoothness prior p = 4)")
    ap.add_argument("--full-grid", action="store_true", help="the original writer (write_yace(lean=False))")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    td = args.totaldegree[0] if len(args.totaldegree) == 1 else args.totaldegree
    model = ace_model(args.elements, order=args.order, totaldegree=td)
    if args.fit:
        from torchace.fit import priors

        torchace.fit(model, args.fit, prior=priors.algebraic_smoothness(p=4))
    else:
        c = torch.randn(model.basis_size, dtype=torch.float64)
        if not args.pair:
            c[model.n_manybody:] = 0.0
        model.coefficients = c
        model.E0.copy_(torch.tensor([-158.5, -100.2][: model.nz]))
    print(model.extra_repr())
    structures = cells(args.elements)
    with tempfile.TemporaryDirectory() as d:
        for step in args.steps:
            info, errs, tw, tl, size = compare(model, os.path.join(d, "m.yace"), structures, delta_spline_bins=step,
                                               lean=not args.full_grid)
            print(f"delta_spline_bins {step:g} Å: {info['radbasename']} nradbase {info['nradbase']} (radial fit "
                  f"{info['radial_error']:.1e}), nradmax {info['nradmax']}, lmax {info['lmax']}, "
                  f"rel. err E {errs['E']:.1e}  F {errs['F']:.1e}  stress {errs['S']:.1e};  "
                  f"write {tw:.1f} s, pyace load {tl:.1f} s, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
