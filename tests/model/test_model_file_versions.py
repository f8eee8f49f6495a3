"""One model-file schema (``torchace.model.document``, docs/model_file.md): files written before it — the linear
model's version 1 and the nonlinear model's "torchace-nonlinear-model" version 1, written by torchace at
b36cd1d (tests/model/files) — load into the one ``ACEModel`` and give the energies and forces recorded when they
were written; saving writes version 2, which reloads bit for bit."""
import json
import os

import ase.io
import pytest
import torch

import torchace
from torchace.model.document import FORMAT, FORMAT_VERSION
from torchace.model.state import ModelFileError

FILES = os.path.join(os.path.dirname(__file__), "files")
NAMES = ("linear_v1", "nonlinear_fs_v1", "nonlinear_mlp_v1")


@pytest.fixture(scope="module")
def reference():
    with open(os.path.join(FILES, "reference.json")) as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def cell():
    return ase.io.read(os.path.join(FILES, "sige_cell.xyz"))


@pytest.mark.parametrize("name", NAMES)
def test_earlier_files_load_and_give_their_recorded_values(name, reference, cell, tmp_path):
    model = torchace.load(os.path.join(FILES, name + ".json"))
    assert type(model) is torchace.ACEModel
    assert model.metadata == {"written_by": "torchace b36cd1d"}
    r = torchace.evaluate(model, cell, backend="reference")
    ref = reference[name]
    torch.testing.assert_close(r["energy"], torch.tensor(ref["energy"], dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(r["forces"], torch.tensor(ref["forces"], dtype=torch.float64), rtol=0, atol=1e-11)
    # re-saved in the one schema: version 2, same values bit for bit
    path = str(tmp_path / "m.json")
    model.save(path)
    with open(path) as fh:
        doc = json.load(fh)
    assert (doc["format"], doc["format_version"]) == (FORMAT, FORMAT_VERSION)
    assert doc["readout"]["densities"] == model.densities
    back = torchace.load(path)
    assert torch.equal(back.coefficients, model.coefficients)
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), back.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    assert (back.committee is None) == (model.committee is None)
    if model.committee is not None:
        assert torch.equal(back.committee, model.committee)


def test_linear_file_keeps_its_committee_and_capabilities():
    model = torchace.load(os.path.join(FILES, "linear_v1.json"))
    assert model.capabilities.rows and model.committee.shape == (2, model.basis_size)
    nl = torchace.load(os.path.join(FILES, "nonlinear_fs_v1.json"))
    assert not nl.capabilities.rows and nl.densities == 2 and nl.learnable_radials


def test_version_2_document_is_validated(tmp_path):
    m = torchace.load(os.path.join(FILES, "nonlinear_fs_v1.json"))
    d = json.loads(json.dumps(m.to_dict()))

    def refused(doc, match):
        with pytest.raises(ModelFileError, match=match):
            torchace.ACEModel.from_dict(json.loads(json.dumps(doc)), "f.json")

    refused(dict(d, format="torchace-nonlinear-model"),
            "format_version 2 of .torchace-nonlinear-model. is not supported")
    refused(dict(d, format="ace-model"), "not a torchace model file")
    refused(dict(d, format_version=3), "format_version")
    refused(dict(d, format_version=True), "format_version")
    refused(dict(d, extra=1), "unknown field")
    refused({k: v for k, v in d.items() if k != "readout"}, "missing field")
    refused({k: v for k, v in d.items() if k != "basis_size"}, "basis_size")
    refused(dict(d, basis_size=d["basis_size"] + 1), "basis_size")
    refused(dict(d, readout=dict(d["readout"], densities=True)), "readout.densities")
    refused(dict(d, readout=dict(d["readout"], densities=3)), "fs_parameters")
    refused(dict(d, readout=dict(d["readout"], extra=0)), "'readout' must be a mapping")
    refused(dict(d, readout=dict(d["readout"], learnable_radials="yes")), "learnable_radials")
    refused(dict(d, readout=dict(d["readout"], embedding=dict(d["readout"]["embedding"], name="tanh"))),
            "embedding")
    refused(dict(d, coefficients=d["coefficients"][:-1]), "shape")
    refused(dict(d, coefficients=[True] * len(d["coefficients"])), "true/false")
    refused(dict(d, radial_weights=None), "radial_weights")
    refused(dict(d, committee=[[0.0] * (d["basis_size"] + 1)]), "committee")
    refused(dict(d, nl_scale=1.0), "list of numbers")
    lin = torchace.load(os.path.join(FILES, "linear_v1.json")).to_dict()
    refused(dict(lin, radial_weights=[[1.0]]), "radial_weights")
