"""Ctrl-C and SIGTERM during ``torchace.train``: stop between two Python statements, say what is kept.

SIGTERM (a scheduler's time limit, ``kill``) ends a Python process at once by default, without a word about
the checkpoint the run has written.  While ``train`` runs, ``sigterm_as_interrupt`` turns SIGTERM into a
``TrainingInterrupted`` exception (only in the main thread, and only when no other handler is installed: a
program's own SIGTERM handling is left alone), so that the trainer can restore the best epoch's parameters and
report, in one line, where the checkpoint is.  ``train`` re-raises Ctrl-C (``KeyboardInterrupt``) as a
``TrainingInterrupted`` too, with that line as its message; ``torchace train`` prints it and exits with 128 +
the signal number (130 for Ctrl-C, 143 for SIGTERM).

The checkpoint itself needs no saving at that point: it is written atomically after every epoch
(``train_state.TrainCheckpoint``), so it holds the last completed epoch whatever instruction the signal
interrupted (an interrupted write leaves the previous file as it was).
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C (``signum`` SIGINT) or SIGTERM; the message says what the checkpoint holds."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message or f"interrupted by {signal.Signals(signum).name}")
        self.signum = int(signum)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises ``TrainingInterrupted(SIGTERM)`` (main thread, default handler only)."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def raise_interrupt(signum, frame):
        raise TrainingInterrupted(signum)

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def signal_of(exc: BaseException) -> int:
    """The signal behind an interrupt: SIGTERM for one raised by ``sigterm_as_interrupt``, else SIGINT."""
    return getattr(exc, "signum", int(signal.SIGINT))


def interrupted_message(exc, run, checkpoint) -> str:
    """The one line an interrupted ``train`` ends with: where it stopped, what the checkpoint keeps, which epoch
    the model holds."""
    import signal

    sig = signal.Signals(signal_of(exc)).name
    where = {None: "before the first epoch", "after": "after the last epoch (in the linear re-solve, committee or "
             "error tables)"}.get(run["epoch"], f"during epoch {run['epoch']}")
    if checkpoint is None:
        kept = "no checkpoint (give checkpoint= / output.checkpoint to make a run resumable)"
    elif run["saved"] is None:
        kept = (f"checkpoint {checkpoint} was not written by this run yet"
                + (" (the earlier one there is unchanged)" if os.path.exists(checkpoint) else ""))
    else:
        kept = f"checkpoint {checkpoint} keeps epochs 0-{run['saved']}; run the same command again to resume"
    best = "" if run["best"] is None else f"; the model holds epoch {run['best']['epoch']} (the best so far)"
    return f"train: interrupted by {sig} {where}: {kept}{best}"
