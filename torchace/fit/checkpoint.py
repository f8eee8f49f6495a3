"""Checkpointed streaming assembly: resume a killed ``assemble_reduced`` where it stopped.

``assemble_checkpointed`` runs :func:`torchace.fit.assembly.assemble_reduced` with its ``on_batch``/``state``
hooks: every ``every`` batches (and after the last one) the accumulated state — the (k+1)×(k+1) factor ``T``
(``method="qr"``) or ``AtA``/``Aty``/``yty`` (``"normal"``), with ``n_obs`` and ``n_batches`` — is written
atomically (``torchace.atomic.atomic_write``: temporary file, fsync, rename) to ``path`` as a NumPy ``.npz``
archive that is read back with ``allow_pickle=False`` (no code is ever executed on load).

The archive also carries a fingerprint of everything that determines the rows: the model's config JSON,
basis size and coefficient-free buffers (E0, basis scales), the data (number of structures and atoms, a
SHA-256 of species, positions, cells, pbc, labels and config types), the resolved weights, ``method`` and
``batch_atoms``.  Resuming with different inputs raises :class:`CheckpointMismatch` naming the parts that
differ, instead of silently mixing two systems.  A checkpoint that cannot be read (truncated or corrupted
outside of torchace: our own writes are atomic) raises :class:`CheckpointError`; delete the file to start
afresh.  See docs/reliability.md.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from typing import Callable, Dict, Optional

import numpy as np
import torch

from .assembly import LinearSystem, structure_batches, assemble_reduced, fitting_structures
from ..atomic import atomic_write, check_outputs
from .data import Dataset, read_data
from .weights import resolve_weights

FORMAT_VERSION = 1
_STATE_KEYS = {"qr": ("T",), "normal": ("AtA", "Aty", "yty")}


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be read (truncated, corrupted, not a torchace checkpoint)."""


class CheckpointMismatch(ValueError):
    """A checkpoint was written for different inputs (model, data, weights, method or batch size)."""


def _hash_arrays(h, *arrays) -> None:
    for a in arrays:
        if a is None:
            h.update(b"\x00none")
            continue
        a = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
        h.update(str(a.shape).encode())
        h.update(a.tobytes())


def data_hash(ds: Dataset) -> str:
    """SHA-256 of the fitting structures: species, positions, cell, pbc, labels, config types (in order)."""
    h = hashlib.sha256()
    for s in fitting_structures(ds):
        h.update(s.config_type.encode() + b"\x00")
        _hash_arrays(h, s.atoms.numbers, s.atoms.positions, s.atoms.cell[:], s.atoms.pbc,
                     None if s.energy is None else [s.energy], s.forces, s.virial)
    return h.hexdigest()


def model_hash(model) -> str:
    """SHA-256 of the model's buffers that change the rows or targets (everything but coefficients/committee).

    Only persistent buffers (the model definition): non-persistent ones are derived at construction (e.g. the
    analytic path's harmonic-gradient tables, found by least squares, may differ in the last bit between
    processes with different BLAS threading) and carry no information of their own.
    """
    h = hashlib.sha256()
    persistent = set(model.state_dict().keys())
    for name, buf in sorted(model.named_buffers()):
        if name.split(".")[-1] == "committee" or buf is None or name not in persistent:
            continue
        h.update(name.encode())
        _hash_arrays(h, buf.detach().cpu().to(torch.float64).numpy())
    return h.hexdigest()


def fingerprint(model, ds: Dataset, weights, method: str, batch_atoms: int) -> Dict[str, object]:
    """The inputs that determine a reduced system, as a JSON-able dict (compared field by field on resume)."""
    structs = fitting_structures(ds)
    return {
        "version": FORMAT_VERSION,
        "model_config": json.dumps(model.config.to_dict(), sort_keys=True),
        "basis_size": int(model.basis_size),
        "model_buffers": model_hash(model),
        "n_structures": len(structs),
        "n_atoms": int(sum(s.n_atoms for s in structs)),
        "data": data_hash(ds),
        "weights": json.dumps(resolve_weights(weights), sort_keys=True),
        "method": method,
        "batch_atoms": int(batch_atoms),
    }


def save_checkpoint(path: str, state: Dict[str, torch.Tensor], fp: Dict[str, object]) -> None:
    """Write ``state`` and the fingerprint ``fp`` atomically to ``path`` (an .npz archive, no pickles)."""
    arrays = {k: v.detach().cpu().numpy() for k, v in state.items()}
    arrays["__fingerprint__"] = np.array(json.dumps(fp, sort_keys=True))

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a bare name
            np.savez(fh, **arrays)

    atomic_write(path, write, ".npz")


# the QR state is [K, K] float64: 2^38 bytes is K ≈ 190 000, beyond any basis torchace assembles
MAX_CHECKPOINT_BYTES = 1 << 38


def load_checkpoint(path: str):
    """(state, fingerprint) from ``path``; :class:`CheckpointError` if it cannot be read."""
    from ..inputs import check_input_file

    try:  # the input rule: a FIFO or device would block np.load for ever
        check_input_file(path, "assembly checkpoint", MAX_CHECKPOINT_BYTES)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{exc}; choose another checkpoint path") from None
    if os.path.isfile(path) and not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: is not an assembly checkpoint (not an .npz archive: truncated, or an input "
                              "file?); choose another checkpoint path, or, if it is a damaged checkpoint, delete it "
                              "to restart the assembly")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        fp = json.loads(str(arrays.pop("__fingerprint__")))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc}); it may be truncated "
                              f"or corrupted — delete it to restart the assembly from the beginning") from exc
    state = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
    return state, fp


def check_fingerprint(fp_saved: Dict[str, object], fp_now: Dict[str, object], path: str) -> None:
    """Raise :class:`CheckpointMismatch` naming every field where the saved fingerprint differs from now's."""
    diff = sorted(k for k in set(fp_saved) | set(fp_now) if fp_saved.get(k) != fp_now.get(k))
    if diff:
        detail = "; ".join(f"{k}: checkpoint {str(fp_saved.get(k))[:80]!r} vs now {str(fp_now.get(k))[:80]!r}"
                           for k in diff)
        raise CheckpointMismatch(f"{path} was written for different inputs ({detail}); use another path or "
                                 f"delete it to restart")


def _input_files(ds) -> list:
    """The data files behind ``ds`` (a path, a list with paths, or a Dataset read from files)."""
    if isinstance(ds, (str, os.PathLike)):
        return [os.fspath(ds)]
    if isinstance(ds, Dataset):
        return sorted({s.source.rsplit(":frame ", 1)[0] for s in ds if ":frame " in s.source})
    if isinstance(ds, (list, tuple)):
        return [os.fspath(d) for d in ds if isinstance(d, (str, os.PathLike))]
    return []


def assemble_checkpointed(model, ds, weights=None, path: str = "assembly_checkpoint.npz", *, method: str = "qr",
                          batch_atoms: int = 2048, every: int = 1, device=None, progress: bool = False,
                          memory_budget: int = 256 * 2**20,
                          on_batch: Optional[Callable[[int, Dict[str, torch.Tensor]], None]] = None,
                          remove_on_success: bool = False) -> LinearSystem:
    """``assemble_reduced`` that checkpoints its state to ``path`` and resumes from it.

    Every ``every`` batches and after the last batch the state is saved atomically with the fingerprint of
    the inputs.  If ``path`` exists, its fingerprint must match (else :class:`CheckpointMismatch`) and the
    assembly continues after its ``n_batches`` batches; the result equals that of an uninterrupted run
    (same batches, same float64 arithmetic).  ``on_batch(n_done, state)`` is called after each batch, after
    any checkpoint of that batch is on disk.  ``remove_on_success`` deletes the file at the end.
    """
    if method not in _STATE_KEYS:
        raise ValueError(f"method must be 'qr' or 'normal', got {method!r}")
    if int(every) < 1:
        raise ValueError(f"every must be >= 1, got {every!r}")
    every = int(every)
    check_outputs(_input_files(ds), {"checkpoint": path}, "assemble_checkpointed")  # never onto the data
    ds = read_data(ds, elements=model.elements)
    weights = resolve_weights(weights)
    dev = torch.device(device) if device is not None else model.coefficients.device
    fp = fingerprint(model, ds, weights, method, batch_atoms)
    n_total = sum(1 for _ in structure_batches(fitting_structures(ds), batch_atoms))
    state = None
    if os.path.exists(path):
        saved, fp_saved = load_checkpoint(path)
        check_fingerprint(fp_saved, fp, path)
        missing = [k for k in ("n_obs", "n_batches") + _STATE_KEYS[method] if k not in saved]
        if missing:
            raise CheckpointError(f"{path}: checkpoint lacks {missing}; delete it to restart")
        state = {k: (v.to(dev) if v.is_floating_point() else v) for k, v in saved.items()}

    def hook(n_done: int, st: Dict[str, torch.Tensor]) -> None:
        if n_done % every == 0 or n_done == n_total:
            save_checkpoint(path, st, fp)
        if on_batch is not None:
            on_batch(n_done, st)

    system = assemble_reduced(model, ds, weights, method=method, batch_atoms=batch_atoms, device=dev,
                              progress=progress, memory_budget=memory_budget, on_batch=hook, state=state)
    if remove_on_success and os.path.exists(path):
        os.unlink(path)
    return system


def resume_steps(n_steps: int, step: Callable[[int, Dict[str, torch.Tensor]], None], state: Dict[str, torch.Tensor],
                 *, path: Optional[str] = None, fp: Optional[Dict[str, object]] = None, every: int = 1, device=None,
                 on_step: Optional[Callable[[int, Dict[str, torch.Tensor]], None]] = None) -> Dict[str, torch.Tensor]:
    """Run ``step(i, state)`` for i = state["n_done"] .. n_steps − 1, updating ``state`` (a dict of tensors) in
    place; with ``path``, the state and fingerprint ``fp`` are saved atomically every ``every`` steps and after the
    last, and a run finds a saved state there (same fingerprint, else :class:`CheckpointMismatch`) and continues
    after its ``n_done`` steps — the streaming Gram and kernel assemblies (``fit.gram``, ``fit.dual``) resume so.
    ``on_step(n_done, state)`` follows each step (after its checkpoint is on disk)."""
    if int(every) < 1:
        raise ValueError(f"every must be >= 1, got {every!r}")
    if path is not None and os.path.exists(path):
        saved, fp_saved = load_checkpoint(path)
        check_fingerprint(fp_saved, fp or {}, path)
        missing = sorted(set(state) - set(saved))
        if missing:
            raise CheckpointError(f"{path}: checkpoint lacks {missing}; delete it to restart")
        for k, v in saved.items():
            state[k] = v.to(device) if v.is_floating_point() else v
    state.setdefault("n_done", torch.tensor(0))
    for i in range(int(state["n_done"]), n_steps):
        step(i, state)
        state["n_done"] = torch.tensor(i + 1)
        if path is not None and ((i + 1) % int(every) == 0 or i + 1 == n_steps):
            save_checkpoint(path, state, fp or {})
        if on_step is not None:
            on_step(i + 1, state)
    return state
