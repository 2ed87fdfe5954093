"""What a training run shows while it trains: Keras' progress bar in a terminal, plain lines in a
job log.

In a terminal, each epoch draws Keras' progress bar (loss, learning rate, images/s, then the
validation). When standard output is a file or a pipe (a SLURM job's output), the bar's redraws
and escape sequences would fill the log, so the run prints one plain line per epoch instead:

    epoch 3/5: loss 1.2345, lr 8.1e-03, 12.3 img/s, 45 s, ETA 1 min 30 s, precise BN 2.1 s,
    val loss 1.1, val mIoU 23.45%, val acc 81.20%

(one line), and with `--log-every N` a line every N steps (`epoch 3/5 step 20/100: ...`).
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

import keras

from utils.progress import duration, is_terminal

__all__ = ["EpochProgress"]

#: Progress-bar values shown as they are, not averaged over the epoch.
_STATEFUL = ["loss", "lr", "img/s", "bn_s", "val_loss", "val_miou", "val_acc"]


class EpochProgress:
    """The display of one run: `start_epoch`, `step` after each step, `finish` at an epoch's end.

    Args:
        epochs: the run's epochs (for "epoch 3/5" and the ETA).
        steps: optimizer steps per epoch.
        enabled: False shows nothing (the workers that are not the chief, a quiet caller).
        log_every: with plain lines, also one every this many steps (0: only at epochs' ends).
        stream: where to write (default standard output); a terminal gets the progress bar.
    """

    def __init__(
        self,
        epochs: int,
        steps: int,
        enabled: bool = True,
        log_every: int = 0,
        stream: IO[str] | None = None,
    ) -> None:
        self.epochs, self.steps, self.enabled = int(epochs), int(steps), enabled
        self.log_every = int(log_every)
        self.stream = sys.stdout if stream is None else stream
        self.terminal = is_terminal(self.stream)
        self.epoch = 0
        self._bar: keras.utils.Progbar | None = None
        self._epoch_times: list[float] = []  # whole epochs, validation included
        self._epoch_started = time.perf_counter()

    def start_epoch(self, epoch: int) -> None:
        """Epoch `epoch` (1-based) begins: the header and a new bar in a terminal."""
        self.epoch = epoch
        self._epoch_started = time.perf_counter()
        if not self.enabled or not self.terminal:
            return
        print(f"Epoch {epoch}/{self.epochs}", file=self.stream, flush=True)
        self._bar = keras.utils.Progbar(self.steps, verbose=1, stateful_metrics=_STATEFUL)

    def step(self, step: int, loss: float, rate: float, images_per_s: float) -> None:
        """After step `step` (1-based) of the epoch: the running mean loss, rate and speed."""
        if not self.enabled:
            return
        if self._bar is not None:
            values = [("loss", loss), ("lr", rate), ("img/s", images_per_s)]
            self._bar.update(step, values, finalize=False)
        elif not self.terminal and self.log_every and step % self.log_every == 0:
            if step < self.steps:
                eta = (self.steps - step) * (time.perf_counter() - self._epoch_started) / step
                self._line(
                    f"epoch {self.epoch}/{self.epochs} step {step}/{self.steps}: loss "
                    f"{loss:.4f}, lr {rate:.3g}, {images_per_s:.3g} img/s, epoch ETA "
                    f"{duration(eta)}"
                )

    def finish(self, row: dict[str, Any]) -> None:
        """The epoch's means and its validation, as the bar's last state or one line."""
        seconds = time.perf_counter() - self._epoch_started
        self._epoch_times.append(seconds)
        if not self.enabled:
            return
        if self._bar is not None:
            extra = [
                ("loss", row["loss"]),
                ("lr", row["learning_rate"]),
                ("img/s", row["images_per_s"]),
            ]
            if "precise_bn_s" in row:
                extra.append(("bn_s", row["precise_bn_s"]))
            if row.get("val_loss") is not None:
                extra += [
                    ("val_loss", row["val_loss"]),
                    ("val_miou", row["val_mean_iou"]),
                    ("val_acc", row["val_pixel_accuracy"]),
                ]
            self._bar.update(self.steps, extra, finalize=True)
            self._bar = None
            return
        left = self.epochs - self.epoch
        mean = sum(self._epoch_times) / len(self._epoch_times)
        parts = [
            f"loss {row['loss']:.4f}",
            f"lr {row['learning_rate']:.3g}",
            f"{row['images_per_s']:.3g} img/s",
            duration(seconds),
            f"ETA {duration(left * mean)}" if left else "done",
        ]
        if "precise_bn_s" in row:
            parts.append(f"precise BN {duration(row['precise_bn_s'])}")
        if row.get("val_loss") is not None:
            parts += [
                f"val loss {row['val_loss']:.4f}",
                f"val mIoU {100 * row['val_mean_iou']:.2f}%",
                f"val acc {100 * row['val_pixel_accuracy']:.2f}%",
            ]
        self._line(f"epoch {self.epoch}/{self.epochs}: {', '.join(parts)}")

    def stopped(self) -> None:
        """End a bar left open by a stopped epoch, so the next line starts on its own."""
        if self._bar is not None:
            print(file=self.stream, flush=True)
            self._bar = None

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
