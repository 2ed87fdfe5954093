"""Stopping a run on SIGTERM with its state saved at the current step (preemption, time limits).

SLURM sends SIGTERM when it preempts a job, when `scancel --signal=TERM` asks, and (with
`#SBATCH --signal=TERM@120`) ahead of the time limit; a plain `kill -TERM` does the same. The
handler only raises a flag. The train step all-reduces the flags of every worker with its loss
normaliser (training.trainer), so all workers see the request after the same step, even when
the signal reached them a step apart; they stop there, the chief writes the training state of
that step (training.checkpoints.CheckpointSaver.save_preempted, atomically), every worker
waits for it, and the process exits with PREEMPTED_EXIT_CODE. Rerunning the same command
continues from that step; scripts/slurm_train.sh requeues the job when it sees that status.
train.py also stops this way on a first Ctrl-C (SIGINT); a second one stops at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["PREEMPTED_EXIT_CODE", "Preempted", "StopRequest"]

#: Exit status of a run that stopped on SIGTERM after saving its state (EX_TEMPFAIL: try again).
PREEMPTED_EXIT_CODE = 75


class Preempted(Exception):  # noqa: N818 (an outcome, not an error)
    """The run stopped on a stop request after saving its state at `epoch` (1-based), `step`."""

    def __init__(self, epoch: int, step: int, steps: int, state: str, signal_name: str) -> None:
        self.epoch, self.step, self.steps, self.state = epoch, step, steps, state
        self.signal_name = signal_name
        super().__init__(
            f"stopped by {signal_name} at epoch {epoch}, step {step} of {steps}: the training "
            f"state is saved in {state}; run the same command again to continue from that step"
        )


class StopRequest:
    """A flag raised by SIGTERM (or by `request()`), read by the training loop after each step.

    `install()` puts the handler in place (main thread only; elsewhere it does nothing and says
    so through its return value); `restore()` puts the previous handler back. Usable as a
    context manager.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)) -> None:
        self.signals = signals
        self.requested = False
        self.signal_name = "a stop request"
        self._previous: dict[int, Any] = {}

    def request(self, name: str = "a stop request") -> None:
        """Ask the run to stop after its current step (what the signal handler does)."""
        if not self.requested:
            self.requested, self.signal_name = True, name

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without waiting for the step
        self.request(signal.Signals(signum).name)

    def install(self) -> bool:
        """Handle the signals from now on; False (nothing done) outside the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return True

    def restore(self) -> None:
        """Put back the handlers that were there before `install`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __enter__(self) -> StopRequest:
        self.install()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()
