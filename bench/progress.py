"""Plain progress lines for long work (suites, searches, workers): a log is never silent for minutes."""

from __future__ import annotations

import time
from collections.abc import Callable


class EpochLine:
    """Trainer callback: one plain line per epoch, and one every ``every_s`` seconds inside an epoch
    that takes longer (a 100-block net on a CPU)."""

    def __init__(self, name: str, echo: Callable[[str], None], every_s: float = 30.0) -> None:
        self.name, self.echo, self.every_s, self.epochs = name, echo, every_s, 0
        self.last = time.monotonic()

    def on_train_start(self, info) -> None:
        self.epochs = info.config.epochs
        self.last = time.monotonic()

    def on_step_end(self, epoch: int, step: int, steps: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every_s and step < steps:
            self.last = now
            self.echo(f"    {self.name} epoch {epoch}/{self.epochs}: step {step}/{steps}")

    def on_epoch_end(self, m) -> None:
        self.last = time.monotonic()
        self.echo(f"    {self.name} epoch {m.epoch}/{self.epochs}: train acc {m.train_acc:.4f}, val acc {m.val_acc:.4f}, "
                  f"{m.epoch_time_s:.1f} s")
