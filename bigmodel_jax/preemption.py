"""Stopping a run cleanly when it is told to: SIGTERM (a scheduler's preemption notice, `kill`) or
SIGINT (Ctrl-C). The trainer finishes the step it is on, writes a checkpoint, closes its writers
and exits with a message saying how to resume; exit code 0 for SIGTERM, so schedulers requeue the
job cleanly, 130 for SIGINT. A second SIGINT stops at once (Python's KeyboardInterrupt): the last
committed checkpoint is still there, and nothing half-written is ever mistaken for one.

With several processes every host must save the same step, so the signal itself is not the cue:
JAX's coordination service hears SIGTERM on any host and picks a step every host will reach
(`multihost_utils.reached_preemption_sync_point`), which each host polls after every step. SIGINT
keeps its default there (one host cannot ask the others to stop).
"""

from __future__ import annotations

import logging
import signal
import threading

import jax

log = logging.getLogger(__name__)

EXIT_CODES = {"SIGTERM": 0, "SIGINT": 130}


class StopRequest:
    """install() sets the handlers (main thread only: elsewhere, e.g. a test's thread, signals keep
    theirs), restore() puts the previous ones back."""

    def __init__(self):
        self.signal_name: str = ""
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread() or jax.process_count() > 1:
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.signal_name and signum == signal.SIGINT:  # the second Ctrl-C: now
            raise KeyboardInterrupt
        self.signal_name = self.signal_name or name
        log.warning("received %s: finishing this step and saving a checkpoint (Ctrl-C again to stop at once)", name)

    def should_stop(self, step: int) -> bool:
        """Called after every step, with the same step on every host."""
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            if multihost_utils.reached_preemption_sync_point(step):
                self.signal_name = self.signal_name or "SIGTERM"
                return True
            return False
        return bool(self.signal_name)
