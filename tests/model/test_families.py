"""The model contract (``torchace.testing.contract.ModelContractTests``) over every model family: symmetry,
finite differences of forces and virial, isolated atom = E0, cutoff smoothness, TorchScript and model-file
round trips, backend agreement (1e-12 in float64).  Small models (order 2, totaldegree 6) with random
coefficients of a size that makes every term count; a check a family cannot do is skipped with the reason."""
import pytest
import torch

import torchace
from torchace.io import read_yace, write_yace
from torchace.model import nonlinear_ace_model
from torchace.testing import randomize_coefficients
from torchace.testing.contract import ModelContractTests


def _linear(elements, seed, **options):
    model = torchace.ace_model(elements, 2, 6, **options)
    randomize_coefficients(model, scale=0.1, seed=seed)
    with torch.no_grad():
        model.E0.copy_(torch.tensor([-1.25, -2.5][: model.nz], dtype=torch.float64))
    return model.eval()


def _nonlinear(seed, **options):
    model = nonlinear_ace_model(["Si"], 2, 6, densities=2, learnable_radials=True, seed=seed, **options)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.density_coefficients.copy_(0.1 * torch.randn(model.density_coefficients.shape, generator=g,
                                                           dtype=torch.float64))
        model.pair_coefficients.copy_(0.05 * torch.randn(model.pair_coefficients.shape, generator=g,
                                                         dtype=torch.float64))
        model.radials.weights.add_(0.05 * torch.randn(model.radials.shape, generator=g, dtype=torch.float64))
        model.E0.fill_(-1.25)
    return model.eval()


class TestLinearSi(ModelContractTests):
    @pytest.fixture(scope="class")
    @classmethod
    def model(cls):
        return _linear(["Si"], seed=1, pair=False)


class TestLinearPairZBL(ModelContractTests):
    """Si/Ge with the pair basis and the ZBL baseline."""

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls):
        return _linear(["Si", "Ge"], seed=2, zbl=True)


class TestNonlinearFS(ModelContractTests):
    """Two densities, pacemaker's Finnis-Sinclair embedding [1, 1, 1, 0.5], learnable radials."""

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls):
        return _nonlinear(seed=3)


class TestNonlinearMLP(ModelContractTests):
    @pytest.fixture(scope="class")
    @classmethod
    def model(cls):
        return _nonlinear(seed=4, embedding="mlp")


class TestPACE(ModelContractTests):
    """A ``PACEModel`` read back from the ``.yace`` (and pair table) that ``write_yace`` writes for a linear Si/Ge
    model with a pair part."""

    skip = {"model_file": "a PACEModel is read from its .yace (torchace.load reads it); it has no model-file "
                          "document of its own"}

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls, tmp_path_factory):
        path = tmp_path_factory.mktemp("pace") / "sige.yace"
        write_yace(_linear(["Si", "Ge"], seed=5), str(path))
        return read_yace(str(path))
