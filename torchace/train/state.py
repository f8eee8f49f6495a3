"""Resumable checkpoints of ``torchace.train`` (docs/training.md, "Checkpoints").

A checkpoint holds the model's state (parameters and buffers), the optimiser's state, the history, the best
epoch's state and the warm start's summary, written atomically (``atomic.atomic_write``) after every epoch
with ``torch.save`` and read back with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and
dicts only, so loading a checkpoint never executes code.  It also carries a fingerprint of everything that
determines the training run (the model before training: config, options, every parameter and buffer; the
training and validation structures; the weights; the optimiser settings); resuming with different inputs
raises ``CheckpointMismatch`` naming the fields that differ.  The number of epochs may grow (to extend a run);
a checkpoint already past the epochs asked, or whose epochs were trained with another optimiser schedule (the
split of a paired optimiser), is refused naming ``epochs`` (``resume_epoch``): it cannot give exactly the run
asked for, and returning a later epoch than asked would be silently wrong.

What is read back is checked before any of it is used (``check_state``): the fields a resume needs, the model's
parameter names and shapes, consecutive epochs, and finite values throughout (a checkpoint holding NaN — written
by an older version while a run diverged, or altered — would resume into a NaN model); a failure raises
``CheckpointError`` naming the file and the field.
"""
from __future__ import annotations

import hashlib
import json
import os
import math
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..atomic import atomic_write
from ..fit.checkpoint import CheckpointError, CheckpointMismatch, data_hash
from ..fit.data import Dataset

FORMAT = "torchace-train-checkpoint"
FORMAT_VERSION = 1


def state_hash(model) -> str:
    """SHA-256 of every entry of the model's ``state_dict`` (parameters and persistent buffers), by name."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode() + b"\x00")
        t = t.detach().cpu().to(torch.float64).contiguous()
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def fingerprint(model, train_structs, val_structs, weights, options: Dict[str, Any]) -> Dict[str, str]:
    """The inputs of a training run as strings (compared field by field on resume)."""
    opts = {"densities": model.densities, "embedding": model.embedding_name,
            "learnable_radials": model.learnable_radials}
    return {  # one field per option, so that a mismatch names it
        "version": str(FORMAT_VERSION),
        "model_config": json.dumps(model.config_dict(), sort_keys=True, default=str),
        "model_options": json.dumps(opts, sort_keys=True),
        "model_state": state_hash(model),
        "train_data": data_hash(Dataset(list(train_structs))) + f" ({len(train_structs)})",  # fitting structures
        "validation_data": data_hash(Dataset(list(val_structs))) + f" ({len(val_structs)})",
        "weights": json.dumps(weights, sort_keys=True),
    } | {f"option {k}": json.dumps(v, sort_keys=True, default=str) for k, v in options.items()}


# a training checkpoint holds the model's parameters and the optimiser's state: a few times the model file
MAX_CHECKPOINT_BYTES = 16 << 30


class TrainCheckpoint:
    """``save(state)`` / ``load()`` of one checkpoint file with the fingerprint ``fp``."""

    def __init__(self, path: str, fp: Dict[str, str]):
        self.path = os.fspath(path)
        self.fp = fp

    def load(self, model=None) -> Optional[Dict[str, Any]]:
        """The saved state, None if there is no file; ``CheckpointError`` / ``CheckpointMismatch`` otherwise.
        ``model``: the model it resumes (its parameter names and shapes are checked against the saved state)."""
        if not os.path.exists(self.path):
            return None
        from ..inputs import check_input_file

        try:  # the input rule: a FIFO or device would block torch.load for ever
            check_input_file(self.path, "training checkpoint", MAX_CHECKPOINT_BYTES)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{exc}; choose another checkpoint path") from None
        try:
            doc = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated, not a torch file, or holding objects other than plain data
            raise CheckpointError(f"{self.path}: unreadable training checkpoint ({type(exc).__name__}: "
                                  f"{' '.join(str(exc).split())[:200]}); delete it to restart training") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise CheckpointError(f"{self.path}: is not a torchace training checkpoint; choose another path")
        saved = doc.get("fingerprint", {})
        diff = sorted(k for k in set(saved) | set(self.fp) if saved.get(k) != self.fp.get(k))
        if diff:
            detail = "; ".join(f"{k}: checkpoint {str(saved.get(k))[:60]!r} vs now {str(self.fp.get(k))[:60]!r}"
                               for k in diff)
            raise CheckpointMismatch(f"{self.path} was written for a different training run ({detail}); use another "
                                     "path or delete it to restart")
        state = doc.get("state")
        check_state(state, self.path, None if model is None else model.state_dict())
        return state

    def save(self, state: Dict[str, Any]) -> None:
        doc = {"format": FORMAT, "fingerprint": self.fp, "state": state}
        atomic_write(self.path, lambda tmp: torch.save(doc, tmp), ".pt")


REQUIRED = ("model", "history", "best", "init", "scales", "optimizer", "phase")


def _bad(path: str, field: str, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: field {field} of the training checkpoint {what}; delete the file (or choose "
                           "another checkpoint path) to restart training")


def nonfinite_field(obj: Any, name: str) -> Optional[str]:
    """The name of the first tensor or number in ``obj`` (nested dicts/lists) with a NaN or infinite value."""
    if isinstance(obj, torch.Tensor):
        return name if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else None
    if isinstance(obj, float):
        return None if math.isfinite(obj) else name
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        found = nonfinite_field(v, f"{name}.{k}" if isinstance(obj, dict) else f"{name}[{k}]")
        if found:
            return found
    return None


def _check_tensors(path: str, field: str, saved: Any, expected: Optional[Dict[str, torch.Tensor]]) -> None:
    if not isinstance(saved, dict) or not all(isinstance(v, torch.Tensor) for v in saved.values()):
        raise _bad(path, field, "is not a mapping of parameter names to tensors")
    if expected is None:
        return
    missing, extra = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    if missing or extra:
        raise _bad(path, field, f"does not hold the model's parameters (missing {missing[:4]}, unknown {extra[:4]})")
    for k, t in expected.items():
        if tuple(saved[k].shape) != tuple(t.shape):
            raise _bad(path, f"{field}.{k}", f"has shape {tuple(saved[k].shape)}, the model's is {tuple(t.shape)}")


def check_state(state: Any, path: str, expected: Optional[Dict[str, torch.Tensor]] = None) -> None:
    """``CheckpointError`` naming ``path`` and the field unless ``state`` is a complete, finite training state."""
    if not isinstance(state, dict):
        raise _bad(path, "state", "is missing or not a mapping")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise _bad(path, f"state.{missing[0]}", "is missing")
    _check_tensors(path, "state.model", state["model"], expected)
    hist, best = state["history"], state["best"]
    if not isinstance(hist, list) or not hist or not all(isinstance(h, dict) for h in hist) \
            or [h.get("epoch") for h in hist] != list(range(len(hist))):
        raise _bad(path, "state.history", "is not a list of the epochs 0, 1, 2, ... in order")
    if not isinstance(best, dict) or not isinstance(best.get("epoch"), int) \
            or not 0 <= best["epoch"] < len(hist) or not isinstance(best.get("score"), float):
        raise _bad(path, "state.best", f"does not name one of the {len(hist)} saved epochs with its score")
    _check_tensors(path, "state.best.state", best.get("state"), expected)
    # the history's metrics are a record only; what the run resumes from must be finite
    found = (nonfinite_field(state[k], f"state.{k}") for k in ("model", "best", "scales", "optimizer"))
    bad = next(filter(None, found), None)
    if bad:
        raise _bad(path, bad, "holds non-finite values (NaN or inf): the run that wrote it diverged, or the file "
                              "was altered, and resuming would continue from a broken model")


def resume_epoch(state: Dict[str, Any], phases: Sequence[str], path: str) -> int:
    """The next epoch to train from the checkpoint ``state`` for the schedule ``phases`` (one optimiser name per
    epoch 1 … N); ``CheckpointMismatch`` naming ``epochs`` when the checkpoint is past epoch N or its epochs were
    trained by other optimisers than the schedule puts there."""
    done = len(state["history"]) - 1  # epochs 1 … done are trained (epoch 0 is the start)
    n = len(phases)
    if done > n:
        asked = f"{n} epoch{'s' if n != 1 else ''}"
        raise CheckpointMismatch(f"{path} already holds epochs 0-{done}, more than the {asked} asked (epochs); ask "
                                 f"for {done} or more epochs to return (or extend) that run, or use another "
                                 f"checkpoint path to train {asked} afresh")
    saved: List[str] = [h.get("phase") for h in state["history"][1:]]
    if saved != list(phases[:done]):
        k = next(i for i, (a, b) in enumerate(zip(saved, phases)) if a != b) + 1
        raise CheckpointMismatch(f"{path}: epoch {k} of the checkpoint was trained with {saved[k - 1]!r}, the epochs "
                                 f"asked put {phases[k - 1]!r} there (epochs); keep the checkpoint's split of the "
                                 "optimisers, or use another checkpoint path")
    return done + 1
