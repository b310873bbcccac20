"""Suite-wide settings: the precision the tests check the maths at, and deterministic GPU reductions.

- Every test runs inside :func:`crobust.precision.full` (``jax.default_matmul_precision('highest')``): full float32
  products on every backend, the library's default precision (``TrainConfig.matmul_precision = 'float32'``) and
  the one the numpy/PyTorch references compute in. Without it a GPU's default TF32 products (~1e-3 relative) fail
  every comparison with a reference that float32 passes at 1e-5. Tests of the lower precisions open their own
  context inside (tests/test_precision.py), and the policy's own wrappers are checked there by lowering each metric
  under a TF32/bf16 default, so this fixture cannot hide a metric that forgets the policy.
- ``--xla_gpu_deterministic_ops=true``: on a GPU, scatter-adds and reductions without atomics, so two runs of one
  program (e.g. a checkpoint resume against an uninterrupted run) give the same bits. CPU and TPU ignore it.
- ``--xla_backend_optimization_level=0`` where only the CPU backend is installed (no accelerator plugin, no
  libtpu): the suite's programs are tiny and compiled once each, so the suite is bound by XLA:CPU's LLVM code
  generation, which this halves. XLA still builds the same optimised HLO program; only LLVM's optimisation of
  its machine code is skipped. Values then differ from a default build's in the last float32 bits (elementwise
  functions such as ``tanh`` are emitted differently: gradients of a small network differ by ~1e-6 relative),
  well inside every tolerance here, and every bitwise comparison in the suite is between two runs under the same
  flags (a subprocess inherits them). ``make reproduce``, the studies and the benchmarks keep the default.
- After each module the compiled programs are released (:func:`_release_compiled_programs`).
- ``make test`` runs the suite in 2 pytest-xdist workers (``-n 2 --dist loadscope``): one test process keeps
  ~1.4 of 2 cores busy on average (tracing and compiling are single-threaded), two keep both busy. ``loadscope``
  sends each test module whole to one worker (a test class is a scope of its own: the smoke-run contract has one
  class per study, so the studies' runs spread over both workers), so a module-scoped fixture is built once per
  worker that runs the module and the release below runs after it. (``loadgroup`` would split modules finer, but
  its grouping silently does nothing with pytest 9.2: pytest-xdist issue 1386.) Each worker is its own process: on a GPU it allocates memory on
  demand (``XLA_PYTHON_CLIENT_PREALLOCATE=false``) instead of taking 75 % of it at start, which would leave the
  second worker none.
"""

import importlib.util
import os

if "xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_gpu_deterministic_ops=true").strip()
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "") and not any(
        importlib.util.find_spec(name) for name in ("jax_plugins", "libtpu")):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import pytest  # noqa: E402

from crobust import precision  # noqa: E402


@pytest.fixture(autouse=True)
def _full_float32_products():
    with precision.full():
        yield


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """After each test module, drop JAX's compiled programs (and the trainer's block cache): one process compiling
    the whole suite's programs would otherwise keep every executable mapped and can reach the operating system's
    memory-map limit (``vm.max_map_count``) on a small machine."""
    yield
    import jax
    from crobust.training import loop

    loop._BLOCK_CACHE.clear()
    jax.clear_caches()
