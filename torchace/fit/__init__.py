"""Stage 4a, fit: assemble and solve once (ACEpotentials.jl's ``acefit!``).  Labelled data (``data``), weights
(``weights``), design-matrix rows (``rows``), weighted assembly (``assembly``, ``checkpoint``, ``distributed``),
priors (``priors``), solvers (``solvers/``), Gram-only and dual (kernel) solvers for large bases (``gram``,
``dual``, ``streams``) with their λ/prior scans (``scans``: ``scan``, ``scan_dual``), the fit driver
(``driver``), error tables (``metrics``), repulsion data (``repulsion``), close contacts (``contacts``) and the
``torchace fit`` config (``config``).  Iterative
training is ``torchace.train``, committees ``torchace.uncertainty``.

``torchace.fit`` is both this package and the fit function: calling the module runs ``driver.fit``
(``torchace.fit(model, data)``), and ``torchace.fit.assembly`` etc. are its submodules."""
import inspect
import sys
import types

from . import dual, gram, priors, repulsion, solvers
from .driver import FitResult, fit, solve_system
from .scans import ScanResult, scan, scan_data, scan_dual, split
from .metrics import errors
from .rows import design_matrix_rows

__all__ = ["FitResult", "fit", "solve_system", "errors", "design_matrix_rows", "priors", "repulsion", "solvers",
           "gram", "dual", "scan", "scan_dual", "scan_data", "split", "ScanResult"]


class _CallablePackage(types.ModuleType):
    """``torchace.fit(...)`` is ``torchace.fit.fit(...)`` (the package keeps the function's name and signature)."""

    # the function itself (not a wrapper): no extra frame, so warnings point at the caller
    __call__ = staticmethod(fit)


sys.modules[__name__].__class__ = _CallablePackage
__signature__ = inspect.signature(fit)  # inspect.signature(torchace.fit) is the function's
