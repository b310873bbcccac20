"""Stand-in files of the paper's datasets in their genuine layouts, for running a study's ``paper`` preset in the suite.

No machine here has CIFAR, so a test writes ``cifar-10-binary.tar.gz`` / ``cifar-100-binary.tar.gz`` with random
32×32×3 images in the published binary record layout (the loader's real path: archive → records → HWC arrays), then
runs the preset with ``data.data_dir`` pointing there, every other setting as the preset has it except the sizes
a test cannot afford (:data:`TINY`: steps, members, points, the convergence ladder).
"""

from __future__ import annotations

import io
import tarfile
import warnings
from pathlib import Path

import numpy as np

from crobust.config import derive


def _tar_gz(path: Path, members: dict) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def _records(rng, n: int, num_classes: int, coarse: bool) -> bytes:
    chw = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(n) % num_classes                     # every class present, whatever the split size
    rng.shuffle(labels)
    head = (lambda y: bytes([int(y) % 20, int(y)])) if coarse else (lambda y: bytes([int(y)]))
    return b"".join(head(y) + x.tobytes() for x, y in zip(chw, labels))


def write_cifar10(data_dir: Path, n_train: int = 100, n_test: int = 20, seed: int = 0) -> Path:
    """``data_dir/cifar-10-binary.tar.gz``: ``n_train`` images over the five training batches, ``n_test`` test."""
    rng = np.random.default_rng(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    per = -(-n_train // 5)
    members = {f"cifar-10-batches-bin/data_batch_{i}.bin": _records(rng, per, 10, False) for i in range(1, 6)}
    members["cifar-10-batches-bin/test_batch.bin"] = _records(rng, n_test, 10, False)
    members["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\n"
    _tar_gz(data_dir / "cifar-10-binary.tar.gz", members)
    return data_dir


def write_cifar100(data_dir: Path, n_train: int = 200, n_test: int = 100, seed: int = 1) -> Path:
    """``data_dir/cifar-100-binary.tar.gz`` (coarse and fine label bytes, fine labels 0..99)."""
    rng = np.random.default_rng(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    _tar_gz(data_dir / "cifar-100-binary.tar.gz",
            {"cifar-100-binary/train.bin": _records(rng, n_train, 100, True),
             "cifar-100-binary/test.bin": _records(rng, n_test, 100, True)})
    return data_dir


TINY = {"train.max_steps": 2, "train.eval_every": 1, "train.batch_size": 8, "train.min_steps": 0,
        "train.patience": None, "checkpoint_every": 2, "eval.n_points": 2, "eval.n_iter": 2, "eval.n_targets": 1,
        "eval.n_queries": 2, "eval.convergence_iters": (2,), "eval.convergence_restarts": (1,),
        "eval.convergence_queries": (), "eval.radii_iters": 2}
"""The sizes a test shrinks (two steps, a two-point evaluation, a one-step ladder); a study adds its own member-grid
and width reductions."""

ONE_ATTACK = {"eval.attacks": ("apgd-ce",)}
SHALLOW = {"model.stage_sizes": (1, 1, 1, 1)}
"""For the paper tests whose model is the ImageNet-stem ResNet-18 of another paper test. The preset's whole ensemble
(APGD-CE, APGD-T, FAB-T, Square) on the full-depth network at the paper's settings is run by resnet_row_sparsity's
paper test, so the others (transfer, adversarial training, the pruning studies) check their own wiring with APGD-CE
alone (:data:`ONE_ATTACK`) on one block per stage (:data:`SHALLOW`: every distinct layer shape of ResNet-18 — stem,
strided and shortcut convs, each stage's width — is still there): compiling the other three attacks and twice the
layers for each of them would add one to two minutes of CPU per test."""


def paper_preset(study, data_dir: Path, **overrides):
    """``study``'s ``paper`` preset reading its data from ``data_dir`` (no download), shrunk by :data:`TINY` and
    ``overrides`` (dotted keys)."""
    paper = study.presets["paper"]
    e = paper.eval
    return derive(paper, {"data.data_dir": str(data_dir), "data.download": False, **TINY,
                          "eval.eps_linf": (0.0, e.headline_linf), "eval.eps_l2": (0.0, e.headline_l2), **overrides})


def run_paper_preset(study, workdir: Path, data_dir: Path, **overrides):
    """Run the shrunk ``paper`` preset (the stand-in archives are unverified: the warning is expected)."""
    cfg = paper_preset(study, data_dir, **overrides)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not the published.*")
        return study.run(cfg, workdir, preset="paper", progress=False)
