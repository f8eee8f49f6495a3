"""Import a repository script (``scripts/NAME.py``) as a module, for tests that call its functions."""
import importlib.util
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    """``scripts/<name>.py`` as module ``script_<name>`` (registered in sys.modules: dataclasses look their
    module up there)."""
    mod_name = f"script_{name}"
    spec = importlib.util.spec_from_file_location(mod_name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    spec.loader.exec_module(mod)
    return mod
