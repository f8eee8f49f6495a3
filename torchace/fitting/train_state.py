"""Resumable checkpoints of ``torchace.train`` (docs/training.md, "Checkpoints").

A checkpoint holds the model's state (parameters and buffers), the optimiser's state, the history, the best
epoch's state and the warm start's summary, written atomically (``atomic.atomic_write``) after every epoch
with ``torch.save`` and read back with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and
dicts only, so loading a checkpoint never executes code.  It also carries a fingerprint of everything that
determines the training run (the model before training: config, options, every parameter and buffer; the
training and validation structures; the weights; the optimiser settings); resuming with different inputs
raises ``CheckpointMismatch`` naming the fields that differ.  The number of epochs may differ (to extend a run).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, Optional

import torch

from ..atomic import atomic_write
from .checkpoint import CheckpointError, CheckpointMismatch, data_hash
from .data import Dataset

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

    def load(self) -> Optional[Dict[str, Any]]:
        """The saved state, None if there is no file; ``CheckpointError`` / ``CheckpointMismatch`` otherwise."""
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
        return doc["state"]

    def save(self, state: Dict[str, Any]) -> None:
        doc = {"format": FORMAT, "fingerprint": self.fp, "state": state}
        atomic_write(self.path, lambda tmp: torch.save(doc, tmp), ".pt")
