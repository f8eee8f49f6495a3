#!/usr/bin/env python
"""GPU benchmarks (issue "GPU"): energy + forces + virial per step, fp32 against fp64, the largest Si system
that runs, and a GAP-18-size streaming assembly with its solve.

    python scripts/benchmarks/bench_gpu.py --device cuda --json bench_gpu.json --markdown bench_gpu.md
    python scripts/benchmarks/bench_gpu.py --device cuda --backend triton,analytic      # both, triton first
    TRITON_INTERPRET=1 python scripts/benchmarks/bench_gpu.py --device cpu --dry-run    # tiny sizes, seconds, on a CPU

Measurements (each in its own try/except: a failure records its message and the others still run; the JSON
and the Markdown are rewritten after every measurement, so a run that is killed keeps what it measured):

  a. E+F (energy, forces, virial; one evaluator call on a pre-built neighbour list) in fp64 and fp32 at
     8,000 and 64,000 atoms, for a SiGe model with ~500 functions per element (order 3, totaldegree 9,
     rcut 5 Å: n_b = 469, K = 974) on a rattled (0.05 Å) diamond SiGe supercell with random occupation,
     and for Si order 4 totaldegree 20 (K = 5,476, rcut 6 Å) on rattled diamond Si.  atom-steps/s =
     atoms / median time per call (CUDA synchronised around each call, after warm-up); the neighbour-list
     build (torchace.structures.neighbours.cell_list on the device when it exists, else the CPU list) is timed apart.
  b. fp32 against fp64 on the same structure and model: relative energy error (target <= 1e-6), force
     and virial errors; and, where several backends ran, each against the first at fp64.
  c. The largest Si system (Si order 3 totaldegree 12 by default): supercells of growing size until one
     fails (out of memory: the cache is emptied), a step exceeds --step-cap-s, or the budget is spent.
  d. Streaming assembly (``assemble_reduced(method="normal")``) of ~150k atoms for Si o4 d20: the Zuo
     Si training set (``../shared/data/zuo2020/Si_train.xyz.gz``) replicated with fresh 0.05 Å rattles, or
     rattled diamond cells when the data are absent; then ``solve_system`` with ``solvers.QR`` on the
     reduced system and a Cholesky solve of the normal equations.  Over budget, the assembly stops after
     the batch in progress and reports its rate and the extrapolated total.

``--backend`` is a comma-separated list ("auto", "reference", "analytic", "fused", "triton"); a backend
that cannot run here is recorded with its reason (``registry.BACKENDS[name].reason``) and skipped; if none
of the list can run, "auto"'s choice is measured.  ``--budget-s`` bounds the whole run (measurements that
would not fit are skipped and listed).  Units are in the JSON ("units").
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import signal
import statistics
import sys
import time
import traceback

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_eval import peak_memory  # noqa: E402

import torchace  # noqa: E402
from torchace import keys as K  # noqa: E402
from torchace.model.backends import registry  # noqa: E402
from torchace.structures.neighbours.tiled import tiled_neighbours  # noqa: E402
from torchace.testing import randomize_coefficients  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# (elements, order, totaldegree, options): the models of the issue, and small stand-ins for --dry-run
MODELS = {
    "sige3_9": (["Si", "Ge"], 3, 9, {"rcut": 5.0}),   # n_b 469 per element, K 974
    "si4_20": (["Si"], 4, 20, {}),                     # K 5,476 (rcut 6 Å, the ACEpotentials default)
    "si3_12": (["Si"], 3, 12, {}),                     # K 223
    "sige2_6": (["Si", "Ge"], 2, 6, {"rcut": 5.0}),    # dry run
    "si3_8": (["Si"], 3, 8, {}),                       # dry run
}
LATTICE = {"Si": 5.43, "SiGe": 5.54}  # Å; SiGe: Vegard midpoint of Si 5.431 and Ge 5.658
RATTLE = 0.05  # Å
CPU_LIST_MAX_ATOMS = 300_000  # ASE's list (without vesin) above this: minutes; the largest-system search tiles
ENERGY_RTOL_TARGET = 1e-6
UNITS = {"time": "s", "*_s": "s", "atom_steps_per_s": "atoms × steps / s", "peak_memory_MiB": "MiB (2^20 bytes)",
         "energy_eV": "eV", "*_rel_error": "dimensionless (|x32 − x64|max / |x64|max)", "atoms_per_s": "atoms / s",
         "rcut": "Å", "rattle": "Å", "lattice": "Å"}
DIAMOND = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0],
                    [.25, .25, .25], [.25, .75, .75], [.75, .25, .75], [.75, .75, .25]])


class BudgetExceeded(Exception):
    pass


class Budget:
    def __init__(self, seconds: float):
        self.total, self.t0 = float(seconds), time.perf_counter()

    def used(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.total - self.used()

    def share(self, fraction: float) -> "Budget":
        """A budget for one section: ``fraction`` of the total, never more than what is left of this one."""
        parent, sub = self, Budget(fraction * self.total)
        sub.left = lambda: min(parent.left(), sub.total - sub.used())  # type: ignore[method-assign]
        return sub


# ---------------------------------------------------------------- results


class Results:
    """The JSON document; ``save`` rewrites the JSON and the Markdown (after every measurement)."""

    def __init__(self, json_path, md_path):
        self.json_path, self.md_path = json_path, md_path
        self.data = {"benchmark": "bench_gpu", "argv": sys.argv[1:], "units": UNITS, "machine": {},
                     "config": {}, "backends": {}, "models": {}, "energy_forces": [], "neighbour_lists": [],
                     "precision": [], "backend_agreement": [],
                     "largest_system": {"runs": [], "largest_ok": None, "stopped_because": None},
                     "assembly": {}, "errors": [], "skipped": [], "budget": {}, "finished": False}

    def error(self, section, label, exc):
        msg = f"{type(exc).__name__}: {str(exc).strip()}"[:2000]
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        self.data["errors"].append({"section": section, "case": label, "error": msg, "oom": is_oom(exc),
                                    "traceback_tail": "".join(tb[-3:])[-2000:]})
        print(f"[{section}] {label}: FAILED {msg.splitlines()[0] if msg else ''}", flush=True)
        return msg

    def skip(self, section, label, why):
        self.data["skipped"].append({"section": section, "case": label, "reason": why})
        print(f"[{section}] {label}: skipped ({why})", flush=True)

    def save(self, budget=None):
        """(``budget``: ignored, the whole run's budget, ``self.budget``, is reported)"""
        b = getattr(self, "budget", None)
        if b is not None:
            self.data["budget"] = {"budget_s": b.total, "used_s": b.used()}
        if self.json_path:
            tmp = self.json_path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.data, f, indent=1, default=str)
            os.replace(tmp, self.json_path)
        if self.md_path:
            with open(self.md_path, "w") as f:
                f.write(markdown(self.data))


def is_oom(exc) -> bool:
    return isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()


def free_memory(device):
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def attempt(res, section, label, device, fn):
    """fn() or None; a failure is recorded (an OOM empties the CUDA cache) and the run goes on."""
    try:
        return fn()
    except (BudgetExceeded, KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 — one failure must not lose the other numbers
        res.error(section, label, exc)
    free_memory(device)  # outside the handler: the traceback (and the tensors of its frames) is gone now
    return None


# ---------------------------------------------------------------- machine and backends


def _version(mod):
    try:
        from importlib.metadata import version
        return version(mod)
    except Exception:  # noqa: BLE001
        return None


def machine_info(device):
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "numpy": np.__version__,
            "ase": _version("ase"), "vesin": _version("vesin"), "torchace": torchace.__version__,
            "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"),
            "allow_tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    try:
        import triton
        info["triton"] = triton.__version__
    except Exception as exc:  # noqa: BLE001
        info["triton"] = None
        info["triton_import_error"] = f"{type(exc).__name__}: {exc}"
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=torch.cuda.get_device_name(device), gpu_capability=f"{p.major}.{p.minor}",
                    gpu_memory_GiB=p.total_memory / 2**30, gpu_count=torch.cuda.device_count(),
                    cudnn=torch.backends.cudnn.version())
        try:
            from torchace.testing import run
            info["nvidia_driver"] = run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                        timeout=20).stdout.strip()
        except Exception:  # noqa: BLE001
            pass
    return info


def backend_reasons(model, device, task, requested):
    """{name: None or why not}; the fused C++ kernel is only probed on a CPU when asked for (it builds ~1 min)."""
    out = {}
    for name, b in registry.BACKENDS.items():
        if name == "fused" and device.type == "cpu" and not ({"fused", "auto"} & set(requested)):
            out[name] = "not probed (CPU C++ kernel; ask for --backend fused or auto)"
            continue
        try:
            out[name] = b.reason(model, device, task)
        except Exception as exc:  # noqa: BLE001
            out[name] = f"reason() raised {type(exc).__name__}: {exc}"
    return out


def resolve_backends(res, model, mname, device, requested):
    """The distinct backends of ``requested`` that can evaluate ``model`` on ``device`` (names); reasons of
    the others are recorded in res.data["backends"]."""
    reasons = backend_reasons(model, device, registry.EVALUATE, requested)
    rows_reasons = backend_reasons(model, device, registry.ROWS, requested)
    entry = res.data["backends"].setdefault(mname, {"requested": requested, "evaluate": reasons,
                                                    "rows": rows_reasons})
    chosen = []
    for name in requested:
        if name == registry.AUTO:
            try:
                name = registry.select(model, device, registry.AUTO, registry.EVALUATE).name
            except Exception as exc:  # noqa: BLE001
                entry["auto_error"] = str(exc)
                continue
            entry["auto_selects"] = name
        elif name.split("-")[0] not in registry.BACKENDS:
            entry.setdefault("unknown", []).append(name)
            continue
        elif reasons.get(name.split("-")[0]) is not None:
            why = reasons[name.split("-")[0]]
            entry.setdefault("not_measured", {})[name] = why
            print(f"backend {name!r} cannot evaluate {mname} on {device.type}: {why}", flush=True)
            continue
        if name not in chosen:
            chosen.append(name)
    if "auto_selects" not in entry and not str(reasons.get("fused")).startswith("not probed"):
        try:
            entry["auto_selects"] = registry.select(model, device, registry.AUTO, registry.EVALUATE).name
        except Exception as exc:  # noqa: BLE001
            entry["auto_error"] = str(exc)
    if not chosen:
        name = registry.select(model, device, registry.AUTO, registry.EVALUATE).name
        entry["fallback"] = f"none of {requested} can run here: measured auto's choice {name!r}"
        print(entry["fallback"], flush=True)
        chosen = [name]
    entry["measured"] = chosen
    return chosen


# ---------------------------------------------------------------- models and structures


_BASE_MODELS = {}  # name -> model: each built once per run


def base_model(name):
    """fp64 CPU model with random coefficients (torchace.testing.randomize_coefficients, seed 0)."""
    if name not in _BASE_MODELS:
        el, order, td, opts = MODELS[name]
        m = torchace.ace_model(el, order, td, **opts)
        randomize_coefficients(m, scale=0.1, seed=0)
        _BASE_MODELS[name] = m
    return _BASE_MODELS[name]


def model_on(name, device, dtype):
    return copy.deepcopy(base_model(name)).to(device=device, dtype=dtype).eval()


def model_meta(name):
    m = base_model(name)
    el, order, td, opts = MODELS[name]
    return {"elements": el, "order": order, "totaldegree": td, "rcut": float(m.rcut), "n_b": int(m.n_b),
            "basis_size": int(m.basis_size), "n_pair": int(m.n_pair), "n_aa": int(m.coupling.n_aa)}


def parse_sizes(text):
    """"8000,64000" (atom targets: cubic supercells of the 8-atom cell) or "2x1x1,2x2x2" (repetitions)."""
    out = []
    for tok in str(text).split(","):
        tok = tok.strip()
        if not tok:
            continue
        if "x" in tok:
            out.append(tuple(int(v) for v in tok.split("x")))
        else:
            r = max(1, round((float(tok) / 8) ** (1 / 3)))
            out.append((r, r, r))
    return out


def diamond(reps, a, symbols, rattle=RATTLE, seed=1):
    """Diamond supercell (block-major order, like ase's ``atoms * reps``) with random species from ``symbols``,
    rattled by a Gaussian of std ``rattle`` Å: (positions [N, 3], atomic numbers [N], cell [3, 3])."""
    from ase.data import atomic_numbers

    r = np.asarray(reps)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in r], indexing="ij"), -1).reshape(-1, 3)
    pos = ((grid[:, None, :] + DIAMOND[None]) * a).reshape(-1, 3)
    rng = np.random.default_rng(seed)
    zs = np.array([atomic_numbers[s] for s in symbols])
    numbers = zs[rng.integers(0, len(zs), len(pos))] if len(zs) > 1 else np.full(len(pos), zs[0])
    pos = pos + rng.normal(0.0, rattle, pos.shape)
    return pos, numbers.astype(np.int64), np.diag(r * float(a))


def cell_list_fn():
    try:
        from torchace.structures.neighbours.cell_list import cell_list_neighbours
        return cell_list_neighbours
    except Exception:  # noqa: BLE001 — not written yet, or broken: the CPU list is used
        return None


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def neighbours(res, label, pos, cell, rcut, device, method="auto", repeats=2):
    """(i, j, S) as device tensors, method used, median build time (s); the attempt is recorded."""
    rec = {"case": label, "atoms": int(len(pos)), "rcut": float(rcut), "device": str(device)}
    fn = cell_list_fn() if method in ("auto", "cell_list") else None
    if fn is not None:
        def run():
            p = torch.as_tensor(pos, dtype=torch.float64, device=device)
            c = torch.as_tensor(cell, dtype=torch.float64, device=device)
            sync(device)
            t0 = time.perf_counter()
            out = fn(p, c, (True, True, True), float(rcut))
            sync(device)
            return out, time.perf_counter() - t0
        got = attempt(res, "neighbour_lists", f"{label} cell_list", device, run)
        if got is not None:
            (i, j, S), t_first = got
            ts = [t_first]
            if t_first < 2.0:
                for _ in range(repeats):
                    ts.append(run()[1])
            rec.update(method="torchace.structures.neighbours.cell_list.cell_list_neighbours", first_s=t_first,
                       build_s=statistics.median(ts[1:] or ts), edges=int(i.shape[0]))
            res.data["neighbour_lists"].append(rec)
            return (i.to(device), j.to(device), S.to(device)), "cell_list", rec["build_s"]
    from torchace.structures.neighbours.pairs import neighbour_list, _vesin
    if _vesin() is None and len(pos) > CPU_LIST_MAX_ATOMS:
        raise RuntimeError(f"no fast neighbour list for {len(pos)} atoms (no device cell list, no vesin): ASE's "
                           "would take minutes")
    t0 = time.perf_counter()
    i, j, S = neighbour_list(pos, cell, (True, True, True), float(rcut))
    t = time.perf_counter() - t0
    t1 = time.perf_counter()
    tens = tuple(torch.as_tensor(x, device=device) for x in (i, j, S))
    sync(device)
    rec.update(method="torchace.structures.neighbours.pairs.neighbour_list (CPU; "
                      f"{'vesin' if _vesin() is not None else 'ase/dense'})", build_s=t,
               to_device_s=time.perf_counter() - t1, edges=int(len(i)))
    res.data["neighbour_lists"].append(rec)
    return tens, "numpy", t


def make_batch(pos, numbers, cell, nl, model, dtype, device):
    """The collated-batch dictionary (torchace.structures.collate's keys) of one periodic structure."""
    z2s = {int(z): s for s, z in enumerate(model.config.numbers)}
    lut = torch.full((int(max(z2s)) + 1,), -1, dtype=torch.long)
    for z, s in z2s.items():
        lut[z] = s
    num = torch.as_tensor(numbers, dtype=torch.long)
    i, j, S = nl
    n = int(num.shape[0])
    return {K.POSITIONS: torch.as_tensor(pos, dtype=torch.float64, device=device).to(dtype),
            K.NUMBERS: num.to(device), K.SPECIES: lut[num].to(device),
            K.BATCH: torch.zeros(n, dtype=torch.long, device=device),
            K.CELL: torch.as_tensor(np.asarray(cell), dtype=dtype, device=device).reshape(1, 3, 3),
            K.PBC: torch.ones(1, 3, dtype=torch.bool, device=device),
            K.EDGE_INDEX: torch.stack([i.to(device), j.to(device)]).long(),
            K.UNIT_SHIFTS: S.to(device=device, dtype=dtype), K.N_ATOMS: torch.tensor([n], device=device)}


# ---------------------------------------------------------------- timing


def time_calls(model, batch, backend, device, warmup, repeats, max_measure_s, keep=False):
    """Times of the backend's evaluator (forces + virial) on ``batch``; positions alternate between two copies
    1e-4 Å apart.  Returns (record, first output on CPU float64 when ``keep``)."""
    from torchace.model.evaluate import model_inputs

    # "triton-lanes" / "triton-levels" / "triton-pairs": the triton backend with that product variant (default: levels)
    name, _, variant = backend.partition("-")
    ev = registry.select(model, device, name, registry.EVALUATE).evaluator(model)
    if variant:
        from torchace.model.backends.triton_backend import TritonEvaluator

        ev = TritonEvaluator(model, dag=variant)
    args = list(model_inputs(model, batch))
    g = torch.Generator(device="cpu").manual_seed(3)
    pa = args[0]
    pb = pa + (torch.rand(pa.shape, generator=g, dtype=torch.float64) * 2e-4 - 1e-4).to(pa)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, kept, first = [], None, None
    n_calls, k = warmup + repeats, 0
    while k < n_calls:
        args[0] = pa if k % 2 == 0 else pb
        sync(device)
        t0 = time.perf_counter()
        out = ev(*args, True, True)
        sync(device)
        dt = time.perf_counter() - t0
        if k == 0:
            first = dt
            if keep:
                kept = {key: out[key].detach().to("cpu", torch.float64) for key in (K.ENERGY, K.FORCES, K.VIRIAL)}
        if k >= warmup:
            times.append(dt)
        elif k == warmup - 1 and max_measure_s:  # a warm call: fit the repeats in max_measure_s
            n_calls = warmup + max(1, min(repeats, int(max_measure_s / max(dt, 1e-9))))
        del out
        k += 1
    med = statistics.median(times)
    rec = {"backend": backend, "warmup": warmup, "repeats": len(times), "times_s": times, "median_s": med,
           "min_s": min(times), "first_call_s": first, "atom_steps_per_s": int(batch[K.N_ATOMS].sum()) / med,
           **peak_memory(device)}
    if hasattr(ev, "profile"):  # one more call with device-synchronised stage timings (where the time goes)
        ev.profile, ev.timings = True, {}
        ev(*args, True, True)
        rec["stages_s"] = dict(ev.timings)
        ev.profile = False
    return rec, kept


# ---------------------------------------------------------------- (a) + (b)


def case_estimate(a, t_call):
    """Seconds a case takes at ``t_call`` s per call: warm-up plus the repeats that fit in --max-measure-s."""
    n_rep = max(1, min(a.repeats, int(a.max_measure_s / max(t_call, 1e-9)))) if a.warmup else a.repeats
    return t_call * (a.warmup + n_rep)


def bench_energy_forces(res, a, device, budget, backends_for):
    sizes = parse_sizes(a.ef_sizes)
    model_names = [a.sige_model, a.si_model]
    dtypes = [torch.float64, torch.float32]
    outputs = {}
    last = {}  # (model, backend, dtype) -> (atoms, median_s) of the last size, for budget estimates
    for reps in sizes:
        for mname in model_names:
            meta = model_meta(mname)
            symbols = MODELS[mname][0]
            kind = "SiGe" if len(symbols) > 1 else "Si"
            n_atoms = 8 * int(np.prod(reps))
            label = f"{mname} {n_atoms} atoms"
            ests = [case_estimate(a, t0 * n_atoms / n0) for key, (n0, t0) in last.items() if key[0] == mname]
            est = min(ests) if ests else 0.0  # the cheapest case must fit; each case is checked again below
            if est > budget.left():
                res.skip("energy_forces", label, f"estimated {est:.0f} s > budget left {budget.left():.0f} s")
                continue
            if budget.left() <= 0:
                res.skip("energy_forces", label, "budget spent")
                continue
            pos, numbers, cell = diamond(reps, LATTICE[kind], symbols, seed=1)
            got = attempt(res, "energy_forces", f"{label} neighbour list", device,
                          lambda: neighbours(res, label, pos, cell, meta["rcut"], device, a.nl))
            if got is None:
                continue
            nl, nl_method, nl_s = got
            for bname in backends_for(mname):
                for dtype in dtypes:
                    dname = str(dtype).replace("torch.", "")
                    case = f"{label} {bname} {dname}"
                    prev = last.get((mname, bname, dname))
                    est = case_estimate(a, prev[1] * n_atoms / prev[0]) if prev else 0.0
                    if budget.left() <= 0 or est > budget.left():
                        res.skip("energy_forces", case, "budget spent" if budget.left() <= 0 else
                                 f"estimated {est:.0f} s > budget left {budget.left():.0f} s")
                        continue
                    rec = {"model": mname, **meta, "structure": f"{kind} diamond a={LATTICE[kind]} x{reps}, "
                           f"rattle {RATTLE} Å seed 1", "atoms": n_atoms, "edges": int(nl[0].shape[0]),
                           "neighbours_per_atom": int(nl[0].shape[0]) / n_atoms, "dtype": dname,
                           "device": str(device), "nl_method": nl_method, "nl_build_s": nl_s}

                    def run(nl=nl, dtype=dtype, bname=bname):
                        m = model_on(mname, device, dtype)
                        batch = make_batch(pos, numbers, cell, nl, m, dtype, device)
                        r, kept = time_calls(m, batch, bname, device, a.warmup, a.repeats, a.max_measure_s, True)
                        del batch, m
                        return r, kept
                    got2 = attempt(res, "energy_forces", case, device, run)
                    if got2 is None:
                        rec.update(status="failed", error=res.data["errors"][-1]["error"])
                    else:
                        r, kept = got2
                        rec.update(r, status="ok", energy_eV=float(kept[K.ENERGY][0]),
                                   atom_steps_per_s_incl_nl=n_atoms / (r["median_s"] + nl_s))
                        outputs[(mname, n_atoms, bname, dname)] = kept
                        last[(mname, bname, dname)] = (n_atoms, r["median_s"])
                        print(f"[energy_forces] {case}: {1e3 * r['median_s']:.2f} ms/call, "
                              f"{r['atom_steps_per_s']:.3g} atom-steps/s, peak {r['peak_memory_MiB']:.0f} MiB, "
                              f"nl {nl_s:.3f} s ({nl_method})", flush=True)
                    res.data["energy_forces"].append(rec)
                    res.save(budget)
                    free_memory(device)
            del nl
            free_memory(device)
            precision(res, outputs, mname, n_atoms, backends_for(mname))
            res.save(budget)
    return outputs


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def precision(res, outputs, mname, n_atoms, backends):
    for b in backends:
        o64, o32 = outputs.get((mname, n_atoms, b, "float64")), outputs.get((mname, n_atoms, b, "float32"))
        if o64 is not None and o32 is not None:
            e = rel(o32[K.ENERGY], o64[K.ENERGY])
            res.data["precision"].append({
                "model": mname, "atoms": n_atoms, "backend": b, "energy_rel_error": e,
                "forces_rel_error": rel(o32[K.FORCES], o64[K.FORCES]),
                "virial_rel_error": rel(o32[K.VIRIAL], o64[K.VIRIAL]),
                "energy_fp64_eV": float(o64[K.ENERGY][0]), "energy_fp32_eV": float(o32[K.ENERGY][0]),
                "target_energy_rel_error": ENERGY_RTOL_TARGET, "meets_target": e <= ENERGY_RTOL_TARGET})
    ref = backends[0] if backends else None
    for b in backends[1:]:
        for dname in ("float64", "float32"):
            o, r = outputs.get((mname, n_atoms, b, dname)), outputs.get((mname, n_atoms, ref, dname))
            if o is not None and r is not None:
                res.data["backend_agreement"].append({
                    "model": mname, "atoms": n_atoms, "dtype": dname, "backend": b, "against": ref,
                    **{f"{k}_rel_error": rel(o[k], r[k]) for k in (K.ENERGY, K.FORCES, K.VIRIAL)}})


# ---------------------------------------------------------------- (c)


def bench_largest(res, a, device, budget, backend):
    out = res.data["largest_system"]
    mname = a.large_model
    meta = model_meta(mname)
    dtype = getattr(torch, a.large_dtype)
    out.update(model=mname, **meta, dtype=a.large_dtype, backend=backend, step_cap_s=a.step_cap_s)
    prev = None
    for reps in parse_sizes(a.large_sizes):
        n = 8 * int(np.prod(reps))
        if prev is not None:
            n0, t_step, t_total = prev
            est = t_total * n / n0
            if est > budget.left():
                out["stopped_because"] = (f"budget: {n} atoms estimated {est:.0f} s (incl. neighbour list), "
                                          f"{budget.left():.0f} s left")
                break
        if budget.left() <= 0:
            out["stopped_because"] = "budget spent"
            break
        t_start = time.perf_counter()
        rec = {"atoms": n, "reps": list(reps)}

        def run():
            fast = cell_list_fn() is not None or _have_vesin()
            got = None
            if a.nl != "tile" and (fast or a.nl == "cpu"):
                pos, numbers, cell = diamond(reps, LATTICE["Si"], ["Si"], seed=1)
                got = attempt(res, "largest_system", f"{n} atoms neighbour list", device,
                              lambda p=pos, c=cell: neighbours(res, f"largest {n} atoms", p, c, meta["rcut"], device,
                                                               a.nl))
                if got is None:
                    rec["nl_error"] = res.data["errors"][-1]["error"]
            if got is not None:
                nl, method, nl_s = got
                rec["structure"] = f"Si diamond x{reps}, rattle {RATTLE} Å"
            else:  # no fast list here (or it failed): tile a rattled cell (a periodic rattle) and its list
                b = max(d for d in range(1, 7) if all(r % d == 0 for r in reps))
                bpos, _, bcell = diamond((b, b, b), LATTICE["Si"], ["Si"], seed=1)
                t0 = time.perf_counter()
                pos, cell, nl = tiled_neighbours(bpos, bcell, [r // b for r in reps], meta["rcut"], device)
                sync(device)
                nl_s, method = time.perf_counter() - t0, f"tiled from a {8 * b ** 3}-atom cell"
                numbers = np.full(n, 14)
                rec["structure"] = f"Si diamond x{reps}: a {8 * b ** 3}-atom rattled cell repeated (periodic rattle)"
            rec.update(nl_method=method, nl_build_s=nl_s, edges=int(nl[0].shape[0]))
            m = model_on(mname, device, dtype)
            batch = make_batch(pos, numbers, cell, nl, m, dtype, device)
            del nl, pos
            r, _ = time_calls(m, batch, backend, device, min(a.warmup, 1), min(a.repeats, 2), a.max_measure_s)
            return r
        r = attempt(res, "largest_system", f"{n} atoms", device, run)
        if r is None:
            err = res.data["errors"][-1]
            rec.update(status="oom" if err["oom"] else "failed", error=err["error"])
            out["runs"].append(rec)
            out["stopped_because"] = f"{n} atoms: {rec['status']}"
            res.save(budget)
            break
        rec.update(r, status="ok", time_per_step_s=r["median_s"])
        out["runs"].append(rec)
        out["largest_ok"] = {"atoms": n, "time_per_step_s": r["median_s"], "atom_steps_per_s": r["atom_steps_per_s"],
                             "peak_memory_MiB": r["peak_memory_MiB"]}
        print(f"[largest_system] {n} atoms: {r['median_s']:.3f} s/step, peak {r['peak_memory_MiB']:.0f} MiB",
              flush=True)
        res.save(budget)
        free_memory(device)
        prev = (n, r["median_s"], time.perf_counter() - t_start)
        if r["median_s"] > a.step_cap_s:
            out["stopped_because"] = f"time per step {r['median_s']:.1f} s > cap {a.step_cap_s} s"
            break
    else:
        out["stopped_because"] = out["stopped_because"] or "all sizes ran"
    res.save(budget)


def _have_vesin():
    from torchace.structures.neighbours.pairs import _vesin
    return _vesin() is not None


# ---------------------------------------------------------------- (d)


def data_dir(a):
    for d in (a.data_dir, os.environ.get("TORCHACE_DATA_DIR"), os.path.join(REPO, "shared", "data"),
              os.path.join(REPO, "..", "shared", "data")):
        if d and os.path.isdir(d):
            return os.path.abspath(d)
    return None


def assembly_dataset(a, target_atoms, max_structures=None):
    """(Dataset, description): Zuo Si train (or Si_tiny) replicated with fresh rattles up to ``target_atoms``,
    or rattled 64-atom diamond cells with random labels when the data are absent."""
    from torchace.fit.data import Dataset, Labelled, read_data

    d = data_dir(a)
    src = None
    if d is not None:
        files = ("zuo2020/Si_train.xyz.gz", "acedata/Si_tiny.xyz")
        for rel_path in (files[::-1] if a.dry_run else files):  # dry run: the small file (fast to read)
            if os.path.exists(os.path.join(d, rel_path)):
                src = os.path.join(d, rel_path)
                break
    base = []
    if src is not None:
        base = [s for s in read_data(src) if s.config_type != "isolated_atom" and len(s.atoms) > 0]
        if a.dry_run:
            base = [s for s in base if s.n_atoms <= 16][:3] or base[:2]
    if not base:
        from ase import Atoms
        rng = np.random.default_rng(5)
        for k in range(1 if a.dry_run else 64):
            reps = (1, 1, 1) if a.dry_run else (2, 2, 2)
            p, z, c = diamond(reps, LATTICE["Si"], ["Si"], seed=100 + k)
            at = Atoms(numbers=z, positions=p, cell=c, pbc=True)
            base.append(Labelled(at, float(rng.normal() - 5 * len(at)), rng.normal(size=(len(at), 3)),
                                 rng.normal(size=(3, 3)), "dia", f"synthetic:{k}"))
        src = "synthetic rattled diamond Si cells (no data directory found)"
    out, total, rep = [], 0, 0
    while total < target_atoms and (max_structures is None or len(out) < max_structures):
        for k, s in enumerate(base):
            at = s.atoms.copy()
            if rep > 0:
                at.rattle(RATTLE, seed=1000 * rep + k)
            out.append(Labelled(at, s.energy, s.forces, s.virial, s.config_type, f"{s.source}#rep{rep}"))
            total += s.n_atoms
            if total >= target_atoms or (max_structures is not None and len(out) >= max_structures):
                break
        rep += 1
    return Dataset(out), {"source": src, "structures": len(out), "atoms": total, "replicas": rep,
                          "rattle": RATTLE}


def bench_assembly(res, a, device, budget, requested):
    from torchace.fit.assembly import assemble_reduced, fitting_structures, structure_batches
    from torchace.fit.driver import solve_system

    out = res.data["assembly"]
    mname = a.assembly_model
    meta = model_meta(mname)
    model = model_on(mname, device, torch.float64)
    reasons = backend_reasons(model, device, registry.ROWS, requested)
    rows_backend = next((b for b in requested if b != registry.AUTO and b in reasons and reasons[b] is None), "auto")
    out.update(model=mname, **meta, device=str(device), method="normal", batch_atoms=a.assembly_batch_atoms,
               rows_backend=rows_backend, rows_reasons=reasons)
    t0 = time.perf_counter()
    ds, desc = assembly_dataset(a, a.assembly_atoms, 3 if a.dry_run else None)
    out.update(dataset=desc, dataset_build_s=time.perf_counter() - t0)
    structs = fitting_structures(ds)
    batch_sizes = [sum(s.n_atoms for s in b) for b in structure_batches(structs, a.assembly_batch_atoms)]
    out.update(n_batches=len(batch_sizes))
    res.save(budget)
    k = model.basis_size
    f64 = dict(dtype=torch.float64, device=device)
    state = {"n_batches": torch.tensor(0), "n_obs": torch.tensor(0), "AtA": torch.zeros(k, k, **f64),
             "Aty": torch.zeros(k, **f64), "yty": torch.zeros((), **f64)}
    marks = {}
    t_start = time.perf_counter()
    deadline = min(a.assembly_max_s, budget.left() - a.solve_reserve_s)
    out["time_cap_s"] = deadline

    def on_batch(nb, st):
        sync(device)
        marks["last"] = (nb, time.perf_counter() - t_start)
        if time.perf_counter() - t_start > deadline and nb < len(batch_sizes):
            raise BudgetExceeded(f"stopped after {nb} of {len(batch_sizes)} batches")

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    system = None
    try:
        system = assemble_reduced(model, ds, method="normal", device=device, batch_atoms=a.assembly_batch_atoms,
                                  backend=rows_backend, on_batch=on_batch, state=state)
        sync(device)
        out.update(status="ok", assembly_s=time.perf_counter() - t_start)
    except BudgetExceeded as exc:
        out.update(status="partial (budget)", note=str(exc))
    except Exception as exc:  # noqa: BLE001
        out.update(status="failed", error=res.error("assembly", "assemble_reduced", exc))
    free_memory(device)
    nb, t_rows = marks.get("last", (0, 0.0))
    done = sum(batch_sizes[:nb])
    out.update(batches_done=nb, atoms_done=done, rows_s=t_rows, n_obs=int(state["n_obs"]), **peak_memory(device))
    if done:
        out["atoms_per_s"] = done / max(t_rows, 1e-12)
        out["estimated_full_assembly_s"] = t_rows * desc["atoms"] / done
    if system is not None:
        out["reduction_eigh_s"] = out["assembly_s"] - t_rows
    res.save(budget)
    if nb == 0:
        return
    # the solve: the k×k system (the reduction of assemble_reduced, when the assembly stopped early)
    if system is None:
        def reduce():
            from torchace.fit.data import Dataset
            t = time.perf_counter()
            s = assemble_reduced(model, Dataset([]), method="normal", device=device, state=state)
            sync(device)
            out["reduction_eigh_s"] = time.perf_counter() - t
            return s
        system = attempt(res, "assembly", "reduction of the partial normal equations", device, reduce)
    if system is not None:
        def solve_qr():
            t = time.perf_counter()
            sol = solve_system(system, torchace.solvers.QR(lam=a.lam))
            sync(device)
            out.update(solve_qr_s=time.perf_counter() - t, solve_qr_finite=bool(torch.isfinite(sol.coefficients).all()))
        attempt(res, "assembly", "solve_system QR", device, solve_qr)
        res.save(budget)

    def solve_chol():
        t = time.perf_counter()
        H = state["AtA"] + a.lam ** 2 * torch.eye(k, **f64)
        L = torch.linalg.cholesky(H)
        c = torch.cholesky_solve(state["Aty"].unsqueeze(1), L)
        sync(device)
        out.update(solve_cholesky_s=time.perf_counter() - t, solve_cholesky_finite=bool(torch.isfinite(c).all()))
    attempt(res, "assembly", "cholesky solve of the normal equations", device, solve_chol)
    out["lam"] = a.lam
    res.save(budget)


# ---------------------------------------------------------------- markdown


def _f(x, fmt="{:.3g}"):
    return "—" if x is None else (fmt.format(x) if isinstance(x, (int, float)) else str(x))


def markdown(d):
    m = d.get("machine", {})
    lines = ["# bench_gpu", "",
             f"{m.get('gpu') or 'CPU'}; torch {m.get('torch')} (CUDA {m.get('torch_cuda')}), triton "
             f"{m.get('triton')}, TRITON_INTERPRET={m.get('TRITON_INTERPRET')}; budget "
             f"{_f(d['budget'].get('used_s'), '{:.0f}')} of {_f(d['budget'].get('budget_s'), '{:.0f}')} s"
             f"{'' if d.get('finished') else ' (not finished)'}", ""]
    for name, b in d.get("backends", {}).items():
        lines.append(f"- backends for {name}: measured {b.get('measured')}, auto → {b.get('auto_selects', '—')}, "
                     f"not measured: {b.get('not_measured', {})}")
    lines += ["", "## Energy + forces + virial per call", "",
              "| model | K | dtype | atoms | backend | ms/call | atom-steps/s | NL s (method) | peak MiB | status |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["energy_forces"]:
        lines.append(f"| {r['model']} | {r['basis_size']} | {r['dtype']} | {r['atoms']} | {r.get('backend', '—')} | "
                     f"{_f(1e3 * r['median_s'] if 'median_s' in r else None, '{:.2f}')} | "
                     f"{_f(r.get('atom_steps_per_s'), '{:.3g}')} | {_f(r.get('nl_build_s'), '{:.3f}')} "
                     f"({r.get('nl_method')}) | {_f(r.get('peak_memory_MiB'), '{:.0f}')} | "
                     f"{r['status'] if r['status'] == 'ok' else r.get('error', '')[:80]} |")
    lines += ["", "## fp32 against fp64 (target energy rel. error ≤ 1e-6)", "",
              "| model | atoms | backend | energy | forces | virial | meets |", "|---|---|---|---|---|---|---|"]
    for r in d["precision"]:
        lines.append(f"| {r['model']} | {r['atoms']} | {r['backend']} | {r['energy_rel_error']:.2e} | "
                     f"{r['forces_rel_error']:.2e} | {r['virial_rel_error']:.2e} | {r['meets_target']} |")
    for r in d["backend_agreement"]:
        lines.append(f"- {r['backend']} vs {r['against']} ({r['model']}, {r['atoms']} atoms, {r['dtype']}): energy "
                     f"{r['energy_rel_error']:.2e}, forces {r['forces_rel_error']:.2e}, "
                     f"virial {r['virial_rel_error']:.2e}")
    ls = d["largest_system"]
    lines += ["", f"## Largest Si system ({ls.get('model')}, K = {ls.get('basis_size')}, {ls.get('dtype')}, "
              f"{ls.get('backend')})", "", "| atoms | s/step | atom-steps/s | NL s | peak MiB | status |",
              "|---|---|---|---|---|---|"]
    for r in ls["runs"]:
        lines.append(f"| {r['atoms']} | {_f(r.get('time_per_step_s'))} | {_f(r.get('atom_steps_per_s'), '{:.3g}')} | "
                     f"{_f(r.get('nl_build_s'))} | {_f(r.get('peak_memory_MiB'), '{:.0f}')} | "
                     f"{r['status'] if r['status'] == 'ok' else r.get('error', '')[:80]} |")
    lines += ["", f"largest that ran: {ls.get('largest_ok')}; stopped: {ls.get('stopped_because')}"]
    asm = d.get("assembly", {})
    if asm:
        ds = asm.get("dataset", {})
        lines += ["", f"## Assembly ({asm.get('model')}, K = {asm.get('basis_size')}, rows backend "
                  f"{asm.get('rows_backend')}, method normal)", "",
                  f"- data: {ds.get('source')}: {ds.get('structures')} structures, {ds.get('atoms')} atoms",
                  f"- status {asm.get('status')}: {asm.get('atoms_done')} atoms in {_f(asm.get('rows_s'))} s "
                  f"({_f(asm.get('atoms_per_s'), '{:.3g}')} atoms/s; full set est. "
                  f"{_f(asm.get('estimated_full_assembly_s'))} s); reduction (eigh) "
                  f"{_f(asm.get('reduction_eigh_s'))} s",
                  f"- solve: solve_system QR {_f(asm.get('solve_qr_s'))} s, Cholesky "
                  f"{_f(asm.get('solve_cholesky_s'))} s; "
                  f"peak {_f(asm.get('peak_memory_MiB'), '{:.0f}')} MiB"]
    if d["skipped"]:
        lines += ["", "## Skipped", ""] + [f"- [{s['section']}] {s['case']}: {s['reason']}" for s in d["skipped"]]
    if d["errors"]:
        lines += ["", "## Errors", ""] + [f"- [{e['section']}] {e['case']}: {e['error'][:300]}" for e in d["errors"]]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--backend", default="auto", help="comma-separated backend names, e.g. triton,analytic")
    ap.add_argument("--json", default="bench_gpu.json")
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes and small models, 1 repeat (CPU, seconds)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per case (default 5; dry run 1)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 2; dry run 0)")
    ap.add_argument("--budget-s", type=float, default=300.0, help="cumulative time budget of the whole run")
    ap.add_argument("--max-measure-s", type=float, default=20.0, help="cap on the timed calls of one case")
    ap.add_argument("--step-cap-s", type=float, default=20.0, help="largest-system search stops above this s/step")
    ap.add_argument("--ef-sizes", default=None, help="atom targets or NxMxK repetitions (default 8000,64000)")
    ap.add_argument("--large-sizes", default=None, help="default 64000,256000,1000000,2000000,4000000")
    ap.add_argument("--large-model", default=None, choices=list(MODELS), help="default si3_12")
    ap.add_argument("--large-dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--nl", default="auto", choices=["auto", "cell_list", "cpu", "tile"],
                    help="neighbour list: the device cell list if present (auto), or the CPU list; 'tile' (largest "
                         "system only): a rattled cell repeated, its list mapped (auto uses it without a fast list)")
    ap.add_argument("--assembly-atoms", type=int, default=150_000)
    ap.add_argument("--assembly-batch-atoms", type=int, default=None, help="default 4096 (CUDA), 2048 (CPU)")
    ap.add_argument("--assembly-model", default=None, choices=list(MODELS), help="default si4_20")
    ap.add_argument("--ef-share", type=float, default=0.45, help="share of --budget-s for the E+F section")
    ap.add_argument("--assembly-share", type=float, default=0.3, help="share of --budget-s for the assembly")
    ap.add_argument("--assembly-max-s", type=float, default=90.0,
                    help="the assembly stops after the batch that passes this (its rate gives the full time)")
    ap.add_argument("--solve-reserve-s", type=float, default=None, help="budget kept for the solve (default 15)")
    ap.add_argument("--lam", type=float, default=1e-3, help="Tikhonov λ of the timed solves")
    ap.add_argument("--data-dir", default=None, help="the shared data folder (default ../shared/data if present)")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: ef,largest,assembly")
    a = ap.parse_args(argv)
    dry = a.dry_run
    a.repeats = a.repeats if a.repeats is not None else (1 if dry else 5)
    a.warmup = a.warmup if a.warmup is not None else (0 if dry else 2)
    a.ef_sizes = a.ef_sizes or ("2x1x1,2x2x2" if dry else "8000,64000")
    a.large_sizes = a.large_sizes or ("2x1x1,2x2x1,2x2x2" if dry else "64000,256000,1000000,2000000,4000000")
    a.large_model = a.large_model or ("si3_8" if dry else "si3_12")
    a.assembly_model = a.assembly_model or ("si3_8" if dry else "si4_20")
    a.sige_model, a.si_model = ("sige2_6", "si3_8") if dry else ("sige3_9", "si4_20")
    a.solve_reserve_s = a.solve_reserve_s if a.solve_reserve_s is not None else (2.0 if dry else 15.0)
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    requested = [b.strip() for b in a.backend.split(",") if b.strip()] or ["auto"]

    budget = Budget(a.budget_s)
    res = Results(a.json, a.markdown)
    res.budget = budget
    res.data["config"] = {k: v for k, v in vars(a).items()}
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        res.data["machine"] = machine_info(torch.device("cpu"))
        res.data["skipped_all"] = "--device cuda requested but no CUDA GPU is available here"
        print(f"bench_gpu: {res.data['skipped_all']}", flush=True)
        res.data["finished"] = True
        res.save(budget)
        return 3  # asked for and impossible: the device script reports it as failed
    res.data["machine"] = machine_info(device)

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)

    try:
        for name in sorted({a.sige_model, a.si_model, a.large_model, a.assembly_model, "si4_20", "sige3_9"}):
            got = attempt(res, "models", name, device, lambda: model_meta(name))
            if got is not None:
                res.data["models"][name] = got
                print(f"model {name}: {got['elements']} order {got['order']} totaldegree {got['totaldegree']}, "
                      f"rcut {got['rcut']} Å: n_b = {got['n_b']}, K = {got['basis_size']}", flush=True)
        res.save(budget)
        cache = {}

        def backends_for(mname):
            if mname not in cache:
                m = model_on(mname, device, torch.float64)
                cache[mname] = resolve_backends(res, m, mname, device, requested)
            return cache[mname]

        # section shares: E+F first (the kernels' numbers), then the assembly, then the largest system
        ef_budget = budget.share(a.ef_share if {"assembly", "largest"} - skip else 1.0)
        if "ef" not in skip:
            attempt(res, "energy_forces", "all", device,
                    lambda: bench_energy_forces(res, a, device, ef_budget, backends_for))
        res.save(budget)
        if "assembly" not in skip:
            a.assembly_batch_atoms = a.assembly_batch_atoms or (4096 if device.type == "cuda" else 2048)
            asm_budget = budget.share(a.assembly_share if "largest" not in skip else 1.0)
            if asm_budget.left() > a.solve_reserve_s:
                attempt(res, "assembly", "all", device, lambda: bench_assembly(res, a, device, asm_budget, requested))
            else:
                res.skip("assembly", "all", "budget spent")
        res.save(budget)
        if "largest" not in skip:
            if budget.left() > 0:
                bl = backends_for(a.large_model)[0]
                attempt(res, "largest_system", "all", device, lambda: bench_largest(res, a, device, budget, bl))
            else:
                res.skip("largest_system", "all", "budget spent")
        res.data["finished"] = True
    finally:
        res.save(budget)
        print(f"wrote {a.json}" + (f" and {a.markdown}" if a.markdown else "") +
              f" ({budget.used():.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
