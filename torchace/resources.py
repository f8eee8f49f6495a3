"""Memory the machine can still give, and the one refusal of work that cannot fit in it.

Every size estimate of torchace (neighbour pairs, design-matrix rows, Gauss–Newton matrices, nonlinear model
parameters and activations) is compared with ``available_bytes`` *before* the allocation, so that an input that
would need more memory than the machine has is refused in milliseconds with its numbers, instead of running
for minutes and dying in the allocator (or taking the machine's swap with it).

``available_bytes``: on CUDA the free device memory; on the CPU the smallest of the kernel's MemAvailable
(/proc/meminfo), the address-space limit of this process (``ulimit -v``, RLIMIT_AS) minus what it has mapped
already, and the cgroup's memory limit (containers, batch schedulers) minus what the cgroup uses.
"""
from __future__ import annotations

import os
import resource
from typing import Optional

import torch

# an allocation below this is never checked (reading /proc costs tens of µs; hot paths stay free of it)
SMALL_BYTES = 64 * 2**20


class ResourceLimitError(ValueError):
    """An input whose estimated memory exceeds what this machine (or process limit) can give: the message says
    what needs how much, how much is available, and what to change."""


def _meminfo_available() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _address_space_left() -> Optional[int]:
    """RLIMIT_AS minus this process's mapped virtual memory (VmSize), or None without a limit."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return max(0, soft - int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return soft


def _cgroup_left() -> Optional[int]:
    """cgroup v2 memory.max minus memory.current of this process's cgroup, or None (no limit, or no cgroup v2)."""
    try:
        with open("/proc/self/cgroup") as f:
            rel = next((ln.strip().split(":", 2)[2] for ln in f if ln.startswith("0::")), None)
        if rel is None:
            return None
        base = os.path.join("/sys/fs/cgroup", rel.lstrip("/"))
        with open(os.path.join(base, "memory.max")) as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open(os.path.join(base, "memory.current")) as f:
            used = int(f.read().strip())
        return max(0, int(limit) - used)
    except (OSError, ValueError, IndexError):
        return None


def available_bytes(device=None) -> Optional[int]:
    """Memory that can still be allocated on ``device`` (CUDA: free device memory; CPU: the smallest of
    MemAvailable, the RLIMIT_AS headroom and the cgroup headroom); None where it cannot be known (then nothing is
    checked)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    if dev.type != "cpu":
        return None
    known = [b for b in (_meminfo_available(), _address_space_left(), _cgroup_left()) if b is not None]
    return min(known) if known else None


def gib(n: float) -> str:
    """Bytes as a short human number (GiB above 1 GiB, else MiB)."""
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def check_fits(need: float, what: str, advice: str, device=None) -> None:
    """Raise ``ResourceLimitError`` if ``need`` bytes (an estimate, made before allocating) exceed the memory
    available on ``device``; ``what`` says what needs it (with its numbers), ``advice`` what to change.
    Below ``SMALL_BYTES`` nothing is read (no cost on hot paths)."""
    if need < SMALL_BYTES:
        return
    avail = available_bytes(device)
    if avail is None or need <= avail:
        return
    dev = str(device) if device is not None else "cpu"
    raise ResourceLimitError(f"{what} needs about {gib(need)}, more than the {gib(avail)} available on {dev}; "
                             f"{advice}")
