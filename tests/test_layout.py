"""The package layout (issue "Architecture"): stages without import cycles (module- or function-level), no
private names imported across modules, a small root, files of a few hundred lines, functions of at most 120 lines
and 20 parameters, the public names after a plain ``import torchace``, and ``torchace.fit`` / ``torchace.train``
both callable and packages."""
import ast
import sys
from pathlib import Path

from torchace.testing import run

ROOT = Path(__file__).resolve().parents[1] / "torchace"


def _modules():
    mods = {}
    for p in ROOT.rglob("*.py"):
        rel = p.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts)
        mods[name[: -len(".__init__")] if name.endswith(".__init__") else name] = p
    return mods


def _imports(mods):
    edges, private = {}, []
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        out = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("torchace"):
                    continue
                for a in node.names:
                    full = f"{target}.{a.name}"
                    out.add(full if full in mods else target)
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        private.append((m, target, a.name))
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.startswith("torchace"))
        out.discard(m)
        edges[m] = {t for t in out if t in mods}
    return edges, private


def test_no_import_cycles_and_no_private_imports():
    mods = _modules()
    edges, private = _imports(mods)
    assert not private, private
    # the root package imports everything (it is the public face); cycles are looked for below it
    graph = {m: {t for t in ts if t != "torchace"} for m, ts in edges.items() if m != "torchace"}
    state, stack = {}, []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in graph.get(v, ()):
            if state.get(w) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(w):] + [w]))
            if w not in state:
                visit(w)
        stack.pop()
        state[v] = 2

    for v in graph:
        if v not in state:
            visit(v)


def test_small_root_and_short_files():
    root_modules = [p.name for p in ROOT.glob("*.py") if p.name != "__init__.py"]
    # the root holds the cross-cutting rules every stage uses (outputs: atomic, inputs, resources: memory;
    # field checks, keys, config) and the CLI and the test kit: nothing stage-specific
    assert len(root_modules) <= 9, root_modules
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > 520}
    assert not long, long


def test_short_functions():
    """No function in torchace/ over 120 lines or 20 parameters (issue 30): a longer one is several steps, a
    longer signature an options object (``train.options.TrainOptions``)."""
    long = {}
    for p in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                n_params = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + (a.vararg is not None) \
                    + (a.kwarg is not None)
                n_lines = node.end_lineno - node.lineno + 1
                name = f"{p.relative_to(ROOT).as_posix()}::{node.name}"
                if n_lines > 120 or n_params > 20:
                    long[name] = f"{n_lines} lines, {n_params} parameters"
    assert not long, long


def test_public_names_after_a_plain_import():
    code = ("import torchace\n"
            "for n in ['ace_model', 'fit', 'errors', 'evaluate', 'design_matrix_rows', 'load', 'export',\n"
            "          'example_data']:\n"
            "    assert callable(getattr(torchace, n)), n\n"
            "assert torchace.priors.algebraic_smoothness and torchace.solvers.BLR\n"
            "assert torchace.io.read_yace and torchace.io.write_yace\n"
            "assert torchace.calculators.TorchACECalculator\n"
            "assert torchace.backends.available()['reference'] is None\n"
            "import torchace.fit.assembly, torchace.train.trainer\n"
            "assert torchace.fit.assembly.assemble and torchace.train.trainer.train is torchace.train.train\n"
            "assert callable(torchace.fit) and callable(torchace.train)\n")
    run([sys.executable, "-c", code], check=True, timeout=300)


def test_no_prefixed_modules():
    """A family of modules is a subpackage (``train/``, ``io/yace/``), never a file-name prefix standing in for one
    (``train_*.py`` beside ``fit.py``, ``yace_*.py`` beside ``io/``)."""
    prefixed = sorted(str(p.relative_to(ROOT.parent)) for p in ROOT.rglob("*.py")
                      if p.name.startswith(("train_", "yace_")))
    assert not prefixed, f"use a subpackage, not a file-name prefix: {prefixed}"
FAMILIES = ("ACEModel", "PACEModel")


def test_no_family_duck_typing():
    """Model families are told apart by their declared ``capabilities`` (``torchace.model.contract``), not by
    marker attributes (``getattr(model, "nonlinear")``, ``hasattr(model, "density_coefficients")``) or, outside
    ``torchace/model/``, by isinstance checks against the model classes."""
    bad = []
    for p in ROOT.rglob("*.py"):
        rel = p.relative_to(ROOT).as_posix()
        inside_model = rel.startswith("model/")
        for node in ast.walk(ast.parse(p.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) >= 2):
                continue
            name, arg = node.func.id, node.args[1]
            attr = arg.value if isinstance(arg, ast.Constant) else None
            if name == "getattr" and attr == "nonlinear" or name == "hasattr" and attr == "density_coefficients":
                bad.append(f"{rel}:{node.lineno}: {name}(..., {attr!r})")
            if name == "isinstance" and not inside_model:
                classes = arg.elts if isinstance(arg, ast.Tuple) else [arg]
                names = {c.id if isinstance(c, ast.Name) else getattr(c, "attr", None) for c in classes}
                if names & set(FAMILIES):
                    bad.append(f"{rel}:{node.lineno}: isinstance(..., {sorted(names & set(FAMILIES))})")
    assert not bad, "tell model families apart by model.capabilities (torchace.model.contract):\n" + "\n".join(bad)


def test_calculators_import_no_fit_or_train():
    """The engine adapters (calculators/) evaluate models: they import no fitting or training module (committee
    predictions come from torchace.uncertainty), at module or function level."""
    mods = _modules()
    edges, _ = _imports(mods)
    bad = {m: sorted(t for t in ts if t.split(".")[:2] in (["torchace", "fit"], ["torchace", "train"]))
           for m, ts in edges.items() if m.startswith("torchace.calculators")}
    assert not {m: ts for m, ts in bad.items() if ts}, bad
