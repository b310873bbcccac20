"""Models: pixel-space Flax linen modules that normalise inside and return logits (and z on request)."""

from crobust.models.matrices import hidden_matrices, kernel_to_matrix, layer_matrices, low_rank_to_matrix
from crobust.models.mlp import MLP, LowRankDense, LowRankMLP

__all__ = ["MLP", "LowRankMLP", "LowRankDense", "layer_matrices", "hidden_matrices", "kernel_to_matrix",
           "low_rank_to_matrix"]
