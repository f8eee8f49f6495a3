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
    """``repr`` cut to ``limit`` characters: error messages never embed an unbounded value, and the repr of a
    huge (or alias-expanded, deeply nested) value is never built — containers are shown through
    ``reprlib`` (a few items per level, a few levels) with their length."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 3, 6, 6, 4, 4
    r.maxstring, r.maxother, r.maxlong = limit, limit, 40
    try:
        text = r.repr(v)
    except Exception:  # noqa: BLE001 — a repr that fails must not hide the real error
        text = f"<{type(v).__name__}>"
    size = len(v) if isinstance(v, (list, tuple, dict, set, str)) else None
    if isinstance(v, str) and len(v) > limit:
        return text[: limit - 25] + f"... ({len(v):,} characters)"
    if size is not None and size > 6 and not isinstance(v, str):
        text = text[: limit - 40] + ("..." if len(text) > limit - 40 else "")
        return f"{text} (a {type(v).__name__} of {size:,} items; cut to {limit} characters)"
    return text if len(text) <= limit else text[: limit - 25] + f"... (cut to {limit} characters)"


def _fail(where: str, key: str, what: str, v: Any) -> None:
    hint = ""
    if isinstance(v, str):
        try:
            float(v)
            hint = " (text, not a number: YAML 1.1 reads 1e3 as text; write 1000 or 1.0e+3, without quotes)"
        except ValueError:
            pass
    raise ValueError(f"{where}: '{key}' must be {what}, got {short_repr(v)}{hint}")


def is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def is_finite(v: Any) -> bool:
    """``math.isfinite`` that is False (not OverflowError) for integers too large for a float."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def check_bool(where: str, key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        _fail(where, key, "true or false", v)
    return v


def check_int(where: str, key: str, v: Any, minimum: int = None) -> int:
    # 3.0 from a JSON writer is accepted, 2.5 and True are not
    if not is_number(v) or not is_finite(v) or v != int(v):
        _fail(where, key, "an integer" if not is_number(v) or not isinstance(v, int) else "an integer of a "
              "sensible size", v)
    if minimum is not None and v < minimum:
        _fail(where, key, f"an integer >= {minimum}", v)
    return int(v)


def check_float(where: str, key: str, v: Any, *, positive: bool = False, nonnegative: bool = False) -> float:
    if not is_number(v) or not is_finite(v):
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
                isinstance(e, str) or (is_number(e) and is_finite(e) and e == int(e)) for e in el):
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
    if isinstance(r0, dict):
        for pair, v in r0.items():
            check_float(where, f"r0[{pair!r}]", v, positive=True)
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


# a fit config has a few hundred nodes; anchors/aliases are allowed, but not ones that expand to more than this
MAX_YAML_NODES = 1_000_000


def _expanded_size(root, limit: int) -> int:
    """Nodes of a composed YAML document with every alias expanded (a DAG walk: shared nodes are counted at
    each use, each visited once), refusing recursive aliases and more than ``limit`` nodes — a few lines of
    aliases can stand for billions of nodes (an alias bomb)."""
    import yaml

    size, active, stack = {}, set(), [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in size:
            continue
        if isinstance(node, yaml.MappingNode):
            kids = [x for kv in node.value for x in kv]
        elif isinstance(node, yaml.SequenceNode):
            kids = list(node.value)
        else:
            kids = []
        if not done:
            if id(node) in active:
                raise ValueError(f"recursive YAML alias (line {node.start_mark.line + 1})")
            active.add(id(node))
            stack.append((node, True))
            for k in kids:
                if id(k) in active and id(k) not in size:
                    raise ValueError(f"recursive YAML alias (line {k.start_mark.line + 1})")
                stack.append((k, False))
            continue
        active.discard(id(node))
        size[id(node)] = n = 1 + sum(size[id(k)] for k in kids)
        if n > limit:
            raise ValueError(f"YAML anchors/aliases expand to more than {limit:,} values (line "
                             f"{node.start_mark.line + 1}): an alias bomb?")
    return size[id(root)]


def strict_yaml(text: str, max_nodes: int = MAX_YAML_NODES):
    """``yaml.safe_load`` that refuses a key given twice (PyYAML keeps the last silently), aliases that expand to
    more than ``max_nodes`` values, and nesting deeper than Python's recursion allows."""
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
    loader = UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, max_nodes)
        return loader.construct_document(node)
    except RecursionError:
        raise ValueError("nested too deeply to be a configuration file") from None
    finally:
        loader.dispose()


# the input rule for files (regular files only, size limits) lives in torchace.inputs; re-exported for callers
from .inputs import check_input_file  # noqa: E402,F401


def check_device(where: str, key: str, device: str) -> None:
    """A torch device string that exists here ('cpu', 'cuda', 'cuda:1'; CUDA only where torch sees it)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{where}: '{key}' must be a torch device such as 'cpu', 'cuda' or 'cuda:0', got "
                         f"{device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{where}: '{key}' is {device!r} but CUDA is not available here (torch "
                             f"{torch.__version__}{', a CPU build' if torch.version.cuda is None else ''})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{where}: '{key}' is {device!r} but there are {torch.cuda.device_count()} CUDA "
                             "device(s)")
    elif dev.type not in ("cpu", "mps", "xpu"):
        raise ValueError(f"{where}: '{key}' must be 'cpu' or a CUDA device, got {device!r}")
