import os
import sys
from pathlib import Path

import pytest
import torch

# without a GPU the Triton kernels run on CPU tensors under Triton's interpreter, which reads this variable
# when Triton is imported: set it before anything imports Triton (tests/model/test_triton.py)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# the test kit beside the stage folders (script_loader, acejax_bridge) imports from every tests/<stage>/ folder
sys.path.insert(0, str(Path(__file__).resolve().parent))

from torchace.testing import available_devices  # noqa: E402

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(config, items):
    """Every test under tests/integration/ (outside references, the scripts, the notebooks) carries the
    ``integration`` marker, from its path: the inner loop ``-m "not slow and not integration"`` leaves them out,
    the full suite runs them."""
    for item in items:
        if INTEGRATION in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(params=available_devices())
def device(request):
    return request.param


@pytest.fixture(scope="session")
def si_model():
    import torchace
    from torchace.testing import randomize_coefficients

    m = torchace.ace_model(["Si"], 3, 12)
    randomize_coefficients(m, 0.1, seed=1)
    return m


@pytest.fixture(scope="session")
def sige_model():
    import torchace
    from torchace.testing import randomize_coefficients

    m = torchace.ace_model(["Si", "Ge"], 3, 8, E0={"Si": -158.5, "Ge": -100.25})
    randomize_coefficients(m, 0.1, seed=2)
    return m


@pytest.fixture(scope="module")
def one_thread():
    """Small systems: intra-op threads only add overhead on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SI_TINY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "acedata" / "Si_tiny.xyz"


@pytest.fixture(scope="module")
def si_fitted():
    """Si_tiny fit (order 2, totaldegree 8, rcut 5.5, QR) when the shared data exist, else small random coefficients."""
    import torchace
    from torchace.fit import solvers
    from torchace.testing import randomize_coefficients

    m = torchace.ace_model(["Si"], 2, 8, rcut=5.5)
    if SI_TINY.exists():
        torchace.fit(m, str(SI_TINY), solver=solvers.QR(lam=1e-3), compute_errors=False)
    else:
        randomize_coefficients(m, 0.005, seed=4)
    return m
