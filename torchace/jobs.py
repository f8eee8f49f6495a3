"""Batch work as users expect it (issue 30, item 5): how many threads, a log file beside the outputs, and a line
before every stage that takes more than a few seconds.

``use_threads(n)``: a context manager that sets torch's intra-op thread count (and, where ``threadpoolctl`` is
installed, the BLAS/OpenMP pools of numpy and SciPy) and restores the previous counts on exit.  ``n`` is a
positive integer, ``"auto"`` or None (unchanged).  ``"auto"`` is the load rule (``auto_threads``, measured in
docs/fitting.md, "Batch jobs"): the cores this process may use minus the machine's load average, at least one,
decided once per process; an ``OMP_NUM_THREADS`` in the environment is the user's choice and is kept.
Oversubscribed OpenMP threads spin against each other: on a 2-core machine loaded by other jobs the all-cores
default ran the bundled fit 3× slower than one thread.

``job_log(path, ...)``: a context manager that copies everything written to stdout and stderr (``_Tee``), with
timestamps, into a log file and writes it, with the versions, the thread count, the config and how the job
ended (finished, the error, the interrupt), atomically under the output rule (``torchace.atomic``): an existing
file is replaced only if it is a torchace log (``LOG_FILE``: its first line) or with ``overwrite``.

``announce(line, verbose)``: the line before a stage, printed (stderr) when ``verbose`` and always written to the
active logs; ``matrix_size`` / ``dense_solve_peak`` give its size and memory estimate.

``job_options``: the ``threads`` / ``log`` keywords of ``torchace.fit``, ``torchace.train`` and
``torchace.evaluate``, written once.

Why our own small pieces rather than a library: progress stays ``fit.assembly._Progress`` (one stderr line, plain
lines in a pipe; tqdm is not a dependency and its bar in a SLURM log is a line per update), config validation stays
``torchace.fieldcheck`` (messages naming the file and ``section.key``, no pydantic dependency), thread pools use
``threadpoolctl`` only where installed (torch's own ``set_num_threads`` covers torch's OpenMP and MKL pools).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import inspect
import json
import os
import platform
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Union

import torch

from .atomic import check_output, text_output, write_output, write_text

AUTO = "auto"
LOG_HEADER = "# torchace log"
LOG_FILE = text_output(LOG_HEADER, "torchace log file")  # the output rule's marker: the log's first line

Threads = Union[int, str, None]


# ---- threads -------------------------------------------------------------------------------------------------

def check_threads(where: str, key: str, value: Any) -> Threads:
    """A thread setting: a positive integer, "auto" or None; anything else (0, -1, "x", 1.5, true) is an error
    naming ``where`` and ``key``."""
    if value is None or value == AUTO:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: '{key}' must be a positive integer (threads) or 'auto', got {value!r}")
    return int(value)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: taskset, SLURM, containers), else os.cpu_count()."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_AUTO: List[tuple] = []  # the "auto" decision of this process, made once


def auto_threads(refresh: bool = False) -> tuple:
    """(threads, why) of the "auto" rule: ``OMP_NUM_THREADS`` if set (torch's count, the user's choice); else the
    usable cores minus the 1-minute load average (rounded; the other jobs' runnable threads), at least 1.  Decided
    once per process (``refresh``: again), so that two fits of one script or test run with the same count: the
    thread count changes the order of floating-point sums (results agree to ~1e-10 relative, not bit for bit)."""
    if os.environ.get("OMP_NUM_THREADS"):
        n = torch.get_num_threads()
        return n, f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    if _AUTO and not refresh:
        return _AUTO[0][0], _AUTO[0][1] + ", decided at this process's first job"
    cores = usable_cores()
    try:
        load = os.getloadavg()[0]
        n, why = max(1, min(cores, int(cores - load + 0.5))), f"auto: {cores} usable cores, load average {load:.2f}"
    except (AttributeError, OSError):
        n, why = cores, f"auto: {cores} usable cores"
    _AUTO[:] = [(n, why)]
    return n, why


_THREAD_DEPTH = [0]  # nested use_threads(): "auto" inside a job keeps the job's count (the train's warm-start fit)


def resolve_threads(value: Threads) -> tuple:
    """(threads, why) for a thread setting (checked); None: torch's current count."""
    value = check_threads("threads", "threads", value)
    if value is None or (value == AUTO and _THREAD_DEPTH[0]):
        return torch.get_num_threads(), "unchanged"
    if value == AUTO:
        return auto_threads()
    return value, "given"


@contextlib.contextmanager
def use_threads(value: Threads = AUTO) -> Iterator[int]:
    """Run the block with ``value`` torch threads (see the module docstring); the previous count is restored on
    every exit (also an error or Ctrl-C).  Yields the count."""
    n, _ = resolve_threads(value)
    before = torch.get_num_threads()
    limits = contextlib.nullcontext()
    if n != before:
        try:  # numpy's / SciPy's own BLAS and OpenMP pools, where threadpoolctl is installed (not a dependency)
            from threadpoolctl import threadpool_limits

            limits = threadpool_limits(limits=n)
        except ImportError:
            pass
    _THREAD_DEPTH[0] += 1
    try:
        with limits:
            torch.set_num_threads(n)
            yield n
    finally:
        _THREAD_DEPTH[0] -= 1
        torch.set_num_threads(before)


# ---- the log file --------------------------------------------------------------------------------------------

def log_beside(output: str) -> str:
    """``<output stem>.log``: the log file of a job whose main output is ``output`` (model.json → model.log)."""
    return os.path.splitext(os.fspath(output))[0] + ".log"


class JobLog:
    """The lines of one job's log, kept in memory and written once at its end (atomically)."""

    def __init__(self, path: str, what: str):
        self.path, self.what = os.fspath(path), what
        self.t0 = time.time()
        self.lines: List[str] = []
        self.partial = ""

    def record(self, text: str) -> None:
        """Add ``text`` (complete lines), each line stamped with the wall time and the seconds since the start."""
        now = time.time()
        stamp = f"[{datetime.datetime.fromtimestamp(now).strftime('%H:%M:%S')} +{now - self.t0:7.1f} s] "
        self.lines.extend(stamp + line for line in text.split("\n"))

    def feed(self, text: str) -> None:
        """Stream text (stdout/stderr writes): whole lines are recorded; a carriage return (a progress line
        updated in place on a terminal) keeps only the text after it."""
        text = self.partial + text
        *done, self.partial = text.split("\n")
        for line in done:
            self.record(line.rsplit("\r", 1)[-1])

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


_ACTIVE: List[JobLog] = []


class _Tee:
    """A text stream that writes through to ``stream`` and feeds every active log."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        for log in _ACTIVE:
            log.feed(text)
        return self.stream.write(text)

    def __getattr__(self, name):  # flush, isatty, fileno, encoding, ... of the real stream
        return getattr(self.stream, name)


def versions() -> Dict[str, str]:
    """The versions a log records (torchace, torch, numpy, ase, Python, the platform)."""
    import numpy

    from .keys import VERSION

    out = {"torchace": VERSION, "torch": torch.__version__, "numpy": numpy.__version__}
    try:
        import ase

        out["ase"] = ase.__version__
    except ImportError:  # pragma: no cover - a dependency
        pass
    out.update(python=platform.python_version(), platform=platform.platform())
    return out


def _config_lines(config: Any) -> List[str]:
    """The job's config, resolved (absolute paths, defaults filled in): one line per section."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, dict):
        return [f"#   {config!r}"]
    return [f"#   {k}: {json.dumps(v, default=str)}" for k, v in config.items()]


@contextlib.contextmanager
def job_log(path: Optional[str], what: str, *, config: Any = None, n_threads: Optional[int] = None,
            threads_why: str = "", overwrite: bool = False) -> Iterator[Optional[JobLog]]:
    """Log the block to ``path`` (None: no log): a header (command, versions, threads, ``config``), everything
    printed with timestamps, and the end (finished / the error / interrupted, with the time).  Checked under the
    output rule before the block, written atomically after it, also when the block raises."""
    if path is None:
        yield None
        return
    check_output(path, LOG_FILE, overwrite)
    log = JobLog(path, what)
    started = datetime.datetime.fromtimestamp(log.t0).isoformat(" ", "seconds")
    log.lines.append(f"{LOG_HEADER} of {what}, started {started}")
    log.lines.append(f"# command: {' '.join(sys.argv)}; directory {os.getcwd()}")
    log.lines.append("# versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    n = torch.get_num_threads() if n_threads is None else n_threads
    log.lines.append(f"# threads: {n}" + (f" ({threads_why})" if threads_why else ""))
    if config is not None:
        log.lines += ["# config:"] + _config_lines(config)
    installed = not _ACTIVE
    if installed:
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(sys.stdout), _Tee(sys.stderr)
    _ACTIVE.append(log)
    outcome = "finished"
    try:
        yield log
    except KeyboardInterrupt as exc:
        outcome = f"interrupted: {exc or 'Ctrl-C'}"
        raise
    except BaseException as exc:
        outcome = f"stopped by an error: {type(exc).__name__}: {exc}"
        raise
    finally:
        _ACTIVE.remove(log)
        if installed:
            if isinstance(sys.stdout, _Tee):
                sys.stdout = saved[0]
            if isinstance(sys.stderr, _Tee):
                sys.stderr = saved[1]
        if log.partial:
            log.record(log.partial)
        log.record(f"{what} {outcome} after {time.time() - log.t0:.1f} s")
        text = log.text()
        write_output(path, LOG_FILE, lambda tmp: write_text(tmp, text), ".log", overwrite)


@contextlib.contextmanager
def job(log: Optional[str], what: str, *, threads: Threads = AUTO, config: Any = None,
        overwrite: bool = False) -> Iterator[int]:
    """``use_threads(threads)`` and ``job_log(log)`` together: the frame of one batch job (the thread count
    resolved once, then logged).  Yields the thread count."""
    n, why = resolve_threads(threads)
    with job_log(log, what, config=config, n_threads=n, threads_why=why, overwrite=overwrite):
        with use_threads(n if why != "unchanged" else None) as n:
            yield n


def job_options(what: str, *, default_threads: Threads = AUTO, with_log: bool = True):
    """Decorator: the keyword-only options ``threads`` (default ``default_threads``) and, with ``with_log``,
    ``log`` (a path or None) of a batch-job function, run around it by ``job``.  With ``threads=None`` and no
    log the function is called directly (no cost)."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, threads: Threads = default_threads, log: Optional[str] = None, **kwargs):
            check_threads(what, "threads", threads)
            if threads is None and log is None:
                return fn(*args, **kwargs)
            with job(log, what, threads=threads):
                return fn(*args, **kwargs)

        sig = inspect.signature(fn)
        extra = [inspect.Parameter("threads", inspect.Parameter.KEYWORD_ONLY, default=default_threads)]
        if with_log:
            extra.append(inspect.Parameter("log", inspect.Parameter.KEYWORD_ONLY, default=None))
        params = list(sig.parameters.values())
        tail = [p for p in params if p.kind == p.VAR_KEYWORD]
        run.__signature__ = sig.replace(parameters=[p for p in params if p.kind != p.VAR_KEYWORD] + extra + tail)
        return run

    return wrap


# ---- stage announcements -------------------------------------------------------------------------------------

def announce(line: str, verbose: bool = True) -> None:
    """The line before a stage: on stderr when ``verbose`` (the active logs get it through the tee), else
    written only to the active logs."""
    if verbose:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    else:
        for log in _ACTIVE:
            log.record(line)


def human_bytes(n: float) -> str:
    """Bytes as a short number with its unit (kiB, MiB, GiB)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("kiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def matrix_size(rows: int, cols: int, itemsize: int = 8) -> str:
    """"rows × columns (bytes)" of a dense matrix."""
    return f"{rows:,} rows × {cols:,} columns ({human_bytes(rows * cols * itemsize)})"


def dense_solve_peak(rows: int, cols: int, itemsize: int = 8) -> int:
    """Rough peak bytes of a dense least-squares solve of an m × k system (an estimate for the stage line, not a
    limit): the matrix, one working copy and the factor of the same size (QR's Q, the SVD's U), plus a few k × k
    matrices (Gram, R or V, the posterior covariance)."""
    return (3 * rows * cols + 4 * cols * cols) * itemsize
