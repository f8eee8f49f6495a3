"""Issue 26, class 2: the fused C++ kernel's build never hangs a later run.

The kernel is built in a directory of its own per environment (``fused.build_directory()``: keyed by torch,
the interpreter's prefix, the flags and the source) under an ``flock`` that the operating system releases
when its holder dies.  Checked here in subprocesses (each with a timeout, in its own process group, killed
with its children): a build killed half-way, and a stale torch ``lock`` file, do not block the next process;
a lock held by a live process is waited on for a bounded time, announced in one line, and the error names
the lock file and how to clear it."""
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from torchace.model.backends import fused
from torchace.testing import ChildTimeout, run, spawn

LOAD = "from torchace.model.backends import fused; fused.load_extension(); print('LOADED', fused.build_directory())"


def _can_build() -> bool:
    return shutil.which(os.environ.get("CXX", "c++")) is not None and (
        shutil.which("ninja") is not None or os.path.exists(os.path.join(os.path.dirname(sys.executable), "ninja")))


needs_build = pytest.mark.skipif(not _can_build(), reason="no C++ compiler or ninja: the fused kernel cannot be built")


def _env(**extra):
    env = dict(os.environ)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _run(code, env, timeout):
    """Run ``python -c code`` in its own process group; kill the group on timeout (then fail)."""
    try:
        r = run([sys.executable, "-c", code], env=env, timeout=timeout)
    except ChildTimeout as exc:
        pytest.fail(f"hung: no answer in {timeout} s ({exc})")
    return r.returncode, r.stdout, r.stderr


def test_build_directory_is_per_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHACE_EXTENSIONS_DIR", str(tmp_path))
    d = fused.build_directory()
    assert d.startswith(str(tmp_path)) and os.path.basename(d).startswith(fused.EXTENSION_NAME + "-")
    key = fused.build_key()
    assert key["prefix"] == os.path.realpath(sys.prefix) and len(key["source_sha256"]) == 64
    monkeypatch.setattr(sys, "prefix", "/another/venv")  # another environment: another directory
    assert fused.build_directory() != d
    monkeypatch.setenv("TORCHACE_FUSED_CFLAGS", "-O2")  # other flags: another directory
    assert fused.build_directory() != d


@pytest.mark.slow  # loads (or waits for) the kernel build in a child: 145 s
@needs_build
def test_stale_torch_lock_does_not_block():
    """A torch ``lock`` file left by a killed build (no process holds it) used to make every later process wait
    for ever at 0 % CPU; now it is removed once the flock is held."""
    env = _env()  # this environment's own directory: built once for the whole suite
    code = "from torchace.model.backends import fused; print(fused.build_directory())"
    rc, out, err = _run(code, env, 120)
    d = out.strip()
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "lock"), "w").close()
    rc, out, err = _run(LOAD, env, 900)
    assert rc == 0 and "LOADED" in out, err
    assert not os.path.exists(os.path.join(d, "lock"))


@pytest.mark.slow  # two children, a bounded wait: 14 s
@needs_build
def test_held_lock_bounded_wait_names_the_lock(tmp_path):
    env = _env(TORCHACE_EXTENSIONS_DIR=tmp_path, TORCHACE_BUILD_WAIT=2)
    holder = textwrap.dedent("""
        import fcntl, os, sys, time
        from torchace.model.backends import fused
        d = fused.build_directory(); os.makedirs(d, exist_ok=True)
        fd = os.open(os.path.join(d, "build.lock"), os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX); print("HELD", flush=True); time.sleep(120)
    """)
    with spawn([sys.executable, "-c", holder], env=env, stdout=subprocess.PIPE, text=True) as h:
        assert h.stdout.readline().strip() == "HELD"
        t0 = time.monotonic()
        code = ("from torchace.model.backends import fused\n"
                "try:\n    fused.load_extension()\nexcept RuntimeError as e:\n    print('ERROR', e)\n"
                "print('AVAILABLE', fused.available())")
        rc, out, err = _run(code, env, 120)
        assert time.monotonic() - t0 < 60
        assert err.count("waiting for another process") == 1  # announced once, in one line
        assert "ERROR" in out and "build.lock" in out and "delete the directory" in out
        assert "AVAILABLE False" in out  # the Python backends remain


@pytest.mark.slow  # compiles the kernel from scratch: 103 s
@needs_build
def test_build_killed_half_way_does_not_block_the_next_run(tmp_path):
    """SIGKILL the first build's process group while it compiles; the next process builds and loads."""
    env = _env(TORCHACE_EXTENSIONS_DIR=tmp_path)
    with spawn([sys.executable, "-c", LOAD], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE):
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:  # until the compiler runs (build.ninja written)
            if any(os.path.exists(os.path.join(r, "build.ninja")) for r, _, _ in os.walk(tmp_path)):
                break
            time.sleep(0.1)
        time.sleep(1.0)
    # leaving the block SIGKILLs the build's process group (the compiler included)
    rc, out, err = _run(LOAD, env, 900)
    assert rc == 0 and "LOADED" in out, err
    assert "building the fused C++ CPU kernel" in err  # the rebuild says so, in one line
