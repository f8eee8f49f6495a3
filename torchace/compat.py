"""Old (flat, before the stage layout) import paths, kept for one release: ``import torchace.rows`` still
works and warns with the new path.  Names that are also functions of ``torchace`` (``fit``, ``evaluate``,
``errors``, ``export``) are not aliased: importing a module under them would shadow the function."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

# old module (relative to torchace) -> new module(s); several: the old module was split, its alias holds all
OLD_PATHS = {
    "batch": ("structures.batch",), "neighbours": ("structures.neighbours",),
    "spec": ("basis.spec",), "radial": ("basis.radial",), "sph": ("basis.angular",),
    "coupling": ("basis.coupling_coefficients",), "purify": ("basis.purification",),
    "basis": None,  # now a package of the same name (embedding, product, coupling)
    "model": None, "strain": ("model.strain",), "fused": ("model.backends.fused",),
    "runtime": ("model.backends.runtime",), "pace": ("model.pace",),
    "repulsion": ("model.zbl", "fitting.repulsion"), "uncertainty": ("fitting.committee",),
    "data": ("fitting.data", "fitting.weights"), "assembly": ("fitting.assembly",), "rows": ("fitting.rows",),
    "priors": ("fitting.priors",), "solvers": ("fitting.solvers",), "checkpoint": ("fitting.checkpoint",),
    "distributed": ("fitting.distributed",), "fitconfig": ("fitting.config",),
    "serialization": ("io.model_file",), "export_metatomic": ("io.metatomic",),
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("torchace."):
            return None
        old = fullname[len("torchace."):]
        if OLD_PATHS.get(old) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        old = spec.name[len("torchace."):]
        new = OLD_PATHS[old]
        warnings.warn(f"torchace.{old} moved to torchace.{' / torchace.'.join(new)} (docs/architecture.md); "
                      "the old path goes in the next release", DeprecationWarning, stacklevel=3)
        parts = [importlib.import_module("torchace." + n) for n in new]
        if len(parts) == 1:
            return parts[0]
        mod = types.ModuleType(spec.name, parts[-1].__doc__)
        for p in parts:
            mod.__dict__.update({k: v for k, v in vars(p).items() if not k.startswith("__")})
        return mod

    def exec_module(self, module):
        pass


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.insert(0, _Alias())  # before the path finder: torchace/data/ (package data) is no module
