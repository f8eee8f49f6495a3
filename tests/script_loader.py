"""Import a repository script (``scripts/PATH.py``) as a module.  Only for scripts whose logic has not yet moved
into torchace: the regularity study (its data readers; issue 30 moves the study onto ``torchace.fit``'s
assembly) (``scripts/train.py`` was removed in issue 30).  Every other test runs scripts as scripts."""
import importlib.util
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(path: str):
    """``scripts/<path>.py`` (e.g. ``studies/regularity_study``) as module ``script_<name>`` (registered in
    sys.modules: dataclasses look their module up there)."""
    mod_name = f"script_{Path(path).name}"
    spec = importlib.util.spec_from_file_location(mod_name, SCRIPTS / f"{path}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    spec.loader.exec_module(mod)
    return mod
