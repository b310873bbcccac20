"""ResNet-18 (He et al. 2016, torchvision's ``resnet18`` layout) with two stems, dense or low-rank convolutions.

Input: pixel-space images in [0, 1], (N, H, W, C), normalised inside by the per-channel ``mean``/``std``.
Output: logits (N, num_classes); with ``return_repr=True`` also z (N, 8·width), the global-average-pooled features
on which the linear head acts (the paper's Φ(x)).

Stems (``stem=``):

- ``'cifar'``: 3×3 conv stride 1, BN, ReLU, no max-pool (the usual CIFAR ResNet-18; stage resolutions 32, 16, 8, 4
  on 32×32 inputs);
- ``'imagenet'``: torchvision's 7×7 stride-2 conv (padding 3), BN, ReLU, 3×3 stride-2 max-pool (padding 1), **kept
  on 32×32 inputs** as the reference code trains it (docs/reference-code.md §1.3): 32 → 16 → 8 (layer1) → 4 → 2 → 1.

Body: four stages of two BasicBlocks (3×3 conv, BN, ReLU, 3×3 conv, BN, + shortcut, ReLU) with ``width``, 2·, 4·,
8·``width`` channels (``width=64`` is ResNet-18); the first block of stages 2–4 has stride 2 and a 1×1 stride-2
conv + BN shortcut (torchvision's ``downsample``). Head: ``Dense(num_classes)`` with bias, PyTorch's default Linear
init (the reference replaces torchvision's fc by a fresh ``nn.Linear``). Trainable parameters at ``width=64``,
10 classes: 11,181,642 (ImageNet stem, = torchvision's ``resnet18(num_classes=10)``), 11,173,962 (CIFAR stem).

Low rank (``rank=r``): every conv but the stem — block convs and the 1×1 shortcut convs — is a
:class:`~crobust.models.conv.LowRankConv` (docs/reference-code.md §1.2); the stem and the head stay dense.

Module names (the parameter tree; :mod:`crobust.models.matrices` and :mod:`crobust.pruning` rely on them): ``stem``,
``stem_bn``, ``layer{s}_{b}`` (s = 1..4, b = 0, 1) each holding ``conv1``, ``conv1_bn``, ``conv2``, ``conv2_bn`` and,
when the shape changes, ``shortcut``, ``shortcut_bn``; ``head``. The batch norm that normalises the output of conv
``X`` is always ``X_bn``.

Batch norm: ``train=True`` uses batch statistics and updates the running ones (``mutable=['batch_stats']``);
``train=False`` (the default, and what attacks and evaluation must use) uses the running statistics.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from crobust._errors import CrobustError, check_choice
from crobust.models.conv import batch_norm, conv, normalise, torch_bias_init, torch_default_init

STEMS = ("cifar", "imagenet")


class BasicBlock(nn.Module):
    """Two 3×3 convs with BN and a residual connection (1×1 conv + BN shortcut when stride or width change)."""

    features: int
    strides: int = 1
    rank: int | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        y = conv(self.features, 3, strides=self.strides, rank=self.rank, name="conv1")(x)
        y = nn.relu(batch_norm(train, "conv1_bn")(y))
        y = conv(self.features, 3, rank=self.rank, name="conv2")(y)
        y = batch_norm(train, "conv2_bn")(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = conv(self.features, 1, strides=self.strides, padding=0, rank=self.rank, name="shortcut")(x)
            x = batch_norm(train, "shortcut_bn")(x)
        return nn.relu(y + x)


class ResNet18(nn.Module):
    """ResNet-18 (see the module docstring).

    Attributes:
      num_classes: head outputs.
      stem: ``'cifar'`` or ``'imagenet'``.
      width: channels of the first stage (64 = ResNet-18; small values for tests and CPU benchmarks).
      rank: None (dense) or the rank r of every non-stem conv.
      mean, std: per-channel normalisation statistics.
      stage_sizes: blocks per stage ((2, 2, 2, 2) = ResNet-18).
    """

    num_classes: int
    stem: str = "cifar"
    width: int = 64
    rank: int | None = None
    mean: Sequence[float] = (0.0,)
    std: Sequence[float] = (1.0,)
    stage_sizes: Sequence[int] = (2, 2, 2, 2)

    @nn.compact
    def __call__(self, x, train: bool = False, return_repr: bool = False):
        check_choice("ResNet stem", self.stem, STEMS)
        if self.width < 1:
            raise CrobustError(f"width must be >= 1, got {self.width}")
        x = normalise(x, self.mean, self.std)
        if self.stem == "cifar":
            x = conv(self.width, 3, name="stem")(x)
        else:
            x = conv(self.width, 7, strides=2, padding=3, name="stem")(x)
        x = nn.relu(batch_norm(train, "stem_bn")(x))
        if self.stem == "imagenet":
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for s, n_blocks in enumerate(self.stage_sizes):
            for b in range(n_blocks):
                strides = 2 if (s > 0 and b == 0) else 1
                x = BasicBlock(self.width * 2 ** s, strides, self.rank, name=f"layer{s + 1}_{b}")(x, train)
        z = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(self.num_classes, kernel_init=torch_default_init, bias_init=torch_bias_init(z.shape[-1]),
                          name="head")(z)
        return (logits, z) if return_repr else logits
