"""SVDs that are fast and safe on every backend.

Two jaxlib 0.10.2 CPU problems are worked around here, and every SVD in crobust goes through this module:

1. **Deadlock.** A *batched* LAPACK call on CPU splits its batch over XLA's intra-op thread pool and blocks until
   the chunks finish (``jax::ParallelBatchMap`` → ``BlockingCounter::Wait``). When the thunk executor runs as many
   independent batched calls at once as the pool has threads (2 on the CI machine: e.g. the nuclear norms of two
   layers of a vmapped population), every worker blocks and the program hangs forever (seen here under
   ``lapack_sgesvd_ffi``; jax 0.11 removes that parallel path). On CPU we therefore never hand LAPACK a batch:
   a batched SVD is a ``lax.map`` of unbatched ones (a ``custom_vmap`` rule does this under ``jax.vmap`` too).
2. **Speed.** With vectors, the default (divide-and-conquer, gesdd) route is far slower than the QR route (gesvd)
   for small float32 matrices on CPU. On CPU we use ``SvdAlgorithm.QR``.

On GPU/TPU both functions are plain ``jax.lax.linalg.svd`` calls (batched, default algorithm).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def _on_cpu() -> bool:
    return jax.default_backend() == "cpu"


def _algorithm():
    return lax.linalg.SvdAlgorithm.QR if _on_cpu() else lax.linalg.SvdAlgorithm.DEFAULT


@jax.custom_batching.custom_vmap
def _svd_one(w):
    u, s, vt = lax.linalg.svd(w, full_matrices=False, compute_uv=True, algorithm=_algorithm())
    return u, s, vt


@_svd_one.def_vmap
def _svd_one_vmap(axis_size, in_batched, w):
    del axis_size, in_batched
    return lax.map(_svd_one, w), (True, True, True)


@jax.custom_batching.custom_vmap
def _svdvals_one(w):
    return lax.linalg.svd(w, full_matrices=False, compute_uv=False, algorithm=_algorithm())


@_svdvals_one.def_vmap
def _svdvals_one_vmap(axis_size, in_batched, w):
    del axis_size, in_batched
    return lax.map(_svdvals_one, w), True


def _map_leading(fn, w):
    lead = w.shape[:-2]
    if not lead:
        return fn(w)
    flat = w.reshape((-1,) + w.shape[-2:])
    out = lax.map(fn, flat)
    return jax.tree.map(lambda o: o.reshape(lead + o.shape[1:]), out)


def svd(w):
    """Thin SVD over the last two axes: W = U diag(s) Vᵀ, returns (U (…, m, k), s (…, k) descending, Vᵀ (…, k, n)).

    k = min(m, n). Leading axes are batch axes.
    """
    w = jnp.asarray(w)
    if not _on_cpu():
        return lax.linalg.svd(w, full_matrices=False, compute_uv=True)
    return _map_leading(_svd_one, w)


def svdvals(w):
    """Singular values over the last two axes, shape (…, min(m, n)), in descending order."""
    w = jnp.asarray(w)
    if not _on_cpu():
        return lax.linalg.svd(w, full_matrices=False, compute_uv=False)
    return _map_leading(_svdvals_one, w)
