#!/usr/bin/env python
"""Energy + forces per step: torchace against ace-jax (if installed) on the same structure and basis.

    python scripts/benchmarks/bench_eval.py               # Si order 3 totaldegree 10 (120 functions), CPU float64
    python scripts/benchmarks/bench_eval.py --model si4_20       # order 4 totaldegree 20 (5476 functions: slow)
    python scripts/benchmarks/bench_eval.py --device cuda --dtype float32

Structure: ase.build.bulk('Si', 'diamond', 5.43, cubic=True) * (3, 3, 3) (216 atoms), rattled 0.05 Å
(seed 1); rcut 6 Å (ACEpotentials' default for Si).  Cases:
  torchace.evaluate     — collate + neighbour list + forward + backward (forces, virial)
  torchace calculator   — TorchACECalculator, neighbour list reused (skin 0.5 Å), forces + stress
  torchace forward      — model(*batch) on a pre-collated batch (forces, virial): analytic adjoints
                          (eval-mode default) and the autograd reference path
  torchace compiled     — TorchACECalculator(compile=True): torch.compile of the analytic path
  torchace fused        — TorchACECalculator(backend="fused"): the fused C++ CPU kernel (torchace.fused), and
                          the kernel alone on a pre-collated batch
  ace-jax calculator    — ace_jax.calc.point.ACECalculator (jit, lean, aa_dag auto, skin 1 Å), with and
                          without radial_table (tabulated radials)
Each "step" moves every atom by ≤ 1e-4 Å so no calculator can return a cached result, and neighbour
lists are reused where the calculator supports it.  Median of --repeats timed steps after --warmup.
Both libraries get the same basis (ace-jax built as in tests/acejax_bridge.py: ACEpotentials ace1_model
radials, spherical harmonics) and coefficients drawn from the same seed (rows are not aligned between
the two enumerations, so values are not compared here; tests/integration/test_acejax_crosscheck.py does that).
Prints a table and writes JSON (--out).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import time

import numpy as np
import torch

import torchace

MODELS = {"si3_10": (3, 10), "si4_12": (4, 12), "si4_20": (4, 20)}
N_DISPLACE = 1e-4  # Å, per-step random displacement


def structure(rattle: float = 0.05, seed: int = 1, reps: int = 3):
    from ase.build import bulk

    atoms = bulk("Si", "diamond", 5.43, cubic=True) * (reps, reps, reps)
    atoms.rattle(rattle, seed=seed)
    return atoms


def torchace_model(order: int, td, dtype=torch.float64, device="cpu", seed: int = 0):
    model = torchace.ace_model(["Si"], order, td)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        c = torch.randn(model.coefficients.shape, generator=g, dtype=torch.float64) * 1e-2
        model.coefficients.copy_(c)
    return model.to(device=device, dtype=dtype).eval()


def have_acejax() -> bool:
    try:
        import ace_jax  # noqa: F401
        return True
    except Exception:
        return False


def acejax_version():
    try:
        from importlib.metadata import version
        return {"ace-jax": version("ace-jax"), "jax": version("jax"), "jaxlib": version("jaxlib")}
    except Exception:
        return None


def acejax_model(order: int, td: int, seed: int = 0, E0=None):
    """(model, meta) of ace-jax for ACEpotentials' ace1_model(Si, order, td), as tests/acejax_bridge.py builds
    it (analytic ace1 radials, Jacobi(4,4), Agnesi(2,4) transform, spherical harmonics), with readout
    coefficients drawn from ``seed``."""
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from ace_jax.basis import radial_ace1 as ra
    from ace_jax.basis import radial_init as ri
    from ace_jax.basis.model import build_model

    zs = ri.resolve_elements(["Si"])
    r0 = ri.r0_table(zs)
    rc = 2.5 * float(r0.max())
    basis = build_model(zs, order, td, rcut=rc, rin=0.0, radial_mode="onehot", with_gamma=False)
    m = basis.model
    A, B, C = ra.jacobi_3term(m.polys_A.shape[0], 4.0, 4.0)
    rng = np.random.default_rng(seed)
    WB = rng.standard_normal(m.WB.shape) * 1e-2
    Wp = rng.standard_normal(m.Wpair.shape) * 1e-2
    m = dataclasses.replace(
        m, ysolid=False, polys_A=jnp.asarray(A), polys_B=jnp.asarray(B), polys_C=jnp.asarray(C),
        rnl_transform=jnp.asarray(ri.transform_table(zs, rc, None, 0.0, 2, 4)),
        WB=jnp.asarray(WB), Wpair=jnp.asarray(Wp),
        E0=jnp.asarray(np.zeros(len(zs)) if E0 is None else np.asarray(E0, float)))
    model, meta = basis._replace(model=m).eval_pair()
    return model, meta


def ghost_neighbours(atoms, rcut: float):
    """(update, neighbours [K, N] int32, counts [N] int32) of a LAMMPS-style full list with ghost atoms: update(pos)
    gives the positions of the N local atoms followed by their periodic images within ``rcut`` (the layout of
    ace-jax's LAMMPS bundle), and fold(f) sums the ghosts' forces back onto their owners."""
    from ase.neighborlist import neighbor_list
    i, j, S = neighbor_list("ijS", atoms, rcut)
    n = len(atoms)
    image = {}
    owner, shift, slot = [], [], np.empty(len(i), np.int64)
    for e, (jj, s) in enumerate(zip(j.tolist(), map(tuple, S.tolist()))):
        if s == (0, 0, 0):
            slot[e] = jj
            continue
        key = (jj, s)
        if key not in image:
            image[key] = n + len(owner)
            owner.append(jj)
            shift.append(s)
        slot[e] = image[key]
    owner = np.asarray(owner, np.int64)
    shift = np.asarray(shift, float).reshape(-1, 3) @ atoms.cell.array
    counts = np.bincount(i, minlength=n)
    K = int(counts.max())
    nbr = np.full((K, n), -1, np.int32)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    order = np.argsort(i, kind="stable")
    col = np.arange(len(i)) - np.repeat(start, counts)
    nbr[col, i[order]] = slot[order]

    def update(pos):
        return np.concatenate([pos, pos[owner] + shift])

    def fold(f):
        out = f[:n].copy()
        np.add.at(out, owner, f[n:])
        return out
    return update, fold, nbr, counts.astype(np.int32)


def acejax_ffi_case(jm, atoms, rcut: float, a, n: int, K: int, reference):
    """ace-jax 0.4.1's C++ kernel (``ace_jax.eval.ffi``: one XLA FFI call, lean float64 model with a radial table)
    on a pre-built neighbour matrix with ghost atoms, called through ``jax.ffi.ffi_call`` as ace-jax's own LAMMPS
    bundle calls it: the peer's kernel alone (compare with "torchace fused (pre-collated)"); None where it cannot
    be built or the run is not float64."""
    if a.dtype != "float64":
        return None
    try:
        import jax
        import jax.numpy as jnp
        from ace_jax.eval import ffi
        from ace_jax.eval.model import lean
        lm = lean(jm, radial_table=True)
        attrs, consts = ffi.kernel_inputs(lm)
        ffi.register(ffi.library())
    except Exception as e:  # no compiler, another ace-jax: the case is skipped, the run goes on
        print(f"ace-jax FFI kernel not available ({type(e).__name__}: {e}): case skipped")
        return None
    update, fold, nbr, counts = ghost_neighbours(atoms, rcut)
    n_all = update(atoms.get_positions()).shape[0]
    z = jnp.zeros(n_all, jnp.int32)
    w = jnp.ones(n_all, jnp.float64)
    nbr, counts = jnp.asarray(nbr), jnp.asarray(counts)
    out = (jax.ShapeDtypeStruct((n_all,), jnp.float64), jax.ShapeDtypeStruct((n_all, 3), jnp.float64))
    call = jax.jit(lambda pos: jax.ffi.ffi_call(ffi.TARGET, out)(pos, z, nbr, counts, w, *consts, **attrs,
                                                                  rc2=np.float64(rcut * rcut)))

    def step(at):
        e, f = call(jnp.asarray(update(at.get_positions())))
        return float(e[:n].sum()), fold(np.asarray(f))
    e_ref, f_ref = reference  # ace-jax's calculator on the same model and positions: the call must agree with it
    e0, f0 = step(atoms)
    check = {"energy_rel_diff_vs_acejax_calculator": abs(e0 - e_ref) / abs(e_ref),
             "forces_max_abs_diff_vs_acejax_calculator": float(np.abs(f0 - f_ref).max())}
    print(f"  ace-jax FFI kernel against its calculator: {check}", flush=True)
    t0 = time.perf_counter()
    step(atoms)
    t_first = time.perf_counter() - t0
    med, ts = time_steps(step, atoms, a.warmup, a.repeats)
    print(f"  ace-jax FFI kernel: {1e3 * med:.2f} ms (first call {t_first:.1f} s)", flush=True)
    return record("ace-jax C++ FFI kernel (pre-built nlist)", "ace-jax",
                  "ace_jax.eval.ffi AceDirect via jax.ffi.ffi_call, lean(radial_table=True), ghost atoms, "
                  f"{n_all - n} ghosts", med, ts, n, "cpu", a.dtype, a.model, K,
                  {"first_call_s_incl_compile": t_first, **check})


def peak_memory(device) -> dict:
    if device.type == "cuda":
        return {"peak_memory_MiB": torch.cuda.max_memory_allocated(device) / 2**20,
                "peak_memory_kind": "torch.cuda.max_memory_allocated"}
    return {"peak_memory_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_memory_kind": "process max RSS so far (CPU; cumulative over the run)"}


def time_steps(step, atoms, warmup: int, repeats: int, seed: int = 2):
    """Median / all wall times of step(atoms) with ≤ N_DISPLACE Å moves between calls."""
    rng = np.random.default_rng(seed)
    base = atoms.get_positions().copy()
    times = []
    for k in range(warmup + repeats):
        atoms.set_positions(base + rng.uniform(-N_DISPLACE, N_DISPLACE, base.shape))
        t0 = time.perf_counter()
        step(atoms)
        dt = time.perf_counter() - t0
        if k >= warmup:
            times.append(dt)
    atoms.set_positions(base)
    return statistics.median(times), times


def record(name, library, setting, med, times, n_atoms, device, dtype, model_name, K, extra=None):
    r = {"case": name, "library": library, "setting": setting, "device": str(device), "dtype": dtype,
         "model": model_name, "basis_size": K, "atoms": n_atoms, "median_s": med,
         "min_s": min(times), "repeats": len(times),
         "atom_steps_per_s": n_atoms / med, "us_per_atom": 1e6 * med / n_atoms}
    r.update(peak_memory(torch.device(device)) if library == "torchace" else
             {"peak_memory_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "peak_memory_kind": "process max RSS so far (CPU; cumulative over the run)"})
    if extra:
        r.update(extra)
    return r


def machine_info(device):
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "processor": platform.processor()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    v = acejax_version()
    if v:
        info.update(v)
    return info


def print_table(rows, title):
    print(f"\n{title}")
    hdr = f"{'case':32s} {'device':6s} {'dtype':8s} {'K':>5s} {'atoms':>5s} {'median ms':>10s} " \
          f"{'atom-steps/s':>13s} {'µs/atom':>9s} {'peak MiB':>9s} {'torchace/peer':>13s}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        ratio = r.get("speedup_vs_peer_best")
        print(f"{r['case']:32s} {r['device']:6s} {r['dtype']:8s} {r['basis_size']:5d} {r['atoms']:5d} "
              f"{1e3 * r['median_s']:10.2f} {r['atom_steps_per_s']:13.0f} {r['us_per_atom']:9.1f} "
              f"{r['peak_memory_MiB']:9.0f} {('%.2fx' % ratio) if ratio else '':>13s}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="si3_10", choices=list(MODELS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--no-tune-malloc", action="store_true", help="leave glibc's malloc thresholds alone")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3, help="supercell repetitions of the 8-atom cubic cell")
    ap.add_argument("--no-acejax", action="store_true")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile case (compiles ~1 min)")
    ap.add_argument("--no-fused", action="store_true", help="skip the fused C++ kernel case (CPU; builds ~30 s once)")
    ap.add_argument("--out", default="bench_eval.json")
    a = ap.parse_args(argv)
    if not a.no_tune_malloc:
        from torchace.model.backends.runtime import tune_malloc
        tune_malloc()

    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_eval: --device cuda requested but no CUDA GPU is available here; skipping "
              "(GPU numbers only from a real GPU).")
        with open(a.out, "w") as f:
            json.dump({"skipped": "no CUDA GPU available", "machine": machine_info(torch.device("cpu"))}, f, indent=1)
        return 0
    tdtype = getattr(torch, a.dtype)
    order, td = MODELS[a.model]
    atoms = structure(reps=a.reps)
    n = len(atoms)
    model = torchace_model(order, td, tdtype, device)
    K = model.basis_size
    print(f"model {a.model}: Si order {order} totaldegree {td}, K = {K}, rcut {model.rcut} Å; {n} atoms; "
          f"device {device}, {a.dtype}, torch threads {torch.get_num_threads()}", flush=True)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    rows = []

    # (a) torchace.evaluate: collate + neighbour list + forward/backward
    def step_eval(at):
        out = torchace.evaluate(model, at)
        out["forces"].sum().item()
        sync()
    med, ts = time_steps(step_eval, atoms, a.warmup, a.repeats)
    rows.append(record("torchace.evaluate (incl. nlist)", "torchace", "evaluate", med, ts, n, device, a.dtype,
                       a.model, K))

    # (b) ASE calculator with neighbour-list reuse
    from torchace.calculators.ase import TorchACECalculator
    calc = TorchACECalculator(model, device=device, dtype=tdtype)

    def step_calc(at):
        calc.calculate(at, ["energy", "forces"])
        sync()
    med, ts = time_steps(step_calc, atoms, a.warmup, a.repeats)
    rows.append(record("torchace calculator default (nl reuse)", "torchace",
                       f"TorchACECalculator(model) skin=0.5, backend auto -> {calc.backend}", med, ts, n,
                       device, a.dtype, a.model, K, {"nlist_builds": calc.n_neighbour_list_builds,
                                                     "backend": calc.backend}))
    # the same model with an 8-member committee (a BLR fit's): the default call gives energy_std as well
    import copy as _copy

    model_c = _copy.deepcopy(model)
    g = torch.Generator().manual_seed(7)
    model_c.committee = (model.coefficients.detach().cpu() + 0.01 * torch.randn(8, K, generator=g,
                         dtype=torch.float64)).to(device=device, dtype=tdtype)
    calc_c8 = TorchACECalculator(model_c, device=device, dtype=tdtype)

    def step_comm(at):
        calc_c8.calculate(at, ["energy", "forces"])
        assert "energy_std" in calc_c8.results

    med, ts = time_steps(step_comm, atoms, a.warmup, a.repeats)
    rows.append(record("torchace calculator default, committee of 8", "torchace",
                       f"TorchACECalculator(model with committee) skin=0.5, backend {calc_c8.backend}, energy_std",
                       med, ts, n, device, a.dtype, a.model, K, {"backend": calc_c8.backend}))

    # (c) bare forward on a pre-collated batch
    from torchace.structures.batch import collate
    from torchace.model.evaluate import model_inputs
    batch = collate(atoms, model.config.numbers, model.rcut, dtype=tdtype, device=device)
    args = model_inputs(model, batch)

    def step_fwd(at):
        out = model(*args, True, True)
        out["forces"].sum().item()
        sync()
    med, ts = time_steps(step_fwd, atoms, a.warmup, a.repeats)
    rows.append(record("torchace forward (pre-collated)", "torchace", "model forward, forces+virial, analytic "
                       "adjoints", med, ts, n, device, a.dtype, a.model, K))
    model.analytic = False  # the autograd reference path
    med, ts = time_steps(step_fwd, atoms, a.warmup, a.repeats)
    rows.append(record("torchace forward autograd", "torchace", "model forward, forces+virial, autograd", med, ts,
                       n, device, a.dtype, a.model, K))
    model.analytic = True

    # (d) torch.compile of the analytic path, in the calculator (first call compiles)
    if not a.no_compile:
        calc_c = TorchACECalculator(model, device=device, dtype=tdtype, compile=True)

        def step_calc_c(at):
            calc_c.calculate(at, ["energy", "forces"])
            sync()
        t0 = time.perf_counter()
        step_calc_c(atoms)
        t_first = time.perf_counter() - t0
        med, ts = time_steps(step_calc_c, atoms, a.warmup, a.repeats)
        rows.append(record("torchace calculator compiled", "torchace", "TorchACECalculator(compile=True) skin=0.5",
                           med, ts, n, device, a.dtype, a.model, K, {"first_call_s_incl_compile": t_first}))

    # (e) the fused C++ CPU kernel (torchace.fused), in the calculator
    if not a.no_fused and device.type == "cpu":
        from torchace.model.backends import fused
        if fused.available():
            calc_f = TorchACECalculator(model, device=device, dtype=tdtype, backend="fused")

            def step_calc_f(at):
                calc_f.calculate(at, ["energy", "forces"])
            med, ts = time_steps(step_calc_f, atoms, a.warmup, a.repeats)
            rows.append(record("torchace calculator fused", "torchace", "TorchACECalculator(backend='fused') skin=0.5",
                               med, ts, n, device, a.dtype, a.model, K))
            bare = fused.FusedEvaluator(model)

            def step_bare_f(at):
                bare(*args, True, True)
            med, ts = time_steps(step_bare_f, atoms, a.warmup, a.repeats)
            rows.append(record("torchace fused (pre-collated)", "torchace", "FusedEvaluator, forces+virial, "
                               f"products {bare.scheme}", med, ts, n, device, a.dtype, a.model, K))
            # the DAG as well when auto took the coupled pairs (auto takes the cheaper by operation count)
            for scheme in ("dag",) if bare.scheme == "pairs" else ():
                forced = fused.FusedEvaluator(model, products=scheme)

                def step_forced(at, forced=forced):
                    forced(*args, True, True)
                med, ts = time_steps(step_forced, atoms, a.warmup, a.repeats)
                rows.append(record(f"torchace fused, {scheme} (pre-collated)", "torchace",
                                   f"FusedEvaluator(products={scheme!r}), forces+virial", med, ts, n, device, a.dtype,
                                   a.model, K))
        else:
            print("fused C++ kernel not buildable here: case skipped")

    peers = []
    if not a.no_acejax and have_acejax():
        if device.type != "cpu":
            print("ace-jax: run on the CPU here (jax CPU build); GPU comparison not attempted")
        else:
            from ace_jax.calc.point import ACECalculator
            t0 = time.perf_counter()
            jm, meta = acejax_model(order, td, E0=model.E0.tolist())
            print(f"ace-jax model built in {time.perf_counter() - t0:.1f} s: n_B {meta['n_B']}, "
                  f"n_pair {meta['n_pair']}", flush=True)
            jdt = np.float64 if a.dtype == "float64" else np.float32
            for label, kw in [("ace-jax calculator", {}),
                              ("ace-jax calculator +radial_table", {"radial_table": True})]:
                c = ACECalculator(jm, dict(meta), dtype=jdt, **kw)

                def step_jax(at, c=c):
                    c.calculate(at, ["energy", "forces"])
                    np.asarray(c.results["forces"]).sum()
                t0 = time.perf_counter()
                step_jax(atoms)
                t_first = time.perf_counter() - t0
                med, ts = time_steps(step_jax, atoms, a.warmup, a.repeats)
                rec = record(label, "ace-jax", f"ACECalculator(lean, aa_dag={c.aa_dag!r}, skin=1.0, "
                             f"radial_table={kw.get('radial_table')}), layout {c.last_layout}",
                             med, ts, n, "cpu", a.dtype, a.model, meta["n_B"] + meta["n_pair"],
                             {"first_call_s_incl_compile": t_first, "last_timing": {
                                 k: v for k, v in (c.last_timing or {}).items()
                                 if isinstance(v, (int, float, str, type(None)))}})
                rows.append(rec)
                peers.append(rec)
                print(f"  {label}: {1e3 * med:.2f} ms (first call {t_first:.1f} s)", flush=True)
            c.calculate(atoms, ["energy", "forces"])  # the peer's own energy here: the FFI case must reproduce it
            rec = acejax_ffi_case(jm, atoms, float(model.rcut), a, n, K,
                                  (float(c.results["energy"]), np.asarray(c.results["forces"])))
            if rec is not None:
                rows.append(rec)
                peers.append(rec)
    elif not a.no_acejax:
        print("ace-jax not installed: torchace only")

    if peers:
        best = min(peers, key=lambda r: r["median_s"])
        for r in rows:
            if r["library"] == "torchace":
                r["speedup_vs_peer_best"] = best["median_s"] / r["median_s"]
                r["peer_best_case"] = best["case"]
    print_table(rows, f"E+F per step, {a.model} (K = {K}), {n} atoms, median of {a.repeats} after {a.warmup} warm-up"
                      "  (torchace/peer = peer best time / torchace time: >1 means torchace faster)")
    res = {"benchmark": "bench_eval", "machine": machine_info(device), "argv": sys.argv[1:],
           "structure": f"Si diamond 5.43 cubic x{a.reps}^3, rattle 0.05 seed 1", "rows": rows}
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
