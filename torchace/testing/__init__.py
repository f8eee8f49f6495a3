"""Reusable test kit: random structures, symmetry operations, finite differences, TorchScript round trip, and
child processes with a timeout that kills their whole process group (``run``, ``spawn``).

Used by torchace's own tests and meant for downstream models built on it.  Tolerances are per dtype.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk

from .. import keys as K
from ..model.evaluate import evaluate

# relative tolerances for invariance / agreement checks
RTOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def has_module(name: str) -> bool:
    """Whether ``import name`` would find the module.  ``importlib.util.find_spec("a.b")`` imports ``a`` and
    raises ModuleNotFoundError when ``a`` is absent (a test file's skip condition must not crash collection)."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # parent package missing, or a module with __spec__ None
        return False


def available_devices() -> List[str]:
    devs = ["cpu"]
    if torch.cuda.is_available():
        devs.append("cuda")
    return devs


def random_rotation(rng: np.random.Generator, reflect: bool = False) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return -q if reflect else q


def rattled_bulk(symbols: Sequence[str], a: float = 5.43, reps=(1, 1, 1), rattle: float = 0.1, seed: int = 0,
                 cubic: bool = True) -> Atoms:
    """Diamond-structure crystal with species assigned at random from ``symbols``, rattled."""
    at = bulk("Si", "diamond", a=a, cubic=cubic) * reps
    rng = np.random.default_rng(seed)
    at.set_chemical_symbols(list(rng.choice(list(symbols), len(at))))
    at.rattle(rattle, seed=seed)
    return at


def rattled_sige_cells(seed: int = 7) -> List[Atoms]:
    """A cubic and a triclinic 8-atom SiGe diamond cell (half the sites Ge, rattled 0.15 Å): the structures the
    .yace export checks use."""
    rng = np.random.default_rng(seed)
    cubic = bulk("Si", "diamond", a=5.5, cubic=True)
    tric = bulk("Si", "diamond", a=5.5) * (2, 2, 1)  # fcc primitive vectors
    tric.set_cell(tric.cell.array @ np.array([[1.0, 0.05, 0.0], [0.0, 1.0, 0.04], [0.03, 0.0, 0.97]]),
                  scale_atoms=True)
    out = []
    for at in (cubic, tric):
        at.numbers[rng.permutation(len(at))[: len(at) // 2]] = 32
        at.positions += rng.normal(scale=0.15, size=at.positions.shape)
        out.append(at)
    return out


def random_cluster(symbols: Sequence[str], n: int, radius: float, seed: int = 0, min_dist: float = 1.5) -> Atoms:
    """Non-periodic cluster of ``n`` atoms in a ball, no pair closer than ``min_dist``."""
    rng = np.random.default_rng(seed)
    pos: List[np.ndarray] = []
    while len(pos) < n:
        p = rng.uniform(-radius, radius, 3)
        if np.linalg.norm(p) <= radius and all(np.linalg.norm(p - q) >= min_dist for q in pos):
            pos.append(p)
    return Atoms(symbols=list(rng.choice(list(symbols), n)), positions=np.array(pos))


def randomize_coefficients(model, scale: float = 0.1, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(model.basis_size, generator=g, dtype=torch.float64) * scale
    model.coefficients = c.to(model.coefficients.dtype)


def energy_of(model, atoms: Atoms) -> float:
    return float(evaluate(model, atoms, forces=False, virials=False)[K.ENERGY][0])


def fd_forces(model, atoms: Atoms, h: float = 1e-4) -> np.ndarray:
    """Central finite differences -dE/dx of the model energy, [N, 3]."""
    f = np.zeros((len(atoms), 3))
    for a in range(len(atoms)):
        for d in range(3):
            ap, am = atoms.copy(), atoms.copy()
            ap.positions[a, d] += h
            am.positions[a, d] -= h
            f[a, d] = -(energy_of(model, ap) - energy_of(model, am)) / (2 * h)
    return f


def strained(atoms: Atoms, eps: np.ndarray) -> Atoms:
    """Copy of ``atoms`` with cell and positions deformed by (I + eps) (row vectors)."""
    F = np.eye(3) + eps
    at = atoms.copy()
    at.set_cell(atoms.cell.array @ F, scale_atoms=False)
    at.positions = atoms.positions @ F
    return at


def labelled_dataset(n: int = 6, seed: int = 0):
    """Small SiGe ``Dataset`` (crystals and clusters, random energy/force/stress labels, two config_types)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from ..fit.data import read_data

    rng = np.random.default_rng(seed)
    structs = []
    for k in range(n):
        at = (rattled_bulk(["Si", "Ge"], seed=k, reps=(1, 1, 1 + k % 2)) if k % 3
              else random_cluster(["Si", "Ge"], 6, 3.0, seed=k))
        kw = dict(energy=float(rng.normal()) - 5 * len(at), forces=rng.normal(size=(len(at), 3)))
        if at.pbc.all():
            kw["stress"] = rng.normal(size=6) * 0.01
        at.calc = SinglePointCalculator(at, **kw)
        at.info["config_type"] = "liq" if k % 2 else "dia"
        structs.append(at)
    return read_data(structs)


def model_labelled(model, symbols: Sequence[str], n: int = 6, seed: int = 0, noise: float = 0.01) -> List[Atoms]:
    """``n`` structures (clusters and rattled crystals, alternating) labelled with ``model``'s energies and its
    forces plus N(0, noise²) (seeded): data a model of that form can fit to the noise."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from .. import keys as K
    from ..model.evaluate import evaluate

    g = np.random.default_rng(seed)
    out = []
    for k in range(n):
        at = rattled_bulk(symbols, seed=seed + k) if k % 2 else random_cluster(symbols, 6, 3.0, seed=seed + k)
        o = evaluate(model, at)
        at.calc = SinglePointCalculator(at, energy=float(o[K.ENERGY][0]),
                                        forces=o[K.FORCES].numpy() + noise * g.standard_normal((len(at), 3)))
        out.append(at)
    return out


def fd_virial(model, atoms: Atoms, h: float = 1e-5) -> np.ndarray:
    """Central finite differences W = -dE/dε for symmetric strains (cell and positions deformed), [3, 3]."""
    W = np.zeros((3, 3))
    for a in range(3):
        for b in range(a, 3):
            eps = np.zeros((3, 3))
            eps[a, b] = eps[b, a] = 0.5 if a != b else 1.0
            vals = [energy_of(model, strained(atoms, s * eps)) for s in (h, -h)]
            # for a != b, the strain perturbs ε_ab and ε_ba each by h/2
            W[a, b] = W[b, a] = -(vals[0] - vals[1]) / (2 * h)
    return W


def scripted(model) -> torch.jit.ScriptModule:
    """TorchScript copy of ``model`` (call it through ``evaluate(model, ..., module=...)``)."""
    return torch.jit.script(model)


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def results_close(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor], rtol: float,
                  keys=(K.ENERGY, K.FORCES, K.VIRIAL)) -> Dict[str, float]:
    """Relative max deviation per key; raises AssertionError naming the key that exceeds ``rtol``."""
    errs = {k: max_rel(a[k].cpu(), b[k].cpu()) for k in keys if k in a and k in b}
    bad = {k: v for k, v in errs.items() if not v <= rtol}
    assert not bad, f"relative deviation above {rtol}: {bad}"
    return errs


def site_basis_envs(model, envs) -> torch.Tensor:
    """Many-body site basis B [n_envs, n_b] of single environments.

    ``envs``: iterable of (centre atomic number, neighbour atomic numbers [M], displacements [M, 3] in Å).
    Only centre→neighbour edges are used, so this is B of the centre atom alone.
    """
    z2s = {z: s for s, z in enumerate(model.config.numbers)}
    dev, dt = model.coefficients.device, model.coefficients.dtype
    vecs, spc, ei, ej = [], [], [], []
    off = 0
    for zc, zn, R in envs:
        R = np.asarray(R, dtype=np.float64).reshape(-1, 3)
        m = len(R)
        spc += [z2s[int(zc)]] + [z2s[int(z)] for z in zn]
        ei += [off] * m
        ej += list(range(off + 1, off + 1 + m))
        vecs.append(R)
        off += m + 1
    species = torch.tensor(spc, dtype=torch.long, device=dev)
    edge_index = torch.tensor([ei, ej], dtype=torch.long, device=dev)
    vectors = torch.tensor(np.concatenate(vecs), dtype=dt, device=dev)
    with torch.no_grad():
        A = model.atomic_basis(vectors, species, edge_index)
        B = model.site_basis(A)
    centres = torch.tensor(np.cumsum([0] + [len(np.asarray(R).reshape(-1, 3)) + 1 for _, _, R in envs])[:-1],
                           device=dev)
    return B[centres]


def random_envs(rng: np.random.Generator, numbers: Sequence[int], n_envs: int, n_neigh: int, rmin: float,
                rmax: float):
    """Random environments (centre Z, neighbour Zs, displacements) with rmin <= r < rmax."""
    envs = []
    for _ in range(n_envs):
        d = rng.standard_normal((n_neigh, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        r = rng.uniform(rmin, rmax, n_neigh)
        envs.append((int(rng.choice(numbers)), rng.choice(numbers, n_neigh).astype(int), d * r[:, None]))
    return envs


# ---- backend agreement (every backend against ``reference``; torchace.backends) ----

# per-dtype tolerances of a backend against the reference (relative to the largest value of each output)
BACKEND_RTOL = {torch.float64: 1e-12, torch.float32: 2e-4}


def backend_agreement(model, structures, backend: str, task: str = "evaluate", skin: float = 0.0) -> Dict[str, float]:
    """Relative max deviations of ``backend`` from ``reference`` on ``structures`` for ``task`` ("evaluate":
    energy, site energies, forces, virial; "rows": the three row blocks), with a neighbour list of cutoff
    rcut + ``skin`` (skin edges must contribute exactly zero).  Raises AssertionError above
    ``BACKEND_RTOL``."""
    from ..model.backends import select
    from ..model.evaluate import model_inputs
    from ..structures.batch import collate

    p = model.coefficients
    batch = collate(structures, model.config.numbers, model.rcut + skin, dtype=p.dtype, device=p.device)
    ref_b, got_b = select(model, p.device, "reference", task), select(model, p.device, backend, task)
    if task == "rows":
        ref, got = ref_b.rows(model, batch, 256 * 2**20), got_b.rows(model, batch, 256 * 2**20)
        keys = (K.ENERGY, K.FORCES, K.VIRIAL)
    else:
        inp = model_inputs(model, batch)
        ref = {k: v.detach() for k, v in ref_b.evaluator(model)(*inp, True, True).items()}
        got = {k: v.detach() for k, v in got_b.evaluator(model)(*inp, True, True).items()}
        keys = (K.ENERGY, K.NODE_ENERGY, K.FORCES, K.VIRIAL)
    for k in keys:
        assert got[k].shape == ref[k].shape, (backend, task, k, tuple(got[k].shape), tuple(ref[k].shape))
    return results_close(got, ref, BACKEND_RTOL[p.dtype], keys)


# ---- child processes (tests and scripts): always a timeout, always the whole process group ----

class ChildTimeout(subprocess.TimeoutExpired):
    """A child (and everything it started) killed after ``timeout`` seconds; the message ends with the tail of
    its output, so that a hung test says where it hung."""

    def __str__(self) -> str:
        tail = "".join(x if isinstance(x, str) else (x or b"").decode(errors="replace")
                       for x in (self.output, self.stderr))
        return f"{super().__str__()}; process group killed; output tail:\n{tail[-3000:]}"


class ChildFailed(subprocess.CalledProcessError):
    """``run(..., check=True)``: a non-zero exit, with the tail of the output in the message."""

    def __str__(self) -> str:
        return f"{super().__str__()}; output tail:\n{((self.output or '') + (self.stderr or ''))[-3000:]}"


def kill_group(p: subprocess.Popen) -> None:
    """SIGKILL the process group that ``p`` leads (started with ``start_new_session=True``): grandchildren too,
    which ``p.kill()`` would leave running (an MPI launcher's ranks, a LAMMPS child, a compiler)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # the group is already gone
        pass


@contextlib.contextmanager
def spawn(cmd: Sequence[str], **popen_kw) -> Iterator[subprocess.Popen]:
    """``subprocess.Popen(cmd, **popen_kw)`` in a new session, for a caller that reads or signals the child while
    it runs; on leaving the block (normally, on an error, on a failed assertion) the whole process group is
    killed and the child reaped."""
    p = subprocess.Popen(cmd, start_new_session=True, **popen_kw)
    try:
        yield p
    finally:
        kill_group(p)
        try:
            p.communicate(timeout=30)  # closes the pipes; the group is dead, so this returns at once
        except (subprocess.TimeoutExpired, ValueError):  # ValueError: a pipe the caller already closed
            p.wait(timeout=30)


def run(cmd: Sequence[str], *, timeout: float, env: Optional[Dict[str, str]] = None, cwd=None,
        input: Optional[str] = None, merge_stderr: bool = False, check: bool = False) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)`` with a mandatory ``timeout``, in its own process
    group: on timeout the group is killed (grandchildren included) and ``ChildTimeout`` raised with the output
    tail; after a normal exit anything the child left running in its group is killed as well.
    ``merge_stderr``: stderr into stdout (one stream in the order written).  ``check``: raise
    ``ChildFailed`` (a ``CalledProcessError``) on a non-zero exit, with the output tail."""
    with spawn(list(cmd), stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
               stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE, text=True,
               env=env, cwd=None if cwd is None else os.fspath(cwd)) as p:
        try:
            out, err = p.communicate(input=input, timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(p)
            out, err = p.communicate()
            raise ChildTimeout(p.args, timeout, output=out, stderr=err) from None
    res = subprocess.CompletedProcess(p.args, p.returncode, out, "" if merge_stderr else err)
    if check and res.returncode:
        raise ChildFailed(res.returncode, res.args, res.stdout, res.stderr)
    return res
