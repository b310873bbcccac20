"""Tree helpers shared by the trainer tests (imported as ``_trees``: pytest puts tests/ on the path)."""

import jax
import numpy as np


def member(tree, i):
    """Member ``i`` of a tree stacked on a leading member axis, as host numpy."""
    return jax.tree.map(lambda a: np.asarray(a)[i], tree)


def assert_trees_close(a, b, rtol):
    """Same structure and shapes, and every leaf within ``rtol`` of the largest entry of ``b``'s leaf:
    max |x − y| ≤ rtol · max |y| (float32 round-off of a whole computation, not element-wise)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert x.shape == y.shape
        scale = max(np.max(np.abs(y)), 1e-30)
        assert np.max(np.abs(x - y)) <= rtol * scale, (np.max(np.abs(x - y)) / scale, rtol)
