"""crobust.shuffle.index_shuffle: a bijection of [0, n) for every n, equal to the documented Feistel construction
written out in plain Python, and statistically a shuffle (uniform positions, independent across keys)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust import shuffle

_batched = jax.jit(jax.vmap(shuffle.index_shuffle, in_axes=(0, None, None)), static_argnums=2)


def _perms(n, n_keys, seed=0):
    keys = jax.random.split(jax.random.key(seed), n_keys)
    return np.asarray(_batched(keys, jnp.arange(n), n))


def _reference(key, i, n):
    """The module docstring's construction in Python integers: Feistel rounds with lowbias32, cycle walking."""
    b = max(2, (n - 1).bit_length())
    b += b % 2
    h, mask = b // 2, (1 << (b // 2)) - 1
    ks = [int(k) for k in np.asarray(jax.random.bits(key, (shuffle.ROUNDS,), jnp.uint32))]

    def mix(x):
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    def enc(x):
        left, right = x >> h, x & mask
        for k in ks:
            left, right = right, left ^ (mix(right ^ k) & mask)
        return (left << h) | right

    x = enc(i)
    while x >= n:
        x = enc(x)
    return x


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 16, 17, 100, 1293, 4096, 10800])
def test_a_permutation_of_range_n(n):
    for p in _perms(n, 3):
        np.testing.assert_array_equal(np.sort(p), np.arange(n))


@pytest.mark.parametrize("n", [5, 1293, 70000])
def test_equals_the_documented_construction(n):
    key = jax.random.key(7)
    idx = np.unique(np.r_[0, n - 1, np.random.default_rng(0).integers(0, n, 40)])
    got = np.asarray(jax.jit(shuffle.index_shuffle, static_argnums=2)(key, jnp.asarray(idx), n))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, [_reference(key, int(i), n) for i in idx])


def test_positions_are_uniform_and_keys_give_different_orders():
    n, k = 10, 20000
    perms = _perms(n, k)
    # where element i lands: each of the n positions with probability 1/n (chi-square, 81 dof, p ≈ 1e-6 cut-off)
    counts = np.stack([np.bincount(perms[:, i], minlength=n) for i in range(n)])
    chi2 = float(np.sum((counts - k / n) ** 2 / (k / n)))
    assert chi2 < 160, chi2
    # pairs: P(π(0) < π(1)) = 1/2
    assert abs(np.mean(perms[:, 0] < perms[:, 1]) - 0.5) < 0.02
    # many distinct permutations of 10 elements (10! = 3.6e6): a weak cipher would repeat a small family
    assert len({tuple(p) for p in perms}) > 0.99 * k
    # a big domain: adjacent inputs land far apart, and two keys agree on about 1/n of the positions
    big = _perms(1293, 2)
    assert np.mean(np.abs(np.diff(big[0]))) > 1293 / 4
    assert np.mean(big[0] == big[1]) < 0.01


def test_bad_n():
    with pytest.raises(ValueError, match="n >= 1"):
        shuffle.domain_bits(0)
    with pytest.raises(ValueError, match="2\\*\\*31"):
        shuffle.domain_bits(2 ** 31 + 1)
    assert shuffle.domain_bits(1) == 2 and shuffle.domain_bits(5) == 4 and shuffle.domain_bits(1294) == 12
