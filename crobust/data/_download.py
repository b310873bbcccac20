"""Fetch a published file and keep it only if its size and sha256 match: nothing half-written is ever left behind."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

from crobust.data._archives import RemoteFile
from crobust.data._dataset import DataMissingError

_TIMEOUT_S = 60


def open_url(url: str):
    """The network access point (tests monkeypatch it); returns a binary file-like object. file:// URLs work too."""
    return urllib.request.urlopen(url, timeout=_TIMEOUT_S)


def fetch_verified(remote: RemoteFile, dest: Path, *, dataset: str) -> Path:
    """Download ``remote.url`` to ``dest`` and return ``dest``, or raise :class:`DataMissingError` (one line).

    The bytes are streamed into a temporary file in ``dest``'s folder while being hashed; only when the size and
    sha256 equal the published ones is the file fsync'd and renamed onto ``dest`` (atomic on one filesystem).
    On any failure (network, short read, checksum, interruption) the temporary file is removed and ``dest`` is
    left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"crobust.data: downloading {remote.url} ({remote.size / 1e6:.1f} MB) to {dest}", file=sys.stderr)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            try:
                with open_url(remote.url) as response:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        digest.update(block)
                        size += len(block)
                        out.write(block)
                        if size > remote.size:
                            break
            except OSError as e:  # urllib.error.URLError is an OSError
                reason = " ".join(str(getattr(e, "reason", e)).split())
                raise DataMissingError(
                    f"dataset {dataset}: download of {remote.url} failed ({reason}); get that file by other means "
                    f"and put it at {dest}") from None
            if size != remote.size or digest.hexdigest() != remote.sha256:
                got = f"size {size}" if size != remote.size else f"sha256 {digest.hexdigest()}"
                raise DataMissingError(
                    f"dataset {dataset}: {remote.url} did not match its published checksum ({got}, expected size "
                    f"{remote.size} sha256 {remote.sha256}); nothing was kept at {dest}")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return dest
