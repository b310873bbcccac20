"""Nested study configurations: presets as deltas, dotted --set overrides and their errors, block validation."""

import dataclasses

import pytest

from crobust import config as config_lib
from crobust._errors import CrobustError
from crobust._format import format_eps
from crobust.study import DataConfig, EvalConfig, GridConfig, StudyConfig
from crobust.training import AdversarialTraining, TrainConfig

BASE = StudyConfig()


def test_dotted_overrides_parse_with_the_fields_types():
    cfg = config_lib.override(BASE, ["train.lr=3e-4", "grid.alpha=0,0.01", "eval.eps_linf=0,8/255",
                                     "data.classes=0,1", "train.patience=none", "data.download=true",
                                     "model.width=16", "checkpoint_every=5"])
    assert cfg.train.lr == 3e-4 and cfg.grid.alpha == (0.0, 0.01) and cfg.eval.eps_linf == (0.0, 8 / 255)
    assert cfg.data.classes == (0, 1) and cfg.train.patience is None and cfg.data.download is True
    assert cfg.model.width == 16 and cfg.checkpoint_every == 5
    assert BASE.train.lr == 1e-3                                          # frozen: the base is untouched


def test_an_optional_block_is_created_when_one_of_its_fields_is_set():
    assert BASE.train.adversarial is None
    cfg = config_lib.override(BASE, ["train.adversarial.eps=4/255"])
    assert cfg.train.adversarial == AdversarialTraining(eps=4 / 255)
    assert config_lib.override(cfg, ["train.adversarial=none"]).train.adversarial is None


@pytest.mark.parametrize("assignment, needle", [
    ("train.lrr=1", "unknown --set key 'train.lrr'; closest valid keys: train.lr"),
    ("lr=1", "closest valid keys: train.lr"),                     # the leaf name alone points to its block
    ("grid.alphas=0", "closest valid keys: grid.alpha"),
    ("bogus.key=1", "unknown --set key 'bogus.key'"),
    ("grid.seeds=two", "not an integer"),
    ("data.download=maybe", "not a boolean"),
    ("train=1", "unknown --set key 'train'"),
    ("novalue", "--set expects key=value"),
])
def test_bad_overrides_name_the_closest_valid_keys(assignment, needle):
    with pytest.raises(CrobustError) as e:
        config_lib.override(BASE, [assignment])
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_preset_is_a_delta_on_its_base_and_rejects_unknown_keys():
    smoke = config_lib.derive(BASE, {"train.max_steps": 10, "grid.seeds": 1})
    assert smoke.train.max_steps == 10 and smoke.grid.seeds == 1
    assert dataclasses.replace(smoke, train=BASE.train, grid=BASE.grid) == BASE      # nothing else moved
    with pytest.raises(CrobustError, match="train.max_steps"):
        config_lib.derive(BASE, {"train.max_step": 10})


def test_every_block_validates_itself_once(monkeypatch):
    calls = []
    for cls in (DataConfig, GridConfig, EvalConfig, TrainConfig, StudyConfig):
        original = cls.validate
        monkeypatch.setattr(cls, "validate", lambda self, *a, _o=original, _c=cls: (calls.append(_c.__name__),
                                                                                    _o(self, *a))[1])
    config_lib.resolve({"p": BASE}, "p", [])
    assert sorted(calls) == sorted(["DataConfig", "GridConfig", "EvalConfig", "TrainConfig", "StudyConfig"])
    for bad, needle in [("grid.alpha=0,-1", "grid.alpha must be"), ("eval.headline_l2=0.3", "must be one of eval.eps_l2"),
                        ("train.lr=-1", "lr must be > 0"), ("data.dataset=imagenet", "unknown dataset"),
                        ("eval.attacks=apgd-ce,deepfool", "unknown eval.attacks entry 'deepfool'")]:
        with pytest.raises(CrobustError, match=needle):
            config_lib.resolve({"p": BASE}, "p", [bad])


def test_keys_lists_every_settable_leaf():
    keys = config_lib.keys(BASE)
    assert {"train.lr", "grid.alpha", "eval.headline_linf", "data.dataset", "train.adversarial.eps",
            "checkpoint_every"} <= set(keys)
    assert "train" not in keys and "train.adversarial" not in keys


def test_eps_is_written_in_the_communitys_notation():
    assert [format_eps(e) for e in (0, 8 / 255, 2 / 255, 0.5, 0.2, 1.0, 0.1)] == \
        ["0", "8/255", "2/255", "0.5", "0.2", "1", "0.1"]


def test_penalty_terms_are_set_from_the_command_line_and_named_in_the_report():
    from crobust.study.runner import _train_line

    cfg = config_lib.override(BASE, ["train.regularizer=group_lasso", "train.penalties=beta_control"])
    config_lib.validate(cfg)
    assert cfg.train.penalty_terms() == (("group_lasso", "alpha"), ("beta_control", "beta_control"))
    assert "penalty group_lasso × α + beta_control × beta_control" in _train_line(cfg.train)
    assert "penalty nuclear × α;" in _train_line(TrainConfig(regularizer="nuclear")) + ";"
    assert "penalty" not in _train_line(TrainConfig())


def test_eval_execution_is_validated_recorded_and_not_part_of_the_identity():
    """``eval.execution`` chooses how the attacks run, never what they compute: a bad value is refused naming the
    key, the runner leaves it out of a run's identity, and within the runner's ``execution_default`` block every
    ``execution='auto'`` resolves to it (else the backend rule)."""
    import jax.numpy as jnp
    from crobust import evaluation
    from crobust.study import runner

    with pytest.raises(CrobustError, match="eval.execution"):
        dataclasses.replace(BASE.eval, execution="threads").validate()
    assert set(evaluation.EXECUTIONS) == {"auto", "program", "host_loop", "host_steps"}
    assert "eval.execution" in runner.NOT_IDENTITY and "train.execution" in runner.NOT_IDENTITY
    dense = {"params": {"Dense_0": {"kernel": jnp.zeros((2, 4, 3))}}}          # members of an MLP: no conv kernel
    assert evaluation.resolve_execution("auto", dense) == "program"
    with evaluation.execution_default("host_loop"):
        assert evaluation.resolve_execution("auto", dense) == "host_loop"
        assert evaluation.resolve_execution("program", dense) == "program"      # an explicit choice wins
    assert evaluation.resolve_execution("auto", dense) == "program"            # restored after the block
