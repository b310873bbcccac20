"""The Python environment of a lent accelerator machine with no network: what it lacks, and how to bring it.

The machine's image already holds JAX (with its CUDA plugin), flax, optax, chex, orbax, numpy, scipy, scikit-learn,
matplotlib, pytest, hypothesis, pytest-xdist and torch, but nothing can be installed there from a registry. What
crobust needs beyond the image is the closure

    carry = { d reachable from crobust's requirements (``[project].dependencies`` + the ``test`` extra)
              through requirements whose environment markers hold for the target Python | d ∉ IMAGE }

where the walk stops at a distribution in :data:`IMAGE` (the image satisfies that one's own requirements). Each
distribution in ``carry`` is pinned to the version installed here, where the test suite passes, and downloaded as a
wheel for the target (CPython 3.12, manylinux x86-64) into ``.whl/``; one that ships only a source archive is built
into a wheel here and must come out pure-Python (``py3-none-any``). On the machine the wheels are installed with
``pip --no-index --no-deps --target`` and put on ``PYTHONPATH`` (``make gpu-check-device``).

Usage::

    python -m benchmarks.device_env list                 # the distributions to carry, NAME==VERSION per line
    python -m benchmarks.device_env download [--dest .whl]
    python -m benchmarks.device_env check                # here or there: are crobust's requirements satisfied?

``check`` prints one line naming every requirement that is absent or at a version its specifier refuses, and
exits 2; :mod:`benchmarks.gpu_check` runs the same check first, so a machine that lacks a package costs seconds,
not the session's device time.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import os
import subprocess
import sys
import tomllib
from typing import Callable, Iterable

from packaging.requirements import Requirement
from packaging import tags
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The lent machines' image ('cuda'; docs/measurements.md §2), as listed on 2026-11-17, names canonical.
IMAGE = frozenset(canonicalize_name(n) for n in """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy
peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
zipp
""".split())

# The machine's interpreter: CPython 3.12.3 on x86-64 Linux (docs/measurements.md §2).
TARGET_PYTHON = "3.12"
TARGET_MARKERS = {"python_version": TARGET_PYTHON, "python_full_version": "3.12.3", "sys_platform": "linux",
                  "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
                  "platform_python_implementation": "CPython", "os_name": "posix"}
# pip matches manylinux tags exactly, so every glibc level a wheel may be tagged with is named.
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]


def project_requirements(pyproject: str = os.path.join(ROOT, "pyproject.toml"), extras=("test",)) -> list[Requirement]:
    """crobust's own requirements: ``[project].dependencies`` plus the named optional groups."""
    with open(pyproject, "rb") as fh:
        project = tomllib.load(fh)["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project.get("optional-dependencies", {}).get(extra, [])
    return [Requirement(line) for line in lines]


def _applies(req: Requirement, env: dict | None, extras: Iterable[str]) -> bool:
    """Whether ``req``'s marker holds in ``env`` (None: this interpreter) for the extras asked of its parent."""
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**(env or {}), "extra": e}) for e in (list(extras) or [""]))


def _walk(roots: Iterable[Requirement], requires: Callable[[str], list[str] | None], env: dict | None,
          descend: Callable[[str], bool]):
    """Yield ``(requirement, canonical name)`` for every requirement reachable from ``roots`` whose marker holds in
    ``env`` (None: this interpreter) for the extras asked of its parent. A distribution's own requirements are
    walked, once per extra asked of it, when ``descend(name)`` holds."""
    walked: set[tuple[str, str]] = set()
    stack = [(r, "") for r in roots]
    while stack:
        req, parent_extra = stack.pop()
        if not _applies(req, env, [parent_extra]):
            continue
        name = canonicalize_name(req.name)
        yield req, name
        if not descend(name):
            continue
        for extra in [""] + sorted(req.extras):
            if (name, extra) not in walked:
                walked.add((name, extra))
                stack += [(Requirement(line), extra) for line in (requires(name) or [])]


def carry_set(roots: Iterable[Requirement], requires: Callable[[str], list[str] | None],
              version: Callable[[str], str], image: frozenset = IMAGE, env: dict | None = None) -> dict[str, str]:
    """The closure defined in the module docstring: ``{canonical name: version}`` of every distribution reachable
    from ``roots`` through requirements whose markers hold in ``env`` (default: the target's) and that is not in
    ``image``; the walk stops at a distribution of ``image``.

    ``requires(name)`` lists a distribution's requirement strings and ``version(name)`` its installed version (both
    :mod:`importlib.metadata`'s in :func:`carry_for_target`)."""
    outside = lambda name: name not in image
    return dict(sorted({name: version(name) for _, name in
                        _walk(roots, requires, TARGET_MARKERS if env is None else env, outside)
                        if outside(name)}.items()))


def carry_for_target() -> dict[str, str]:
    """:func:`carry_set` over crobust's requirements, read from the distributions installed in this interpreter."""
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"device_env: {name} is needed on the device but is not installed here; "
                             f"run `make install` first") from None
    return carry_set(project_requirements(), metadata.requires, version)


def unsatisfied(roots: Iterable[Requirement]) -> list[str]:
    """The requirements (walked from ``roots`` like :func:`carry_set`, in this interpreter's environment, through
    the distributions found outside :data:`IMAGE`) that are absent or whose installed version the specifier
    refuses, as ``'name (why)'``."""
    problems, found = [], set()
    for req, name in _walk(roots, metadata.requires, None, lambda n: n in found and n not in IMAGE):
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name} (absent)")
            continue
        found.add(name)
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            problems.append(f"{name} ({have}, needs {req.specifier})")
    return sorted(set(problems))


def download(dest: str) -> list[str]:
    """Wheels of :func:`carry_for_target` for the target into ``dest``; returns their file names."""
    os.makedirs(dest, exist_ok=True)
    pinned = [f"{n}=={v}" for n, v in carry_for_target().items()]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    for spec in pinned:
        binary = subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
                                 "--python-version", TARGET_PYTHON, *[a for p in PLATFORMS for a in ("--platform", p)],
                                 "-d", dest, spec], capture_output=True, text=True)
        if binary.returncode == 0:
            continue
        built = subprocess.run([*pip, "wheel", "--no-deps", "-w", dest, spec], capture_output=True, text=True)
        if built.returncode != 0:
            raise SystemExit(f"device_env: no wheel of {spec} for CPython {TARGET_PYTHON} x86-64, and building one "
                             f"failed: {built.stderr.strip().splitlines()[-1:]}")
    names = sorted(f for f in os.listdir(dest) if f.endswith(".whl"))
    for f in names:
        if not installs_on_target(f):
            raise SystemExit(f"device_env: {f} does not install on CPython {TARGET_PYTHON} x86-64")
    return names


def installs_on_target(wheel_file: str) -> bool:
    """Whether a wheel's tags include one that CPython 3.12 on manylinux x86-64 accepts (pip's own tag order)."""
    major, minor = (int(x) for x in TARGET_PYTHON.split("."))
    accepted = set(tags.cpython_tags((major, minor), platforms=PLATFORMS))
    accepted |= set(tags.compatible_tags((major, minor), f"cp{major}{minor}", PLATFORMS))
    return bool(parse_wheel_filename(wheel_file)[3] & accepted)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.device_env")
    p.add_argument("command", choices=["list", "download", "check"])
    p.add_argument("--dest", default=os.path.join(ROOT, ".whl"))
    args = p.parse_args(argv)
    if args.command == "list":
        for name, version in carry_for_target().items():
            print(f"{name}=={version}")
    elif args.command == "download":
        names = download(args.dest)
        size = sum(os.path.getsize(os.path.join(args.dest, f)) for f in names)
        print(f"device_env: {len(names)} wheels, {size / 2**20:.1f} MiB in {args.dest}")
    else:
        problems = unsatisfied(project_requirements())
        if problems:
            print(f"device_env: crobust's requirements are not met here: {', '.join(problems)} "
                  f"(on a machine without a network: `make device-wheels` where there is one, carry .whl/)",
                  file=sys.stderr)
            return 2
        print("device_env: every requirement of crobust is met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
