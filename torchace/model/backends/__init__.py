"""Evaluation backends (``reference``, ``analytic``, ``fused``, ``triton``) and their selection; see
``registry`` for the table of what each supports.  ``backend="auto"`` everywhere means ``select``."""
from .registry import AUTO, AUTO_ORDER, BACKENDS, EVALUATE, ROWS, Backend, available, select

__all__ = ["AUTO", "AUTO_ORDER", "BACKENDS", "EVALUATE", "ROWS", "Backend", "available", "select"]
