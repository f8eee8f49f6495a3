"""Exports of a fitted model for use outside torchace.

``export(model, path, format="torchscript")`` writes a TorchScript archive (``torch.jit.script`` +
``torch.jit.save``) that ``torch.jit.load`` reads without torchace installed.  The archive carries a JSON
document, ``extra/torchace_metadata.json`` (``_extra_files``), with the elements (atomic numbers and
symbols), rcut, units, dtype, the torchace/torch versions, the model config and the calling convention
of ``forward``; ``read_metadata(path)`` reads it with ``zipfile`` alone, ``load_torchscript(path)``
returns (module, metadata).  Writes are atomic (temporary file in the target directory + ``os.replace``).
The module is ``torch.jit.script`` of a copy of the model itself, linear or nonlinear (same ``forward``
contract; a nonlinear model's metadata has a ``"nonlinear"`` entry; docs/export.md, "Nonlinear models").

``format="metatomic"``: a metatomic ``AtomisticModel`` (``torchace.export_metatomic``; needs the optional
``metatomic-torch`` package) for LAMMPS ``pair_style metatomic``, i-PI and ASE (``metatomic-ase``).
``format="yace"``: ``torchace.io.write_yace(model, path, **kwargs)`` (ML-PACE / LAMMPS ``pair_style pace``).
``dtype`` (torch.float32/float64 or their names) converts a copy of the model before the export.
See docs/export.md.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import warnings
import zipfile
from typing import Any, Dict, Optional, Tuple

import torch

from ..atomic import check_output, torchscript_output, write_output
from ..model.contract import capabilities

METADATA_FILE = "torchace_metadata.json"
TS_FORMAT = "torchace-torchscript"
TS_FORMAT_VERSION = 1

FORWARD_SIGNATURE = {
    "inputs": [
        ["positions", "float [N, 3], Angstrom, all structures concatenated"],
        ["species", "int64 [N], element index into 'atomic_numbers' (0..n_elements-1), not the atomic number"],
        ["batch", "int64 [N], structure index of each atom (0..n_structures-1)"],
        ["edge_index", "int64 [2, E], rows (i, j): centre and neighbour of every pair with r_ij < rcut "
                       "(both directions; longer pairs may be included, they contribute zero)"],
        ["unit_shifts", "float [E, 3], integer lattice shifts S: r_ij = x_j - x_i + S @ cell[batch[i]]"],
        ["cell", "float [n_structures, 3, 3], rows are lattice vectors, Angstrom"],
        ["n_structures", "int"],
        ["compute_forces", "bool"],
        ["compute_virials", "bool"],
    ],
    "outputs": {
        "energy": "[n_structures], eV",
        "node_energy": "[N], eV (site energies, sum to the energy)",
        "forces": "[N, 3], eV/Angstrom (if compute_forces)",
        "virial": "[n_structures, 3, 3], eV, W = -dE/d(strain) = -V*stress (if compute_virials)",
    },
}


def export_metadata(model) -> Dict[str, Any]:
    """The JSON metadata stored in an export (plain types only)."""
    from ..keys import VERSION as __version__
    from .model_file import UNITS

    nonlinear = capabilities(model).nonlinear
    # what the export carries: a nonlinear model's committee is not exported (``export_copy``)
    comm = None if nonlinear else getattr(model, "committee", None)
    meta = {
        "format": TS_FORMAT,
        "format_version": TS_FORMAT_VERSION,
        "torchace_version": __version__,
        "torch_version": torch.__version__,
        "elements": list(model.config.elements),
        "atomic_numbers": [int(z) for z in model.config.numbers],
        "rcut": float(model.rcut),
        # from the model's E0 buffer, which is what the module adds (fit may set it from isolated atoms)
        "E0": {sym: float(e) for sym, e in zip(model.config.elements, model.E0.detach().cpu().tolist())},
        "units": dict(UNITS),
        "dtype": str(model.coefficients.dtype).replace("torch.", ""),
        # a nonlinear model: the size of the linear basis its densities and pair part are expanded in
        "basis_size": int(model.basis_size),
        "committee_size": 0 if comm is None else int(comm.shape[0]),
        "config": model.config_dict(),
        "model_metadata": getattr(model, "metadata", None) or {},
        "forward": FORWARD_SIGNATURE,
    }
    if nonlinear:  # linear exports keep their metadata exactly as before
        meta["nonlinear"] = {"densities": int(model.densities), "embedding": model.embedding_name,
                             "learnable_radials": bool(model.learnable_radials),
                             "n_parameters": int(sum(p.numel() for p in model.parameters() if p.requires_grad))}
    return meta


@contextlib.contextmanager
def quiet_jit():
    """Recent torch marks torch.jit.script/save/load as deprecated (in favour of torch.export); the TorchScript
    archive is still what C++ consumers (LAMMPS plugins, metatomic) load, so silence that one warning here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        yield


NONLINEAR_COMMITTEE = ("the committee of a nonlinear model is not exported (no energy_ensemble / uncertainty "
                       "outputs): the export gives the model's energies, forces and virials only")


def export_copy(model):
    """The copy of ``model`` that an export compiles, in eval mode (the model itself is not modified).  A
    nonlinear model's committee is not exported (yet): dropped, with a warning."""
    m = copy.deepcopy(model).eval()
    if capabilities(m).nonlinear:
        if m.committee is not None:
            warnings.warn(NONLINEAR_COMMITTEE, UserWarning, stacklevel=3)
        m.committee = None
    return m


def script_model(model) -> torch.jit.ScriptModule:
    """A TorchScript copy of ``model`` in eval mode: ``torch.jit.script`` of the model's own code (``ACEModel``:
    its ``__jit_*`` declarations keep the Python-only parts out)."""
    m = export_copy(model)
    with quiet_jit():
        return torch.jit.script(m)


def as_dtype(dtype) -> Optional[torch.dtype]:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"float64": torch.float64, "double": torch.float64, "float32": torch.float32, "float": torch.float32}
    if str(dtype) not in names:
        raise ValueError(f"unknown dtype {dtype!r}; choose float64 or float32")
    return names[str(dtype)]



# an existing TorchScript export of torchace is replaced (re-export); anything else (training data, a model file,
# another program's archive) only with overwrite=True (torchace.atomic, the output rule)
ARCHIVE = torchscript_output("TorchScript archive written by torchace")


def export_torchscript(model, path: str, metadata: Optional[Dict[str, Any]], overwrite: bool = False) -> str:
    check_output(os.fspath(path), ARCHIVE, overwrite)
    meta = export_metadata(model)
    if metadata:
        meta["user"] = metadata
    try:
        text = json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot export: metadata is not plain JSON: {exc}") from None
    scripted = script_model(model)
    def write(tmp: str) -> None:
        with quiet_jit():
            torch.jit.save(scripted, tmp, _extra_files={METADATA_FILE: text})

    write_output(path, ARCHIVE, write, ".pt", overwrite)  # checked again: a file may have appeared meanwhile
    return path


# an export holds the model's constants (coupling, coefficients): tens of MB for large models
MAX_ARCHIVE_BYTES = 4 << 30


def _check_exists(path: str) -> None:
    """The input rule (``torchace.inputs``): a missing file, a FIFO, a device or a directory is refused before
    ``zipfile`` or ``torch.jit.load`` opens it (a FIFO would block them for ever)."""
    from ..inputs import check_input_file

    try:
        check_input_file(path, "TorchScript export", MAX_ARCHIVE_BYTES)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None


def read_metadata(path: str) -> Dict[str, Any]:
    """The metadata of a TorchScript export, read with ``zipfile`` and ``json`` only (no torch, no code)."""
    path = os.fspath(path)
    _check_exists(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a TorchScript archive (not a zip file)")
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n.endswith("/extra/" + METADATA_FILE)]
        if not names:
            raise ValueError(f"{path}: no {METADATA_FILE} in the archive (not exported by torchace.export)")
        return json.loads(z.read(names[0]).decode("utf-8"))


def load_torchscript(path: str, map_location=None) -> Tuple[torch.jit.ScriptModule, Dict[str, Any]]:
    """Load a TorchScript export: ``(module, metadata)``.

    Call the module as ``module(positions, species, batch, edge_index, unit_shifts, cell, n_structures,
    compute_forces, compute_virials)`` (``metadata["forward"]``), or through
    ``torchace.evaluate(model, structures, module=module)`` / ``TorchACECalculator(path)``.
    """
    path = os.fspath(path)
    _check_exists(path)
    extra = {METADATA_FILE: ""}
    with quiet_jit():
        module = torch.jit.load(path, map_location=map_location, _extra_files=extra)
    text = extra[METADATA_FILE]
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if not text:
        raise ValueError(f"{path}: no {METADATA_FILE} in the archive (not exported by torchace.export)")
    meta = json.loads(text)
    if meta.get("format") != TS_FORMAT:
        raise ValueError(f"{path}: metadata format {meta.get('format')!r} is not {TS_FORMAT!r}")
    if meta.get("format_version") != TS_FORMAT_VERSION:
        raise ValueError(f"{path}: metadata format_version {meta.get('format_version')!r} is not supported "
                         f"(this torchace reads {TS_FORMAT_VERSION})")
    return module, meta

