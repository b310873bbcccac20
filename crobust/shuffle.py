"""Random-access shuffling: the position of any element in a keyed pseudo-random permutation, without sorting.

The trainer needs, at each step, the B dataset indices of one batch of one epoch's shuffled order. Materialising
the epoch's permutation (``jax.random.permutation``, a sort of n random keys) costs a sort per member per epoch,
a large share of a small population's step (``benchmarks/bench_training.py``). Here π(i) is
computed directly for the B positions needed, in O(B) integer operations.

Construction (Black & Rogaway, "Ciphers with arbitrary finite domains", CT-RSA 2002; the same scheme as
TensorFlow's ``tf.random.experimental.index_shuffle`` and Grain's random-access shuffle):

* a balanced Feistel network E on b-bit integers, b = the bit length of n − 1 rounded up to an even number ≥ 2,
  halves of h = b/2 bits: (L, R) ↦ (R, L ⊕ (F(R ⊕ kᵣ) mod 2ʰ)) for r = 1 … ``ROUNDS``, with round keys kᵣ =
  ``jax.random.bits(key, (ROUNDS,), uint32)`` and F a 32-bit integer mixing bijection (``lowbias32``: xor-shift
  / multiply, full avalanche). Each round is a bijection of [0, 2ᵇ), so E is;
* cycle walking onto [0, n): π(i) = E(i) if E(i) < n, else E(E(i)), … — the restriction of E's cycles to
  [0, n), a bijection of [0, n). Since 2ᵇ < 4n, each element needs fewer than 4 walks on average.

Six rounds (Luby–Rackoff: four already make a pseudo-random permutation for ideal round functions); the
statistical checks are in ``tests/test_shuffle.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ROUNDS = 6


def _mix32(x):
    """lowbias32 (C. Wellons): a bijection of uint32 with near-ideal avalanche."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def domain_bits(n: int) -> int:
    """b: the Feistel network's width for a domain of n elements (even, ≥ 2, 2ᵇ ≥ n)."""
    if n < 1:
        raise ValueError(f"a permutation needs n >= 1 elements, got {n}")
    if n > 2 ** 31:
        raise ValueError(f"index_shuffle supports n <= 2**31 (int32 indices), got {n}")
    b = max(2, (n - 1).bit_length())
    return b + (b % 2)


def index_shuffle(key, index, n: int):
    """π_key(index): where each of ``index`` (int array, values in [0, n)) goes under the keyed permutation π_key.

    ``n`` is static. For a fixed key, ``index_shuffle(key, jnp.arange(n), n)`` is a permutation of [0, n);
    computing it for a slice of positions gives that slice of the permutation. Returns int32, ``index``'s shape.
    """
    half = domain_bits(n) // 2
    mask = jnp.uint32((1 << half) - 1)
    round_keys = jax.random.bits(key, (ROUNDS,), jnp.uint32)

    def encrypt(x):
        left, right = x >> half, x & mask
        for r in range(ROUNDS):
            left, right = right, left ^ (_mix32(right ^ round_keys[r]) & mask)
        return (left << half) | right

    x = encrypt(jnp.asarray(index).astype(jnp.uint32))
    n_u = jnp.uint32(n - 1)
    x = jax.lax.while_loop(lambda x: jnp.any(x > n_u), lambda x: jnp.where(x > n_u, encrypt(x), x), x)
    return x.astype(jnp.int32)
