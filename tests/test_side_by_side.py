"""Studies side by side (crobust.study.side_by_side): at most ``jobs`` children at once, started in the order given,
two that share a population never together, results in the order given, relayed lines prefixed, and a signal passed
on to each running child exactly once. The children are tiny Python processes, not studies."""

import os
import signal
import sys
import threading
import time

import pytest

from crobust.study.runner import check_source_studies
from crobust.study.side_by_side import conflicting, run_side_by_side
from crobust._errors import CrobustError

# A child: log its start and end times, print one plain line and one already prefixed, sleep, exit with the given
# code.
CHILD = """
import pathlib, sys, time
log, name, code, sleep = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
with log.open("a") as f: f.write(f"start {name} {time.time()}\\n")
print("plain line", flush=True)
print(f"[{name}] already prefixed", flush=True)
print("to stderr", file=sys.stderr, flush=True)
time.sleep(sleep)
with log.open("a") as f: f.write(f"end {name} {time.time()}\\n")
sys.exit(code)
"""


def _spans(log):
    t = {}
    for line in log.read_text().splitlines():
        what, name, when = line.split()
        t.setdefault(name, {})[what] = float(when)
    return t


def test_two_run_at_once_in_order_and_a_study_never_beside_its_source(tmp_path, capfd):
    log = tmp_path / "log"
    codes = {"a": 0, "b": 3, "c": 0, "d": 0}
    sleep = {"a": 1.5, "b": 0.2, "c": 0.2, "d": 0.2}               # b ends long before a: c must still wait for a
    done = run_side_by_side(["a", "b", "c", "d"], 2,
                            lambda n: [sys.executable, "-c", CHILD, str(log), n, str(codes[n]), str(sleep[n])],
                            lambda n, code, s: (n, code), sources={"c": ("a",)})
    assert list(done) == ["a", "b", "c", "d"]                           # the order given, whatever the finishing order
    assert done == {n: (n, codes[n]) for n in codes}                    # each child's own exit status
    t = _spans(log)
    assert t["b"]["start"] < t["a"]["end"] and t["a"]["start"] < t["b"]["end"]     # a and b side by side
    assert t["c"]["start"] >= t["a"]["end"]                             # c starts from a's population: after a
    assert t["d"]["start"] < t["a"]["end"]                              # ... while d, listed after c, need not wait
    assert max(sum(1 for n in t if t[n]["start"] <= t[m]["start"] < t[n]["end"]) for m in t) <= 2   # never 3 at once
    out, err = capfd.readouterr()
    for n in codes:
        assert f"[{n}] plain line" in out and out.count(f"[{n}] already prefixed") == 1
        assert f"[{n}] [{n}]" not in out and f"[{n}] to stderr" in err and "to stderr" not in out


def test_one_job_runs_one_after_another_without_relaying(tmp_path, capfd):
    log = tmp_path / "log"
    run_side_by_side(["a", "b"], 1, lambda n: [sys.executable, "-c", CHILD, str(log), n, "0", "0.3"],
                     lambda n, c, s: c)
    t = _spans(log)
    assert t["b"]["start"] >= t["a"]["end"]
    out, _ = capfd.readouterr()
    assert "plain line" in out and "[a] plain line" not in out           # the child's own stream, unprefixed


# A child that counts the SIGINTs it receives until 0.5 s after the first, writes the count and its session, and
# exits 130.
COUNTING = """
import os, pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
n = [0]
signal.signal(signal.SIGINT, lambda s, f: n.__setitem__(0, n[0] + 1))
pathlib.Path(str(out) + ".ready").write_text("")
t = time.time()
while n[0] == 0 and time.time() - t < 20:
    time.sleep(0.01)
time.sleep(0.5)
out.write_text(f"{n[0]} {os.getsid(0)}")
sys.exit(130)
"""


def test_a_signal_reaches_each_running_child_once_and_nothing_more_starts(tmp_path):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are installed from the main thread only")
    paths = {n: tmp_path / n for n in "abc"}

    def interrupt_when_ready():                      # SIGINT to this process once a and b have installed handlers
        deadline = time.time() + 30
        while time.time() < deadline and not all(os.path.exists(f"{paths[n]}.ready") for n in "ab"):
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_ready, daemon=True).start()
    exits = {}
    with pytest.raises(KeyboardInterrupt, match="SIGINT"):
        run_side_by_side(list("abc"), 2, lambda n: [sys.executable, "-c", COUNTING, str(paths[n])],
                         lambda n, code, s: exits.__setitem__(n, code), poll_s=0.05)
    assert exits == {"a": 130, "b": 130}                                # both ran to their exit; c never started
    for n in "ab":                     # one SIGINT each, and in a session of their own: a terminal's Ctrl-C to this
        count, session = paths[n].read_text().split()          # process group would not reach them a second time
        assert count == "1" and int(session) != os.getsid(0)
    assert not paths["c"].exists() and not os.path.exists(f"{paths['c']}.ready")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler     # this process's handler restored


def test_conflicts_are_symmetric_and_an_undeclared_source_study_is_refused():
    from types import SimpleNamespace as NS
    assert conflicting("fp", "e4", {"fp": ("e4",)}) and conflicting("e4", "fp", {"fp": ("e4",)})
    assert not conflicting("fp", "other", {"fp": ("e4",)})
    study = NS(name="fp", source_studies=("e4",))
    check_source_studies(study, [NS(name="posthoc", start=NS(study="e4")), NS(name="own", start=None)])
    with pytest.raises(CrobustError, match="starts from study 'other'.*source_studies"):
        check_source_studies(study, [NS(name="posthoc", start=NS(study="other"))])
