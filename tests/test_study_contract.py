"""Every registered study, at its smoke preset: the run completes, every declared claim has a verdict, every
figure has its CSV, records use the canonical vocabulary; and the study command line answers bad input in one line."""

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from crobust.records import read_jsonl
from crobust.study import claims as claims_lib
from _study_runs import smoke_run
from experiments import STUDIES, reproduce

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# coordinates a record may carry, besides the study's grid axes and a measurement's qualifiers
RECORD_KEYS = {"study", "population", "member", "seed", "measurement", "value"}
QUALIFIERS = {"norm", "eps", "layer", "criterion", "ratio", "kind"}   # the last three: pruning sweeps


def _cli(*args, timeout=180, env=None):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "CROBUST_CACHE_DIR": "off", **(env or {})})


@pytest.fixture(scope="class")
def smoke(request, tmp_path_factory):
    """The smoke run of the class's study, shared with the study's own tests (tests/_study_runs.py)."""
    return smoke_run(request.cls.study, tmp_path_factory)


class _SmokeContract:
    """The smoke-run contract of one study (:attr:`study`); one subclass per registered study, below, so that
    ``make test`` (``--dist loadscope``: a class is a scope of its own) spreads the studies' smoke runs over both
    workers instead of making every run on the worker that holds this module."""

    study: str

    def test_smoke_run_is_complete_and_every_claim_has_a_verdict(self, smoke):
        study, cfg, workdir, out = smoke
        status = json.loads((workdir / "run.json").read_text())
        assert status["status"] == "complete" and status["study"] == study.name
        declared = study.claims(cfg)
        verdicts = json.loads((workdir / "verdicts.json").read_text())
        assert [(v["paper"], v["text"]) for v in verdicts] == [(c.paper, c.text) for c in declared]
        assert all(v["verdict"] in claims_lib.VERDICTS for v in verdicts)
        assert {c.paper for c in declared} >= set(study.paper_claims)      # every paper claim it covers is declared
        report = (workdir / "report.md").read_text()
        for section in ("## Setup (as run)", "## Evaluation (as run)", "### Evaluation checks", "## Verdicts",
                        "## Means per group", "## Figures", "## Choices made here"):
            assert section in report, section
        assert "reduced ensemble: " in report or "AutoAttack's standard ensemble" in report
        assert report.count("Rule: ") + report.count("— **skipped**") >= len(declared)

    def test_every_figure_has_its_csv(self, smoke):
        study, cfg, workdir, out = smoke
        pngs = sorted(workdir.glob("*.png"))
        assert len(pngs) == len(study.figures(cfg))
        for png in pngs:
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert png.with_suffix(".csv").stat().st_size > 0

    def test_records_use_the_canonical_keys(self, smoke):
        study, cfg, workdir, out = smoke
        recs = read_jsonl(workdir / "metrics.jsonl")
        table = out["table"]
        assert len(recs) == len(table) * len(table.columns)                  # one line per member and measurement
        axes = {k for c in table.coords for k in c} - RECORD_KEYS
        for r in recs:
            assert RECORD_KEYS <= set(r) <= RECORD_KEYS | QUALIFIERS | axes, r
            assert r["value"] is None or np.isfinite(r["value"])
        assert {(r["population"], r["member"]) for r in recs} == {(c["population"], c["member"]) for c in table.coords}

    def test_robust_accuracy_never_exceeds_clean_accuracy_on_the_same_points(self, smoke):
        study, cfg, workdir, out = smoke
        t = out["table"]
        ra = [k for k, c in t.meta.items() if c.measurement == "robust_acc"]
        assert ra
        for k in ra:
            attacked = np.isfinite(t[k])       # a study may attack some populations only (e.g. probes, not encoders)
            assert attacked.any() and np.all(t[k][attacked] <= t["clean_acc_points"][attacked] + 1e-12)


for _name in sorted(STUDIES):
    globals()[f"TestSmokeContract_{_name}"] = type(f"TestSmokeContract_{_name}", (_SmokeContract,), {"study": _name})


def _in_process(main, argv, capfd, monkeypatch):
    """``main(argv)`` in this process: (exit status, stderr, stdout). Errors raised before any training — argument
    parsing, config resolution, the workdir check — take the code path of ``python -m`` without its interpreter
    start (~2 s each); the late errors below (after the data is loaded) and one early error also run as real
    processes, which also catch stray output of imports and of logging (pytest captures logging in-process)."""
    monkeypatch.setenv("CROBUST_CACHE_DIR", "off")
    capfd.readouterr()
    code = main(list(argv))
    captured = capfd.readouterr()
    return code, captured.err, captured.out


BAD_INPUT = [
    (("--preset", "nope"), "unknown preset 'nope'"),
    (("--preset", "smoke", "--set", "grid.alphas=0"), "unknown --set key 'grid.alphas'; closest valid keys: grid.alpha"),
    (("--preset", "smoke", "--set", "grid.alpha=0,-1"), "grid.alpha must be"),
    (("--preset", "smoke", "--set", "model.width=0"), "model.width must be"),
    (("--preset", "smoke", "--set", "eval.eps_linf=0,-0.1"), "eval.eps_linf must be >= 0"),
    (("--preset", "smoke", "--set", "eval.headline_l2=0.3"), "eval.headline_l2 0.3 must be one of eval.eps_l2 (0, 0.5)"),
    (("--preset", "smoke", "--set", "data.dataset=imagenet"), "unknown dataset 'imagenet'"),
    (("--preset", "smoke", "--set", "train.batch_size=100000"), "batch_size 100000 is larger"),
    (("--preset", "smoke", "--set", "grid.seeds=two"), "not an integer"),
]


def _assert_one_error_line(code, err, needle, workdir):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not (workdir / "report.md").exists()


def test_every_paper_preset_runs_autoattacks_standard_four_and_the_reduced_ones_say_so():
    """paper: APGD-CE, APGD-T, FAB-T, Square at AutoAttack's settings (FAB-T reads n_iter and n_targets as APGD-T,
    and shrinks with the suite's TINY sizes); smoke and small: a reduced ensemble, named as such in words."""
    from _paper_data import TINY
    from crobust.config import derive
    from crobust.study.measures import AUTOATTACK_STANDARD, attack_list, ensemble_note
    for name in sorted(STUDIES):
        study = importlib.import_module(STUDIES[name]).STUDY
        e = study.presets["paper"].eval
        assert e.attacks == AUTOATTACK_STANDARD and (e.n_iter, e.n_restarts, e.n_targets) == (100, 1, 9), name
        specs = dict(attack_list(e, 10))
        assert specs["fab-t"] == dict(n_iter=100, n_restarts=1, n_target_classes=9)
        assert dict(attack_list(e, 2))["fab-t"]["n_target_classes"] == 1              # min(9, C − 1)
        assert dict(attack_list(derive(study.presets["paper"], TINY).eval, 10))["fab-t"]["n_iter"] == 2
        assert ensemble_note(e.attacks).startswith("AutoAttack's standard ensemble")
        for preset in ("smoke", "small"):
            attacks = study.presets[preset].eval.attacks
            if set(AUTOATTACK_STANDARD) - set(attacks):
                assert ensemble_note(attacks).startswith("reduced ensemble: "), (name, preset)
    assert ensemble_note(("apgd-ce", "apgd-t", "square")) == \
        "reduced ensemble: FAB-T left out of AutoAttack's standard four"


@pytest.mark.parametrize("args, needle", BAD_INPUT)
def test_bad_input_is_one_line_and_exit_2(args, needle, tmp_path, capfd, monkeypatch):
    from experiments import spectral_fixed_scale
    code, err, _ = _in_process(spectral_fixed_scale.main, (*args, "--workdir", str(tmp_path / "w"), "--quiet"),
                               capfd, monkeypatch)
    _assert_one_error_line(code, err, needle, tmp_path / "w")


# An early error (config resolution, before jax touches a device) and a late one (after the data is loaded), as
# the command line runs them: exit status and stderr of a fresh interpreter.
@pytest.mark.parametrize("args, needle", [BAD_INPUT[0], BAD_INPUT[7]])
def test_bad_input_from_the_command_line_is_one_line_and_exit_2(args, needle, tmp_path):
    r = _cli("experiments.spectral_fixed_scale", *args, "--workdir", str(tmp_path / "w"), "--quiet")
    _assert_one_error_line(r.returncode, r.stderr, needle, tmp_path / "w")


def test_an_unusable_workdir_is_one_line_and_exit_2(tmp_path, capfd, monkeypatch):
    from experiments import spectral_fixed_scale
    (tmp_path / "file").write_text("x")
    code, err, _ = _in_process(spectral_fixed_scale.main, ("--preset", "smoke", "--workdir",
                                                           str(tmp_path / "file" / "run"), "--quiet"), capfd, monkeypatch)
    assert code == 2 and err.count("\n") == 1 and "is a file, not a folder" in err, err
    if os.geteuid() != 0:                                     # root writes anywhere: the permission case needs a user
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        code, err, _ = _in_process(spectral_fixed_scale.main, ("--preset", "smoke", "--workdir", str(ro / "run"),
                                                               "--quiet"), capfd, monkeypatch)
        assert code == 2 and "not usable" in err


def test_missing_data_names_dataset_place_and_remedy(tmp_path):
    r = _cli("experiments.spectral_fixed_scale", "--preset", "paper", "--set", "data.download=false",
             "--set", f"data.data_dir={tmp_path}", "--workdir", str(tmp_path / "w"), "--quiet")
    assert r.returncode == 2
    line = r.stderr.strip()
    assert "\n" not in line and "mnist" in line and str(tmp_path) in line and "download" in line
    assert not (tmp_path / "w" / "report.md").exists()


def test_reproduce_rejects_unknown_preset_and_study(capfd, monkeypatch):
    code, err, _ = _in_process(reproduce.main, ("--preset", "huge"), capfd, monkeypatch)
    assert code == 2 and err.startswith("error: unknown preset 'huge'")
    code, err, _ = _in_process(reproduce.main, ("--studies", "nothing"), capfd, monkeypatch)
    assert code == 2 and "unknown study 'nothing'" in err
    code, err, _ = _in_process(reproduce.main, ("--jobs", "0"), capfd, monkeypatch)
    assert code == 2 and err.startswith("error: --jobs must be auto or a positive integer, got '0'")


def test_studies_run_two_at_a_time_on_a_cpu_of_two_cores_for_small_and_one_at_a_time_for_paper(monkeypatch):
    import jax
    if jax.default_backend() != "cpu":
        assert reproduce.resolve_jobs("auto", "small")[0] == 1                # one accelerator, shared
        return
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert reproduce.resolve_jobs("auto", "small") == (2, "auto: 2 CPU cores, two studies side by side")
    assert reproduce.resolve_jobs("auto", "smoke")[0] == 2 and reproduce.resolve_jobs("auto", "paper")[0] == 1
    assert reproduce.resolve_jobs("3", "paper") == (3, "set with --jobs")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert reproduce.resolve_jobs("auto", "small") == (1, "auto: one core")


def test_every_source_study_a_study_declares_is_a_registered_study_listed_before_it():
    names = list(STUDIES)
    for i, name in enumerate(names):
        for source in importlib.import_module(STUDIES[name]).STUDY.source_studies:
            assert source in names[:i], (name, source)
    assert importlib.import_module(STUDIES["filter_pruning"]).STUDY.source_studies == ("resnet_row_sparsity",)


def test_auto_preset_is_small_on_a_cpu_and_paper_on_an_accelerator_and_says_why():
    import jax
    preset, why = reproduce.choose_preset("auto")
    if jax.default_backend() == "cpu":
        assert preset == "small" and "no accelerator" in why
    else:
        assert preset == "paper" and jax.default_backend() in why and jax.devices()[0].device_kind in why
    assert reproduce.choose_preset("smoke") == ("smoke", "forced with --preset")


def test_the_index_lists_every_paper_claim_with_its_verdicts_or_the_study_that_will_cover_it(monkeypatch):
    monkeypatch.setattr(reproduce.catalog, "PLANNED", {"C8": "a transfer study"})
    results = [{"study": "s", "title": "S", "status": "complete", "paper_claims": ["C3"], "wall_time_s": 1.0,
                "verdicts": ["- **C3: x** — **supported**"],
                "claims": [{"paper": "C3", "verdict": "supported"}, {"paper": "C3", "verdict": "inconclusive"},
                           {"paper": "E1", "verdict": "supported"}]}]
    text = "\n".join(reproduce.index_lines("small", "forced", results, coverage={"C3": ["s"], "C5": ["bound_vs_gap"]}))
    for cid in [f"C{i}" for i in range(1, 12)]:
        assert f"| {cid} |" in text
    assert "| C3 |" in text and "s: 1 supported, 1 inconclusive" in text
    assert "not run here — tested by bound_vs_gap" in text                # registered, not in this run
    assert "not covered yet — a transfer study" in text                   # C8: no study yet, names the one that will
    assert "not covered: CLIP zero-shot on ImageNet-1k" in text           # C10's part no study here can test
    assert set(reproduce.registered_coverage()) >= {"C1", "C2", "C3", "C4", "C5", "C6", "C9"}
