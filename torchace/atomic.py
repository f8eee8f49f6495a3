"""The output rule of every file torchace writes: atomic, never onto a file torchace did not write, sets as sets.

``atomic_write``: write to a temporary file beside the target, fsync, then rename over it; a crash or a full
disk never leaves a half-written model, report or plot at the target path, and the temporary file is removed on
every exit path.  ``check_output`` / ``write_output``: an existing file is replaced only if torchace wrote it as
an output of the same kind (``OutputKind``: its marker) or with ``overwrite=True`` (CLI ``--force``, config
``output: {overwrite: true}``).  ``write_outputs``: a multi-file export (.yace + pair table + LAMMPS include)
replaced as a set.  ``check_outputs`` refuses, before any work, outputs that would overwrite an input or each
other, or cannot be written.  docs/export.md, "Output files".
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple


def atomic_write(path: str, write: Callable[[str], None], suffix: str = "") -> None:
    """Call ``write(tmp_path)``, then move the temporary file onto ``path`` (same directory, same filesystem).

    A directory at ``path``, a missing directory or an unwritable one raise ``OutputPathError`` naming ``path``
    before anything is written; a failure while writing (full disk, file-size limit, an exception of
    ``write``, Ctrl-C) removes the temporary file and leaves an existing file at ``path`` as it was (OS errors
    are re-raised naming ``path``)."""
    path = os.fspath(path)
    tmp = _temporary_beside(path, f"{path}: is a directory; give a file name",
                            f"{path}: cannot be written: directory {{d!r}} does not exist",
                            f"{path}: cannot be written", ".tmp_", suffix)
    try:
        write(tmp)
        _finish_tmp(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputPathError):
            raise OSError(exc.errno, f"{path}: cannot be written ({exc.strerror or exc}); an existing file "
                                     "there is unchanged") from exc
        raise


def _temporary_beside(path: str, is_dir: str, no_dir: str, unwritable: str, prefix: str, suffix: str = "") -> str:
    """A new empty temporary file in ``path``'s directory (proof that it can be written there), or
    ``OutputPathError`` with the caller's message: ``is_dir``, ``no_dir`` (``{d!r}``: the directory) or
    ``unwritable`` (the OS reason appended)."""
    if os.path.isdir(path):
        raise OutputPathError(is_dir)
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise OutputPathError(no_dir.replace("{d!r}", repr(d)))  # not format(): paths may hold braces
    try:
        fd, tmp = tempfile.mkstemp(dir=d, prefix=prefix, suffix=suffix)
    except OSError as exc:
        raise OutputPathError(f"{unwritable} ({exc.strerror})") from None
    os.close(fd)
    return tmp


def write_json_atomic(path: str, obj: Any) -> None:
    """JSON (no NaN/inf: strict JSON readers must be able to load it), written atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            try:
                json.dump(obj, fh, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{path}: cannot be written as JSON: {exc}") from None

    atomic_write(path, write, ".json")


def write_json_output(path: str, obj: Dict[str, Any], kind: "OutputKind", overwrite: bool = False) -> None:
    """``write_json_atomic`` under the output rule: the document is ``obj`` after the kind's "format" field (its
    marker, first so that it is in the first 4 KiB)."""
    check_output(path, kind, overwrite)
    write_json_atomic(path, {"format": kind.format_name, **obj})


# ---- the output rule: never replace a file torchace did not write --------------------------------------------
#
# Every file torchace writes is of one ``OutputKind``, and each kind carries a marker that torchace writes into it
# (a JSON "format" field, a header line, PNG "Software" text, the archive's torchace code).  An existing file at
# an output path is replaced only if it carries the marker of that kind, i.e. torchace wrote it as such an output
# (re-fitting, re-exporting), or when the caller asks: ``overwrite=True`` / ``--force`` / ``output: {overwrite:
# true}``.  A data set, a model file given to another output, or a hand-written script are never replaced by
# mistake.  The check runs before the expensive work (``check_output``) and again at the write.

OVERWRITE_HINT = "pass overwrite=True (CLI: --force; config: output: {overwrite: true})"

_HEAD_BYTES = 4096


class OutputKind:
    """One kind of output file: ``what`` it is (for messages: "not a {what}") and ``ours(path, head)``, whether
    the existing file at ``path`` (``head``: its first 4 KiB) is one that torchace wrote as this kind."""

    def __init__(self, what: str, ours: Callable[[str, bytes], bool], format_name: Optional[str] = None):
        self.what = what
        self.ours = ours
        self.format_name = format_name  # JSON kinds: the value of their "format" field

    def __repr__(self) -> str:
        return f"OutputKind({self.what!r})"


def json_output(format_name: str, what: str) -> OutputKind:
    """A JSON document whose first 4 KiB hold ``"format": format_name`` (torchace writes the field first)."""
    import re

    pattern = re.compile(rb'"format"\s*:\s*"' + re.escape(format_name.encode()) + rb'"')
    return OutputKind(what, lambda path, head: pattern.search(head) is not None, format_name)


def text_output(header: str, what: str) -> OutputKind:
    """A text file whose first line (after a ``#!`` line) starts with ``header``, the line torchace writes first:
    a hand-written file that merely mentions torchace does not have it."""
    marker = header.encode()

    def ours(path: str, head: bytes) -> bool:
        if head.startswith(b"#!"):
            head = head.partition(b"\n")[2]
        return head.startswith(marker)

    return OutputKind(what, ours)


PNG_SOFTWARE = "torchace"  # matplotlib savefig(metadata={"Software": ...}): a PNG tEXt chunk before the image data


def png_metadata() -> Dict[str, str]:
    """The ``metadata`` of ``savefig`` for every PNG torchace writes (the marker ``png_output`` recognises)."""
    from .keys import VERSION

    return {"Software": f"{PNG_SOFTWARE} {VERSION}"}


def png_output(what: str) -> OutputKind:
    """A PNG whose tEXt chunk "Software" starts with "torchace" (``png_metadata``)."""
    marker = b"tEXtSoftware\x00" + PNG_SOFTWARE.encode()
    return OutputKind(what, lambda path, head: head.startswith(b"\x89PNG\r\n\x1a\n") and marker in head)


def torchscript_output(what: str) -> OutputKind:
    """A TorchScript archive of a torchace module (a zip holding ``<name>/code/__torch__/torchace/...``): a
    TorchScript or metatomic export of torchace, not any zip (an .npz data set, another program's model)."""
    import zipfile

    def ours(path: str, head: bytes) -> bool:
        if not head.startswith(b"PK"):
            return False
        try:
            with zipfile.ZipFile(path) as z:
                return any(n.partition("/")[2].startswith("code/__torch__/torchace/") for n in z.namelist())
        except (zipfile.BadZipFile, OSError, ValueError):
            return False

    return OutputKind(what, ours)


# torchace's report and plot outputs ("format" first in the JSON documents, so it is in the first 4 KiB)
ERRORS_FORMAT = "torchace-errors"
EVALUATION_FORMAT = "torchace-evaluation"
HISTORY_FORMAT = "torchace-train-history"
ERRORS_REPORT = json_output(ERRORS_FORMAT, "torchace errors report")
EVALUATION_REPORT = json_output(EVALUATION_FORMAT, "torchace evaluate report")
TRAIN_HISTORY = json_output(HISTORY_FORMAT, "torchace training history")
PLOT = png_output("PNG plot written by torchace")


def check_output(path: str, kind: OutputKind, overwrite: bool = False) -> None:
    """Refuse (``OutputPathError`` naming ``path``) to write a ``kind`` output at ``path`` where a file exists
    that torchace did not write as a ``kind`` (unless ``overwrite``), or a directory is.  No file, or a dangling
    link (``os.replace`` replaces the link), is fine.  Call it before the work, and ``write_output`` again."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise OutputPathError(f"{path}: is a directory; give a file name")
    if not os.path.exists(path):  # no file, or a dangling link
        return
    if not os.path.isfile(path):  # never opened: reading a FIFO would block
        raise OutputPathError(f"{path}: exists and is not a regular file (a device, FIFO or socket?); refusing to "
                              "replace it: choose another path")
    if overwrite:
        return
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
        mine = kind.ours(path, head)
    except FileNotFoundError:  # removed meanwhile
        return
    except OSError as exc:
        raise OutputPathError(f"{path}: exists and cannot be read ({exc.strerror}); refusing to replace it") from None
    if not mine:
        link = f" (a link to {os.path.realpath(path)!r})" if os.path.islink(path) else ""
        raise OutputPathError(f"{path}: exists{link} and is not a {kind.what} (training data, a model or another "
                              f"file?); refusing to overwrite it: choose another path, delete the file, or "
                              f"{OVERWRITE_HINT}")


def write_output(path: str, kind: OutputKind, write: Callable[[str], None], suffix: str = "",
                 overwrite: bool = False) -> None:
    """``check_output`` then ``atomic_write``: the one way torchace writes a file."""
    check_output(path, kind, overwrite)
    atomic_write(path, write, suffix)


def write_text(path: str, text: str) -> None:
    """Write ``text`` to the (temporary) file ``path``."""
    with open(path, "w") as fh:
        fh.write(text)


def write_outputs(files: Sequence[Tuple[str, OutputKind, Any, str]], overwrite: bool = False) -> None:
    """Replace a multi-file export as a set: ``files`` = (path, kind, content, suffix), content a str (text) or a
    ``write(tmp)`` callable.  Every file is checked (``check_output``), then every temporary file is written
    and fsynced, and only then are they renamed onto their paths.  A failure while writing (full disk) removes
    the temporaries and leaves every old file as it was; a failure of a rename (rare: same directory, same
    filesystem) puts back the files already replaced, from hard-linked backups, as far as it can."""
    for path, kind, _, _ in files:
        check_output(path, kind, overwrite)
    tmps: List[Tuple[str, str]] = []  # (temporary file, path)
    done: List[Tuple[Optional[str], str]] = []  # (backup of the old file or None, path), renamed so far
    try:
        for path, _, content, suffix in files:
            path = os.fspath(path)
            d = os.path.dirname(os.path.abspath(path))
            try:
                fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp_", suffix=suffix)
            except OSError as exc:
                raise OutputPathError(f"{path}: cannot be written ({exc.strerror})") from None
            os.close(fd)
            tmps.append((tmp, path))
            try:
                if callable(content):
                    content(tmp)
                else:
                    write_text(tmp, content)
                _finish_tmp(tmp)
            except OSError as exc:
                raise OSError(exc.errno, f"{path}: cannot be written ({exc.strerror or exc}); no file of the set "
                                         f"{[os.fspath(f[0]) for f in files]} was changed") from exc
        for tmp, path in tmps:  # every file is on disk: now the renames (no data written any more)
            backup = None
            if os.path.isfile(path):
                backup = tmp + ".old"
                try:
                    os.link(path, backup)  # same directory: a hard link, no copy
                except OSError:
                    shutil.copy2(path, backup)
            os.replace(tmp, path)
            done.append((backup, path))
    except BaseException:
        for backup, path in reversed(done):
            try:  # best effort: put the old file back, or remove a new file that had no predecessor
                if backup is not None:
                    os.replace(backup, path)
                else:
                    os.unlink(path)
            except OSError:
                pass
        raise
    finally:
        for tmp, _ in tmps:
            for f in (tmp, tmp + ".old"):
                if os.path.lexists(f):
                    os.unlink(f)


def _finish_tmp(tmp: str) -> None:
    """fsync the written temporary file and give it the permissions of a new file (mkstemp creates 0600)."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)


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
        os.unlink(_temporary_beside(p, f"{who}: output {name} {p!r} is a directory",
                                    f"{who}: output {name} {p!r}: directory {{d!r}} does not exist",
                                    f"{who}: output {name} {p!r} cannot be written", ".tmp_check_"))
