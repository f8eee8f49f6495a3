"""Fused C++ CPU kernels for linear ACE: energy/forces/virials and design-matrix rows (optional accelerator).

The eager and compiled analytic paths (``ACEModel.analytic_forward``, ``torch_rows.torch_rows``) make ~20 passes
over [n_a, E] arrays per step; these kernels do the same algebra (radials → harmonics → A → AA/B, then
∂E/∂A through coupled pairs or a shared-prefix product DAG (``products.py``), or J = ∂B/∂A for rows, and
∂/∂r per edge; ACEpotentials.jl paper §II) one centre atom at a time with its edges in cache, as ML-PACE does, on
torch's intra-op threads.
Source: ``torchace/model/backends/csrc/ace_cpu.cpp``, compiled on first use with ``torch.utils.cpp_extension.load``
(a C++ compiler and ninja are needed; ≈ 30 s, cached afterwards in a directory of its own per environment,
``build_directory()``, under a lock that a killed build never leaves held).  Without them
``available()`` is False and callers keep the Python paths.  Compiler flags: ``-O3 -march=native`` (the
build is for this machine; ``TORCHACE_FUSED_CFLAGS`` overrides them, e.g. when the extension cache is
shared between different CPUs).

``FusedEvaluator(model)`` has the call signature of ``ACEModel.forward`` in eval mode and returns the same
dictionary (plus ``CLOSEST_PAIR``); ``FusedEvaluator(model, committee=True)`` also returns
``COMMITTEE_ENERGY``, the structure energies of every member of ``model.committee`` ([n_members,
n_structures], E0 included), from the same pass (the model is linear in its coefficients: one extra dot per
atom and member; forces and virials stay those of ``model.coefficients``).  ``design_rows(model, batch)``
returns what ``torch_rows.torch_rows`` does.  Both are tested against the reference paths (``tests/test_fused.py``,
``tests/test_fused_committee.py``).  Not differentiable (inference and rows only), CPU only; the ZBL
baseline is not in the kernel (``FusedEvaluator`` refuses such models unless ``skip_baseline=True``: the
``fused`` backend, ``torchace.backends``, adds it in torch).
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Dict, Optional

import torch
from torch import nn

from ... import keys as K
from ...basis.radial import agnesi_a
from ...structures.geometry import edge_vectors
from ..strain import edge_gradient_outputs
from ..watch import Derived
from .products import coefficient_count, fixed_embedding, product_args, product_coefficients, product_scheme
from .torch_rows import jacobian_pattern

# extra output: [distance (Å), edge index] of the closest pair in the list (-1 without edges), so that
# callers can reject atoms on top of each other without another pass over the edges
CLOSEST_PAIR = "closest_pair"
# extra output of FusedEvaluator(model, committee=True): [n_members, n_structures] energies of the members of
# model.committee (absent when the model has no committee)
COMMITTEE_ENERGY = "committee_energy"

EXTENSION_NAME = "torchace_ace_cpu"
_LOCK = threading.Lock()
_EXT = None
_ERROR: Optional[str] = None


def _source() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "ace_cpu.cpp")


# seconds a process waits for another one building the kernel in the same cache directory before it gives
# up naming the lock (TORCHACE_BUILD_WAIT overrides); the lock is an flock, so a killed builder never holds it
BUILD_WAIT = 900.0
_BUILT_MARK = "torchace_built.json"


def _flags() -> list:
    return os.environ.get("TORCHACE_FUSED_CFLAGS", "-O3 -march=native").split()


def build_key() -> Dict[str, str]:
    """What the compiled kernel depends on: torch (version, CUDA, C++ ABI), the interpreter and its environment
    (``sys.prefix``: two venvs never share, and so never rebuild over, one build), the compiler flags and the
    source: its content and its path (torch's ``build.ninja`` records the source path, so two checkouts of the
    same source in one environment would otherwise rebuild over each other).  Its hash names the build
    directory."""
    import hashlib
    import platform

    with open(_source(), "rb") as fh:
        src = hashlib.sha256(fh.read()).hexdigest()
    return {"torch": torch.__version__, "cuda": str(torch.version.cuda),
            "cxx11_abi": str(torch.compiled_with_cxx11_abi()), "python": sys.version.split()[0],
            "prefix": os.path.realpath(sys.prefix), "machine": platform.machine(),
            "flags": " ".join(_flags()), "source_sha256": src, "source": os.path.realpath(_source())}


def build_directory() -> str:
    """The kernel's own build directory for this environment: ``<root>/torchace_ace_cpu-<hash of build_key()>``,
    root = ``$TORCHACE_EXTENSIONS_DIR``, else ``$TORCH_EXTENSIONS_DIR``, else ``~/.cache/torchace/extensions``
    (``$XDG_CACHE_HOME`` respected).  Not torch's shared per-user folder, whose ``build.ninja`` embeds one
    venv's paths so that two environments rebuild over each other."""
    import hashlib
    import json

    root = os.environ.get("TORCHACE_EXTENSIONS_DIR") or os.environ.get("TORCH_EXTENSIONS_DIR")
    if not root:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(cache, "torchace", "extensions")
    digest = hashlib.sha256(json.dumps(build_key(), sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(root, f"{EXTENSION_NAME}-{digest}")


class _BuildLock:
    """An exclusive ``flock`` on ``<build dir>/build.lock`` held while the kernel is built or loaded.

    The operating system releases it when its holder exits, however it exits (Ctrl-C, SIGKILL, a scheduler's limit): a
    killed build never blocks a later run, unlike torch's own ``lock`` file (created with O_EXCL and removed
    only by its creator), which a later process would wait on for ever.  So, once this lock is held, a torch
    ``lock`` file left in the directory is stale and is removed.  The wait is bounded (``TORCHACE_BUILD_WAIT``
    seconds, default ``BUILD_WAIT``) and announced in one line."""

    def __init__(self, directory: str):
        self.directory = directory
        self.path = os.path.join(directory, "build.lock")
        self.fd = None

    def __enter__(self):
        import fcntl
        import time

        wait = float(os.environ.get("TORCHACE_BUILD_WAIT", BUILD_WAIT))
        os.makedirs(self.directory, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        t0, told = time.monotonic(), False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - t0 > wait:
                    os.close(self.fd)
                    self.fd = None
                    raise RuntimeError(
                        f"waited {wait:.0f} s for another process building the kernel (lock {self.path} is held); "
                        "if no torchace process is running, delete the directory "
                        f"{self.directory} and retry (TORCHACE_BUILD_WAIT sets the wait)") from None
                if not told:
                    print(f"torchace: waiting for another process building the fused C++ kernel (lock {self.path}; "
                          f"at most {wait:.0f} s)...", file=sys.stderr, flush=True)
                    told = True
                time.sleep(0.2)
        stale = os.path.join(self.directory, "lock")  # torch's FileBaton of a build that was killed
        if os.path.exists(stale):
            os.unlink(stale)
        return self

    def __exit__(self, *exc):
        import fcntl

        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
        return False


def _is_built(directory: str) -> bool:
    """Whether this environment's kernel was built and loaded before (then loading takes a second)."""
    import json

    try:
        with open(os.path.join(directory, _BUILT_MARK)) as fh:
            return json.load(fh) == build_key()
    except (OSError, ValueError):
        return False


def _mark_built(directory: str) -> None:
    from ...atomic import write_json_atomic

    try:
        write_json_atomic(os.path.join(directory, _BUILT_MARK), build_key())
    except OSError:  # only decides whether the next build prints its message
        pass


def load_extension(verbose: bool = False):
    """Compile (first call in this environment; cached on disk, ``build_directory()``) and import the C++
    extension; raises RuntimeError if impossible.  A build prints one line; so does a wait for another
    process's build (bounded: ``_BuildLock``)."""
    global _EXT, _ERROR
    with _LOCK:
        if _EXT is not None:
            return _EXT
        if _ERROR is not None:
            raise RuntimeError(_ERROR)
        try:
            from torch.utils.cpp_extension import load

            directory = build_directory()
            with _BuildLock(directory):
                built = _is_built(directory)
                if not verbose and not built:
                    print(f"torchace: building the fused C++ CPU kernel in {directory} (first use in this environment, "
                          "about a minute; cached afterwards)...", file=sys.stderr, flush=True)
                # OpenMP: ATen's inline parallel_for only runs in parallel in translation units built with it
                kw = dict(name=EXTENSION_NAME, sources=[_source()], extra_cflags=_flags() + ["-fopenmp"],
                          extra_ldflags=["-fopenmp"], build_directory=directory, verbose=verbose)
                try:
                    _EXT = load(**kw)
                except ImportError:
                    # a library left half-written by a killed link: ninja sees it as up to date; build afresh
                    for name in os.listdir(directory):
                        if name not in ("build.lock",):
                            full = os.path.join(directory, name)
                            if os.path.isfile(full) or os.path.islink(full):
                                os.unlink(full)
                    _EXT = load(**kw)
                if not built:
                    _mark_built(directory)
        except Exception as exc:  # no compiler / ninja / headers: the Python paths remain
            _ERROR = f"torchace's fused C++ kernel could not be built ({type(exc).__name__}: {exc})"
            raise RuntimeError(_ERROR) from exc
        return _EXT


def build_error() -> Optional[str]:
    """Why the extension could not be built (None: built, or not tried yet)."""
    return _ERROR


def available() -> bool:
    """True if the fused kernel is (or can be) built on this machine."""
    try:
        load_extension()
        return True
    except RuntimeError:
        return False


def supported(model, with_baseline: bool = True) -> Optional[str]:
    """None if ``model`` can run on the fused kernel, else the reason.  ``with_baseline=False``: whether the
    kernel can compute everything except the coefficient-free ZBL baseline (which the ``fused`` backend adds
    with the torch pair formula, and which design rows do not contain)."""
    if with_baseline and model.zbl is not None:
        return "the ZBL baseline is not in the fused kernel"
    mb, pr = fixed_embedding(model)[0].radials.transform, model.pair.transform
    for name, t in (("many-body", mb), ("pair", pr)):
        if t.p != int(t.p) or t.q != int(t.q):
            return f"non-integer Agnesi exponents of the {name} transform"
    if not torch.equal(mb.r0, pr.r0):
        return "different r0 for the many-body and pair transforms"
    return None


def pair_constants(model, c_pair: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Pair coefficients [..., nz, nz, n_pair] × the pair part's prior scale: the kernel's pair constants (CPU,
    ``dtype``), for the mean model, its committee and the nonlinear model alike."""
    c = c_pair.detach().to(torch.float64) * model.pair.scale.detach().to(torch.float64)
    return c.to(dtype=dtype, device="cpu").contiguous()


def basis_args(model, dtype: torch.dtype, radials=None) -> tuple:
    """The basis constants both kernels take (``BASIS_ARGS`` in ace_cpu.cpp), as CPU tensors of ``dtype``.

    ``radials`` (``LearnableRadials``; default: those of a learned embedding, see ``fixed_embedding``): the
    kernel's radials are then R_u = Σ_k W_eff[z_i, z_j, u, k] P_k env (the prior scale inside W_eff) and the
    one-particle function a reads row u(a)·nz + s(a) with weight ±1 (the sign of the real-harmonic basis)."""
    emb, learned = fixed_embedding(model)
    radials = radials if radials is not None else learned
    rad, pair, sph = emb.radials, model.pair, emb.sph
    mbt, prt = rad.transform, pair.transform
    f = dict(dtype=dtype, device="cpu")
    with torch.no_grad():
        t = lambda x: x.detach().to(**f).contiguous()  # noqa: E731
        if radials is None:
            w, a_rho, mix = emb.lm_sign * emb.nl_scale[emb.n_idx, emb.l_idx], emb.n_idx, torch.zeros(0, **f)
        else:
            w = emb.lm_sign.to(torch.float64)
            a_rho = radials.u_of_a * int(model.nz) + radials.s_of_a
            mix = t(radials.effective_weights(emb.nl_scale))
        return (float(model.rcut), int(model.nz), t(mbt.r0), t(mbt.y_cut), int(mbt.p), int(mbt.q),
                agnesi_a(mbt.p, mbt.q), t(rad.coef[: rad.n_poly]), int(emb.max_l), t(sph.norm), t(sph.rec_a),
                t(sph.rec_b), t(sph.qmm), a_rho.cpu().contiguous(), emb.lm_std.cpu().contiguous(), t(w),
                t(prt.y_cut), int(prt.p), int(prt.q), agnesi_a(prt.p, prt.q), t(pair.coef[: max(model.n_pair, 1)]),
                int(model.n_pair), mix)


def _check_model(model, who: str, with_baseline: bool = True) -> None:
    why = supported(model, with_baseline)
    if why is not None:
        raise ValueError(f"{who}: {why}; use the model itself")


def _check_device(positions: torch.Tensor, who: str) -> None:
    if positions.device.type != "cpu":
        raise ValueError(f"{who} runs on CPU tensors; use the model itself on other devices")


class FusedEvaluator(nn.Module):
    """Energies, forces and virials of ``model`` (eval mode) through the fused C++ kernel.

    Holds no copy of the model: the constants derived from it are rebuilt whenever any of its tensors changed
    (``torchace.model.watch``: however changed — a refit, ``.data`` writes, replaced buffers,
    ``load_state_dict``), so every call uses the model's current values.  Call: ``(positions, species, batch,
    edge_index, unit_shifts, cell, n_structures, compute_forces=True, compute_virials=True)`` →
    ``{energy, node_energy, forces?, virial?, closest_pair}``.
    With ``committee=True`` and a model with a committee (``model.committee`` [n_members, basis_size], read
    on each call as well) the dictionary also has ``committee_energy`` [n_members, n_structures].
    """

    def __init__(self, model, committee: bool = False, skip_baseline: bool = False, products: str = "auto"):
        super().__init__()
        self.products = products  # checked by product_scheme on the first _refresh below
        # skip_baseline: the caller adds the ZBL baseline itself (the fused backend does); otherwise a model
        # with one is refused (checked again whenever the model's tensors change: _refresh)
        _check_model(model, "FusedEvaluator", with_baseline=not skip_baseline)
        self.model = model
        self.committee = bool(committee)
        self.skip_baseline = bool(skip_baseline)
        self.ext = load_extension()
        # per computation dtype, for the generation of the model they were built from (_rebuild)
        self._consts: Dict[torch.dtype, tuple] = {}
        self._committee_consts: Dict[torch.dtype, tuple] = {}
        self._derived = Derived(model, self._rebuild)
        self._refresh = self._derived.refresh
        self._refresh()

    def _rebuild(self) -> None:
        """Drop every constant derived from the model (one of its tensors changed since they were built)."""
        self._consts.clear()
        self._committee_consts.clear()
        _check_model(self.model, "FusedEvaluator", with_baseline=not self.skip_baseline)  # r0 may have changed
        self.scheme = product_scheme(self.model, self.products)

    def _constants(self, dtype: torch.dtype):
        consts = self._consts.get(dtype)
        if consts is not None:
            return consts
        m = self.model
        c = m.coefficients.detach()
        f = dict(dtype=dtype, device="cpu")
        with torch.no_grad():
            c_pair = pair_constants(m, m.pair_coefficients.detach(), dtype)
            dag, pairs = product_args(m, self.scheme, dtype)
            c_prod = product_coefficients(m, c, self.scheme).to(**f).contiguous()
            consts = (basis_args(m, dtype) + dag + (c_prod, m.E0.detach().to(**f).contiguous(), c_pair), pairs)
        self._consts[dtype] = consts
        return consts

    def _committee_constants(self, dtype: torch.dtype):
        """(c_node_extra [n_sets, nz, n], c_pair_extra [n_sets, nz, nz, n_pair]) of the committee, built
        like the mean model's constants, and whether there is a committee to report; n_sets = 0 (empty tensors)
        without a committee or with committee=False (the kernel then does no extra work)."""
        hit = self._committee_consts.get(dtype)
        if hit is not None:
            return hit
        m = self.model
        comm = getattr(m, "committee", None) if self.committee else None
        n_coef = coefficient_count(m, self.scheme)
        if comm is not None:
            comm = comm.detach()
            if comm.dim() != 2 or comm.shape[1] != m.basis_size:
                raise ValueError(f"FusedEvaluator: model.committee must have shape (n_members, {m.basis_size}), "
                                 f"got {tuple(comm.shape)}")
        f = dict(dtype=dtype, device="cpu")
        if comm is None:
            consts = (torch.zeros(0, m.nz, n_coef, **f), torch.zeros(0, m.nz, m.nz, m.n_pair, **f))
        else:
            with torch.no_grad():
                n = comm.shape[0]
                c_node = product_coefficients(m, comm, self.scheme)
                consts = (c_node.to(**f).contiguous(),
                          pair_constants(m, comm[:, m.n_manybody:].reshape(n, m.nz, m.nz, m.n_pair), dtype))
        self._committee_consts[dtype] = (consts, comm is not None)
        return consts, comm is not None

    def forward(self, positions: torch.Tensor, species: torch.Tensor, batch: torch.Tensor, edge_index: torch.Tensor,
                unit_shifts: torch.Tensor, cell: torch.Tensor, n_structures: int, compute_forces: bool = True,
                compute_virials: bool = True) -> Dict[str, torch.Tensor]:
        _check_device(positions, "FusedEvaluator")
        dtype = positions.dtype
        need_grad = bool(compute_forces or compute_virials)
        self._refresh()
        with torch.no_grad():
            extra, with_committee = self._committee_constants(dtype)
            consts, pairs = self._constants(dtype)
            energy, site, forces, virial, closest, energy_extra, _ = self.ext.site_energy_forces(
                positions.contiguous(), species.contiguous(), batch.contiguous(), edge_index.contiguous(),
                unit_shifts.to(dtype).contiguous(), cell.to(dtype).contiguous(), int(n_structures), need_grad,
                bool(compute_virials), *consts, *extra, torch.zeros(0, dtype=dtype), *pairs)
        out: Dict[str, torch.Tensor] = {K.ENERGY: energy, K.NODE_ENERGY: site, CLOSEST_PAIR: closest}
        if with_committee:
            out[COMMITTEE_ENERGY] = energy_extra
        if compute_forces:
            out[K.FORCES] = forces
        if compute_virials:
            out[K.VIRIAL] = virial
        return out


def add_baseline(model, out: Dict[str, torch.Tensor], positions: torch.Tensor, species: torch.Tensor,
                 batch: torch.Tensor, edge_index: torch.Tensor, unit_shifts: torch.Tensor, cell: torch.Tensor,
                 n_structures: int, compute_forces: bool = True,
                 compute_virials: bool = True) -> Dict[str, torch.Tensor]:
    """Add the ZBL baseline of ``model`` (``baseline_site_terms``: the analytic pair formula in torch, a small
    fraction of a step) to the kernel's outputs ``out`` in place; returns the baseline's own outputs."""
    with torch.no_grad():
        vec = edge_vectors(positions, edge_index, unit_shifts.to(positions.dtype), cell.to(positions.dtype), batch)
        r = torch.linalg.norm(vec, dim=-1)
        i, j = edge_index[0], edge_index[1]
        e, g = model.baseline_site_terms(r, (vec / r.clamp_min(1e-300).unsqueeze(-1)).t(), i, species[i],
                                         species[j], species.shape[0])
        base = edge_gradient_outputs(e, g, vec, edge_index, positions, batch, n_structures, compute_forces,
                                     compute_virials)
    for key in (K.ENERGY, K.NODE_ENERGY, K.FORCES, K.VIRIAL):
        if key in out:
            out[key] = out[key] + base[key]
    return base


def design_rows(model, batch: Dict[str, torch.Tensor], densities=None, radial_columns: bool = False
                ) -> Dict[str, torch.Tensor]:
    """``rows.batch_rows(model, batch)`` through the fused C++ kernel (same layout and values).

    Per centre atom: B = C·AA into the energy row, J = ∂B/∂A from the leave-one-out products, ∂φ/∂r of its
    edges, and G = ∂φᵀ·J from J's entries (one ∂φ-row axpy each), scattered into force and virial rows; the pair
    blocks per edge.
    ``densities`` = (c [P, NZ, n_b], f' [N, P], f'' [N, P]): the Gauss–Newton rows of a separable embedding
    (``torch_rows.torch_rows(..., densities=…)``, with the embedding's derivatives already evaluated).
    A learned one-particle basis (``fixed_embedding``) is evaluated with its learned radials; with ``densities``
    and ``radial_columns`` the rows also hold ∂/∂W_eff[z_i, z_j, u, k] of its radial weights (the prior scale
    folded in: ``LearnableRadials.effective_weights``) after the pair block, [NZ, NZ, n_u, n_poly] flat.
    """
    pos = batch[K.POSITIONS]
    _check_device(pos, "fused.design_rows")
    _check_model(model, "fused.design_rows", with_baseline=False)  # the baseline has no rows
    ext = load_extension()
    dtype = pos.dtype
    f = dict(dtype=dtype, device="cpu")
    tgt, src, val = jacobian_pattern(model)
    cp = model.coupling
    if radial_columns and (densities is None or fixed_embedding(model)[1] is None):
        raise ValueError("fused.design_rows: radial_columns need densities and a learned one-particle basis")
    with torch.no_grad():
        dens = ([torch.zeros(0, **f)] * 3 if densities is None
                else [x.detach().to(**f).contiguous() for x in densities])
        e, fr, v = ext.design_rows(
            pos.contiguous(), batch[K.SPECIES].contiguous(), batch[K.BATCH].contiguous(),
            batch[K.EDGE_INDEX].contiguous(), batch[K.UNIT_SHIFTS].to(dtype).contiguous(),
            batch[K.CELL].to(dtype).contiguous(), int(batch[K.N_ATOMS].shape[0]), *basis_args(model, dtype),
            int(model.n_b), model.product.idx.cpu().contiguous(), cp.rows.cpu().contiguous(),
            cp.cols.cpu().contiguous(), cp.vals.detach().to(**f).contiguous(), tgt.cpu().contiguous(),
            src.cpu().contiguous(), val.detach().to(**f).contiguous(), model.pair.scale.detach().to(**f).contiguous(),
            *dens, bool(radial_columns))
    return {K.ENERGY: e, K.FORCES: fr, K.VIRIAL: v}
