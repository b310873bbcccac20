"""crobust: compressibility and adversarial robustness, with populations of models in one jitted program."""

__version__ = "0.1.0"
