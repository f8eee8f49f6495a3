"""Bad input raises a clear error naming the structure and the problem."""
import numpy as np
import pytest
from ase import Atoms

import torchace
from torchace.testing import rattled_bulk


def test_unknown_element(si_model):
    at = rattled_bulk(["Si"])
    at.symbols[3] = "C"
    with pytest.raises(ValueError, match=r"structure 1 .*\['C'\] not in the model's elements \['Si'\]"):
        torchace.evaluate(si_model, [rattled_bulk(["Si"]), at])


def test_nan_positions(si_model):
    at = rattled_bulk(["Si"])
    at.positions[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"structure 0 .*non-finite positions for atoms \[2\]"):
        torchace.evaluate(si_model, at)
    with pytest.raises(ValueError, match="non-finite"):
        torchace.design_matrix_rows(si_model, at)


def test_zero_volume_cell(si_model):
    at = Atoms("Si2", positions=[[0, 0, 0], [1.2, 1.3, 0.4]], cell=[[3, 0, 0], [0, 3, 0], [3, 3, 0]], pbc=True)
    with pytest.raises(ValueError, match="degenerate"):
        torchace.evaluate(si_model, at)


def test_atoms_on_top_of_each_other(si_model):
    at = Atoms("Si3", positions=[[0, 0, 0], [2.3, 0, 0], [2.3, 0, 1e-4]])
    with pytest.raises(ValueError, match=r"atoms 1 and 2 are .* apart .*on top of each other"):
        torchace.evaluate(si_model, at)
    # also across a periodic boundary
    at = Atoms("Si2", positions=[[0, 0, 0], [5.0 - 1e-4, 0, 0]], cell=np.eye(3) * 5.0, pbc=True)
    with pytest.raises(ValueError, match="on top of each other"):
        torchace.evaluate(si_model, at)


def test_empty_and_wrong_types(si_model):
    with pytest.raises(ValueError, match="no atoms"):
        torchace.evaluate(si_model, Atoms())
    with pytest.raises(TypeError, match="structure 1 is a str"):
        torchace.evaluate(si_model, [Atoms("Si"), "Si"])
    with pytest.raises(ValueError, match="no structures"):
        torchace.evaluate(si_model, [])


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="unknown element symbol 'Xx'"):
        torchace.ace_model(["Xx"], 2, 6)
    with pytest.raises(ValueError, match="totaldegree has 2 entries but order is 3"):
        torchace.ace_model(["Si"], 3, [10, 8])
    with pytest.raises(ValueError, match="E0 given for elements"):
        torchace.ace_model(["Si"], 2, 6, E0={"Ge": 1.0})
    with pytest.raises(ValueError, match="coefficients must have shape"):
        m = torchace.ace_model(["Si"], 2, 6)
        m.coefficients = np.zeros(3)
    with pytest.raises(ValueError, match="unknown ACEConfig keys"):
        torchace.ACEConfig.from_dict({"elements": ["Si"], "order": 2, "totaldegree": 6, "rcutt": 5})
