"""Checkpointed streaming assembly: kill -9 mid-assembly, resume, same reduced system; wrong inputs refused.

Run as a script (``python tests/fit/test_checkpoint.py CKPT KILL_AFTER``) it is the child process that the
kill test SIGKILLs itself after batch KILL_AFTER.
"""
import os
import signal
import sys

import numpy as np
import pytest
import torch
from torchace.testing import run

BATCH_ATOMS = 10


def _dataset(n=5):
    from torchace.testing import labelled_dataset

    return labelled_dataset(n)


def _model():
    import torchace

    return torchace.ace_model(["Si", "Ge"], 2, 6, E0={"Si": -2.0, "Ge": -3.0})


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def ds():
    return _dataset()


@pytest.fixture(scope="module")
def reference(model, ds):
    from torchace.fit.assembly import assemble_reduced

    return assemble_reduced(model, ds, method="qr", batch_atoms=BATCH_ATOMS)


def _same(a, b):
    assert a.n_obs == b.n_obs
    assert torch.allclose(a.A, b.A, rtol=0, atol=1e-12 * float(b.A.abs().max()))
    assert torch.allclose(a.y, b.y, rtol=0, atol=1e-12 * float(b.y.abs().max()))
    assert abs(a.rss_offset - b.rss_offset) <= 1e-12 * max(1.0, abs(b.rss_offset))


@pytest.mark.slow  # a child killed mid-assembly: 9 s
def test_resume_after_sigkill(tmp_path, model, ds, reference):
    from torchace.fit.checkpoint import assemble_checkpointed, load_checkpoint

    ckpt = str(tmp_path / "asm.npz")
    # same thread count as this process: threaded reductions round differently with another count
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    p = run([sys.executable, __file__, ckpt, "2"], env=env, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    state, fp = load_checkpoint(ckpt)
    assert int(state["n_batches"]) == 2 and fp["method"] == "qr"
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp_")]  # no stray temporary files
    seen = []
    res = assemble_checkpointed(model, ds, None, ckpt, method="qr", batch_atoms=BATCH_ATOMS,
                                on_batch=lambda n, st: seen.append(n))
    assert seen[0] == 3  # resumed after the two checkpointed batches
    _same(res, reference)
    # a finished checkpoint returns the same system without assembling anything
    seen.clear()
    again = assemble_checkpointed(model, ds, None, ckpt, method="qr", batch_atoms=BATCH_ATOMS,
                                  on_batch=lambda n, st: seen.append(n), remove_on_success=True)
    assert seen == [] and not os.path.exists(ckpt)
    _same(again, reference)


def test_resume_normal_in_process(tmp_path, model, ds):
    from torchace.fit.assembly import assemble_reduced
    from torchace.fit.checkpoint import assemble_checkpointed

    ckpt = str(tmp_path / "n.npz")

    class Crash(Exception):
        pass

    def crash(n, st):
        if n == 3:
            raise Crash

    with pytest.raises(Crash):
        assemble_checkpointed(model, ds, None, ckpt, method="normal", batch_atoms=BATCH_ATOMS, every=2,
                              on_batch=crash)
    seen = []
    res = assemble_checkpointed(model, ds, None, ckpt, method="normal", batch_atoms=BATCH_ATOMS, every=2,
                                on_batch=lambda n, st: seen.append(n))
    assert seen[0] == 3  # every=2: batch 3 was lost with the crash, batch 2 was on disk
    ref = assemble_reduced(model, ds, method="normal", batch_atoms=BATCH_ATOMS)
    _same(res, ref)


def _fake_checkpoint(path, model, ds, **kw):
    from torchace.fit.checkpoint import fingerprint, save_checkpoint

    k = model.basis_size
    args = dict(weights=None, method="qr", batch_atoms=BATCH_ATOMS)
    args.update(kw)
    state = {"T": torch.eye(k + 1, dtype=torch.float64), "n_obs": torch.tensor(7), "n_batches": torch.tensor(1)}
    save_checkpoint(path, state, fingerprint(model, ds, args["weights"], args["method"], args["batch_atoms"]))


@pytest.mark.parametrize("change", ["weights", "method", "batch_atoms", "positions", "E0"])
def test_mismatched_fingerprint_raises(tmp_path, model, ds, change):
    import torchace
    from torchace.fit.checkpoint import CheckpointMismatch, assemble_checkpointed

    ckpt = str(tmp_path / "c.npz")
    _fake_checkpoint(ckpt, model, ds)
    kw = dict(weights=None, method="qr", batch_atoms=BATCH_ATOMS)
    m, d = model, ds
    if change == "weights":
        kw["weights"] = {"default": {"E": 10, "F": 1, "V": 1}}
    elif change == "method":
        kw["method"] = "normal"
    elif change == "batch_atoms":
        kw["batch_atoms"] = 11
    elif change == "positions":
        d = _dataset()
        d.structures[1].atoms.positions[0, 0] += 1e-9
    elif change == "E0":
        m = torchace.ace_model(["Si", "Ge"], 2, 6, E0={"Si": -2.0, "Ge": -3.5})
    with pytest.raises(CheckpointMismatch, match=change if change != "positions" else "data"):
        assemble_checkpointed(m, d, kw["weights"], ckpt, method=kw["method"], batch_atoms=kw["batch_atoms"])


def test_mismatched_model_config_raises(tmp_path, model, ds):
    import torchace
    from torchace.fit.checkpoint import CheckpointMismatch, assemble_checkpointed

    ckpt = str(tmp_path / "c.npz")
    _fake_checkpoint(ckpt, model, ds)
    other = torchace.ace_model(["Si", "Ge"], 2, 5, E0={"Si": -2.0, "Ge": -3.0})
    with pytest.raises(CheckpointMismatch, match="model_config"):
        assemble_checkpointed(other, ds, None, ckpt, method="qr", batch_atoms=BATCH_ATOMS)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_unreadable_checkpoint_raises(tmp_path, model, ds, damage):
    from torchace.fit.checkpoint import CheckpointError, assemble_checkpointed

    ckpt = str(tmp_path / "c.npz")
    _fake_checkpoint(ckpt, model, ds)
    raw = open(ckpt, "rb").read()
    with open(ckpt, "wb") as fh:
        fh.write({"truncated": raw[: len(raw) // 2], "garbage": b"not a checkpoint" * 10, "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="delete it"):
        assemble_checkpointed(model, ds, None, ckpt, method="qr", batch_atoms=BATCH_ATOMS)


def test_checkpoint_has_no_pickles(tmp_path, model, ds):
    ckpt = str(tmp_path / "c.npz")
    _fake_checkpoint(ckpt, model, ds)
    with np.load(ckpt, allow_pickle=False) as z:
        assert set(z.files) == {"T", "n_obs", "n_batches", "__fingerprint__"}


if __name__ == "__main__":  # child of test_resume_after_sigkill
    from torchace.fit.checkpoint import assemble_checkpointed

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))  # the parent's count
    path, kill_after = sys.argv[1], int(sys.argv[2])

    def die(n, st):
        if n == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    assemble_checkpointed(_model(), _dataset(), None, path, method="qr", batch_atoms=BATCH_ATOMS, on_batch=die)
    sys.exit(3)  # not reached
