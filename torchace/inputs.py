"""The input rule: how torchace opens every file it reads (data, model files, .yace, configs, checkpoints, caches).

Before anything is read:

* the path is resolved (a symbolic link is followed to what it names, and the message says where it led);
* only a regular file is accepted: a FIFO (named pipe) would block the reader for ever, a device such as
  ``/dev/zero`` or ``/dev/urandom`` never ends, a directory or socket is no file at all;
* its size is at most the limit of its kind (a compressed file is measured as it decompresses, so a small
  ``.gz`` cannot stand for terabytes);
* ``open_input`` opens without blocking (``O_NONBLOCK``) and checks the open descriptor again, so a file
  swapped for a FIFO between the check and the open cannot hang the reader either.

Declared sizes inside a file (dimensions, counts) are checked with ``check_dimension`` before anything of that
size is allocated.  Every refusal is an ``InputFileError`` (a ``ValueError``; ``FileNotFoundError`` for a
missing file) whose one-line message names the file and says what to do.
"""
from __future__ import annotations

import os
import stat
from typing import IO, Optional

COMPRESSED_SUFFIXES = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}


class InputFileError(ValueError):
    """A file torchace refuses to read (not a regular file, too large, declaring impossible sizes, corrupt)."""


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n:,} bytes"


def _kind(mode: int) -> Optional[str]:
    """What a non-regular file is, for the message; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe): reading it would wait for a writer, for ever"
    if stat.S_ISCHR(mode):
        return "a character device: reading it may never end"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _named(path) -> str:
    """``path``, and where it leads if it is (or passes through) a symbolic link."""
    name = os.fspath(path)
    try:
        real = os.path.realpath(name)
    except (OSError, ValueError):
        return name
    if real != os.path.abspath(name):
        return f"{name} (a link to {real})"
    return name


def _refuse(path, st: os.stat_result, what: str, max_bytes: int) -> None:
    kind = _kind(st.st_mode)
    if kind == "a directory":
        # the historical wording ("<path>: is a directory, not a <what>")
        raise InputFileError(f"{_named(path)}: is a directory, not a {what}")
    if kind is not None:
        raise InputFileError(f"{_named(path)}: is not a regular file ({kind}), not a {what}; give the path of "
                             "a regular file")
    if st.st_size > max_bytes:
        raise InputFileError(f"{_named(path)}: {_mib(st.st_size)} is larger than any {what} (limit "
                             f"{_mib(max_bytes)})")


def _stat(path, what: str) -> os.stat_result:
    try:
        return os.stat(path)  # follows links: the checks apply to what is read
    except FileNotFoundError:
        raise FileNotFoundError(f"{_named(path)}: no such {what}") from None
    except (TypeError, ValueError):
        raise InputFileError(f"{path!r}: not a file name ({what})") from None
    except OSError as exc:
        raise InputFileError(f"{_named(path)}: cannot be read as a {what} ({exc.strerror})") from None


def check_input_file(path, what: str, max_bytes: int) -> int:
    """Refuse, before reading, an input that is missing, not a regular file (a directory, ``/dev/zero``, a FIFO,
    also behind a symbolic link) or larger than ``max_bytes``; returns its size.  Raises ``FileNotFoundError``
    / ``InputFileError`` naming the file.  For names handed to other readers (ASE, numpy, torch); torchace's
    own readers use ``open_input``."""
    st = _stat(path, what)
    _refuse(path, st, what, max_bytes)
    return st.st_size


def open_input(path, what: str, max_bytes: int, mode: str = "r", encoding: Optional[str] = "utf-8") -> IO:
    """``open(path, mode)`` for reading under the input rule (see the module docstring): the descriptor is opened
    without blocking and checked with ``fstat``, so nothing can make the read wait for ever."""
    check_input_file(path, what, max_bytes)  # the readable message for the common cases
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError(f"{_named(path)}: no such {what}") from None
    except OSError as exc:
        raise InputFileError(f"{_named(path)}: cannot be read as a {what} ({exc.strerror})") from None
    try:
        _refuse(path, os.fstat(fd), what, max_bytes)  # the file may have been replaced since the check
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, mode, encoding=None if "b" in mode else encoding)
    except BaseException:
        os.close(fd)
        raise


def check_decompressed_size(path, what: str, max_bytes: int) -> int:
    """For a ``.gz`` / ``.bz2`` / ``.xz`` file, its decompressed size, refused beyond ``max_bytes`` (a
    decompression bomb) or when the stream is corrupt; otherwise ``check_input_file``'s size.  Streams in
    1 MiB blocks (constant memory; about a second per GB)."""
    size = check_input_file(path, what, max_bytes)
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in COMPRESSED_SUFFIXES:
        return size
    import importlib

    opener = importlib.import_module(COMPRESSED_SUFFIXES[suffix]).open
    total = 0
    try:
        with open_input(path, what, max_bytes, "rb") as raw, opener(raw, "rb") as fh:
            while True:
                block = fh.read(1 << 20)
                if not block:
                    break
                total += len(block)
                if total > max_bytes:
                    raise InputFileError(f"{_named(path)}: decompresses to more than {_mib(max_bytes)}, more than any "
                                         f"{what} (a decompression bomb?)")
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile, lzma.LZMAError are OSError / EOFError subclasses
        raise InputFileError(f"{_named(path)}: corrupt {COMPRESSED_SUFFIXES[suffix]} stream "
                             f"({' '.join(str(exc).split())[:120]}), cannot be read as a {what}") from None
    except Exception as exc:  # zlib.error (a damaged deflate stream), lzma.LZMAError are not OSErrors
        if type(exc).__name__ not in ("LZMAError", "error"):
            raise
        raise InputFileError(f"{_named(path)}: corrupt {COMPRESSED_SUFFIXES[suffix]} stream "
                             f"({' '.join(str(exc).split())[:120]}), cannot be read as a {what}") from None
    return total


def check_dimension(where: str, key: str, value: int, limit: int, what: str = "") -> int:
    """A size declared inside a file (a dimension, a count), refused above ``limit`` before anything of that size
    is allocated; ``where`` names the file, ``key`` the field."""
    if value > limit:
        raise InputFileError(f"{where}: '{key}' = {value:,} is larger than any {what or 'model'} torchace reads "
                             f"(limit {limit:,}); the file is corrupt or not meant for torchace")
    return value
