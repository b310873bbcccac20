"""Wide residual networks WRN-d-k (Zagoruyko & Komodakis, BMVC 2016), pre-activation blocks, for 32×32 inputs.

Input: pixel-space images in [0, 1], (N, H, W, C), normalised inside by ``mean``/``std``. Output: logits; with
``return_repr=True`` also z (N, 64·k), the pooled features the head acts on.

Structure (depth d = 6n + 4, n blocks per group, widen factor k): a 3×3 stem conv to 16 channels; three groups of n
pre-activation blocks with 16k, 32k, 64k channels and strides 1, 2, 2; then BN, ReLU, global average pool, head.
A block is

    a = relu(BN(x));  y = conv3×3(a, stride);  y = conv3×3(relu(BN(y)));  out = y + shortcut,

with shortcut = x when the shape is kept and a 1×1 strided conv of the *pre-activated* a otherwise (the authors'
code). ``WRN(28, 10)`` is WRN-28-10 (36,479,194 parameters with 10 classes), ``WRN(16, 4)`` WRN-16-4 (2,748,890).
Dropout between the convs (the paper's optional WRN-d-k-dropout) is not included: the robustness literature's WRNs
train without it. Convs are bias-free with kaiming_normal(fan_out) init; BN scale 1 / bias 0; the head PyTorch's
default Linear init.

Low rank (``rank=r``): every conv but the stem (block convs and 1×1 shortcuts) is a
:class:`~crobust.models.conv.LowRankConv`.

Module names: ``stem``; ``group{g}_{b}`` (g = 1..3) holding ``bn_in`` (the block's pre-activation BN), ``conv1``,
``conv1_bn`` (the BN of conv1's output), ``conv2`` and optionally ``shortcut``; ``final_bn``; ``head``. conv2 and
shortcut outputs go into the residual sum, so no BN normalises them alone (named ``X_bn`` only where one does).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from crobust._errors import CrobustError
from crobust.models.conv import batch_norm, conv, normalise, torch_bias_init, torch_default_init


class PreActBlock(nn.Module):
    """Pre-activation wide basic block (see the module docstring)."""

    features: int
    strides: int = 1
    rank: int | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        a = nn.relu(batch_norm(train, "bn_in")(x))
        y = conv(self.features, 3, strides=self.strides, rank=self.rank, name="conv1")(a)
        y = nn.relu(batch_norm(train, "conv1_bn")(y))
        y = conv(self.features, 3, rank=self.rank, name="conv2")(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = conv(self.features, 1, strides=self.strides, padding=0, rank=self.rank, name="shortcut")(a)
        return y + x


class WRN(nn.Module):
    """WRN-depth-widen (see the module docstring).

    Attributes:
      depth: d with (d − 4) divisible by 6 (28, 16, 34, …).
      widen: k.
      num_classes: head outputs.
      base: channels of the stem and of group 1 before widening (16 in the paper; small for tests).
      rank: None (dense) or the rank of every non-stem conv.
      mean, std: per-channel normalisation statistics.
    """

    depth: int = 28
    widen: int = 10
    num_classes: int = 10
    base: int = 16
    rank: int | None = None
    mean: Sequence[float] = (0.0,)
    std: Sequence[float] = (1.0,)

    @nn.compact
    def __call__(self, x, train: bool = False, return_repr: bool = False):
        if self.depth < 10 or (self.depth - 4) % 6:
            raise CrobustError(f"WRN depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, …), got {self.depth}")
        if self.widen < 1 or self.base < 1:
            raise CrobustError(f"WRN widen and base must be >= 1, got {self.widen}, {self.base}")
        n = (self.depth - 4) // 6
        x = normalise(x, self.mean, self.std)
        x = conv(self.base, 3, name="stem")(x)
        for g in range(3):
            for b in range(n):
                strides = 2 if (g > 0 and b == 0) else 1
                x = PreActBlock(self.base * 2 ** g * self.widen, strides, self.rank, name=f"group{g + 1}_{b}")(x, train)
        x = nn.relu(batch_norm(train, "final_bn")(x))
        z = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(self.num_classes, kernel_init=torch_default_init, bias_init=torch_bias_init(z.shape[-1]),
                          name="head")(z)
        return (logits, z) if return_repr else logits
