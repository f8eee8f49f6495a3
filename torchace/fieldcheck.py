"""Type and range checks for configuration fields, with messages that name the field.

Used for ``ACEConfig`` dictionaries (model files, the ``model`` section of a fit config) and for the other
fit-config sections.  Python's own conversions are too lenient for configuration files: ``bool("no")`` is
True, ``int(2.5)`` is 2 and ``float("inf")`` passes, so a typo would silently become a different model.
Every check raises ``ValueError("<where>: '<key>' must be …, got <value>")``.
"""
from __future__ import annotations

import math
import numbers
from typing import Any


def short_repr(v: Any, limit: int = 120) -> str:
    """``repr`` cut to ``limit`` characters: error messages never embed an unbounded value."""
    r = repr(v)
    return r if len(r) <= limit else r[: limit - 25] + f"... ({len(r):,} characters)"


def _fail(where: str, key: str, what: str, v: Any) -> None:
    raise ValueError(f"{where}: '{key}' must be {what}, got {short_repr(v)}")


def is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def check_bool(where: str, key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        _fail(where, key, "true or false", v)
    return v


def check_int(where: str, key: str, v: Any, minimum: int = None) -> int:
    # 3.0 from a JSON writer is accepted, 2.5 and True are not
    if not is_number(v) or not math.isfinite(v) or v != int(v):
        _fail(where, key, "an integer", v)
    if minimum is not None and v < minimum:
        _fail(where, key, f"an integer >= {minimum}", v)
    return int(v)


def check_float(where: str, key: str, v: Any, *, positive: bool = False, nonnegative: bool = False) -> float:
    if not is_number(v) or not math.isfinite(v):
        _fail(where, key, "a finite number", v)
    if positive and not v > 0:
        _fail(where, key, "a positive number", v)
    if nonnegative and v < 0:
        _fail(where, key, "a non-negative number", v)
    return float(v)


def check_str(where: str, key: str, v: Any, choices=None, allow_none: bool = False):
    if v is None and allow_none:
        return v
    if not isinstance(v, str) or (choices is not None and v not in choices):
        _fail(where, key, "one of " + ", ".join(map(repr, choices)) if choices else "a string", v)
    return v


def check_paths(where: str, key: str, v: Any):
    """A path or a non-empty list of paths."""
    if isinstance(v, str) and v:
        return v
    if isinstance(v, (list, tuple)) and v and all(isinstance(p, str) and p for p in v):
        return v
    _fail(where, key, "a file name or a list of file names", v)


def check_ace_fields(d: dict, where: str = "ACEConfig") -> None:
    """Types and ranges of the ``ACEConfig`` fields present in ``d`` (their meaning: docs/conventions.md)."""
    if "elements" in d:
        el = d["elements"]
        if not isinstance(el, (list, tuple)) or not el or not all(
                isinstance(e, str) or (is_number(e) and e == int(e)) for e in el):
            _fail(where, "elements", "a non-empty list of element symbols or atomic numbers", el)
    if "order" in d:
        check_int(where, "order", d["order"], minimum=1)
    if "totaldegree" in d:
        td = d["totaldegree"]
        for v in (td if isinstance(td, (list, tuple)) else [td]):
            check_float(where, "totaldegree", v, positive=True)
    if "wL" in d:
        check_float(where, "wL", d["wL"], positive=True)
    if d.get("rcut") is not None:
        # model files written by old versions may hold 0 for "default"; ACEConfig.from_dict maps it to None
        if d["rcut"] != 0:
            check_float(where, "rcut", d["rcut"], positive=True)
    r0 = d.get("r0")
    if r0 is not None and not isinstance(r0, dict):
        rows = r0 if isinstance(r0, (list, tuple)) else [[r0]]
        for row in rows:
            for v in (row if isinstance(row, (list, tuple)) else [row]):
                check_float(where, "r0", v, positive=True)
    E0 = d.get("E0")
    if E0 is not None:
        vals = E0.values() if isinstance(E0, dict) else E0 if isinstance(E0, (list, tuple)) else None
        if vals is None:
            _fail(where, "E0", "a list of numbers or a mapping element -> number", E0)
        for v in vals:
            check_float(where, "E0", v)
    for key in ("pair", "zbl"):
        if key in d:
            check_bool(where, key, d[key])
    for key in ("zbl_inner", "zbl_outer"):
        if d.get(key) is not None:
            check_float(where, key, d[key], nonnegative=True)


def unique_keys(pairs):
    """``json`` object hook: a key given twice is an error (the JSON standard leaves it open; Python keeps the
    last silently)."""
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r}")
        d[k] = v
    return d


def strict_yaml(text: str):
    """``yaml.safe_load`` that refuses a key given twice (PyYAML keeps the last silently)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise ValueError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return loader.construct_mapping(node, deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return yaml.load(text, Loader=UniqueKeyLoader)
