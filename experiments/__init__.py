"""The paper's studies, one module each; ``STUDIES`` maps a study name to its module.

Each study module defines ``Config`` (a frozen dataclass), ``PRESETS`` ({'smoke', 'small', 'paper'}), ``run(cfg,
workdir, preset=...)`` and ``main(argv)``; its docstring names the paper's figure or claim, the command and the
result expected at each preset. ``python -m experiments.reproduce`` runs them all.
"""

STUDIES = {
    "spectral_fixed_scale": "experiments.spectral_fixed_scale",
}
