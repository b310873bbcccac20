"""benchmarks.gpu_check: on a machine without an accelerator it refuses with one line and exit status 2, writing
nothing (its figures would not be accelerator figures)."""

import jax
import pytest

from benchmarks import gpu_check


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the refusal is the CPU path")
def test_gpu_check_refuses_on_a_cpu_with_one_line(tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no GPU/TPU here" in err[0] and "--cpu-dry-run" in err[0]
    assert not out.exists()
