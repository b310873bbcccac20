"""benchmarks.gpu_check: on a machine without an accelerator it refuses with one line and exit status 2, writing
nothing (its figures would not be accelerator figures); it refuses the same way when crobust's requirements are
not met; a test run cut at its time limit still reports the tests that ran."""

import os
import signal
import sys

import jax
import pytest
from packaging.requirements import Requirement

from benchmarks import gpu_check


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the refusal is the CPU path")
def test_gpu_check_refuses_on_a_cpu_with_one_line(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no GPU/TPU here" in err[0] and "--cpu-dry-run" in err[0]
    assert not out.exists()


def test_gpu_check_refuses_with_one_line_when_a_requirement_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gpu_check.device_env, "project_requirements",
                        lambda: [Requirement("crobust-surely-absent-pkg>=1")])
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--out", str(out), "--cpu-dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "crobust-surely-absent-pkg (absent)" in err[0] and "make device-wheels" in err[0]
    assert not out.exists()


def test_a_test_run_cut_at_its_limit_still_reports_the_tests_that_ran(tmp_path):
    # SIGINT ignored here, as in a process a shell started in the background: the child must still get it
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _cut_run_reports_the_tests_that_ran(tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)


def _cut_run_reports_the_tests_that_ran(tmp_path):
    tests = tmp_path / "test_cut.py"
    tests.write_text("import time\n\ndef test_quick():\n    pass\n\ndef test_fails():\n    assert 0\n\n"
                     "def test_hangs():\n    time.sleep(120)\n")
    junit = tmp_path / "junit.xml"
    r = gpu_check._run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                        str(tests)], timeout=8, interrupt_grace_s=60)
    assert r["timed_out"] and r["rc"] is None
    assert r["wall_s"] < 60                  # SIGINT ended it; the grace period was not used up
    counts = gpu_check._junit_counts(str(junit))
    assert counts["parsed"] and counts["passed"] == 1 and counts["failed"] == 1
    # the class name is the file's dotted path from pytest's rootdir, which depends on where the clone lies
    assert len(counts["failed_tests"]) == 1 and counts["failed_tests"][0].endswith("test_cut::test_fails")


def test_the_test_phase_uses_half_the_cores_of_an_accelerator_machine_two_to_eight_workers():
    assert [gpu_check.xdist_workers(True, c) for c in (1, 4, 16, 64)] == [2, 2, 8, 8]
    assert gpu_check.xdist_workers(False, 16) == 0


def test_compile_stats_sums_the_stages_jax_logs():
    log = "\n".join([
        "WARNING:jax._src.dispatch:Finished tracing stage for jit in 0.25 sec",
        "Finished jaxpr to MLIR module conversion jit(stage) in 0.5 sec",
        "Finished XLA compilation of jit(stage) in 1.25 sec",
        "Compiling jit(f) with global shapes and types (ShapedArray(float32[3]),).",
        "Finished XLA compilation of jit(f) in 2e-1 sec",
        "[train] step 10/10 | 3.0s elapsed",
    ])
    assert gpu_check.compile_stats(log) == {"trace_s": 0.2, "lower_s": 0.5, "compile_s": 1.4, "compiles": 2}


def test_a_phase_cut_at_its_limit_keeps_the_parts_it_printed():
    code = ("import json, time; print('GPU_CHECK_JSON ' + json.dumps({'spectral': {'ratio': 2.0}}), flush=True); "
            "time.sleep(60); print('GPU_CHECK_JSON ' + json.dumps({'roofline': {}}))")
    r = gpu_check._run([sys.executable, "-c", code], timeout=3)
    assert r["timed_out"] and r["wall_s"] < 30
    assert gpu_check._json_lines(r["stdout"]) == {"spectral": {"ratio": 2.0}}
    assert gpu_check._json_lines("no such line") is None


def test_the_test_phase_runs_every_module_once_the_first_tests_first():
    order = gpu_check.tests_in_order()
    assert order[:len(gpu_check.FIRST_TESTS)] == gpu_check.FIRST_TESTS
    on_disk = sorted(f"tests/{f}" for f in os.listdir(os.path.join(gpu_check.ROOT, "tests"))
                     if f.startswith("test_") and f.endswith(".py"))
    assert sorted(order) == on_disk and len(set(order)) == len(order)
