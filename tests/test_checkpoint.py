"""crobust.checkpoint: a run killed (SIGKILL) or interrupted (SIGINT/SIGTERM) at any moment and started again with
the same command ends bitwise identical to an uninterrupted run; a checkpoint of another configuration, a
half-written checkpoint and a bad interval are refused or ignored; the study resumes through its workdir."""

import dataclasses
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest

from crobust import checkpoint, training
from crobust import data as data_lib
from crobust._errors import CrobustError
from crobust.models import MLP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flat(res) -> dict:
    """Every array of a FitResult (whole state, best params, history) as host numpy, keys as key data."""
    leaves = jax.tree.leaves(res.state)
    out = {f"s{i:03d}": np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                                    else x) for i, x in enumerate(leaves)}
    out.update({f"b{i:03d}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(res.best_params))})
    out.update({f"h_{k}": np.asarray(v) for k, v in res.history.items()})
    return out


def _assert_bitwise(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert np.array_equal(a[k], b[k], equal_nan=True), k


# ---------------------------------------------------------------------------------------------------------------
# In-process: one compiled block shared by every run (the checkpoint logic does not depend on the layout).

@pytest.fixture(scope="module")
def small():
    ds = data_lib.subsample(data_lib.load_dataset("digits"), n_train=400, n_test=50, seed=0)
    model = MLP(num_classes=10, width=16, depth=2, mean=ds.mean, std=ds.std)
    members = training.grid(alpha=[0.0, 1e-2], seeds=range(2))
    cfg = training.TrainConfig(regularizer="l1", projection="frobenius", batch_size=64, max_steps=240, eval_every=20,
                               patience=60, min_steps=40)
    block_fn = jax.jit(training.make_block_fn(model, cfg))
    init = training.init_population(model, ds, cfg, members)
    run = lambda **kw: training.fit(model, ds, cfg, members, block_fn=block_fn,
                                    **{"progress": False, "state": init, **kw})
    reference = run()
    return types.SimpleNamespace(ds=ds, model=model, members=members, cfg=cfg, block_fn=block_fn, init=init,
                                 run=run, reference=reference, flat=_flat(reference))


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupt_finishes_the_block_checkpoints_says_how_to_resume_and_resume_is_bitwise(small, tmp_path, sig):
    ckdir = tmp_path / "ck"
    out = io.StringIO()
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    blocks = []

    def on_block(state, metrics):
        blocks.append(int(np.max(metrics["step"])))
        if len(blocks) == 3:
            os.kill(os.getpid(), getattr(signal, sig))

    with pytest.raises(checkpoint.TrainingInterrupted) as info:
        small.run(checkpoint_dir=ckdir, checkpoint_every=10_000, on_block=on_block,
                  progress=training.Progress(small.cfg.max_steps, stream=out, enabled=False))
    assert isinstance(info.value, KeyboardInterrupt) and info.value.step == 60 == blocks[-1]
    assert len(blocks) == 3                                   # the block in flight finished; no further block ran
    err = out.getvalue()
    line = [ln for ln in err.splitlines() if ln.startswith("interrupted")]
    assert len(line) == 1 and "rerun the same command to resume" in line[0] and str(ckdir / "3") in line[0], err
    assert f"{sig} received" in err
    assert sorted(os.listdir(ckdir)) == ["3"]                 # only the interrupt wrote one (interval 10,000 steps)
    assert {s: signal.getsignal(s) for s in before} == before  # handlers restored

    out = io.StringIO()
    resumed = small.run(checkpoint_dir=ckdir, checkpoint_every=10_000,
                        progress=training.Progress(small.cfg.max_steps, stream=out))
    assert f"resumed from {ckdir / '3'} (step 60)" in out.getvalue()
    assert resumed.steps_run == int(np.max(small.reference.state.step)) - 60
    _assert_bitwise(_flat(resumed), small.flat)               # whole state, best params and full history


def test_checkpoint_of_another_crobust_state_format_is_refused(small, tmp_path, monkeypatch):
    ckdir = tmp_path / "ck"
    small.run(checkpoint_dir=ckdir)
    monkeypatch.setattr(checkpoint, "STATE_FORMAT", checkpoint.STATE_FORMAT + 1)
    old, new = checkpoint.STATE_FORMAT - 1, checkpoint.STATE_FORMAT
    with pytest.raises(CrobustError, match=rf"differs in: state_format \({old} → {new}: written by another crobust"):
        small.run(checkpoint_dir=ckdir)


def test_checkpoint_of_another_configuration_is_refused(small, tmp_path):
    ckdir = tmp_path / "ck"
    small.run(checkpoint_dir=ckdir)
    other = training.TrainConfig(**{**small.cfg.__dict__, "lr": 3e-3})
    with pytest.raises(CrobustError, match=r"different training configuration \(differs in: lr \(0.001 → 0.003\)\)"):
        training.fit(small.model, small.ds, other, small.members, state=small.init, block_fn=small.block_fn,
                     progress=False, checkpoint_dir=ckdir)
    with pytest.raises(CrobustError, match="differs in: members"):
        training.fit(small.model, small.ds, small.cfg, small.members[:3], state=jax.tree.map(lambda a: a[:3],
                     small.init), block_fn=small.block_fn, progress=False, checkpoint_dir=ckdir)
    # The same configuration resumes (here: nothing left to train) and returns the same result.
    again = small.run(checkpoint_dir=ckdir)
    assert again.steps_run == 0
    _assert_bitwise(_flat(again), small.flat)


def test_a_config_without_extra_penalty_terms_is_described_as_before_the_field_existed(small):
    """``penalties`` and ``trainable`` came after state format 4: at their defaults they are not in the description,
    so checkpoints written before them still resume; set, they are there and a checkpoint of the other setting is
    refused naming it. ``execution`` (how members run, not what they compute) is never in it."""
    plain = checkpoint.describe(small.model, small.ds, small.cfg, small.members)
    assert set(plain["train_config"]) == {f.name for f in dataclasses.fields(small.cfg)} - {"penalties", "trainable",
                                                                                             "execution"}
    terms = dataclasses.replace(small.cfg, penalties=("beta_control",))
    with_terms = checkpoint.describe(small.model, small.ds, terms, small.members)
    assert with_terms["train_config"]["penalties"] == ["beta_control"]
    assert checkpoint._differences(plain, with_terms) == ["penalties (None → ['beta_control'])"]


@pytest.mark.parametrize("every", [0, -20, 1.5, True])
def test_bad_checkpoint_interval_is_an_error(small, tmp_path, every):
    with pytest.raises(CrobustError, match="checkpoint_every must be a positive number of steps"):
        small.run(checkpoint_dir=tmp_path / "ck", checkpoint_every=every)


def test_checkpoint_every_needs_a_folder(small):
    with pytest.raises(CrobustError, match="needs a checkpoint_dir"):
        small.run(checkpoint_every=100)


def test_half_written_checkpoints_are_never_restored(small, tmp_path, capsys):
    ckdir = tmp_path / "ck"
    small.run(checkpoint_dir=ckdir, checkpoint_every=20)          # a checkpoint per block; the last 2 kept
    steps = sorted(int(d) for d in os.listdir(ckdir) if d.isdigit())
    last = steps[-1]
    assert len(steps) == 2 and last == small.reference.history["step"].shape[0]
    # A save killed half-way leaves Orbax's temporary folder: never restored (and removed by the next save).
    tmp = ckdir / f"{last + 1}.orbax-checkpoint-tmp-1234567890"
    shutil.copytree(ckdir / str(last), tmp)
    (tmp / "state" / "manifest.ocdbt").write_bytes(b"torn")
    ck = checkpoint.Checkpointer(ckdir, description=checkpoint.describe(small.model, small.ds, small.cfg,
                                                                        small.members))
    assert ck.steps() == steps
    template = small.init
    assert ck.restore(template).n_blocks == last
    # A newest checkpoint that cannot be read: the one before it is used (one line names both), and training from
    # there ends where the uninterrupted run ended.
    shutil.rmtree(ckdir / str(last) / "state")
    capsys.readouterr()
    restored = ck.restore(template)
    assert restored.n_blocks == steps[0] and len(restored.history["step"]) == steps[0]
    _assert_one_line_names(capsys.readouterr().err, ck.path(last), ck.path(steps[0]))
    resumed = small.run(checkpoint_dir=ckdir, checkpoint_every=20)
    _assert_one_line_names(capsys.readouterr().err, ck.path(last), ck.path(steps[0]))
    _assert_bitwise(_flat(resumed), small.flat)
    assert not tmp.exists() and _steps(ckdir) == steps


def _assert_one_line_names(err: str, *paths):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and all(p in lines[0] for p in paths), err


def _largest_array_file(step_dir):
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


def _change_a_stored_value(ck, step: int, restored, scratch) -> None:
    """Rewrites checkpoint ``step``'s arrays with one weight's sign flipped, as valid Orbax files, and keeps its
    metadata, so the checkpoint decodes without an error and only the saved checksums can tell."""
    leaves, treedef = jax.tree.flatten(restored.state)
    i = max((j for j, a in enumerate(leaves) if a.dtype == np.float32), key=lambda j: leaves[j].size)
    changed = np.array(leaves[i])
    changed.flat[changed.size // 2] = -changed.flat[changed.size // 2] or 1.0
    leaves[i] = changed
    other = checkpoint.Checkpointer(scratch, description=ck.description)
    other.save(jax.tree.unflatten(treedef, leaves), restored.history, step, restored.wall_time)
    other.close()
    shutil.rmtree(os.path.join(ck.path(step), "state"))
    shutil.copytree(os.path.join(other.path(step), "state"), os.path.join(ck.path(step), "state"))


# The reads a failed restore abandons end on a closed event loop: no traceback of theirs may reach the user.
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_changed_bytes_in_a_checkpoint_fail_its_checksum_and_the_one_before_is_used(small, tmp_path, capsys):
    ckdir = tmp_path / "ck"
    small.run(checkpoint_dir=ckdir, checkpoint_every=20)
    steps = _steps(ckdir)
    ck = checkpoint.Checkpointer(ckdir, description=checkpoint.describe(small.model, small.ds, small.cfg,
                                                                        small.members))
    # One stored value of the newest checkpoint changed in files Orbax reads without an error: only the checksums
    # can tell. (Bytes changed blindly inside a file may instead break its zstd stream, which is another path.)
    _change_a_stored_value(ck, steps[-1], ck.restore(small.init), tmp_path / "scratch")
    capsys.readouterr()
    restored = ck.restore(small.init)
    err = capsys.readouterr().err
    _assert_one_line_names(err, ck.path(steps[-1]), ck.path(steps[0]))
    assert "fail their checksum" in err
    assert restored.n_blocks == steps[0]
    # Resumed from the older one, training ends where the uninterrupted run ended.
    _assert_bitwise(_flat(small.run(checkpoint_dir=ckdir, checkpoint_every=20)), small.flat)
    # Every checkpoint corrupt: one error naming the folder, nothing restored.
    for step in _steps(ckdir):
        target = _largest_array_file(ckdir / str(step))
        target.write_bytes(np.random.default_rng(step).bytes(target.stat().st_size))
    with pytest.raises(CrobustError, match="no readable checkpoint"):
        ck.restore(small.init)
    ck.close()


def test_a_checksum_mismatch_alone_skips_the_checkpoint(small, tmp_path, capsys):
    """The checksum check on its own (the bytes Orbax returns differ from those saved, whatever the file format
    does): the stored checksum of one array is changed, the checkpoint is skipped by name."""
    ckdir = tmp_path / "ck"
    small.run(checkpoint_dir=ckdir, checkpoint_every=20)
    steps = _steps(ckdir)
    meta = ckdir / str(steps[-1]) / "meta" / "metadata"
    doc = json.loads(meta.read_text())
    doc["checksums"]["leaves"]["0000"] = "0" * 64
    meta.write_text(json.dumps(doc))
    ck = checkpoint.Checkpointer(ckdir, description=checkpoint.describe(small.model, small.ds, small.cfg,
                                                                        small.members))
    capsys.readouterr()
    assert ck.restore(small.init).n_blocks == steps[0]
    err = capsys.readouterr().err
    _assert_one_line_names(err, ck.path(steps[-1]), "leaves/0000", "checksum")
    ck.close()


def test_a_population_without_validation_split_checkpoints_and_resumes(small, tmp_path):
    """val_ratio = 0 (no early stopping): the members' empty validation splits are not written (Orbax cannot
    write an array without elements) and come back from their shape; the resumed run equals the uninterrupted."""
    cfg = dataclasses.replace(small.cfg, val_ratio=0.0, patience=None, max_steps=60)
    run = lambda **kw: training.fit(small.model, small.ds, cfg, small.members, progress=False, **kw)
    reference = run()
    assert reference.state.val_idx.shape == (len(small.members), 0)
    ckdir = tmp_path / "ck"
    first = run(checkpoint_dir=ckdir, checkpoint_every=20)
    _assert_bitwise(_flat(first), _flat(reference))
    shutil.rmtree(ckdir / str(_steps(ckdir)[-1]))                  # as if killed after the block before
    _assert_bitwise(_flat(run(checkpoint_dir=ckdir, checkpoint_every=20)), _flat(reference))


def test_cli_interrupt_messages(tmp_path, capsys):
    from crobust.study import cli

    def study(exc):
        def run(cfg, workdir, **kw):
            os.makedirs(os.path.join(workdir, "checkpoints", "mlp", "7"), exist_ok=True)
            raise exc
        return types.SimpleNamespace(name="fake", run=run, presets={"smoke": _FakeConfig()})

    w = str(tmp_path / "w")
    assert cli.run_cli(study(checkpoint.TrainingInterrupted("interrupted …")), ["--preset", "smoke",
                                                                                "--workdir", w]) == 130
    assert capsys.readouterr().err == ""                          # the trainer already said where and how
    assert cli.run_cli(study(KeyboardInterrupt()), ["--preset", "smoke", "--workdir", w]) == 130
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and os.path.join(w, "checkpoints") in err and "rerun the same command to resume" in err


@dataclasses.dataclass(frozen=True)
class _FakeConfig:
    width: int = 1


# ---------------------------------------------------------------------------------------------------------------
# SIGKILL at random moments, restarted with the same command (separate processes, the default sharded path).

JOB = """
import sys
import jax, numpy as np
from crobust import data as data_lib, training
from crobust.models import MLP
ds = data_lib.subsample(data_lib.load_dataset("digits"), n_train=600, n_test=50, seed=0)
model = MLP(num_classes=10, width=32, depth=2, mean=ds.mean, std=ds.std)
members = training.grid(alpha=[0.0, 1e-2], seeds=range(2))
cfg = training.TrainConfig(regularizer="l1", projection="frobenius", batch_size=64, max_steps=600, eval_every=20,
                           patience=200, min_steps=100)
res = training.fit(model, ds, cfg, members, progress=True, checkpoint_dir=sys.argv[1], checkpoint_every=20)
leaves = jax.tree.leaves(res.state)
out = {f"s{i:03d}": np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
       for i, x in enumerate(leaves)}
out.update({f"b{i:03d}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(res.best_params))})
out.update({f"h_{k}": v for k, v in res.history.items()})
np.savez(sys.argv[2], **out)
"""


def _start(ckdir, out, log, cache=None):
    """The job in a fresh process; ``cache``: a folder for JAX's persistent compilation cache (what the study command
    line turns on), so a restarted job loads its compiled block instead of compiling it again."""
    env = {k: v for k, v in os.environ.items() if k not in ("CROBUST_DISTRIBUTED", "XLA_FLAGS")}
    # One device whatever this process was given, and on a GPU deterministic reductions without autotuning, so that
    # two compilations of the job (the reference's and the cached one) are the same program (tests/conftest.py).
    env["XLA_FLAGS"] = "--xla_gpu_deterministic_ops=true"
    if cache is not None:
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return subprocess.Popen([sys.executable, "-c", JOB, str(ckdir), str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def _steps(ckdir):
    return sorted(int(d) for d in os.listdir(ckdir) if d.isdigit()) if os.path.isdir(ckdir) else []


def _kill_after_a_new_checkpoint(proc, ckdir, after: int, delay: float, timeout=300):
    t = time.monotonic()
    while not any(s > after for s in _steps(ckdir)):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() - t < timeout
        time.sleep(0.01)
    time.sleep(delay)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_at_random_moments_then_same_command_gives_bitwise_identical_results(tmp_path):
    rng = random.Random(0)
    ref = _start(tmp_path / "ref_ck", tmp_path / "ref.npz", tmp_path / "ref.log")     # uninterrupted, meanwhile
    ckdir, out = tmp_path / "ck", tmp_path / "run.npz"
    # The restarts share a compilation cache (the first run fills it): they skip the compile, as a rerun of the
    # study command does; the reference compiles its own, so the comparison also covers cached vs compiled.
    cache = tmp_path / "jax_cache"
    last = 0
    for attempt in range(2):                                  # killed twice: after 1st checkpoint, then mid-resume
        proc = _start(ckdir, out, tmp_path / f"run{attempt}.log", cache)
        _kill_after_a_new_checkpoint(proc, ckdir, after=last, delay=rng.uniform(0.0, 0.3))
        assert not out.exists()
        last = max(_steps(ckdir))
    proc = _start(ckdir, out, tmp_path / "final.log", cache)
    assert proc.wait(timeout=300) == 0, (tmp_path / "final.log").read_text()[-2000:]
    assert ref.wait(timeout=300) == 0, (tmp_path / "ref.log").read_text()[-2000:]
    log = (tmp_path / "final.log").read_text()
    assert "resumed from" in log and (tmp_path / "run1.log").read_text().count("resumed from") == 1
    got, want = np.load(out), np.load(tmp_path / "ref.npz")
    _assert_bitwise({k: got[k] for k in got.files}, {k: want[k] for k in want.files})
    assert got["h_step"].shape[0] == want["h_step"].shape[0] > last  # the whole history, killed mid-way


# ---------------------------------------------------------------------------------------------------------------
# The study: checkpoints under <workdir>/checkpoints/<population>; a rerun after training finished redoes only evaluation.

def test_study_rerun_restores_training_and_redoes_only_evaluation(tmp_path):
    from crobust.records import read_jsonl
    from experiments import spectral_fixed_scale as study

    from crobust.config import derive

    # The resume logic lives in the runner and does not depend on which attacks evaluate: one attack (APGD-CE) and
    # no budget-convergence check keep the two evaluations short; every measure of the study still runs.
    cfg = derive(study.PRESETS["smoke"], {"data.n_train": 400, "data.n_test": 60, "model.width": 16,
                                          "train.max_steps": 100, "eval.n_points": 40, "eval.n_iter": 3,
                                          "eval.attacks": ("apgd-ce",), "eval.convergence_iters": (),
                                          "eval.convergence_queries": (),
                                          "checkpoint_every": 50})
    w = tmp_path / "w"
    study.run(cfg, w, preset="custom", progress=False)
    first = (w / "metrics.jsonl").read_text()
    assert sorted(os.listdir(w / "checkpoints" / "mlp")) == ["1", "2"]          # one folder per population
    saved = {p: os.stat(p).st_mtime_ns for p in (w / "checkpoints").rglob("*")}
    assert "1 compile(s)" in (w / "report.md").read_text()
    # Simulate a kill during evaluation: the run is not complete, training is.
    (w / "report.md").unlink()
    run_json = json.loads((w / "run.json").read_text())
    (w / "run.json").write_text(json.dumps({**run_json, "status": "running"}))
    study.run(cfg, w, preset="custom", progress=False)
    # Training was restored from its final checkpoint: no block ran (0 compiles), no checkpoint was rewritten.
    assert "0 compile(s)" in (w / "report.md").read_text()
    assert {p: os.stat(p).st_mtime_ns for p in (w / "checkpoints").rglob("*")} == saved
    assert json.loads((w / "run.json").read_text())["status"] == "complete" and (w / "report.md").exists()
    # Same configuration, same records.
    assert (w / "metrics.jsonl").read_text() == first and len(read_jsonl(w / "metrics.jsonl")) > 0
