"""What every benchmark records about the machine it ran on (one place for the CPU model and load averages)."""

from __future__ import annotations

import os
import platform

import jax
import numpy as np


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, rounded to 0.01 (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def describe(**extra) -> dict:
    """CPU, cores, platform, Python / jax / numpy versions, jax backend, load averages, plus ``extra``."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "jax": jax.__version__, "jax_backend": jax.default_backend(),
            "numpy": np.__version__, "loadavg_1_5_15": loadavg(), **extra}
