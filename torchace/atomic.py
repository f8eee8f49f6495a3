"""Atomic file writes: write to a temporary file beside the target, fsync, then rename over it.

A crash or a full disk never leaves a half-written model, report or plot at the target path, and the
temporary file is removed on every exit path.  ``check_outputs`` refuses, before any work, outputs that
would overwrite an input or each other, or cannot be written.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, Dict, Optional, Sequence


def atomic_write(path: str, write: Callable[[str], None], suffix: str = "") -> None:
    """Call ``write(tmp_path)``, then move the temporary file onto ``path`` (same directory, same filesystem).

    A directory at ``path``, a missing directory or an unwritable one raise ``OutputPathError`` naming ``path``
    before anything is written; a failure while writing (full disk, file-size limit, an exception of
    ``write``, Ctrl-C) removes the temporary file and leaves an existing file at ``path`` as it was (OS errors
    are re-raised naming ``path``)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise OutputPathError(f"{path}: is a directory; give a file name")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise OutputPathError(f"{path}: cannot be written: directory {d!r} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp_", suffix=suffix)
    except OSError as exc:
        raise OutputPathError(f"{path}: cannot be written ({exc.strerror})") from None
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputPathError):
            raise OSError(exc.errno, f"{path}: cannot be written ({exc.strerror or exc}); an existing file "
                                     "there is unchanged") from exc
        raise


def write_json_atomic(path: str, obj: Any) -> None:
    """JSON (no NaN/inf: strict JSON readers must be able to load it), written atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            try:
                json.dump(obj, fh, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{path}: cannot be written as JSON: {exc}") from None

    atomic_write(path, write, ".json")


def _refuse_replacing(path: str, ours: Callable[[bytes], bool], what: str) -> None:
    """Raise ``OutputPathError`` if a file exists at ``path`` and ``ours(first 4 KiB)`` is false (the one
    "never replace a file of another kind" check; no file, or a dangling link, is fine)."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(path):
        raise OutputPathError(f"{path}: is a directory; give a file name")
    if os.path.exists(path) and not os.path.isfile(path):  # a FIFO would block the read below for ever
        raise OutputPathError(f"{path}: exists and is not a regular file (a FIFO or a device); refusing to replace it")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
        mine = ours(head)
    except FileNotFoundError:  # a dangling link: os.replace replaces the link
        return
    except OSError as exc:
        raise OutputPathError(f"{path}: exists and cannot be read ({exc.strerror}); refusing to replace it") from None
    if not mine:
        link = f" (a link to {os.path.realpath(path)!r})" if os.path.islink(path) else ""
        raise OutputPathError(f"{path}: exists{link} and is not a {what}")


def check_replaceable_text(path: str, marker: bytes, what: str) -> None:
    """Refuse to replace an existing file at ``path`` unless its first 4 KiB contain ``marker`` (the header line
    torchace writes into its text outputs: .yace, pair tables, LAMMPS include files)."""
    _refuse_replacing(path, lambda head: marker in head,
                      f"{what} written by torchace (training data or another file?); refusing to overwrite it: "
                      "choose another path or delete the file")


def check_replaceable(path: str, format_name: Optional[str], what: str, overwrite_hint: bool = True) -> None:
    """Refuse to replace an existing file at ``path`` unless it is a ``what``: a JSON document whose first 4 KiB
    hold the field ``"format": format_name``, or, with ``format_name=None``, a zip archive (TorchScript).
    ``model.save("train.xyz")`` must not destroy the training data.  No file, or a dangling link, is fine."""
    import re
    import zipfile

    if format_name is None:
        ours = lambda head: zipfile.is_zipfile(path)  # noqa: E731
    else:
        pattern = rb'"format"\s*:\s*"' + re.escape(format_name.encode()) + rb'"'
        ours = lambda head: re.search(pattern, head) is not None  # noqa: E731
    _refuse_replacing(path, ours, f"{what} (training data or another file?); refusing to overwrite it: choose another "
                      "path or delete the file" + (", or pass overwrite=True" if overwrite_hint else ""))


class OutputPathError(ValueError):
    """An output path that would overwrite an input or another output, or that cannot be written."""


def _same(a: str, b: str) -> bool:
    """The same file: the same resolved path (also for paths not created yet), or the same inode (hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


same_file = _same


def check_outputs(inputs: Sequence[str], outputs: Dict[str, Optional[str]], who: str) -> None:
    """Refuse, before any work, outputs that would destroy data or cannot be written (issue "Reliability"):
    an output that is an input (same file, also through symbolic or hard links), two outputs on one path, an
    output that is a directory, or whose directory is missing or not writable (tried by creating a
    temporary file there, so read-only file systems are found as well).  ``outputs``: name -> path (None:
    not written).  Raises ``OutputPathError`` naming both paths."""
    outs = [(name, os.fspath(p)) for name, p in outputs.items() if p]
    for name, p in outs:
        for q in inputs:
            if q and _same(p, q):
                raise OutputPathError(f"{who}: output {name} {p!r} is the input {q!r}; choose another path")
    for k, (name, p) in enumerate(outs):
        for name2, p2 in outs[k + 1:]:
            if _same(p, p2):
                raise OutputPathError(f"{who}: outputs {name} and {name2} are the same file {p!r}")
    for name, p in outs:
        if os.path.isdir(p):
            raise OutputPathError(f"{who}: output {name} {p!r} is a directory")
        d = os.path.dirname(os.path.abspath(p))
        if not os.path.isdir(d):
            raise OutputPathError(f"{who}: output {name} {p!r}: directory {d!r} does not exist")
        try:
            fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp_check_")
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise OutputPathError(f"{who}: output {name} {p!r} cannot be written ({exc.strerror})") from None
