"""The motivating study end to end (smoke preset), its command line, records, config parsing and verdicts."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from crobust import config as config_lib
from crobust import report as report_lib
from crobust._errors import CrobustError
from crobust.records import RunDir, read_jsonl
from experiments import reproduce
from experiments import spectral_fixed_scale as study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("smoke")
    cfg = study.PRESETS["smoke"]
    out = study.run(cfg, workdir, preset="smoke", progress=False)
    return cfg, workdir, out


def test_smoke_run_writes_a_complete_run_directory(smoke_run):
    cfg, workdir, out = smoke_run
    status = json.loads((workdir / "run.json").read_text())
    assert status["status"] == "complete" and status["study"] == "spectral_fixed_scale"
    assert json.loads((workdir / "config.json").read_text()) == config_lib.to_dict(cfg)
    for name in ("report.md", "figure2_vs_alpha.png", "figure2_vs_alpha.csv", "robust_acc_vs_eps_linf.png",
                 "robust_acc_vs_eps_l2.csv", "members.csv", "verdicts.json", "summary.json"):
        assert (workdir / name).stat().st_size > 0, name
    assert (workdir / "figure2_vs_alpha.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (workdir / "report.md").read_text()
    assert "## Verdicts" in report and report.count("- **C") >= 5


def test_smoke_records_are_one_line_per_member_and_measurement(smoke_run):
    cfg, workdir, out = smoke_run
    recs = read_jsonl(workdir / "metrics.jsonl")
    members = len(cfg.alphas) * cfg.seeds
    ra = [r for r in recs if r["measurement"] == "robust_acc"]
    assert len(ra) == members * (len(cfg.eps_linf) + len(cfg.eps_l2))
    assert {r["member"] for r in recs} == set(range(members))
    by = {(r["member"], r["norm"], r["eps_value"]): r["value"] for r in ra}
    clean = {r["member"]: r["value"] for r in recs if r["measurement"] == "clean_acc"}
    for m in range(members):
        # ε = 0 is clean accuracy on the attacked subset; robust accuracy never exceeds it.
        assert 0.0 <= by[(m, "linf", cfg.eps_linf[-1])] <= by[(m, "linf", 0.0)] <= 1.0
        assert 0.0 <= clean[m] <= 1.0
    for r in out["members"]:
        # The Frobenius projection held the hidden layer's scale fixed.
        assert math.isclose(r["fro_norm"], r["fro_norm_init"], rel_tol=1e-5)
        assert 0 < r["prunability_frac_sv_90"] <= 1


def test_energy_fraction_needed_is_analytic():
    assert study.energy_fraction_needed(np.array([3.0, 0.0, 0.0, 0.0]), 0.9) == 0.25
    # σ² = (4, 3, 2, 1): cumulative (0.4, 0.7, 0.9, 1.0) → 3 of 4 needed for 90 %.
    assert study.energy_fraction_needed(np.sqrt([4.0, 3.0, 2.0, 1.0]), 0.9) == 0.75
    assert study.energy_fraction_needed(np.ones(10), 0.9) == 0.9
    assert study.energy_fraction_needed(np.zeros(5), 0.9) == 0.0


@pytest.mark.parametrize("args, needle", [
    (("--preset", "nope"), "unknown preset 'nope'"),
    (("--preset", "smoke", "--set", "bogus=1"), "unknown --set key 'bogus'"),
    (("--preset", "smoke", "--set", "alphas=0,-1"), "alphas must be"),
    (("--preset", "smoke", "--set", "width=0"), "width must be"),
    (("--preset", "smoke", "--set", "eps_linf=0,-0.1"), "eps_linf must be >= 0"),
    (("--preset", "smoke", "--set", "eps_l2_headline=0.3"), "eps_l2_headline 0.3 must be one of eps_l2 (0.0, 0.5)"),
    (("--preset", "smoke", "--set", "dataset=imagenet"), "unknown dataset 'imagenet'"),
    (("--preset", "smoke", "--set", "batch_size=100000"), "batch_size 100000 is larger"),
    (("--preset", "smoke", "--set", "seeds=two"), "not an integer"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle, tmp_path):
    r = _cli("experiments.spectral_fixed_scale", *args, "--workdir", str(tmp_path / "w"), "--quiet")
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert not (tmp_path / "w" / "report.md").exists()


def test_missing_data_names_dataset_place_and_remedy(tmp_path):
    r = _cli("experiments.spectral_fixed_scale", "--preset", "paper", "--set", "download=false",
             "--set", f"data_dir={tmp_path}", "--workdir", str(tmp_path / "w"), "--quiet")
    assert r.returncode == 2
    line = r.stderr.strip()
    assert "\n" not in line and "mnist" in line and str(tmp_path) in line and "download" in line
    assert not (tmp_path / "w" / "report.md").exists()


def test_reproduce_rejects_unknown_preset_and_study():
    r = _cli("experiments.reproduce", "--preset", "huge")
    assert r.returncode == 2 and r.stderr.startswith("error: unknown preset 'huge'")
    r = _cli("experiments.reproduce", "--studies", "nothing")
    assert r.returncode == 2 and "unknown study 'nothing'" in r.stderr


def test_auto_preset_on_cpu_is_small_and_says_why():
    preset, why = reproduce.choose_preset("auto")
    assert preset == "small" and "no accelerator" in why
    assert reproduce.choose_preset("smoke") == ("smoke", "forced with --preset")


def test_config_override_parses_types():
    cfg = config_lib.override(study.PRESETS["small"], ["eps_linf=0,8/255", "alphas=0,1e-3", "classes=0,1",
                                                       "patience=none", "download=true", "width=16"])
    assert cfg.eps_linf == (0.0, 8 / 255) and cfg.alphas == (0.0, 1e-3) and cfg.classes == (0, 1)
    assert cfg.patience is None and cfg.download is True and cfg.width == 16
    with pytest.raises(CrobustError, match="valid choices: .*alphas"):
        config_lib.override(cfg, ["alhpas=1"])
    with pytest.raises(CrobustError, match="not a boolean"):
        config_lib.override(cfg, ["download=maybe"])
    assert config_lib.format_eps(8 / 255) == "8/255" and config_lib.format_eps(0.5) == "0.5"


def test_trend_verdicts_follow_the_data():
    rng = np.random.default_rng(0)
    x = np.repeat([0.0, 0.01, 0.1, 1.0], 5)
    falling = -np.log1p(100 * x) + 0.05 * rng.normal(size=x.size)
    v = report_lib.trend_verdict("falls", x, falling, "decreasing")
    assert v.verdict == "supported" and v.rho < -0.8 and v.p_value < 0.01 and v.change < 0
    assert math.isclose(v.rho, scipy.stats.spearmanr(x, falling).statistic, rel_tol=1e-9)
    assert report_lib.trend_verdict("rises", x, falling, "increasing").verdict == "contradicted"
    assert report_lib.trend_verdict("noise", x, rng.normal(size=x.size), "decreasing").verdict == "inconclusive"


def test_run_dir_refuses_a_different_configuration(tmp_path):
    rd = RunDir(tmp_path, study="s", preset="p", writer=True)
    rd.start({"a": 1})
    rd.log([{"member": 0, "value": float("nan")}])
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"member": 0, "value": None}]
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "running"
    with pytest.raises(CrobustError, match="different configuration"):
        RunDir(tmp_path, study="s", preset="p", writer=True).start({"a": 2})
    rd.finish()
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "complete"
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
