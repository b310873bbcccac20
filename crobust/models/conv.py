"""Convolution building blocks shared by the convolutional models: initialisers, PyTorch-style padding, the
low-rank convolution and the batch norm every model uses.

Low-rank convolution (docs/reference-code.md §1.2, ``LRConv2d``): a k×k convolution C (in → out) becomes

    x ↦ up( down(x) ),   down: k×k conv, in → r channels (carrying the original stride and padding),
                         up:   1×1 conv, r → out channels (a per-pixel matrix product),

so the matricised layer (out × in·kh·kw, :mod:`crobust.models.matrices`) is W = A·B with A = upᵀ (out × r) and
B = mat(down) (r × in·kh·kw): rank ≤ r. Parameters ``down`` (kh, kw, in, r) and ``up`` (r, out) (+ ``bias`` (out,)
when the dense conv had one), the same names as :class:`~crobust.models.mlp.LowRankDense`.

Initialisation:

- dense convs of the torchvision models: kaiming_normal(fan_out, relu), N(0, 2/(out·kh·kw)) (torchvision's
  ResNet/VGG init, docs/reference-code.md §1.3);
- the low-rank factors: PyTorch's default ``nn.Conv2d`` init (kaiming_uniform(a=√5) = U(±1/√fan_in) with fan_in =
  in·kh·kw for ``down`` and r for ``up``), as the reference's ``LRConv2d`` (it does *not* use torchvision's init);
- ``svd``: from a dense checkpoint by :func:`crobust.models.low_rank.low_rank_from_dense` (truncated SVD of the
  matricised kernel).

Batch norm: flax ``nn.BatchNorm`` with PyTorch's defaults (momentum 0.1 ⇒ flax ``momentum=0.9`` for the running
average, ε = 1e-5, scale 1, bias 0), running statistics in the ``'batch_stats'`` collection. ``train=True`` uses the
batch statistics and updates the running ones (apply with ``mutable=['batch_stats']``); ``train=False`` uses the
running statistics and changes nothing.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from crobust._errors import CrobustError

# torchvision's conv init: kaiming_normal_(mode='fan_out', nonlinearity='relu'): N(0, 2 / (out·kh·kw)).
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# PyTorch's nn.Conv2d / nn.Linear default: kaiming_uniform(a=√5) = U(±1/√fan_in), fan_in = in·kh·kw.
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
    """PyTorch's default bias init U(±1/√fan_in)."""
    bound = 1.0 / max(int(fan_in), 1) ** 0.5
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_padding(kernel: int, padding: int | None = None):
    """Explicit symmetric padding ((p, p), (p, p)) with PyTorch's default p = kernel // 2 (so outputs match
    ``nn.Conv2d(k, stride, padding=k//2)`` exactly, also at stride 2 where 'SAME' pads asymmetrically)."""
    p = kernel // 2 if padding is None else int(padding)
    return ((p, p), (p, p))


def batch_norm(train: bool, name: str):
    """PyTorch-equivalent BatchNorm2d/1d (momentum 0.1, ε 1e-5) over every axis but the last."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class LowRankConv(nn.Module):
    """k×k conv to ``rank`` channels (stride, padding of the original), then 1×1 conv to ``features``.

    Attributes:
      features: output channels.
      kernel_size, strides, padding: of the dense conv it replaces (padding: int p, symmetric, PyTorch style).
      rank: r ≥ 1 (r ≥ min(out, in·kh·kw) is an exact-capacity or over-parameterised factorisation, allowed as in
        the reference code).
      use_bias: a bias on the output (the ``up`` conv), as the replaced conv had.
    """

    features: int
    kernel_size: int
    rank: int
    strides: int = 1
    padding: int | None = None
    use_bias: bool = False

    @nn.compact
    def __call__(self, x):
        if int(self.rank) < 1:
            raise CrobustError(f"low-rank conv rank must be >= 1, got {self.rank}")
        cin = x.shape[-1]
        k = int(self.kernel_size)
        down = self.param("down", torch_default_init, (k, k, cin, int(self.rank)))
        up = self.param("up", torch_default_init, (int(self.rank), self.features))
        y = lax.conv_general_dilated(x, down.astype(x.dtype), (self.strides, self.strides),
                                     torch_padding(k, self.padding),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = y @ up.astype(y.dtype)
        if self.use_bias:
            y = y + self.param("bias", torch_bias_init(int(self.rank)), (self.features,))
        return y


def conv(features: int, kernel_size: int, *, strides: int = 1, padding: int | None = None, rank: int | None = None,
         use_bias: bool = False, name: str, kernel_init=kaiming_normal_fan_out, bias_fan_in: int | None = None):
    """A dense ``nn.Conv`` (PyTorch padding, ``kernel_init``) or, with ``rank``, a :class:`LowRankConv` of the
    same geometry, under the same module ``name`` (so a dense and a low-rank model differ only in the leaves)."""
    if rank is not None:
        return LowRankConv(features, kernel_size, int(rank), strides, padding, use_bias, name=name)
    bias_init = torch_bias_init(bias_fan_in) if bias_fan_in is not None else nn.initializers.zeros
    return nn.Conv(features, (kernel_size, kernel_size), strides=(strides, strides),
                   padding=torch_padding(kernel_size, padding), use_bias=use_bias, kernel_init=kernel_init,
                   bias_init=bias_init, name=name)


def normalise(x, mean, std):
    """(x − mean)/std per channel (trailing axis), float32; x are pixel-space images in [0, 1], (N, H, W, C)."""
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 4:
        raise CrobustError(f"images must be (N, H, W, C), got shape {tuple(x.shape)}")
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
