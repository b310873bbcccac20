"""Reading (and, with TensorFlow installed, preparing) the tfds versions of the real datasets.

Without TensorFlow, tfds reads only data prepared as **array_record**, through ``tfds.data_source`` (random access,
images decoded by pillow). Data prepared as tfrecord (tfds' default) needs ``tfds.load`` and therefore TensorFlow.
``tfds.testing.mock_data`` patches the builder underneath ``tfds.data_source``, so the same code path is tested
offline and without TensorFlow.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from pathlib import Path
from typing import Optional

import numpy as np


@contextlib.contextmanager
def _quiet_absl():
    """tfds logs through absl (e.g. "Variant folder … has no dataset_info.json" while it merely *looks* for data);
    keep those lines off stderr so a missing dataset is reported in our one line only."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def tensorflow_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:160]}"


def _source_to_numpy(source) -> tuple[np.ndarray, np.ndarray]:
    """A tfds random-access source of {'image': (H,W,C) uint8, 'label': int} → uint8 (N,H,W,C), int32 (N,)."""
    n = len(source)
    examples = [source[i] for i in range(n)]  # per item: mock_data's __getitems__ is broken in tfds 4.9.10
    images = np.stack([np.asarray(ex["image"], np.uint8) for ex in examples]) if n else None
    labels = np.asarray([int(ex["label"]) for ex in examples], np.int32)
    return images, labels


def read_tfds(tfds_name: str, data_dir: Path) -> tuple[Optional[tuple], str]:
    """:func:`_read_tfds` with tfds' absl log lines silenced."""
    with _quiet_absl():
        return _read_tfds(tfds_name, data_dir)


def _read_tfds(tfds_name: str, data_dir: Path) -> tuple[Optional[tuple], str]:
    """Return ``(arrays, description)`` or ``(None, why_not)``.

    ``arrays`` is (train_images, train_labels, test_images, test_labels). Tries ``tfds.data_source`` first
    (array_record, no TensorFlow); if the data are prepared as tfrecord and TensorFlow is importable, reads them with
    ``tfds.load(..., batch_size=-1)``. Never downloads.
    """
    import tensorflow_datasets as tfds

    try:
        sources = [tfds.data_source(tfds_name, split=split, data_dir=str(data_dir), download=False)
                   for split in ("train", "test")]
        arrays = _source_to_numpy(sources[0]) + _source_to_numpy(sources[1])
        return arrays, f"tfds data_source {tfds_name} at {data_dir}"
    except Exception as e:  # noqa: BLE001 - classified below
        error = e
    try:
        builder = tfds.builder(tfds_name, data_dir=str(data_dir))
        prepared = builder.is_prepared()
    except Exception as e:  # noqa: BLE001
        return None, f"tfds {tfds_name}: {_one_line(e)}"
    if not prepared:
        return None, f"tfds {tfds_name} not prepared at {builder.data_path}"
    if tensorflow_available():
        try:
            arrays = ()
            for split in ("train", "test"):
                x, y = tfds.as_numpy(tfds.load(tfds_name, split=split, data_dir=str(data_dir), download=False,
                                               batch_size=-1, as_supervised=True))
                arrays += (np.asarray(x, np.uint8), np.asarray(y, np.int32))
            return arrays, f"tfds.load {tfds_name} at {data_dir} (TensorFlow)"
        except Exception as e:  # noqa: BLE001
            return None, f"tfds {tfds_name} at {builder.data_path} unreadable ({_one_line(e)})"
    return None, (f"tfds {tfds_name} at {builder.data_path} is prepared as {builder.info.file_format.value}, which "
                  f"needs TensorFlow to read ({_one_line(error)})")


def prepare_with_tfds(tfds_name: str, data_dir: Path) -> Optional[str]:
    """With TensorFlow installed: ``download_and_prepare`` as array_record (so later reads need no TensorFlow).

    Returns None on success, else a one-line reason (the caller then falls back to the published archives).
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(tfds_name, data_dir=str(data_dir), file_format="array_record")
        builder.download_and_prepare()
        return None
    except Exception as e:  # noqa: BLE001
        return f"tfds download_and_prepare {tfds_name} failed ({_one_line(e)})"
