"""Where a run came from: the code (crobust's version and git commit) and the stack it ran on (jax, jaxlib, flax,
optax, orbax versions; the backend and its devices), recorded in ``config.json`` and the report so a result can be
traced to the code that made it."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(path: str | None = None) -> dict | None:
    """``{'commit': sha, 'dirty': bool}`` of the git checkout holding ``path`` (default: crobust's own folder), or
    None where it is not a checkout or git is missing (an installed wheel)."""
    path = path or os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", path, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def provenance() -> dict:
    """crobust's version and git commit, the versions of :data:`PACKAGES`, JAX's backend and its devices."""
    import jax

    import crobust

    devices = jax.devices()
    return {"crobust": crobust.__version__, "git": git_commit(),
            "packages": {p: _version(p) for p in PACKAGES},
            "backend": jax.default_backend(), "process_count": jax.process_count(),
            "devices": sorted({f"{d.platform}:{getattr(d, 'device_kind', '?')}" for d in devices}),
            "device_count": len(devices)}


def line(p: dict) -> str:
    """One sentence of :func:`provenance` for the report."""
    git = p.get("git")
    code = (f"git commit {git['commit'][:12]}{' with uncommitted changes' if git.get('dirty') else ''}"
            if git else "no git checkout")
    packages = ", ".join(f"{k} {v}" for k, v in p["packages"].items() if v)
    return (f"crobust {p['crobust']} ({code}); {packages}; backend {p['backend']}, {p['device_count']} device(s) "
            f"({', '.join(p['devices'])}), {p['process_count']} process(es)")


__all__ = ["provenance", "git_commit", "line"]
