"""crobust: compressibility and adversarial robustness, with populations of models trained, attacked and measured
in one jitted JAX program. A reproduction and extension of Barsbey et al., "On the Interaction of Compressibility
and Adversarial Robustness" (ICLR 2026).

The parts::

    import crobust
    data = crobust.load_dataset("digits")                                   # crobust.data
    model = crobust.MLP(num_classes=10, width=64, depth=2, mean=data.mean, std=data.std)   # crobust.models
    members = crobust.grid(alpha=[0.0, 1e-2, 1e-1], seeds=range(4))
    result = crobust.fit(model, data, crobust.TrainConfig(regularizer="nuclear", projection="frobenius"), members)
    reports = crobust.evaluation.population_robust_accuracy(model.apply, result.best_params, x, y, key,
                                                            eps=[0, 0.1], norm="linf")   # crobust.attacks inside
    table = crobust.metrics.layer_report(result.best_params, model=model)   # compressibility, norms, bounds

Sub-modules: ``data``, ``models``, ``regularizers``, ``training``, ``attacks``, ``evaluation``, ``metrics``,
``records``, ``report``, ``config``.
"""

from crobust import attacks, config, data, evaluation, metrics, models, records, regularizers, report, training
from crobust._errors import CrobustError
from crobust.data import DataMissingError, Dataset, load_dataset
from crobust.models import MLP, LowRankMLP, hidden_matrices, layer_matrices
from crobust.training import AdversarialTraining, FitResult, PopulationState, TrainConfig, fit, grid

__version__ = "0.1.0"

__all__ = [
    "attacks", "config", "data", "evaluation", "metrics", "models", "records", "regularizers", "report", "training",
    "CrobustError", "DataMissingError", "Dataset", "load_dataset", "MLP", "LowRankMLP", "hidden_matrices",
    "layer_matrices", "AdversarialTraining", "FitResult", "PopulationState", "TrainConfig", "fit", "grid",
]
