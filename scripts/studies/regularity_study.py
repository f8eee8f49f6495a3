#!/usr/bin/env python
"""Regularity priors on our data: Darby, Morrow, Bartók, Deringer, Csányi, Ortner, *Regularity priors for
the linear atomic cluster expansion* (2026), §3.1 (Si) and §3.2 (aspirin → rMD17 ethanol here).

    python scripts/studies/regularity_study.py --mode reduced       # what docs/regularity_priors.md shows (2 cores)
    python scripts/studies/regularity_study.py --mode full --threads 16   # the paper's sizes: a large workstation
    python scripts/studies/regularity_study.py --mode quick --out-dir some/dir   # CI smoke run (tiny data, seconds)

What it does (every number comes from ../shared/data; nothing is copied from the paper):

1. Molecules (rMD17 ethanol and malonaldehyde, equi-spaced train/test subsets): correlation orders 3 and 4
   with total degrees (d, d, d') and (d, d, d, d'), Gaussian prior σ ∈ {0, 0.25, 0.5, 1.0} Å, Tikhonov
   strength λ scanned for each σ; table of the best test force RMSE (paper Table 1), test RMSE vs λ (figure 11),
   dimer curves against the DFT dimers of the BOTNet ethanol set (figure S8), Langevin MD time to failure at
   300 K and 500 K (figure 13).
2. Si (Si_tiny with the Si GAP-18 companion test set, and the Zuo et al. Si set): λ tuned to one training
   force RMSE for all σ (paper §3.1), with and without the paper's synthetic dimer (E_syn = 100 eV at
   f_env(r_syn) = E_syn, weight 0.01); dimer curves, rigid decohesion stress for (100), (110), (111), E–V
   curves of diamond, β-tin and simple hexagonal at fixed fractional coordinates.
3. Prior shapes (Zuo Si): algebraic vs exponential vs Gaussian at equal training force RMSE.

Fitting is done on one Gram matrix G = AᵀA per data set (basis assembled once, unscaled): a basis prior Γ
(torchace.priors, paper eq. (9)/(10)) turns it into Γ⁻¹GΓ⁻¹ and every (prior, λ) is one Cholesky solve of
(Γ⁻¹GΓ⁻¹ + λI) c' = Γ⁻¹Aᵀy, c = Γ⁻¹c' — identical to fitting the prior-rescaled model with plain ridge
(docs/priors.md).  Per-element E0 are either the data set's isolated atoms or unregularised columns.
Outputs: the Markdown report, PNG figures and a JSON with all numbers (written atomically).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from ase import Atoms
from ase.io import read

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

import torchace  # noqa: E402
from torchace import analysis  # noqa: E402
from torchace.fit import priors  # noqa: E402
from torchace.atomic import atomic_write, write_json_atomic  # noqa: E402
from torchace.fit.data import Labelled, read_data  # noqa: E402
from torchace.analysis.regularity import (System, assemble, clone_model, gamma_of,  # noqa: E402
                                          lam_for_train_rmse, scan, set_model, solve, with_synthetic_dimers)

KCAL = 0.0433641  # eV per kcal/mol (DATA.md)


def _own_figures():
    """``torchace.analysis.plots`` that replace this script's own figures (docs/figures/regularity, some written
    before torchace marked its PNGs as its own: the output rule of torchace.atomic would refuse them)."""
    import functools
    import types

    from torchace.analysis import plots

    return types.SimpleNamespace(curve_panels=functools.partial(plots.curve_panels, overwrite=True),
                                 bar_panels=functools.partial(plots.bar_panels, overwrite=True))

# ------------------------------------------------------------------------------------------------
#  settings per mode

MODES = {
    # CI smoke run: tiny subsets and bases, a few seconds of fitting
    "quick": dict(molecules=["ethanol"], n_train=24, n_test=24, mol_orders={2: [6, 4], 3: [6, 6, 3]},
                  mol_sigmas=[0.0, 0.5], lam_exps=list(range(-10, 1, 2)), refine=False,
                  md_steps=40, md_replicas=2, md_temps=[300.0, 500.0], md_order=3,
                  si_sets=["Si_tiny"], si_degree={2: [8, 6]}, si_sigmas=[0.0, 1.0],
                  shapes=None, decoh_d=np.linspace(0.0, 3.0, 7), ev_scale=np.linspace(0.92, 1.1, 5),
                  dimer_r=np.linspace(0.6, 5.0, 23)),
    # what docs/regularity_priors.md shows: affordable on 2 shared CPU cores (~30 min)
    "reduced": dict(molecules=["ethanol", "malonaldehyde"], n_train=250, n_test=250,
                    mol_orders={3: [8, 8, 6], 4: [8, 8, 8, 6]}, mol_sigmas=[0.0, 0.25, 0.5, 1.0],
                    lam_exps=list(range(-12, 1, 2)), refine=True,
                    md_steps=2000, md_replicas=8, md_temps=[300.0, 500.0], md_order=3,
                    si_sets=["Si_tiny", "zuo"], si_degree={3: [20, 16, 12]}, si_sigmas=[0.0, 0.5, 1.0, 2.0],
                    shapes=dict(gaussian=[0.5, 1.0, 2.0, 3.0], algebraic=[0.02, 0.05, 0.1, 0.2],
                                exponential=[0.1, 0.2, 0.4, 0.8]),
                    decoh_d=np.linspace(0.0, 4.0, 41), ev_scale=np.linspace(0.85, 1.15, 31),
                    dimer_r=np.linspace(0.5, 6.0, 111)),
    # the paper's set-up (aspirin → ethanol): 1000/1000 configurations, degrees (18,18,12) and (18,18,18,12),
    # 1 ns MD of 100 test configurations; needs a large-memory workstation (dense K×K Gram matrices; the N = 4
    # molecular basis, K = 122,307, exceeds --max-gram-gb and is skipped with a note in the report)
    "full": dict(molecules=["ethanol", "malonaldehyde"], n_train=1000, n_test=1000,
                 mol_orders={3: [18, 18, 12], 4: [18, 18, 18, 12]}, mol_sigmas=[0.0, 0.25, 0.5, 1.0],
                 lam_exps=list(range(-12, 1, 1)), refine=True,
                 md_steps=2_000_000, md_replicas=100, md_temps=[300.0, 500.0], md_order=3,
                 si_sets=["Si_tiny", "zuo"], si_degree={4: [21, 21, 21, 21]}, si_sigmas=[0.0, 0.5, 1.0, 2.0],
                 shapes=dict(gaussian=[0.5, 1.0, 2.0, 3.0], algebraic=[0.02, 0.05, 0.1, 0.2],
                             exponential=[0.1, 0.2, 0.4, 0.8]),
                 decoh_d=np.linspace(0.0, 4.0, 81), ev_scale=np.linspace(0.85, 1.15, 61),
                 dimer_r=np.linspace(0.5, 6.0, 221)),
}

PARTS = ["molecules", "dimers", "md", "si"]
MOL_WEIGHTS = {"default": {"E": 30.0, "F": 1.0, "V": 0.0}}
SI_TINY_WEIGHTS = {"default": {"E": 30.0, "F": 1.0, "V": 1.0}, "liq": {"E": 10.0, "F": 0.66, "V": 0.25}}
ZUO_WEIGHTS = {"default": {"E": 30.0, "F": 1.0, "V": 0.0}}  # Zuo stresses are not used (DATA.md, benchmarks)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------
#  data


def rmd17(data: str, name: str, split: str, n: int) -> List[Labelled]:
    """n equi-spaced frames of rMD17 ``name`` (energies kcal/mol → eV, forces kcal/mol/Å → eV/Å)."""
    path = os.path.join(data, "rmd17", f"rmd17_{name}_{split}_01.npz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: rMD17 file not found (see ../shared/data/DATA.md)")
    d = np.load(path)
    for key in ("nuclear_charges", "coords", "energies", "forces"):
        if key not in d:
            raise KeyError(f"{path}: missing key {key!r}")
    idx = np.unique(np.linspace(0, len(d["energies"]) - 1, n).round().astype(int))
    z = d["nuclear_charges"]
    return [Labelled(Atoms(numbers=z, positions=d["coords"][k]), float(d["energies"][k]) * KCAL,
                     np.asarray(d["forces"][k], dtype=np.float64) * KCAL, None, f"rmd17_{name}", f"{path}:{k}")
            for k in idx]


def botnet_e0(data: str) -> Dict[str, float]:
    """Isolated-atom energies at the rMD17 level of theory (PBE/def2-SVP, BOTNet ethanol set)."""
    path = os.path.join(data, "botnet", "dataset_ethanol", "isolated_atoms.xyz.gz")
    return {a.get_chemical_symbols()[0]: float(a.get_potential_energy()) for a in read(path, ":")}


def botnet_dimers(data: str, e0: Dict[str, float]) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """DFT dimer curves {"A-B": (r, E − E0(A) − E0(B))} (UHF-PBE, BOTNet ethanol ``test_dimers``)."""
    out: Dict[str, List[Tuple[float, float]]] = {}
    for a in read(os.path.join(data, "botnet", "dataset_ethanol", "test_dimers.xyz.gz"), ":"):
        s = a.get_chemical_symbols()
        out.setdefault("-".join(sorted(s)), []).append(
            (float(a.get_distance(0, 1)), float(a.get_potential_energy()) - e0[s[0]] - e0[s[1]]))
    return {k: tuple(np.array(v).T[:, np.argsort(np.array(v)[:, 0])]) for k, v in out.items()}


def si_sets(data: str, which: str):
    """(train, test, weights, E0 or None → fitted) for "Si_tiny" (GAP-18 subset; test = GAP-18 companion
    test structures, forces only) or "zuo" (Zuo et al. Si)."""
    if which == "Si_tiny":
        train = read_data(os.path.join(data, "acedata", "Si_tiny.xyz"), elements=["Si"])
        iso = [s for s in train if s.config_type == "isolated_atom"]
        test = read_data(os.path.join(data, "acedata", "si_gap18_testing_database.xyz.gz"), elements=["Si"])
        return ([s for s in train if s.config_type != "isolated_atom"], list(test), SI_TINY_WEIGHTS,
                {"Si": float(iso[0].energy)})
    train = read_data(os.path.join(data, "zuo2020", "Si_train.xyz.gz"), elements=["Si"])
    test = read_data(os.path.join(data, "zuo2020", "Si_test.xyz.gz"), elements=["Si"])
    return list(train), list(test), ZUO_WEIGHTS, None


# ------------------------------------------------------------------------------------------------
#  one assembled system per (data set, basis), many (prior, λ) solves


# ------------------------------------------------------------------------------------------------
#  study parts


def molecules_part(cfg, data: str, figs: str, res: Dict, save_models: Optional[str],
                   md_models: Dict[float, object]) -> List[str]:
    """Table 1 analogue and λ scans; fills ``md_models`` (σ → model of the first molecule at the MD order,
    best test λ) for the dimer and MD parts."""
    e0 = botnet_e0(data)
    lines = []
    res["molecules"] = {}
    for mol in cfg["molecules"]:
        train = rmd17(data, mol, "train", cfg["n_train"])
        test = rmd17(data, mol, "test", cfg["n_test"])
        elements = sorted({x for s in train for x in s.atoms.get_chemical_symbols()},
                          key=lambda x: ["H", "C", "N", "O"].index(x))
        res["molecules"][mol] = {}
        for order, deg in cfg["mol_orders"].items():
            model = torchace.ace_model(elements, order, deg)
            gb = (model.basis_size ** 2) * 8 / 1e9
            if gb > cfg.get("max_gram_gb", 64.0):
                log(f"{mol} N={order} {deg}: K={model.basis_size} needs a {gb:.0f} GB Gram matrix "
                    f"(> --max-gram-gb {cfg.get('max_gram_gb', 64.0):g}): skipped")
                res["molecules"][mol][str(order)] = {"totaldegree": deg, "basis_size": model.basis_size,
                                                     "skipped": f"dense Gram matrix {gb:.0f} GB", "sigma": {}}
                continue
            t0 = time.perf_counter()
            sys_ = assemble(model, train, test, MOL_WEIGHTS, e0)
            t_asm = time.perf_counter() - t0
            log(f"{mol} N={order} {deg}: K={model.basis_size}, assembled in {t_asm:.0f} s")
            entry = {"totaldegree": deg, "basis_size": model.basis_size, "rcut": model.rcut, "assemble_s": t_asm,
                     "sigma": {}}
            for sigma in cfg["mol_sigmas"]:
                prior = priors.gaussian(sigma) if sigma > 0 else None
                gamma = gamma_of(model, prior, sys_.n_e0)
                t0 = time.perf_counter()
                sc = scan(sys_, gamma, cfg["lam_exps"], cfg["refine"])
                best = min(sc, key=lambda r: r["test_F"])
                entry["sigma"][str(sigma)] = {"scan": sc, "best": best, "solve_s": time.perf_counter() - t0}
                log(f"  σ={sigma}: best test F RMSE {1000 * best['test_F']:.1f} meV/Å at λ={best['lam']:.3g} "
                    f"(train {1000 * best['train_F']:.1f})")
                if mol == cfg["molecules"][0] and order == cfg["md_order"] or save_models:
                    m = set_model(clone_model(model), sys_, solve(sys_, gamma, best["lam"]), e0)
                    if mol == cfg["molecules"][0] and order == cfg["md_order"]:
                        md_models[sigma] = m
                    if save_models:
                        m.save(os.path.join(save_models, f"{mol}_N{order}_sigma{sigma}.json"))
            res["molecules"][mol][str(order)] = entry
            del sys_
        # test RMSE vs λ (paper figure 11), highest order
        done = [o for o in cfg["mol_orders"] if res["molecules"][mol][str(o)]["sigma"]]
        if not done:
            continue
        order = max(done)
        e = res["molecules"][mol][str(order)]
        panel = {f"σ = {s} Å": (np.array([r["lam"] for r in v["scan"]]),
                                1000 * np.array([r["test_F"] for r in v["scan"]]))
                 for s, v in e["sigma"].items()}
        lines.append(plots_logx(os.path.join(figs, f"{mol}_lambda.png"), panel,
                                f"{mol}, N = {order}: test force RMSE vs λ"))
    return lines


def fit_md_models(cfg, data: str) -> Dict[float, object]:
    """σ → model of the first molecule at the MD order, λ at the best test force RMSE (as molecules_part)."""
    e0 = botnet_e0(data)
    mol = cfg["molecules"][0]
    train, test = rmd17(data, mol, "train", cfg["n_train"]), rmd17(data, mol, "test", cfg["n_test"])
    elements = [x for x in ["H", "C", "N", "O"] if any(x in s.atoms.get_chemical_symbols() for s in train)]
    model = torchace.ace_model(elements, cfg["md_order"], cfg["mol_orders"][cfg["md_order"]])
    sys_ = assemble(model, train, test, MOL_WEIGHTS, e0)
    out = {}
    for sigma in cfg["mol_sigmas"]:
        gamma = gamma_of(model, priors.gaussian(sigma) if sigma > 0 else None, sys_.n_e0)
        best = min(scan(sys_, gamma, cfg["lam_exps"], cfg["refine"]), key=lambda r: r["test_F"])
        out[sigma] = set_model(clone_model(model), sys_, solve(sys_, gamma, best["lam"]), e0)
    return out


def dimers_part(cfg, data: str, figs: str, res: Dict, md_models: Dict[float, object]) -> List[str]:
    """Dimer curves of the first molecule's models against the BOTNet DFT dimers (paper figure S8).

    The DFT dimer energies do not tend to E0(A) + E0(B) at the largest distances given (offsets down to
    about −6 eV): the isolated atoms and the dimers were not computed in the same (spin) state.  The DFT
    curves are therefore shifted to 0 at their largest r; errors are taken where the shifted DFT energy is
    below 5 eV (the bonding region), and local minima are counted on the model curves."""
    plots = _own_figures()

    mol = cfg["molecules"][0]
    e0 = botnet_e0(data)
    ref = {k: (x, y - y[-1]) for k, (x, y) in botnet_dimers(data, e0).items()}
    r = cfg["dimer_r"]
    panels, ylim = {}, {}
    for sigma, m in md_models.items():
        for pair, e in analysis.dimer_curves(m, m.elements, r).items():
            key = "-".join(sorted(pair.split("-")))
            panels.setdefault(key, {})[f"σ = {sigma} Å"] = (r, e)
    out = {"molecule": mol, "order": cfg["md_order"], "rmse_eV": {}, "minima": {}, "dft_offset_eV": {}}
    raw = botnet_dimers(data, e0)
    for key, curves in panels.items():
        out["minima"][key] = {lab: count_minima(y) for lab, (x, y) in curves.items()}
        if key not in ref:
            continue
        rr, ee = ref[key]
        out["dft_offset_eV"][key] = float(raw[key][1][-1])
        mask = (ee <= 5.0) & (rr >= r.min())
        out["rmse_eV"][key] = {lab: float(np.sqrt(np.mean((np.interp(rr[mask], x, y) - ee[mask]) ** 2)))
                               for lab, (x, y) in curves.items()}
        ylim[key] = (min(1.5 * float(ee.min()), -1.0), 10.0)
    # energy along paths with DFT references (BOTNet: O–H removal, a normal-mode slice), all shifted to 0 at
    # the DFT minimum of the path
    paths = {"O–H removal (vs O–H distance, Å)": ("test_H_removal.xyz.gz", "OH_dist"),
             "normal mode 874 cm⁻¹ (vs displacement)": ("test_norm_mode_874.xyz.gz", "displacement")}
    ppanels, pref = {}, {}
    out["paths_rmse_eV"] = {}
    for name, (fname, key) in paths.items():
        images = read(os.path.join(data, "botnet", "dataset_ethanol", fname), ":")
        x = np.array([float(a.info[key]) for a in images])
        e_dft = np.array([a.get_potential_energy() for a in images])
        k0 = int(np.argmin(e_dft))
        pref[name] = (x, e_dft - e_dft[k0])
        mask = pref[name][1] <= 5.0
        out["paths_rmse_eV"][name] = {}
        for sigma, m in md_models.items():
            bare = [Atoms(a.numbers, positions=a.positions) for a in images]
            e = analysis.path_energies(m, bare).energy
            ppanels.setdefault(name, {})[f"σ = {sigma} Å"] = (x, e - e[k0])
            out["paths_rmse_eV"][name][f"σ = {sigma} Å"] = float(
                np.sqrt(np.mean((e - e[k0] - pref[name][1])[mask] ** 2)))
    plots.curve_panels(os.path.join(figs, f"{mol}_paths.png"), ppanels, xlabel="path coordinate", ylabel="E (eV)",
                       reference=pref, ncols=2, ylim={k: (-1.0, 6.0) for k in ppanels},
                       title=f"{mol} models (N = {cfg['md_order']}): energy along paths; DFT dashed")
    res["dimers"] = out
    plots.curve_panels(os.path.join(figs, f"{mol}_dimers.png"), panels, xlabel="r (Å)", ylabel="E (eV)",
                       reference={k: v for k, v in ref.items() if k in panels}, ylim=ylim,
                       title=f"{mol} models (N = {cfg['md_order']}, best test λ): dimers; DFT dashed, shifted to 0 "
                             "at its largest r")
    return [f"{mol}_dimers.png", f"{mol}_paths.png"]


def md_part(cfg, data: str, figs: str, res: Dict, md_models: Dict[float, object]) -> List[str]:
    """Langevin MD time to failure vs σ (paper figure 13)."""
    plots = _own_figures()

    mol = cfg["molecules"][0]
    test = rmd17(data, mol, "test", cfg["n_test"])
    train = rmd17(data, mol, "train", cfg["n_train"])
    crit = analysis.BondCriterion.from_structures(test[0].atoms, [s.atoms for s in train], tol=0.5)
    starts = [test[k].atoms for k in np.linspace(0, len(test) - 1, cfg["md_replicas"]).round().astype(int)]
    res["md"] = {"molecule": mol, "order": cfg["md_order"], "steps": cfg["md_steps"], "replicas": len(starts),
                 "runs": {}}
    bars = {}
    for T in cfg["md_temps"]:
        for sigma, m in md_models.items():
            t0 = time.perf_counter()
            out = analysis.md_stability(m, starts, crit, temperature_K=T, steps=cfg["md_steps"], seed=int(T))
            res["md"]["runs"][f"{T:g}K sigma={sigma}"] = {
                "time_to_failure_fs": out.time_to_failure_fs, "reasons": out.reasons, "survived": out.survived,
                "mean_fs": out.mean_time_fs(), "seconds": time.perf_counter() - t0}
            bars.setdefault(f"{T:g} K", {})[f"{sigma}"] = out.mean_time_fs()
            log(f"  MD {T:g} K σ={sigma}: survived {out.survived}/{len(starts)}, mean {out.mean_time_fs():.0f} fs "
                f"({time.perf_counter() - t0:.0f} s)")
    plots.bar_panels(os.path.join(figs, f"{mol}_md.png"), bars, ylabel="mean time to failure (fs)",
                     hline={k: cfg["md_steps"] * 0.5 for k in bars},
                     title=f"{mol}: MD duration vs σ (Å); dashed = run length")
    return [f"{mol}_md.png"]


def count_minima(y: np.ndarray, tol: float = 1e-4) -> int:
    """Local minima of a sampled curve (interior points lower than both neighbours by more than tol eV)."""
    y = np.asarray(y)
    return int(np.sum((y[1:-1] < y[:-2] - tol) & (y[1:-1] < y[2:] - tol)))


def plots_logx(path: str, panel: Dict[str, Tuple[np.ndarray, np.ndarray]], title: str) -> str:
    from torchace.analysis.plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    for lab, (x, y) in panel.items():
        ax.semilogx(x, y, "o-", ms=3, label=lab)
    ax.set_xlabel("Tikhonov λ", fontsize=8)
    ax.set_ylabel("test force RMSE (meV/Å)", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    ys = np.concatenate([y for _, y in panel.values()])
    ax.set_ylim(0.9 * ys.min(), min(ys.max(), 3 * ys.min()))
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path, 80, overwrite=True)  # its own figure in docs/figures, written before PNGs carried the marker
    plt.close(fig)
    return os.path.basename(path)


def silicon_part(cfg, data: str, figs: str, res: Dict, save_models: Optional[str]) -> List[str]:
    from ase.build import bulk

    plots = _own_figures()

    lines = []
    res["si"] = {}
    (order, deg), = cfg["si_degree"].items()
    dimers, decoh, ev = {}, {}, {}
    r = cfg["dimer_r"]
    dia = bulk("Si", "diamond", a=5.46, cubic=True)
    slabs = {m: analysis.decohesion_slab(dia, m, min_thickness=2.5 * 6.0) for m in [(1, 0, 0), (1, 1, 0), (1, 1, 1)]}
    phases = analysis.silicon_phases()
    for which in cfg["si_sets"]:
        train, test, weights, e0 = si_sets(data, which)
        res["si"][which] = {}
        model = torchace.ace_model(["Si"], order, deg)
        t0 = time.perf_counter()
        plain = assemble(model, train, test, weights, e0)
        log(f"Si {which}: K={model.basis_size}, assembled in {time.perf_counter() - t0:.0f} s")
        for syn in (False, True):
            sys_ = with_synthetic_dimers(model, plain) if syn else plain
            # one training force RMSE for all σ (paper §3.1): that of the σ = 0 model at its best test λ
            g0 = gamma_of(model, None, sys_.n_e0)
            sc0 = scan(sys_, g0, cfg["lam_exps"], cfg["refine"])
            target = min(sc0, key=lambda x: x["test_F"])["train_F"]
            entry = {"basis_size": model.basis_size, "target_train_F": target, "sigma": {}}
            for sigma in cfg["si_sigmas"]:
                prior = priors.gaussian(sigma) if sigma > 0 else None
                gamma = gamma_of(model, prior, sys_.n_e0)
                hit = lam_for_train_rmse(sys_, gamma, target)
                c = hit.pop("c")
                m = set_model(clone_model(model), sys_, c, e0)
                entry["sigma"][str(sigma)] = hit
                lab = f"σ={sigma}"
                key = f"{which}{' + syn. dimer' if syn else ''}"
                d = analysis.dimer_curve(m, "Si", "Si", r)
                dimers.setdefault(key, {})[lab] = (r, d)
                hit["dimer_minima"] = count_minima(d)
                hit["dimer_E_at_1.0A"] = float(np.interp(1.0, r, d))
                hit["dimer_min_eV"] = float(d.min())
                if not syn:
                    for mi, slab in slabs.items():
                        dc = analysis.decohesion_curve(m, slab, cfg["decoh_d"])
                        decoh.setdefault(f"{which} ({''.join(map(str, mi))})", {})[lab] = (dc.separation, dc.stress_GPa)
                        hit[f"decohesion_{''.join(map(str, mi))}_stress_maxima"] = count_minima(-dc.stress_GPa, 1e-3)
                    for name, at in phases.items():
                        c_ = analysis.ev_curve(m, at, cfg["ev_scale"])
                        ev.setdefault(f"{which} {name}", {})[lab] = (c_.volume, c_.energy)
                        hit[f"ev_{name}_minima"] = count_minima(c_.energy, 1e-5)
                        # repulsion under compression: E at the smallest volume above the curve's minimum
                        # (0 = the phase collapses instead, a hole at high density)
                        hit[f"ev_{name}_rise_eV"] = float(c_.energy[0] - c_.energy.min())
                if save_models:
                    m.save(os.path.join(save_models, f"Si_{which}_syn{int(syn)}_sigma{sigma}.json"))
                log(f"  σ={sigma}: λ={hit['lam']:.3g}, train F {1000 * hit['train_F']:.1f}, test F "
                    f"{1000 * hit['test_F']:.1f} meV/Å, dimer minima {hit['dimer_minima']}, E(1 Å) "
                    f"{hit['dimer_E_at_1.0A']:.2f} eV")
            res["si"][which]["syn" if syn else "plain"] = entry
            if which == "zuo" and not syn and cfg["shapes"]:
                res["shapes"] = shapes_part(cfg, model, sys_, target)
        del plain, sys_
    ylim = {k: (-8.0, 15.0) for k in dimers}
    plots.curve_panels(os.path.join(figs, "si_dimers.png"), dimers, xlabel="r (Å)", ylabel="E − 2E0 (eV)",
                       ylim=ylim, ncols=2, title="Si–Si dimer (no dimer data; right: + synthetic dimer)")
    plots.curve_panels(os.path.join(figs, "si_decohesion.png"), decoh, xlabel="separation (Å)",
                       ylabel="stress (GPa)", ncols=3, title="rigid decohesion of diamond Si")
    plots.curve_panels(os.path.join(figs, "si_ev.png"), ev, xlabel="V (Å³/atom)", ylabel="E (eV/atom)", ncols=3,
                       title="E–V at fixed fractional coordinates", zero_line=False)
    lines += ["si_dimers.png", "si_decohesion.png", "si_ev.png"]
    return lines


def shapes_part(cfg, model, sys_: System, target: float) -> Dict:
    """Algebraic vs exponential vs Gaussian regularity priors at one training force RMSE (paper figure S2)."""
    make = {"gaussian": lambda s: priors.gaussian(s), "algebraic": lambda s: priors.algebraic(s),
            "exponential": lambda s: priors.exponential(s)}
    out = {"target_train_F": target, "none": None, "priors": {}}
    hit = lam_for_train_rmse(sys_, gamma_of(model, None, sys_.n_e0), target)
    hit.pop("c")
    out["none"] = hit
    for shape, params in cfg["shapes"].items():
        for p in params:
            try:
                g = gamma_of(model, make[shape](p), sys_.n_e0)
            except ValueError as e:  # Γ overflow for too strong a prior
                log(f"  shape {shape}({p}): {e}")
                continue
            h = lam_for_train_rmse(sys_, g, target)
            h.pop("c")
            out["priors"][f"{shape} {p}"] = h
            log(f"  shape {shape}({p}): train F {1000 * h['train_F']:.1f}, test F {1000 * h['test_F']:.1f} meV/Å, "
                f"test E {1000 * h['test_E']:.2f} meV/atom")
    return out


# ------------------------------------------------------------------------------------------------
#  report


def report(cfg, mode: str, res: Dict, figs_rel: str, command: str) -> str:
    L = []
    L.append("## Results (generated by `scripts/studies/regularity_study.py`)\n")
    L.append(f"Mode **{mode}**.  Runs (CPU, {res['runs'][-1]['platform']}, one thread unless stated):\n")
    for run in res.get("runs", []):
        secs = ", ".join(f"{k} {v / 60:.1f} min" for k, v in run["seconds"].items())
        L.append(f"- `{run['command']}` ({run['threads']} thread(s); {secs})")
    L.append("")
    L.append(f"Settings: molecules {cfg['molecules']} with {cfg['n_train']} train / {cfg['n_test']} test "
             f"configurations (equi-spaced in the rMD17 splits), orders/total degrees "
             f"{ {k: v for k, v in cfg['mol_orders'].items()} }, Gaussian σ ∈ {cfg['mol_sigmas']} Å, "
             f"λ = 10^e·mean(diag Γ⁻¹GΓ⁻¹), e ∈ {cfg['lam_exps'][0]}…{cfg['lam_exps'][-1]} step "
             f"{cfg['lam_exps'][1] - cfg['lam_exps'][0] if len(cfg['lam_exps']) > 1 else 0}"
             f"{' (+ half steps around the best)' if cfg['refine'] else ''}; weights E 30 / F 1; E0 = isolated atoms "
             f"of the BOTNet ethanol set (same PBE/def2-SVP level).  Si: {cfg['si_sets']}, order/degree "
             f"{cfg['si_degree']}, σ ∈ {cfg['si_sigmas']} Å.  MD: Langevin 3 ps⁻¹, 0.5 fs, T ∈ {cfg['md_temps']} K "
             f"(length below).\n")
    if "molecules" in res:
        L.append("### Table 1 analogue: best test force RMSE (meV/Å) over λ\n")
        mols = [m for m in res["molecules"] if m not in ("dimer_rmse_eV", "dimer_minima")]
        res["molecules"].pop("dimer_rmse_eV", None)
        res["molecules"].pop("dimer_minima", None)
        orders = sorted({o for m in mols for o in res["molecules"][m]})
        hdr = "| σ (Å) | " + " | ".join(f"{m} N={o} (K={res['molecules'][m][o]['basis_size']})"
                                         for m in mols for o in orders) + " |"
        L.append(hdr)
        L.append("|" + "---|" * (1 + len(mols) * len(orders)))
        for s in cfg["mol_sigmas"]:
            cells = []
            for m in mols:
                for o in orders:
                    if not res["molecules"][m][o]["sigma"]:
                        cells.append(f"skipped: {res['molecules'][m][o].get('skipped', '')}")
                        continue
                    vals = {k: v["best"]["test_F"] for k, v in res["molecules"][m][o]["sigma"].items()}
                    v = vals[str(s)]
                    cell = f"{1000 * v:.1f}"
                    cells.append(f"**{cell}**" if v == min(vals.values()) else cell)
            L.append(f"| {s} | " + " | ".join(cells) + " |")
        L.append("\nTraining force RMSE and λ at those optima:\n")
        for m in mols:
            for o in orders:
                L.append(f"- {m} N={o}: " + "; ".join(
                    f"σ={k}: train {1000 * v['best']['train_F']:.1f} meV/Å, test E {1000 * v['best']['test_E']:.2f} "
                    f"meV/atom, λ={v['best']['lam']:.2g}" for k, v in res["molecules"][m][o]["sigma"].items()))
        L.append("")
        for m in mols:
            L.append(f"![{m} λ scan]({figs_rel}/{m}_lambda.png)\n")
    if "dimers" in res:
        dm = res["dimers"]
        L.append(f"### Dimer curves ({dm['molecule']}, N={dm['order']} models) vs DFT dimers\n")
        L.append("RMSE (eV) against the BOTNet DFT dimer energies, shifted to 0 at their largest distance (the raw "
                 "values end at " + ", ".join(f"{k} {v:.2f} eV" for k, v in dm["dft_offset_eV"].items())
                 + " instead of 0, additive per element: C −1.99, O −2.96, H 0 eV, presumably because the isolated "
                 "atoms are "
                 "not in the spin state the UHF dimers dissociate to), over the points where the "
                 "shifted DFT energy is ≤ 5 eV; [number of local minima of the model curve on "
                 f"{cfg['dimer_r'][0]:.1f}–{cfg['dimer_r'][-1]:.1f} Å] (DFT: one per pair):\n")
        pairs = list(dm["minima"])
        labs = list(next(iter(dm["minima"].values())))
        L.append("| model | " + " | ".join(pairs) + " |")
        L.append("|" + "---|" * (1 + len(pairs)))
        for lab in labs:
            L.append(f"| {lab} | " + " | ".join(
                (f"{dm['rmse_eV'][p][lab]:.2f} " if p in dm["rmse_eV"] else "") + f"[{dm['minima'][p][lab]}]"
                for p in pairs) + " |")
        L.append(f"\n![dimers]({figs_rel}/{dm['molecule']}_dimers.png)\n")
        if dm.get("paths_rmse_eV"):
            L.append("Energy along two BOTNet DFT paths (not in training), shifted to 0 at the DFT minimum of the "
                     "path; "
                     "RMSE (eV) over the points with shifted DFT energy ≤ 5 eV:\n")
            names = list(dm["paths_rmse_eV"])
            L.append("| model | " + " | ".join(names) + " |")
            L.append("|" + "---|" * (1 + len(names)))
            for lab in next(iter(dm["paths_rmse_eV"].values())):
                L.append(f"| {lab} | " + " | ".join(f"{dm['paths_rmse_eV'][n][lab]:.3f}" for n in names) + " |")
            L.append(f"\n![paths]({figs_rel}/{dm['molecule']}_paths.png)\n")
    if "md" in res:
        md = res["md"]
        L.append(f"### MD stability ({md['molecule']}, N={md['order']} models)\n")
        L.append(f"{md['replicas']} runs per (T, σ), {md['steps']} steps = {md['steps'] * 0.5 / 1000:g} ps; mean "
                 "duration (survivors counted at the full length) and survivors:\n")
        L.append("| run | survived | mean duration (fs) | times to failure (fs) |")
        L.append("|---|---|---|---|")
        for k, v in md["runs"].items():
            t = [x for x in v["time_to_failure_fs"] if x is not None]
            L.append(f"| {k} | {v['survived']}/{md['replicas']} | {v['mean_fs']:.0f} | "
                     f"{', '.join(f'{x:g}' for x in t) if t else '–'} |")
        L.append(f"\n![md]({figs_rel}/{md['molecule']}_md.png)\n")
    if "si" in res:
        L.append("### Silicon: equal training force RMSE for all σ\n")
        L.append("| data | synthetic dimer | σ (Å) | λ | train F | test F (meV/Å) | test E (meV/atom) | dimer minima | "
                 "E_dimer(1 Å) (eV) | min E_dimer (eV) | E–V minima dia/β-Sn/sh | "
                 f"E(V_min) − min E, V_min = {cfg['ev_scale'][0] ** 3:.2f}·V₀, dia/β-Sn/sh (eV/atom) | "
                 "decohesion stress maxima 100/110/111 |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for which, d in res["si"].items():
            for var, e in d.items():
                for s, h in e["sigma"].items():
                    evm = "/".join(str(h.get(f"ev_{n}_minima", "–"))
                                   for n in ("diamond", "beta-tin", "simple hexagonal"))
                    dcm = "/".join(str(h.get(f"decohesion_{m}_stress_maxima", "–")) for m in ("100", "110", "111"))
                    rise = "/".join(f"{h[f'ev_{n}_rise_eV']:.2f}" if f"ev_{n}_rise_eV" in h else "–"
                                    for n in ("diamond", "beta-tin", "simple hexagonal"))
                    flag = "" if abs(h["train_F"] / e["target_train_F"] - 1) < 0.01 else " ⚠"
                    L.append(f"| {which} (K={e['basis_size']}) | {'yes' if var == 'syn' else 'no'} | {s} | "
                             f"{h['lam']:.2g} | "
                             f"{1000 * h['train_F']:.1f}{flag} | {1000 * h['test_F']:.1f} | "
                             f"{1000 * h['test_E']:.2f} | {h['dimer_minima']} | {h['dimer_E_at_1.0A']:.2f} | "
                             f"{h['dimer_min_eV']:.2f} | {evm if var == 'plain' else '–'} | "
                             f"{rise if var == 'plain' else '–'} | "
                             f"{dcm if var == 'plain' else '–'} |")
        L.append("\n⚠: the target training force RMSE is out of reach for this prior at any λ ≥ 1e-14·mean(diag) "
                 "(the prior is too strong for this basis); the closest fit is shown.  Si_tiny has no test E: the "
                 "GAP-18 companion test structures carry forces only.\n")
        L.append(f"![Si dimers]({figs_rel}/si_dimers.png)\n")
        L.append(f"![Si decohesion]({figs_rel}/si_decohesion.png)\n")
        L.append(f"![Si E-V]({figs_rel}/si_ev.png)\n")
    if res.get("shapes"):
        sh = res["shapes"]
        L.append("### Prior shapes at equal training force RMSE (Zuo Si)\n")
        L.append(f"Target training force RMSE {1000 * sh['target_train_F']:.1f} meV/Å (that of the σ = 0 fit "
                 "at its best test λ).\n")
        L.append("| prior | parameter | train F | test F (meV/Å) | test E (meV/atom) | λ |")
        L.append("|---|---|---|---|---|---|")
        n = sh["none"]
        L.append(f"| none (plain ridge) | – | {1000 * n['train_F']:.1f} | {1000 * n['test_F']:.1f} | "
                 f"{1000 * n['test_E']:.2f} | {n['lam']:.2g} |")
        for k, h in sh["priors"].items():
            name, p = k.split()
            par = f"σ = {p} Å" if name == "gaussian" else f"σ_n = {p}"
            flag = "" if abs(h["train_F"] / sh["target_train_F"] - 1) < 0.01 else " ⚠"
            L.append(f"| {name} | {par} | {1000 * h['train_F']:.1f}{flag} | {1000 * h['test_F']:.1f} | "
                     f"{1000 * h['test_E']:.2f} | {h['lam']:.2g} |")
        L.append("")
    return "\n".join(L)


def write_doc(path: str, generated: str) -> None:
    """Replace the generated section of the doc (between markers), keeping the hand-written discussion."""
    begin, end = "<!-- BEGIN GENERATED -->", "<!-- END GENERATED -->"
    if os.path.exists(path):
        text = open(path, encoding="utf-8").read()
    else:
        text = "# Regularity priors: study\n\n" + begin + "\n" + end + "\n"
    if begin not in text or end not in text:
        text = text.rstrip() + "\n\n" + begin + "\n" + end + "\n"
    pre, rest = text.split(begin, 1)
    _, post = rest.split(end, 1)
    new = pre + begin + "\n" + generated + "\n" + end + post

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(new)

    atomic_write(path, write, ".md")


def main(argv=None) -> Dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=list(MODES), default="quick")
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--out-dir", default=ROOT, help="root for docs/regularity_priors.md and "
                    "docs/figures/regularity/ (default: the repository)")
    ap.add_argument("--parts", nargs="+", default=PARTS, choices=PARTS)
    ap.add_argument("--report-only", action="store_true", help="regenerate the report from the mode's JSON only")
    ap.add_argument("--merge", action="store_true", help="update the results of an earlier run of this mode "
                    "(its JSON) with the parts run now, and regenerate the report from all of them")
    ap.add_argument("--md-steps", type=int, default=None, help="override the mode's MD length (steps of 0.5 fs)")
    ap.add_argument("--md-replicas", type=int, default=None, help="override the mode's number of MD runs")
    ap.add_argument("--save-models", default=None, help="directory for the fitted model files (optional)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-gram-gb", type=float, default=64.0,
                    help="skip a molecular basis whose dense K×K Gram matrix is larger than this (GB)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = dict(MODES[args.mode])
    cfg["max_gram_gb"] = args.max_gram_gb
    if args.md_steps is not None:
        cfg["md_steps"] = args.md_steps
    if args.md_replicas is not None:
        cfg["md_replicas"] = args.md_replicas
    docs = os.path.join(args.out_dir, "docs")
    figs = os.path.join(docs, "figures", "regularity")
    os.makedirs(figs, exist_ok=True)
    if args.save_models:
        os.makedirs(args.save_models, exist_ok=True)
    json_path = os.path.join(figs, f"results_{args.mode}.json")
    res: Dict = {"mode": args.mode}
    if args.merge and os.path.exists(json_path):
        with open(json_path, encoding="utf-8") as fh:
            res = json.load(fh)
    import platform

    cmd = "python scripts/studies/regularity_study.py " + " ".join(
        _public_args(argv if argv is not None else sys.argv[1:]))
    if args.report_only:
        with open(json_path, encoding="utf-8") as fh:
            res = json.load(fh)
        write_doc(os.path.join(docs, "regularity_priors.md"),
                  report(cfg, args.mode, res, "figures/regularity", res["runs"][-1]["command"]))
        return res
    if "runs" not in res and "wall_s" in res:  # results of a run that predates the per-run log
        res["runs"] = [{"command": f"python scripts/studies/regularity_study.py --mode {args.mode} --threads 1",
                        "parts": PARTS, "seconds": {"all parts": res["wall_s"]},
                        "platform": res.get("platform", ""), "threads": res.get("threads", 1)}]
    res.setdefault("runs", [])
    t_all = time.perf_counter()
    md_models: Dict[float, object] = {}
    timings = {}
    for part in PARTS:
        if part not in args.parts:
            continue
        t0 = time.perf_counter()
        if part in ("dimers", "md") and not md_models:
            md_models.update(fit_md_models(cfg, args.data))
        if part == "molecules":
            molecules_part(cfg, args.data, figs, res, args.save_models, md_models)
        elif part == "dimers":
            dimers_part(cfg, args.data, figs, res, md_models)
        elif part == "md":
            md_part(cfg, args.data, figs, res, md_models)
        else:
            silicon_part(cfg, args.data, figs, res, args.save_models)
        timings[part] = time.perf_counter() - t0
    res["runs"].append({"command": cmd, "parts": list(args.parts), "seconds": timings,
                        "platform": f"{platform.machine()} {platform.processor() or ''}".strip(),
                        "threads": torch.get_num_threads()})
    res["wall_s"] = time.perf_counter() - t_all
    write_doc(os.path.join(docs, "regularity_priors.md"), report(cfg, args.mode, res, "figures/regularity", cmd))
    write_json_atomic(json_path, _clean(res))
    log(f"done in {res['wall_s'] / 60:.1f} min")
    return res


def _public_args(argv: Sequence[str]) -> List[str]:
    """The command line without machine-specific paths (options whose value is an absolute path)."""
    out, skip = [], False
    for k, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a.startswith("--") and k + 1 < len(argv) and os.path.isabs(argv[k + 1]):
            skip = True
            continue
        if not os.path.isabs(a):
            out.append(a)
    return out


def _clean(x):
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    return x


if __name__ == "__main__":
    main()
