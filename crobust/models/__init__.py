"""Models: pixel-space Flax linen modules that normalise inside and return logits (and z on request); by name
(``mlp``, ``lowrank``, ``resnet18``, ``vgg16``, ``wrn``, ``vit``) in :mod:`~crobust.models.kinds`."""

from crobust.models.conv import LowRankConv
from crobust.models.low_rank import factorise, low_rank_from_dense
from crobust.models.kinds import KINDS, ModelKind, get_kind
from crobust.models.matrices import (LayerSpec, hidden_layers, hidden_matrices, kernel_to_matrix, layer_matrices,
                                     layer_specs, low_rank_to_matrix, regularised_matrices)
from crobust.models.mlp import MLP, LowRankDense, LowRankMLP
from crobust.models.resnet import ResNet18
from crobust.models.vgg import VGG16
from crobust.models.vit import VIT_B16, VIT_CIFAR, ViT, ViTConfig, load_pretrained, vit
from crobust.models.wrn import WRN

__all__ = ["MLP", "LowRankMLP", "LowRankDense", "ResNet18", "VGG16", "WRN", "ViT", "ViTConfig", "vit", "VIT_B16",
           "VIT_CIFAR", "load_pretrained", "LowRankConv", "low_rank_from_dense", "factorise", "layer_matrices",
           "hidden_matrices", "hidden_layers", "regularised_matrices", "layer_specs", "LayerSpec", "kernel_to_matrix",
           "low_rank_to_matrix", "KINDS", "ModelKind", "get_kind"]
