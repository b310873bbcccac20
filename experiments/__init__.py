"""The paper's studies, one module each (run from the checkout: ``python -m experiments.<study>``).

Each module declares ``STUDY`` (a :class:`crobust.study.Study`: presets, populations, measures, claims, figures,
notes); its docstring names the paper's figure or claims, the command and the result expected at each preset.
``STUDIES`` maps a study name to its module; ``python -m experiments.reproduce`` runs them all.
"""

STUDIES = {
    "spectral_fixed_scale": "experiments.spectral_fixed_scale",
    "decision_boundary": "experiments.decision_boundary",
    "mlp_compressibility": "experiments.mlp_compressibility",
    "bound_vs_gap": "experiments.bound_vs_gap",
    "universal_vs_scale": "experiments.universal_vs_scale",
    "source_invariance": "experiments.source_invariance",
    # the convolutional half: resnet_row_sparsity first, so that the studies starting from its members restore them
    "resnet_row_sparsity": "experiments.resnet_row_sparsity",
    "adversarial_training": "experiments.adversarial_training",
    "transfer": "experiments.transfer",
    "filter_pruning": "experiments.filter_pruning",
    "pruning_mitigations": "experiments.pruning_mitigations",
    "finetuned_backbones": "experiments.finetuned_backbones",
}
