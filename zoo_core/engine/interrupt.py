"""SIGINT and SIGTERM during ``zoo train``: finish the iteration, write a checkpoint, say how to resume."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

from ..errors import ZooError

INTERRUPT_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


class TrainingInterrupted(ZooError):
    """SIGINT or SIGTERM: the checkpoint is written and the message says how to resume."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class StopRequest:
    """Remembers SIGINT/SIGTERM; the loop stops after the current iteration and checkpoints."""

    def __init__(self, abort_on_repeat: bool):
        self.signal: int | None = None
        self.abort_on_repeat = abort_on_repeat
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        with contextlib.suppress(ValueError):  # signals can only be set from the main thread
            for sig in INTERRUPT_EXIT:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.abort_on_repeat and self.signal == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        # Under torchrun a Ctrl-C arrives twice (from the terminal, then passed on by torchrun): the
        # checkpoint must not be cut short; torchrun itself kills the workers if they take too long.
        self.signal = self.signal or signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def error(self, step: int, last: int, checkpoints: Path) -> TrainingInterrupted:
        """What to raise once the checkpoint of ``step`` is written (SIGTERM when another rank was signalled)."""
        signum = self.signal or signal.SIGTERM
        return TrainingInterrupted(
            f"interrupted by {signal.Signals(signum).name} at iteration {step} of {last}; the checkpoint "
            f"is in {checkpoints}; continue with the same command and --resume",
            INTERRUPT_EXIT.get(signum, 130),
        )
