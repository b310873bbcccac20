"""SIGINT and SIGTERM in every phase of a study run: both become a ``KeyboardInterrupt`` (SIGTERM's default would
end the process at once, exit 143, with ``run.json`` left "running"), and neither can be lost.

Python delivers a signal by running its handler between bytecodes of the main thread; an exception the handler
raises inside a callback that swallows exceptions (a garbage-collection callback of JAX's, a ``__del__``) is
printed as "Exception ignored" and the run goes on. So :class:`RunSignals` also remembers the signal, and the
runner calls :meth:`RunSignals.check` between phases (after each population's training, each measure, before the
report and before recording the run as complete): a signal that was swallowed still stops the run there. While the
trainer runs with a checkpoint folder its own handler (:class:`crobust.checkpoint.InterruptGuard`) takes over and
hands back on return.
"""

from __future__ import annotations

import signal
import threading


class RunInterrupted(KeyboardInterrupt):
    """The run stopped on SIGINT/SIGTERM (``signal`` names it)."""

    def __init__(self, name: str):
        super().__init__(f"{name} received")
        self.signal = name


class RunSignals:
    """While active, SIGINT and SIGTERM raise :class:`RunInterrupted` and are remembered (:meth:`check`); a signal
    that arrives while the first is being handled (records written on the way out) is remembered, not raised. A
    context manager; outside the main thread it does nothing."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self):
        self.signal: str | None = None
        self._old: dict = {}

    def _handler(self, signum, frame):
        first = self.signal is None
        self.signal = self.signal or signal.Signals(signum).name
        if first:
            raise RunInterrupted(self.signal)

    def check(self) -> None:
        """Raise :class:`RunInterrupted` if a signal arrived (even one whose exception was swallowed)."""
        if self.signal is not None:
            raise RunInterrupted(self.signal)

    def __enter__(self) -> "RunSignals":
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._old[sig] = signal.getsignal(sig)
                    signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self._old.clear()
        return False


__all__ = ["RunSignals", "RunInterrupted"]
