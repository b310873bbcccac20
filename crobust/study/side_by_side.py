"""Studies run side by side, each in a process of its own (what ``python -m experiments.reproduce --jobs N`` uses).

:func:`run_side_by_side` keeps up to ``jobs`` child processes running, starting the studies in the order given.
Two studies that share a population's checkpoint folder (one starts from the other's population,
:attr:`crobust.study.Study.source_studies`) never run at once: the later-listed one waits for the earlier one,
exactly as one after another, so whichever is listed first trains the shared population and the other restores it.

With more than one job, the children's lines are relayed line by line (standard output to standard output,
standard error to standard error), each prefixed with its study's name in brackets unless it already starts with
it, so interleaved progress stays readable. With one job the children write to this process's streams directly.

Each child runs in a session of its own, so a terminal's Ctrl-C reaches this process alone, and every SIGINT or
SIGTERM this process receives is passed on to each running child once, as SIGINT: the first stops each child as
an interrupted run with its finished work checkpointed (:mod:`crobust.study.signals`), a second stops it at once,
as when the study runs alone. No further study starts; once the running ones have exited (their exits reported to
``on_exit`` as usual), ``KeyboardInterrupt`` is raised.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Mapping, Sequence


@dataclasses.dataclass
class _Running:
    process: subprocess.Popen
    started: float
    relays: list
    signalled: int = 0

    def catch_up(self, signals: int) -> None:
        """Send SIGINT until this child has had one per signal received so far (while it runs)."""
        while self.signalled < signals and self.process.poll() is None:
            self.signalled += 1
            self.process.send_signal(signal.SIGINT)


def _relay(stream, out, prefix: str) -> None:
    """Copy ``stream``'s lines to ``out``, each starting with ``prefix`` (unless it already does)."""
    for line in iter(stream.readline, ""):
        text = line if line.startswith(prefix) or not line.strip() else f"{prefix} {line}"
        out.write(text if text.endswith("\n") else text + "\n")
        out.flush()
    stream.close()


def conflicting(a: str, b: str, sources: Mapping[str, Sequence[str]]) -> bool:
    """``a`` and ``b`` share a checkpoint folder: one names the other among its source studies."""
    return a in sources.get(b, ()) or b in sources.get(a, ())


def run_side_by_side(names: Sequence[str], jobs: int, command: Callable[[str], list],
                     on_exit: Callable[[str, int, float], object], *, sources: Mapping[str, Sequence[str]] = None,
                     on_start: Callable[[str], None] = None, env: Mapping[str, str] = None,
                     poll_s: float = 0.2) -> dict:
    """Run ``command(name)`` (an argument list) for every name, at most ``jobs`` at once; ``{name: on_exit(name,
    exit status, wall seconds)}`` in the order of ``names``, or KeyboardInterrupt once a signal came and the running
    children have exited (module docstring). ``sources``: {study: the studies it starts from}; ``on_start(name)``
    is called just before a child starts."""
    jobs = max(1, int(jobs))
    sources = dict(sources or {})
    pending, running, results = list(names), {}, {}
    relay = jobs > 1

    def startable(name: str) -> bool:
        earlier = pending[:pending.index(name)]
        return not any(conflicting(name, other, sources) for other in [*running, *earlier])

    signals = []

    def forward(signum, frame):                # each child gets one SIGINT per signal this process receives
        signals.append(signum)
        for child in list(running.values()):
            child.catch_up(len(signals))

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, forward)
    try:
        while running or (pending and not signals):
            for name in list(pending):
                if signals or len(running) >= jobs:
                    break
                if not startable(name):
                    continue
                pending.remove(name)
                if on_start is not None:
                    on_start(name)
                pipe = subprocess.PIPE if relay else None
                # a session of its own: a terminal's Ctrl-C reaches this process only, which passes it on once
                process = subprocess.Popen(command(name), env=env, stdout=pipe, stderr=pipe, text=relay,
                                           errors="replace" if relay else None, start_new_session=True)
                relays = []
                if relay:
                    for stream, out in ((process.stdout, sys.stdout), (process.stderr, sys.stderr)):
                        t = threading.Thread(target=_relay, args=(stream, out, f"[{name}]"), daemon=True)
                        t.start()
                        relays.append(t)
                running[name] = _Running(process, time.perf_counter(), relays)
                running[name].catch_up(len(signals))          # a signal that came while it was starting
            for name, child in list(running.items()):
                code = child.process.poll()
                if code is None:
                    continue
                for t in child.relays:
                    t.join()
                del running[name]
                results[name] = on_exit(name, code, time.perf_counter() - child.started)
            if running:
                time.sleep(poll_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if signals:
        raise KeyboardInterrupt(f"{signal.Signals(signals[0]).name} received")
    return {name: results[name] for name in names}


__all__ = ["conflicting", "run_side_by_side"]
