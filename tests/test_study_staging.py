"""Staged studies (:mod:`crobust.study.staging`) and finished runs opened in Python (:func:`crobust.study.open_run`).

A three-population study on digits: ``pretrain`` (classes 0–4), ``probe`` (keeps pretrain's hidden layers, fresh
head, only the head trains, on classes 5–9: its own data) and ``pruned`` (pretrain's members with half their
rows pruned, fine-tuned with the pruned entries held at 0). ``probe`` is declared first, so the runner must order
them. One run is killed in its second stage after a checkpoint; the rerun must give what an uninterrupted run
gives, bit for bit, and train nothing twice.
"""

import dataclasses
import os

import jax
import numpy as np
import pytest

from crobust import pruning
from crobust._errors import CrobustError
from crobust.models import MLP
from crobust.study import DataConfig, Population, Start, StudyConfig, Study, open_run, staging
from crobust.study.measures import clean_accuracy
from crobust.training import TrainConfig, grid

TRAIN = TrainConfig(optimizer="adamw", lr=1e-2, weight_decay=0.1, batch_size=32, max_steps=20, eval_every=5,
                    patience=None, val_ratio=0.1)
CFG = StudyConfig(data=DataConfig("digits", classes=(0, 1, 2, 3, 4)), train=TRAIN, checkpoint_every=5)
OTHER_CLASSES = DataConfig("digits", classes=(5, 6, 7, 8, 9))


def _populations(cfg, data, probe_start=Start("pretrain", keep="^hidden_"), probe_name="probe"):
    model = MLP(num_classes=5, width=16, depth=3, mean=tuple(data.mean), std=tuple(data.std))
    members = tuple(grid(seeds=(0, 1)))
    probe_train = dataclasses.replace(cfg.train, trainable="^head/")
    return [
        Population(probe_name, model, probe_train, members, start=probe_start, data=OTHER_CLASSES),
        Population("pretrain", model, cfg.train, members),
        Population("pruned", model, cfg.train, members,
                   start=Start("pretrain", masks=lambda v: pruning.global_ratio_masks(v, 0.5))),
    ]


STUDY = Study(name="staged_test", title="staged", paper_claims=(), presets={"tiny": CFG},
              populations=_populations, measures=lambda cfg: [clean_accuracy()], claims=lambda cfg: [],
              figures=lambda cfg: [], notes=lambda cfg: [], summary=lambda cfg: ["clean_acc"])


class Killed(BaseException):
    """Stands for SIGKILL: raised between a block and its checkpoint, so the last checkpoint is the block before."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import crobust.training as training_pkg
    root = tmp_path_factory.mktemp("staged")
    whole, killed = root / "tiny" / STUDY.name, root / "killed"
    STUDY.run(CFG, whole, preset="tiny", progress=False)

    real_fit = training_pkg.fit
    calls, kills = [], []

    def fit_killed_in_probe(*args, checkpoint_dir=None, **kwargs):
        if os.path.basename(checkpoint_dir) == "probe" and not kills:
            def on_block(state, metrics, n=[0]):
                n[0] += 1
                if n[0] == 2:                          # after the probe's first checkpoint (block 1)
                    kills.append(int(metrics["step"].max()))
                    raise Killed()
            kwargs["on_block"] = on_block
        result = real_fit(*args, checkpoint_dir=checkpoint_dir, **kwargs)
        calls.append((os.path.basename(checkpoint_dir), result.steps_run))
        return result

    training_pkg.fit = fit_killed_in_probe
    try:
        with pytest.raises(Killed):
            STUDY.run(CFG, killed, preset="tiny", progress=False)
        first = list(calls)
        STUDY.run(CFG, killed, preset="tiny", progress=False)
    finally:
        training_pkg.fit = real_fit
    assert kills == [10]
    return whole, killed, first, calls[len(first):]


def test_sources_train_first_and_a_kill_in_the_second_stage_resumes_there(runs):
    whole, killed, first, rerun = runs
    assert [name for name, _ in first] == ["pretrain"]             # probe was declared first, trained second
    # The rerun restores pretrain (no step), resumes the probe after its first checkpoint (5 steps), trains pruned.
    assert rerun == [("pretrain", 0), ("probe", 15), ("pruned", 20)]
    for name in ("members.csv", "metrics.jsonl"):
        assert (killed / name).read_text() == (whole / name).read_text()
    report = (whole / "report.md").read_text()
    assert "started from `pretrain` (parameters matching `^hidden_`); only parameters matching `^head/` trained" \
        in report and "pruned at the start" in report
    a, b = open_run(whole, study=STUDY), open_run(killed, study=STUDY)
    for name in ("pretrain", "probe", "pruned"):
        for x, y in zip(jax.tree.leaves(a[name].fit.state), jax.tree.leaves(b[name].fit.state)):
            np.testing.assert_array_equal(np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(
                x.dtype, jax.dtypes.prng_key) else x), np.asarray(jax.random.key_data(y) if jax.dtypes.issubdtype(
                    y.dtype, jax.dtypes.prng_key) else y))


def test_the_probe_keeps_the_frozen_encoder_and_the_pruned_stage_stays_pruned(runs):
    run = open_run(runs[0], study=STUDY)
    pre, probe, pruned = run["pretrain"], run["probe"], run["pruned"]
    for layer in ("hidden_0", "hidden_1"):                          # frozen: bit for bit pretrain's best members
        np.testing.assert_array_equal(np.asarray(probe.params["params"][layer]["kernel"]),
                                      np.asarray(pre.params["params"][layer]["kernel"]))
    assert not np.array_equal(np.asarray(probe.params["params"]["head"]["kernel"]),
                              np.asarray(pre.params["params"]["head"]["kernel"]))
    masks = pruning.global_ratio_masks(pre.params, 0.5)
    for layer, mask in masks.items():
        kernel = np.asarray(pruned.params["params"][layer]["kernel"])      # (M, in, out): pruned output columns
        removed = ~np.asarray(mask)[:, None, :].repeat(kernel.shape[1], 1)
        assert removed.any() and np.all(kernel[removed] == 0.0)
        assert np.all(np.any(kernel != 0.0, axis=1)[np.asarray(mask)])      # kept rows trained, not zero


def test_open_run_gives_config_member_table_and_members_that_measure_as_recorded(runs):
    run = open_run(runs[0], study=STUDY)
    assert run.config == CFG and run.status["status"] == "complete"
    assert [(r["population"], r["member"]) for r in run.members] == [(p, i) for p in ("pretrain", "probe", "pruned")
                                                                      for i in (0, 1)]
    # The probe is measured on its own data (classes 5–9) with the whole model (hidden layers + head).
    from crobust.study.measures import Context
    probe = run["probe"]
    assert run.datasets["probe"].num_classes == 5 and run.datasets["pretrain"] is run.data
    np.testing.assert_array_equal(run.datasets["probe"].test_labels, OTHER_CLASSES.load().test_labels)
    ctx = Context.build(run.config.eval, run.config.measure, run.datasets["probe"])
    got = {c.key: v for c, v in clean_accuracy()(ctx, probe).items()}
    recorded = [r["clean_acc"] for r in run.members if r["population"] == "probe"]
    np.testing.assert_array_equal(np.asarray(got["clean_acc"], np.float64), np.asarray(recorded, np.float64))


def test_sources_that_are_unknown_cyclic_or_mismatched_are_one_error_before_training():
    model = MLP(num_classes=5, width=4, depth=2)
    m2, m3 = tuple(grid(seeds=(0, 1))), tuple(grid(seeds=(0, 1, 2)))
    pop = lambda name, start=None, members=m2: Population(name, model, TRAIN, members, start=start)
    with pytest.raises(CrobustError, match="not a population of this study"):
        staging.in_dependency_order([pop("a", Start("nope"))])
    with pytest.raises(CrobustError, match="cycle: a → b → a"):
        staging.in_dependency_order([pop("a", Start("b")), pop("b", Start("a"))])
    with pytest.raises(CrobustError, match="give Start\\(members=...\\)"):
        staging.in_dependency_order([pop("a"), pop("b", Start("a"), m3)])
    with pytest.raises(CrobustError, match="source member indices"):
        staging.in_dependency_order([pop("a"), pop("b", Start("a", members=(0, 1, 2)), m3)])
    assert [p.name for p in staging.in_dependency_order([pop("b", Start("a", members=(0, 1, 1)), m3), pop("a")])] \
        == ["a", "b"]


def test_a_source_of_another_study_is_restored_from_that_studys_folder(runs, monkeypatch):
    # Another study in the same output folder (<out>/tiny/other) starts its probe from staged_test's pretrain:
    # restored from <out>/tiny/staged_test/checkpoints/pretrain (no step trained), and the stage computes what the
    # same stage inside staged_test computed.
    import crobust.training as training_pkg
    whole = runs[0]
    pretrain = next(p for p in _populations(CFG, CFG.data.load()) if p.name == "pretrain")
    start = Start(pretrain, study=STUDY.name, keep="^hidden_")
    other = dataclasses.replace(STUDY, name="other", source_studies=(STUDY.name,), populations=lambda cfg, data:
                                _populations(cfg, data, start, "probe_here")[:1])
    seen, real_fit = [], training_pkg.fit

    def recording_fit(*args, checkpoint_dir=None, **kwargs):
        result = real_fit(*args, checkpoint_dir=checkpoint_dir, **kwargs)
        seen.append((str(checkpoint_dir), result.steps_run))
        return result

    monkeypatch.setattr(training_pkg, "fit", recording_fit)
    other.run(CFG, whole.parent / "other", preset="tiny", progress=False)
    assert seen == [(str(whole / "checkpoints" / "pretrain"), 0),
                    (str(whole.parent / "other" / "checkpoints" / "probe_here"), 20)]
    mine, theirs = open_run(whole.parent / "other", study=other)["probe_here"], open_run(whole, study=STUDY)["probe"]
    for a, b in zip(jax.tree.leaves(mine.params), jax.tree.leaves(theirs.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(CrobustError, match="must name its study"):
        staging.in_dependency_order([dataclasses.replace(pretrain, name="x", start=Start(pretrain))])


def test_a_study_runs_in_the_folder_where_another_study_trained_its_source_first(runs, tmp_path, monkeypatch):
    # The other order: "other" runs first in a fresh output folder and trains staged_test's pretrain into
    # <out>/staged_test/checkpoints/pretrain; staged_test then runs in that folder (which holds only those
    # checkpoints), restores pretrain without a step and gives what its run in a folder of its own gave, bit for bit.
    import crobust.training as training_pkg
    whole = runs[0]
    pretrain = next(p for p in _populations(CFG, CFG.data.load()) if p.name == "pretrain")
    other = dataclasses.replace(STUDY, name="other", source_studies=(STUDY.name,), populations=lambda cfg, data:
                                _populations(cfg, data, Start(pretrain, study=STUDY.name, keep="^hidden_"),
                                             "probe_here")[:1])
    out = tmp_path / "tiny"
    # undeclared, the shared source is refused before anything is written (reproduce schedules by the declaration)
    with pytest.raises(CrobustError, match="starts from study 'staged_test', which other does not declare"):
        dataclasses.replace(other, source_studies=()).run(CFG, out / "other", preset="tiny", progress=False)
    assert not out.exists()
    other.run(CFG, out / "other", preset="tiny", progress=False)
    mine = out / STUDY.name
    assert sorted(p.name for p in mine.iterdir() if not p.name.startswith(".")) == ["checkpoints"]
    seen, real_fit = [], training_pkg.fit

    def recording_fit(*args, checkpoint_dir=None, **kwargs):
        result = real_fit(*args, checkpoint_dir=checkpoint_dir, **kwargs)
        seen.append((os.path.basename(checkpoint_dir), result.steps_run))
        return result

    monkeypatch.setattr(training_pkg, "fit", recording_fit)
    STUDY.run(CFG, mine, preset="tiny", progress=False)
    assert dict(seen)["pretrain"] == 0 and dict(seen)["probe"] == 20
    a, b = open_run(mine, study=STUDY), open_run(whole, study=STUDY)
    for name in ("pretrain", "probe", "pruned"):
        for x, y in zip(jax.tree.leaves(a[name].params), jax.tree.leaves(b[name].params)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # a folder holding anything else without its config.json is still refused, before any file changes
    stray = tmp_path / "stray"
    (stray / "checkpoints" / "pretrain").mkdir(parents=True)
    (stray / "checkpoints" / "pretrain" / "x").write_text("x")
    (stray / "notes.txt").write_text("x")
    with pytest.raises(CrobustError, match="without its config.json"):
        STUDY.run(CFG, stray, preset="tiny", progress=False)
    assert sorted(p.name for p in stray.iterdir() if p.name != ".lock") == ["checkpoints", "notes.txt"]


def test_open_run_refuses_a_folder_that_is_no_run_or_whose_study_cannot_be_found(runs, tmp_path):
    with pytest.raises(CrobustError, match="not a study run folder"):
        open_run(tmp_path)
    with pytest.raises(CrobustError, match="cannot find the study 'staged_test'"):
        open_run(runs[0])


def test_a_stage_whose_start_changed_is_refused_before_any_file_changes(runs):
    """The same config with the probe now keeping only ``hidden_0``: its checkpoint started elsewhere, so resuming
    it would be wrong; the run is refused naming the stage, and no file of the finished run changes."""
    whole = runs[0]
    before = {p: p.read_bytes() for p in whole.rglob("*") if p.is_file() and p.name != ".lock"}
    other = dataclasses.replace(STUDY, populations=lambda cfg, data: _populations(
        cfg, data, probe_start=Start("pretrain", keep="^hidden_0/")))
    with pytest.raises(CrobustError, match=r"differs in: stage"):
        other.run(CFG, whole, preset="tiny", progress=False)
    assert {p: p.read_bytes() for p in whole.rglob("*") if p.is_file() and p.name != ".lock"} == before
    assert staging.start_identity(Population("plain", None, TRAIN, ())) == {}   # no stage: nothing added
