"""The LAMMPS driver script of ``torchace lammps MODEL DATA``: a runnable Python script in which LAMMPS reads a
data file and runs NVT MD with a torchace model through ``fix external`` (``calculators.lammps.attach``).

File names reach the script only as Python ``repr`` literals, and its ``read_data`` line quotes the data file
name with ``io.lammps_words.lammps_word`` (a name no LAMMPS quoting can hold is refused before anything is
written): a file name never runs as code or as LAMMPS commands (issue 26, class 5).
"""
from __future__ import annotations

import os
import sys
from typing import Dict, Optional, Sequence

from ..io.lammps_words import lammps_word
from ..model.backends import AUTO
from .lammps import DEFAULT_SKIN

SCRIPT = '''#!/usr/bin/env python
"""LAMMPS MD with the torchace model MODEL (below) through fix external (written by `torchace lammps`).

Run this file with python.  LAMMPS integrates (NVT, Nosé-Hoover, {steps} steps of {timestep} ps at
{temperature} K) and writes the log and thermo output; torchace computes energies, forces, virial and
per-atom energies (docs/lammps.md).
Serial: one MPI rank; torch threads: TORCH_THREADS below (or OMP_NUM_THREADS).
"""
import os

import torch

from torchace.calculators.lammps import attach, lammps_input_lines, new_lammps
from torchace.io.lammps_words import lammps_word

MODEL = {model!r}
DATA = {data!r}
ELEMENTS_BY_TYPE = {elements!r}   # LAMMPS type 1, 2, ... (the data file's type order)
TORCH_THREADS = int(os.environ.get("OMP_NUM_THREADS", "{threads}"))

torch.set_num_threads(TORCH_THREADS)
lmp = new_lammps(["-log", {log!r}])
lmp.commands_list(["units metal", "atom_style atomic", "atom_modify map array",
                   "read_data " + lammps_word(DATA, "LAMMPS data file name")])
lmp.commands_list(lammps_input_lines(MODEL, ELEMENTS_BY_TYPE))
driver = attach(lmp, MODEL, ELEMENTS_BY_TYPE, backend={backend!r}, skin={skin!r})
lmp.commands_list([
    "velocity all create {temperature} {seed} mom yes rot yes dist gaussian",
    "timestep {timestep}",
    "fix md all nvt temp {temperature} {temperature} {tdamp}",
    "compute pe_atom all pe/atom",
    "thermo {thermo}",
    "thermo_style custom step time temp pe ke etotal press vol",
    "thermo_modify flush yes",
])
driver.run({steps})
print(f"torchace ({{driver.backend}}): {{driver.n_calls}} force calls, {{driver.n_neighbour_list_builds}} "
      f"neighbour-list builds, {{driver.timings['callback'] / max(driver.n_calls, 1) * 1e3:.2f}} ms per call")
lmp.close()
'''


def driver_script(model_path: str, data_file: str, elements_by_type: Sequence[str], *, steps: int = 1000,
                  timestep: float = 0.001, temperature: float = 300.0, thermo: int = 100,
                  backend: str = AUTO, skin: float = DEFAULT_SKIN, seed: int = 12345, threads: int = 1,
                  log_file: str = "log.lammps") -> str:
    """The text of a runnable Python script: LAMMPS reads ``data_file`` (``atom_style atomic``, ``units
    metal``; type t is ``elements_by_type[t - 1]``) and runs NVT MD with the torchace model ``model_path``
    through fix external.  ``torchace lammps MODEL DATA --elements ...`` prints or writes it.  A data file name
    that no LAMMPS line can hold (a newline, non-ASCII, ...) raises ``LammpsWordError``."""
    from ase.data import atomic_numbers

    if isinstance(elements_by_type, str) or not elements_by_type:
        raise ValueError("elements_by_type: give the element of each LAMMPS atom type, type 1 first")
    for t, el in enumerate(elements_by_type, start=1):
        if el not in atomic_numbers:
            raise ValueError(f"LAMMPS type {t}: {el!r} is not an element symbol")
    lammps_word(data_file, "LAMMPS data file name")  # the script's read_data line: refused before anything is written
    return SCRIPT.format(model=os.fspath(model_path), data=os.fspath(data_file), elements=list(elements_by_type),
                         steps=int(steps), timestep=float(timestep), temperature=float(temperature),
                         tdamp=100 * float(timestep), thermo=int(thermo), backend=backend, skin=float(skin),
                         seed=int(seed), threads=int(threads), log=os.fspath(log_file))


# The start of every driver script (SCRIPT's first two lines): the marker of the output rule (torchace.atomic)
DRIVER_SCRIPT_HEADER = '#!/usr/bin/env python\n"""LAMMPS MD with the torchace model '


def write_driver_script(path: Optional[str], model_path: str, data_file: str, elements_by_type: Sequence[str],
                        *, overwrite: bool = False, **kwargs) -> Dict[str, str]:
    """``driver_script`` printed (``path`` None or "-") or written atomically to ``path``; the CLI's work.  An
    existing file at ``path`` is replaced only if it is a driver script torchace wrote, or with ``overwrite``
    (torchace.atomic, the output rule): never a hand-written script."""
    from ..atomic import check_output, text_output, write_output, write_text

    kind = text_output(DRIVER_SCRIPT_HEADER.partition("\n")[2], "LAMMPS driver script written by torchace lammps")
    if path not in (None, "-"):
        check_output(path, kind, overwrite)
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"{model_path}: no such model file")
    if not os.path.isfile(data_file):
        raise FileNotFoundError(f"{data_file}: no such LAMMPS data file")
    text = driver_script(model_path, data_file, elements_by_type, **kwargs)
    if path in (None, "-"):
        sys.stdout.write(text)
        return {"script": text}
    write_output(path, kind, lambda tmp: write_text(tmp, text), ".py", overwrite)
    return {"script": text, "path": path}
