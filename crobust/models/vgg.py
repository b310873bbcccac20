"""VGG-16 with batch norm, CIFAR variant (Simonyan & Zisserman 2015, configuration D, with BN after every conv).

Input: pixel-space images in [0, 1], (N, H, W, C) with H, W multiples of 32, normalised inside by ``mean``/``std``;
with ``pad_to=S`` any smaller image is first zero-padded, centred, to S × S inside the model (top/left pad
⌊(S − H)/2⌋, pixel value 0), so the model's input — and what an attack may perturb — stays the H × W image while the
body sees S × S (e.g. 8 × 8 digits for VGG's five max-pools: an ε-ball around the padded image would also let the
attack paint the 960 padding pixels, a 16× larger ℓ∞ ball in ℓ2 terms than the digit's own).
Output: logits (N, num_classes); with ``return_repr=True`` also z (N, 8·width), the features the head acts on.

Body: 13 3×3 convs (padding 1, with bias, as torchvision's ``vgg16_bn``), each followed by BN and ReLU, in five
blocks of (2, 2, 3, 3, 3) convs with (1, 2, 4, 8, 8)·``width`` channels (``width=64`` is VGG-16), each block
ending in a 2×2 max-pool. On 32×32 inputs the last map is 1×1×512; it is global-average-pooled (the identity on
a 1×1 map; on larger inputs it keeps the head's size).

Head (a choice; the paper does not say): a single ``Dense(num_classes)`` on the 512 features, the CIFAR VGG of
the robustness literature (e.g. the ``VGG('VGG16')`` of kuangliu/pytorch-cifar, 14,728,266 parameters with 10
classes). torchvision's 4096-4096 classifier exists for 7×7 ImageNet maps; on a 1×1 CIFAR map it would add 119 M
parameters of fully connected layers to a 15 M-parameter convolutional network, so every compressibility
statistic would be dominated by layers the paper's pruning/regularisation study is not about.

Init: torchvision's VGG init for the convs (kaiming_normal fan_out, bias 0), BN scale 1 / bias 0, the head
PyTorch's default Linear init. Low rank (``rank=r``): every conv but the first is a
:class:`~crobust.models.conv.LowRankConv`.

Module names: ``stem`` (the first conv), ``conv_1`` … ``conv_12``; the BN after conv ``X`` is ``X_bn``; ``head``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from crobust._errors import CrobustError
from crobust.models.conv import batch_norm, conv, normalise, torch_bias_init, torch_default_init

VGG16_BLOCKS = (2, 2, 3, 3, 3)
VGG16_MULTIPLIERS = (1, 2, 4, 8, 8)


class VGG16(nn.Module):
    """VGG-16-BN for 32×32 inputs (see the module docstring).

    Attributes:
      num_classes: head outputs.
      width: channels of the first block (64 = VGG-16).
      rank: None (dense) or the rank of every conv but the first.
      mean, std: per-channel normalisation statistics.
      pad_to: None, or the square size S the input is zero-padded (centred) to inside the model.
    """

    num_classes: int
    width: int = 64
    rank: int | None = None
    mean: Sequence[float] = (0.0,)
    std: Sequence[float] = (1.0,)
    pad_to: int | None = None

    @nn.compact
    def __call__(self, x, train: bool = False, return_repr: bool = False):
        if self.width < 1:
            raise CrobustError(f"width must be >= 1, got {self.width}")
        if self.pad_to is not None:
            x = pad_centred(x, self.pad_to)
        if x.ndim != 4 or x.shape[1] % 32 or x.shape[2] % 32:
            raise CrobustError(f"VGG16 needs (N, H, W, C) images with H, W multiples of 32 (five 2×2 max-pools), "
                               f"got shape {tuple(x.shape)}")
        x = normalise(x, self.mean, self.std)
        i = 0
        for n_convs, mult in zip(VGG16_BLOCKS, VGG16_MULTIPLIERS):
            for _ in range(n_convs):
                name = "stem" if i == 0 else f"conv_{i}"
                x = conv(self.width * mult, 3, rank=None if i == 0 else self.rank, use_bias=True, name=name)(x)
                x = nn.relu(batch_norm(train, f"{name}_bn")(x))
                i += 1
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        z = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(self.num_classes, kernel_init=torch_default_init, bias_init=torch_bias_init(z.shape[-1]),
                          name="head")(z)
        return (logits, z) if return_repr else logits


def centred_pad_widths(h: int, w: int, size: int):
    """The ``pad`` widths of an (N, H, W, C) batch centred in size × size zeros: top/left ⌊(size − H)/2⌋,
    ⌊(size − W)/2⌋, the rest bottom/right (one clear error when the image is larger than ``size``)."""
    if h > size or w > size:
        raise CrobustError(f"cannot pad {h}×{w} images to {size}×{size}")
    top, left = (size - h) // 2, (size - w) // 2
    return (0, 0), (top, size - h - top), (left, size - w - left), (0, 0)


def pad_centred(x, size: int):
    """(N, H, W, C) → (N, size, size, C): zeros around, the image centred (:func:`centred_pad_widths`; the identity
    when H = W = size)."""
    return jnp.pad(x, centred_pad_widths(x.shape[1], x.shape[2], size))
