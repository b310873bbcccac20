"""Bias-free ReLU multilayer perceptrons, dense (``MLP``) and factorised (``LowRankMLP``).

Both take **pixel-space images in [0, 1]** of shape (N, H, W, C), normalise them inside with the dataset's
per-channel mean and std, flatten to (N, H·W·C) and return logits of shape (N, num_classes). With
``return_repr=True`` they return ``(logits, z)`` where z (N, width) is the output of the last hidden ReLU, the
paper's representation Φ(x) on which the linear head C acts.

Depth is counted as the reference code counts it (docs/reference-code.md §1.1): ``depth`` is the number of weight
matrices, so there are ``depth - 1`` hidden layers of ``width`` units followed by the head. ``depth=5,
width=2000`` on CIFAR shapes is 3072→2000→2000→2000→2000→10, 18,164,000 weights.

Initialisation matches PyTorch's ``nn.Linear`` default, kaiming_uniform(a=√5), i.e. U(−1/√fan_in, 1/√fan_in).

Parameter layout (flax convention, kernels map inputs to outputs as ``x @ kernel``)::

    MLP:        {'hidden_0': {'kernel': (d_in, width)}, ..., 'hidden_{L-1}': {...}, 'head': {'kernel': (width, C)}}
    LowRankMLP: {'hidden_i': {'down': (fan_in, r), 'up': (r, width)}, ..., 'head': {'kernel': (width, C)}}

The paper's W (out × in) of a hidden layer is ``kernel.T`` (dense) or ``A·B`` with ``A = up.T`` (out × r) and
``B = down.T`` (r × in) (low rank). The conversion lives in one place, :mod:`crobust.models.matrices`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from crobust._errors import CrobustError

# PyTorch nn.Linear default init: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_linear_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _normalise_and_flatten(x, mean, std):
    x = jnp.asarray(x, jnp.float32)
    x = (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    return x.reshape(x.shape[0], -1)


class MLP(nn.Module):
    """Bias-free (by default) ReLU MLP with ``depth - 1`` hidden layers of ``width`` units and a linear head.

    Attributes:
      num_classes: C, the head's output size.
      width: hidden width h.
      depth: number of weight matrices (≥ 1); ``depth=1`` is a linear classifier.
      mean, std: per-channel normalisation statistics, broadcast against the trailing channel axis.
      use_bias: add biases to every layer (the reference code's ``--bias``), off by default.
    """

    num_classes: int
    width: int
    depth: int = 2
    mean: Sequence[float] = (0.0,)
    std: Sequence[float] = (1.0,)
    use_bias: bool = False

    @nn.compact
    def __call__(self, x, return_repr: bool = False):
        if self.depth < 1:
            raise CrobustError(f"depth must be >= 1 (number of weight matrices), got {self.depth}")
        z = _normalise_and_flatten(x, self.mean, self.std)
        for i in range(self.depth - 1):
            z = nn.relu(nn.Dense(self.width, use_bias=self.use_bias, kernel_init=torch_linear_init,
                                 bias_init=_torch_bias_init(z.shape[-1]), name=f"hidden_{i}")(z))
        logits = nn.Dense(self.num_classes, use_bias=self.use_bias, kernel_init=torch_linear_init,
                          bias_init=_torch_bias_init(z.shape[-1]), name="head")(z)
        return (logits, z) if return_repr else logits


def _torch_bias_init(fan_in: int):
    """PyTorch's nn.Linear bias init, U(−1/√fan_in, 1/√fan_in)."""
    bound = 1.0 / max(fan_in, 1) ** 0.5
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class LowRankDense(nn.Module):
    """y = x Wᵀ with W = A·B of rank ≤ r (A: out × r, B: r × in), stored as ``down`` = Bᵀ and ``up`` = Aᵀ.

    ``factor_init='reference'`` draws each factor from PyTorch's default (U(±1/√r) for A, U(±1/√in) for B), so
    E‖AB‖²_F = out/9, a third of the dense layer's out/3 (the reference code's √3-smaller start,
    docs/reference-code.md §1.2 and §9 item 12). ``factor_init='frobenius_matched'`` multiplies both factors by
    3^{1/4} so that E‖AB‖²_F = out/3 equals the dense layer's, which removes that confound of scale when ranks are
    compared.
    """

    features: int
    rank: int
    factor_init: str = "reference"

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        if not 1 <= self.rank <= min(fan_in, self.features):
            raise CrobustError(f"rank must be in [1, min(fan_in={fan_in}, width={self.features})], got {self.rank}")
        if self.factor_init not in ("reference", "frobenius_matched"):
            raise CrobustError(f"unknown low-rank init {self.factor_init!r}; valid choices: reference, frobenius_matched")
        gain = 3.0 ** 0.25 if self.factor_init == "frobenius_matched" else 1.0
        scaled = lambda base: (lambda key, shape, dtype=jnp.float32: gain * base(key, shape, dtype))
        down = self.param("down", scaled(torch_linear_init), (fan_in, self.rank))
        up = self.param("up", scaled(torch_linear_init), (self.rank, self.features))
        return (x @ down) @ up


class LowRankMLP(nn.Module):
    """The MLP with every hidden layer (input layer included) factorised at rank ``rank``; the head stays dense.

    With ``width=2000, depth=5, rank=15`` on CIFAR shapes it has 276,080 weights (docs/reference-code.md §1.2).
    """

    num_classes: int
    width: int
    rank: int
    depth: int = 2
    mean: Sequence[float] = (0.0,)
    std: Sequence[float] = (1.0,)
    factor_init: str = "reference"

    @nn.compact
    def __call__(self, x, return_repr: bool = False):
        if self.depth < 2:
            raise CrobustError(f"LowRankMLP needs depth >= 2 (at least one hidden layer), got {self.depth}")
        z = _normalise_and_flatten(x, self.mean, self.std)
        for i in range(self.depth - 1):
            z = nn.relu(LowRankDense(self.width, self.rank, self.factor_init, name=f"hidden_{i}")(z))
        logits = nn.Dense(self.num_classes, use_bias=False, kernel_init=torch_linear_init, name="head")(z)
        return (logits, z) if return_repr else logits
