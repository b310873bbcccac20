"""A run is never lost, corrupted or misreported (crobust.study.runner, crobust.records): a refused command changes
no file of an existing run, a busy workdir is refused by its lock, diverged members are no results, a model too
large for the memory is refused before anything is allocated, SIGINT/SIGTERM in every phase end as "interrupted"
with exit 130 and the rerun continues, and the report says n/a, its point counts, one seed and where it came from.

One tiny study (digits, width 8, 20 steps, clean accuracy only) runs every case in-process; one real process checks
an outside SIGTERM during the measures."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from crobust import training
from crobust._errors import CrobustError
from crobust.config import derive, resolve
from crobust.records import WorkdirLock, read_jsonl, umask
from crobust.study import (DataConfig, EvalConfig, Flat, GridConfig, Holds, ModelConfig, Population, Study,
                           StudyConfig, cli, runner)
from crobust.study import measures as M

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOOK = os.environ.get("CROBUST_TEST_HOOK", "")      # the real-process case: "wait:<file>" in the measures


@dataclasses.dataclass(frozen=True)
class TinyConfig(StudyConfig):
    diverge: str = "none"          # "none", "member" (one member at lr 1e30) or "population" (a second one, all)


BASE = TinyConfig(
    data=DataConfig("digits", n_train=300, n_test=60), model=ModelConfig(width=8, depth=2),
    train=training.TrainConfig(lr=1e-2, batch_size=32, max_steps=20, eval_every=10, patience=None, val_ratio=0.2),
    grid=GridConfig(alpha=(0.0, 0.1), seeds=2),
    eval=EvalConfig(n_points=20, eps_linf=(0.0, 0.1), eps_l2=(0.0, 0.5), n_iter=2, n_targets=1, n_queries=5,
                    attacks=("apgd-ce",)),
    checkpoint_every=10)


# The phase in which the run sends itself SIGTERM (data, measures, report) or a SIGINT whose KeyboardInterrupt a
# ``__del__`` swallows (swallowed); not part of the configuration, so the rerun is the same command.
SIGNAL_AT = {"phase": None}


def _raise(phase):
    if SIGNAL_AT["phase"] == phase:
        signal.raise_signal(signal.SIGTERM)


def _populations(cfg, data):
    _raise("data")
    members = training.grid(alpha=cfg.grid.alpha, seeds=cfg.grid.seed_list)
    if cfg.diverge == "member":
        members = [*members, {"alpha": 0.0, "seed": 9, "lr": 1e30}]
    pops = [Population("mlp", cfg.model.build(data), cfg.train, tuple(members))]
    if cfg.diverge == "population":
        pops.append(Population("wild", cfg.model.build(data), cfg.train,
                               tuple({**m, "lr": 1e30} for m in members)))
    return pops


class _SignalOnDelete:
    """Raises the signal inside ``__del__``, where Python prints the handler's exception and goes on."""

    def __del__(self):
        signal.raise_signal(signal.SIGINT)


def _hook_measure(cfg):
    def measure(ctx, pop):
        if HOOK.startswith("wait:"):
            open(HOOK[5:], "w").close()
            time.sleep(120)
        _raise("measures")
        if SIGNAL_AT["phase"] == "swallowed":
            _SignalOnDelete()                               # deleted at once: the KeyboardInterrupt is swallowed
        return {}
    return measure


def _notes(cfg):
    _raise("report")
    return ["a tiny study for the tests"]


STUDY = Study(name="tiny", title="Tiny", paper_claims=(), presets={"smoke": BASE}, populations=_populations,
              measures=lambda cfg: [M.clean_accuracy(), _hook_measure(cfg)],
              claims=lambda cfg: [Flat("E1", "clean accuracy is flat in α", x="alpha", y="clean_acc", tolerance=0.5),
                                  Holds("E2", "clean accuracy ≥ 0", lhs="clean_acc", rhs=0.0)],
              figures=lambda cfg: [], notes=_notes, summary=lambda cfg: ["clean_acc", "test_loss"])


def _snapshot(w):
    return {str(p.relative_to(w)): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode)
            for p in sorted(w.rglob("*")) if p.is_file() and p.name != ".lock"}


def _main(argv, capfd, monkeypatch):
    monkeypatch.setenv("CROBUST_CACHE_DIR", "off")
    capfd.readouterr()
    code = cli.run_cli(STUDY, ["--preset", "smoke", "--quiet", *argv])
    return code, capfd.readouterr().err


def _one_line(err, *needles):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), err
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run of the tiny study (read-only for the tests: each copies what it changes)."""
    w = tmp_path_factory.mktemp("tiny") / "w"
    out = STUDY.run(BASE, w, preset="smoke", progress=False)
    return w, out


def _copy(finished, tmp_path):
    import shutil
    w = tmp_path / "w"
    shutil.copytree(finished[0], w)
    return w


# --------------------------------------------------------------------------------------------------------------
# 1. A refusal changes no file of an existing run

def test_a_refused_command_changes_no_file_of_a_finished_run(finished, tmp_path, capfd, monkeypatch):
    w = _copy(finished, tmp_path)
    before = _snapshot(w)
    code, err = _main(["--set", "train.lr=2e-3", "--workdir", str(w)], capfd, monkeypatch)
    assert code == 2 and "different configuration" in _one_line(err, "error: ")
    assert _snapshot(w) == before                                      # run.json keeps study, preset, wall time
    # Without config.json the run cannot be compared: refused before config.json, report.md or the records change.
    (w / "config.json").unlink()
    del before["config.json"]
    code, err = _main(["--set", "train.lr=2e-3", "--workdir", str(w)], capfd, monkeypatch)
    assert code == 2 and "without its config.json" in _one_line(err, "error: ")
    assert _snapshot(w) == before
    assert json.loads((w / "run.json").read_text())["status"] == "complete"


def test_a_checkpoint_of_another_configuration_is_refused_before_any_file_changes(finished, tmp_path, capfd,
                                                                                   monkeypatch):
    w = _copy(finished, tmp_path)
    for meta in (w / "checkpoints" / "mlp").glob("*/meta/metadata"):     # as if written by another crobust
        doc = json.loads(meta.read_text())
        doc["fingerprint"], doc["description"]["state_format"] = "0" * 16, 0
        meta.write_text(json.dumps(doc))
    before = _snapshot(w)
    code, err = _main(["--workdir", str(w)], capfd, monkeypatch)
    assert code == 2 and "different training configuration (differs in: state_format" in _one_line(err, "error: ")
    assert _snapshot(w) == before


@pytest.mark.parametrize("setting, needle", [("train.lr=nan", "train.lr must be a finite number"),
                                             ("train.lr=inf", "train.lr must be a finite number"),
                                             ("eval.eps_linf=0,nan", "eval.eps_linf must be a finite number"),
                                             ("train.val_ratio=0 train.patience=10",
                                              "train.val_ratio must be > 0 with early "),
                                             ("train.batch_size=1000", "larger than the training split")])
def test_a_bad_setting_is_refused_before_the_workdir_exists(setting, needle, tmp_path, capfd, monkeypatch):
    sets = [arg for one in setting.split() for arg in ("--set", one)]         # settings apart by spaces
    code, err = _main([*sets, "--workdir", str(tmp_path / "w")], capfd, monkeypatch)
    assert code == 2 and needle in _one_line(err, "error: ")
    assert not (tmp_path / "w").exists()


def test_a_run_that_kept_nothing_is_taken_over_by_the_corrected_command(tmp_path):
    from crobust.records import RunDir
    w = tmp_path / "w"
    old = RunDir(w, study="tiny", preset="smoke", writer=True)
    old.start({"lr": float("nan")})
    old.finish("failed", error="diverged at once")                     # no checkpoint, no report, no records
    new = RunDir(w, study="tiny", preset="smoke", writer=True)
    new.start({"lr": 1e-3})
    assert json.loads((w / "config.json").read_text()) == {"lr": 1e-3}
    # A RunDir that did not start records nothing.
    RunDir(w, study="tiny", preset="smoke", writer=True).finish("failed", error="x")
    assert json.loads((w / "run.json").read_text())["status"] == "running"


# --------------------------------------------------------------------------------------------------------------
# 2. The workdir lock

def test_a_busy_workdir_is_refused_naming_its_holder(finished, tmp_path, capfd, monkeypatch):
    w = _copy(finished, tmp_path)
    before = _snapshot(w)
    with WorkdirLock(w):
        code, err = _main(["--workdir", str(w)], capfd, monkeypatch)
    assert code == 2
    _one_line(err, "error: ", "is in use by host", f"pid {os.getpid()}")
    assert _snapshot(w) == before
    with WorkdirLock(w):                                              # released when its holder let go
        pass


def test_without_flock_a_lock_file_names_host_and_pid(tmp_path, capfd, monkeypatch):
    import errno
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", no_flock)
    capfd.readouterr()
    with WorkdirLock(tmp_path):
        _one_line(capfd.readouterr().err, "does not honour flock", ".lock.pid")
        held = json.loads((tmp_path / ".lock.pid").read_text())
        assert held["pid"] == os.getpid()
        with pytest.raises(CrobustError, match=f"in use by host .* pid {os.getpid()}"):
            WorkdirLock(tmp_path).acquire()
    assert not (tmp_path / ".lock.pid").exists()
    # A lock file left by a process that is gone from this host is taken over.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket
    (tmp_path / ".lock.pid").write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))
    with WorkdirLock(tmp_path):
        assert json.loads((tmp_path / ".lock.pid").read_text())["pid"] == os.getpid()


# --------------------------------------------------------------------------------------------------------------
# 4. Divergence is a result the report states

def test_diverged_members_are_left_out_and_counted(tmp_path):
    cfg = dataclasses.replace(BASE, diverge="member")
    out = STUDY.run(cfg, tmp_path / "w", preset="smoke", progress=False)
    table = out["table"]
    gone = table["diverged"] == 1.0
    assert gone.tolist() == [False] * 4 + [True]
    assert np.isnan(table["clean_acc"][gone]).all() and np.isfinite(table["clean_acc"][~gone]).all()
    assert table["best_step"][gone][0] == -1                           # the trainer's record is kept
    rows = [json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["value"] is None for r in rows if r["member"] == 4 and r["measurement"] == "clean_acc")
    report = (tmp_path / "w" / "report.md").read_text()
    assert "**1 of 5 members diverged** (member(s) 4" in report
    assert "Claims are computed on the 4 of 5 members that trained (1 diverged)" in report
    flat = out["verdicts"][0]
    assert flat.verdict != "skipped"


def test_a_population_where_every_member_diverged_fails_and_the_others_are_kept(tmp_path, capfd, monkeypatch):
    w = tmp_path / "w"
    monkeypatch.setitem(STUDY.presets, "smoke", dataclasses.replace(BASE, diverge="population"))
    code, err = _main(["--workdir", str(w)], capfd, monkeypatch)
    assert code == 1
    _one_line(err, "error: ", "every member of population(s) wild diverged", str(w / "report.md"))
    status = json.loads((w / "run.json").read_text())
    assert status["status"] == "failed" and status["failed_populations"] == ["wild"]
    report = (w / "report.md").read_text()
    assert "Population `wild`" in report and "**failed: every member diverged**" in report
    members = (w / "members.csv").read_text().splitlines()
    assert len(members) == 1 + 8
    kept = [r for r in read_jsonl(w / "metrics.jsonl") if r["measurement"] == "clean_acc"]
    assert all((r["value"] is not None) == (r["population"] == "mlp") for r in kept)


# --------------------------------------------------------------------------------------------------------------
# 5. Memory is estimated before anything is allocated

def test_a_model_too_large_for_the_host_is_one_line_before_the_workdir(tmp_path, capfd, monkeypatch):
    t0 = time.perf_counter()
    code, err = _main(["--set", "model.width=1000000000", "--workdir", str(tmp_path / "w")], capfd, monkeypatch)
    assert code == 2
    _one_line(err, "error: population mlp (4 members, MLP) needs ~", "GiB of host memory but this process may use")
    assert not (tmp_path / "w").exists() and time.perf_counter() - t0 < 60


def test_host_memory_check_names_need_and_limit():
    from crobust import parallel
    avail = parallel.host_available_bytes()
    assert avail is not None and avail[0] > 0 and avail[1] in ("cgroup limit", "MemAvailable")
    parallel.check_host_memory(2 ** 30, "x", available=(2 ** 31, "MemAvailable"))
    with pytest.raises(CrobustError, match=r"x needs ~2.00 GiB of host memory but this process may use 1.00 GiB "
                                           r"\(cgroup limit\)"):
        parallel.check_host_memory(2 ** 31, "x", available=(2 ** 30, "cgroup limit"))


def test_population_bytes_counts_the_state_from_shapes():
    from crobust import data as data_lib
    ds = data_lib.subsample(data_lib.load_dataset("digits"), n_train=300, n_test=60, seed=0)
    model = BASE.model.build(ds)
    members = training.grid(alpha=(0.0,), seeds=(0, 1))
    state, step = training.population_bytes(model, ds, BASE.train, members)
    real = training.init_population(model, ds, BASE.train, members)
    from crobust import parallel
    assert state == parallel.state_bytes((real.params, real.best_params, real.model_state, real.best_model_state,
                                          real.opt_state, real.train_idx, real.val_idx))
    assert step == 2 * parallel.member_step_bytes(real.params, batch_size=32, eval_batch_size=2048)


# --------------------------------------------------------------------------------------------------------------
# 7. SIGINT and SIGTERM in every phase

@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")   # the swallowed case, on purpose
@pytest.mark.parametrize("phase", ["data", "measures", "swallowed", "report"])
def test_a_signal_in_any_phase_ends_interrupted_with_exit_130_and_the_rerun_continues(phase, finished, tmp_path,
                                                                                      capfd, monkeypatch):
    w = _copy(finished, tmp_path)
    before = _snapshot(w)
    monkeypatch.setitem(SIGNAL_AT, "phase", phase)
    code, err = _main(["--workdir", str(w)], capfd, monkeypatch)
    assert code == 130
    _one_line(err, f"interrupted ({'SIGINT' if phase == 'swallowed' else 'SIGTERM'})",
              "rerun the same command to resume")
    if phase == "data":                     # before the run started: its files are as they were
        assert _snapshot(w) == before
    else:
        assert json.loads((w / "run.json").read_text())["status"] == "interrupted"
        assert not (w / "report.md").exists()
    monkeypatch.setitem(SIGNAL_AT, "phase", None)
    code, err = _main(["--workdir", str(w)], capfd, monkeypatch)
    assert code == 0, err
    assert json.loads((w / "run.json").read_text())["status"] == "complete" and (w / "report.md").exists()
    assert (w / "metrics.jsonl").read_text() == (finished[0] / "metrics.jsonl").read_text()


def test_an_outside_sigterm_during_the_measures_in_a_real_process(tmp_path):
    w, marker = tmp_path / "w", tmp_path / "measuring"
    env = {**os.environ, "CROBUST_CACHE_DIR": "off", "CROBUST_TEST_HOOK": f"wait:{marker}",
           "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])}
    proc = subprocess.Popen([sys.executable, "-c", "import sys, test_run_safety as t; "
                             "sys.exit(t.STUDY.main(sys.argv[1:]))", "--preset", "smoke", "--quiet",
                             "--workdir", str(w)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    t0 = time.monotonic()
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < 240
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    _one_line(err, "interrupted (SIGTERM)", str(w / "checkpoints"), "rerun the same command to resume")
    assert json.loads((w / "run.json").read_text())["status"] == "interrupted"
    assert os.listdir(w / "checkpoints" / "mlp")
    STUDY.run(BASE, w, preset="smoke", progress=False)               # the rerun continues from the checkpoint
    assert json.loads((w / "run.json").read_text())["status"] == "complete"


# --------------------------------------------------------------------------------------------------------------
# 8. The report: n/a, point counts, one seed, file modes, provenance

def test_the_report_states_points_provenance_and_files_share_one_mode(finished):
    w, out = finished
    report = (w / "report.md").read_text()
    assert "robust accuracy on the first 20 test points" in report
    assert "`clean_acc` is on all 60 test points" in report
    assert "same points" not in report
    config = json.loads((w / "config.json").read_text())
    prov = config["provenance"]
    import jax
    assert prov["packages"]["jax"] == jax.__version__ and prov["backend"] == jax.default_backend()
    assert prov["git"] is None or len(prov["git"]["commit"]) == 40
    assert f"jax {jax.__version__}" in report and f"backend {jax.default_backend()}" in report
    want = 0o666 & ~umask()
    modes = {p.name: p.stat().st_mode & 0o777 for p in w.iterdir() if p.is_file()}
    assert modes and set(modes.values()) == {want}, modes


def test_a_group_without_values_reads_n_a():
    from crobust.study.table import MemberTable
    t = MemberTable()
    rows = t.add_members([{"population": "p", "alpha": 0.0}, {"population": "p", "alpha": 1.0}])
    t.set(rows, "x", [0.5, np.nan])
    means = runner._means(t, ("population", "alpha"), ["x"])
    assert [m["x"] for m in means] == ["0.5 ± 0", "n/a"]


def test_with_one_seed_per_setting_claims_are_skipped_but_per_member_checks_stand(tmp_path):
    cfg = derive(BASE, {"grid.seeds": 1})
    out = STUDY.run(cfg, tmp_path / "w", preset="smoke", progress=False)
    flat, holds = out["verdicts"]
    assert flat.verdict == "skipped" and "one seed" in flat.detail
    assert holds.verdict == "supported"
    assert "**skipped**: one seed per setting" in (tmp_path / "w" / "report.md").read_text()


def test_resolve_refuses_val_ratio_zero_with_early_stopping_in_a_study():
    from experiments import spectral_fixed_scale as s
    with pytest.raises(CrobustError, match="train.val_ratio must be > 0 with early stopping"):
        resolve(s.PRESETS, "smoke", ["train.val_ratio=0", "train.patience=100"])
    assert resolve(s.PRESETS, "smoke", ["train.val_ratio=0"]).train.val_ratio == 0.0     # no early stopping: fine


def test_without_a_validation_split_every_member_is_measured_on_its_last_parameters(tmp_path):
    """val_ratio 0, patience None (the reference ResNet recipe): no member is ever validated (best_step −1), and
    what every measure reads — the population's parameters and model state — is bitwise the trainer's final
    state, not the initial parameters its best-parameter slot was filled with; the report says so."""
    seen = []
    study = dataclasses.replace(STUDY, measures=lambda cfg: [M.clean_accuracy(),
                                                             lambda ctx, pop: seen.append(pop) or {}])
    cfg = derive(BASE, {"train.val_ratio": 0.0})
    out = study.run(cfg, tmp_path / "w", preset="smoke", progress=False)
    (pop,) = seen
    assert np.all(np.asarray(pop.fit.state.best_step) == -1)
    for measured, final, initial in zip(jax.tree.leaves(pop.params), jax.tree.leaves(pop.fit.state.params),
                                        jax.tree.leaves(pop.fit.state.best_params)):
        assert np.array_equal(np.asarray(measured), np.asarray(final))      # bitwise: the same arrays
    assert not all(np.array_equal(np.asarray(f), np.asarray(i))              # and training did move them
                   for f, i in zip(jax.tree.leaves(pop.fit.state.params), jax.tree.leaves(pop.fit.state.best_params)))
    assert np.all(out["table"]["best_step"] == -1)
    report = (tmp_path / "w" / "report.md").read_text()
    assert "no validation split: each member's result (what is measured) is its last parameters" in report
