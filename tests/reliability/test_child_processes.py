"""The test kit's child-process helper (``torchace.testing.run`` / ``spawn``), which every test and script that
starts a process uses: a timeout always, and on timeout (or when the child exits leaving something running) the
whole process group is killed, grandchildren included, so that a hung MPI launcher or LAMMPS child cannot outlive
its test."""
import os
import subprocess
import sys
import textwrap
import time

import pytest

from torchace.testing import ChildFailed, ChildTimeout, run, spawn

# a child that starts a grandchild (a sleeping Python), prints the grandchild's pid, then waits or exits
PARENT = textwrap.dedent("""
    import subprocess, sys, time
    g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print("GRANDCHILD", g.pid, flush=True)
    if sys.argv[1] == "wait":
        time.sleep(600)
""")


def _gone(pid: int, within: float = 10.0) -> bool:
    """The process no longer runs: absent, or a zombie waiting for its (re)parent to reap it."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def _grandchild(text: str) -> int:
    return int(next(line for line in text.splitlines() if line.startswith("GRANDCHILD")).split()[1])


pytestmark = pytest.mark.skipif(not os.path.isdir("/proc") or sys.platform != "linux",
                                reason="reads process states from /proc")


def test_timeout_kills_the_grandchild_too():
    t0 = time.monotonic()
    with pytest.raises(ChildTimeout) as ei:
        run([sys.executable, "-c", PARENT, "wait"], timeout=5)
    assert time.monotonic() - t0 < 60
    msg = str(ei.value)
    assert "timed out after 5 seconds" in msg and "process group killed" in msg and "GRANDCHILD" in msg
    assert _gone(_grandchild(ei.value.output))


def test_normal_exit_leaves_nothing_running():
    r = run([sys.executable, "-c", PARENT, "exit"], timeout=120)
    assert r.returncode == 0, r.stderr
    assert _gone(_grandchild(r.stdout))


def test_output_input_and_check():
    r = run([sys.executable, "-c", "import sys; print(sys.stdin.read().upper()); print('e', file=sys.stderr)"],
            timeout=120, input="abc")
    assert (r.returncode, r.stdout, r.stderr) == (0, "ABC\n", "e\n")
    r = run([sys.executable, "-c", "import sys; print('o', flush=True); print('e', file=sys.stderr)"], timeout=120,
            merge_stderr=True)
    assert r.stdout == "o\ne\n" and r.stderr == ""
    with pytest.raises(ChildFailed, match="(?s)exit status 3.*boom"):
        run([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], timeout=120, check=True)


def test_spawn_kills_the_group_when_the_block_fails():
    with pytest.raises(AssertionError):
        with spawn([sys.executable, "-c", PARENT, "wait"], stdout=subprocess.PIPE, text=True) as p:
            gpid = _grandchild(p.stdout.readline())
            raise AssertionError("the caller's assertion fails while the child runs")
    assert p.returncode is not None and _gone(p.pid) and _gone(gpid)
