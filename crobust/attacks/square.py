"""Square Attack (Andriushchenko et al., ECCV 2020): score-based black-box random search, ℓ∞ and ℓ2.

Usage::

    import jax, jax.numpy as jnp
    from crobust.attacks import square
    W = jax.random.normal(jax.random.key(0), (64, 10))
    logits_fn = lambda x: x.reshape(x.shape[0], -1) @ W
    x = jax.random.uniform(jax.random.key(1), (8, 8, 8, 1)); y = jnp.arange(8) % 10
    x_adv = square(logits_fn, x, y, jax.random.key(2), eps=8/255, norm="linf", n_queries=5000)

It uses only forward passes, so it is the black-box check against gradient masking in an evaluation. The
algorithm follows AutoAttack's ``square.py`` (the settings AutoAttack uses: p_init = 0.8, margin loss, fixed
schedule, ``resc_schedule=False``). Images are (N, H, W, C); windows are square s × s patches over all channels.

- Loss: the margin m = z_y − max_{j≠y} z_j (minimised; m ≤ 0 ⇔ misclassified), or −CE with ``loss='ce'``.
- Schedule: at query i, p = p_init / 2^b with b the number of thresholds {10, 50, 200, 500, 1000, 2000, 4000,
  6000, 8000} that i exceeds (i rescaled to 10000·i/n_queries when ``rescale_schedule``).
- ℓ∞: start x + ε·s with s ∈ {±1} drawn per (column, channel) — vertical stripes; each query sets one window of
  side s = max(round(√(p·H·W)), 1) to x_best + 2ε·σ_c (σ_c = ±1 per channel), projected onto B_∞(x, ε) ∩ [0,1]^d.
- ℓ2: start from a grid of AutoAttack's ``eta`` patterns (signs ±1 per block and channel), rescaled to norm ε;
  each query (window side s = max(round(√(p·H·W)), 3), made odd) moves the mass of a second window into the
  first, adds a new ±``eta`` pattern there, renormalises to ‖δ‖₂ = ε and clips to [0, 1]. ``eta(s)`` is the
  difference of two normalised "pyramids" of concentric rectangles weighted 1/(k+1)² (see :func:`eta_pattern`).
- A candidate replaces x_best when its loss is lower, or when it is misclassified. Points already misclassified
  stop being updated; the loop (``lax.while_loop``, or one compiled call per query driven from the host under
  :func:`crobust.attacks._stepping.host_stepped`) stops when every point is broken or after ``n_queries``.

Deliberate differences from the reference, all in the law of the random draws only:

- window positions, signs and ``eta`` transpositions are drawn independently per example (the reference draws one
  window position and, for ℓ∞, one sign vector for the whole batch per query), so results do not depend on how
  points are batched;
- a window's corner is uniform on {0, …, H − s} (both ends). The reference's ``random_int(0, H − s)`` excludes
  H − s, so a window narrower than the image never touches the last row or column: single-pixel windows late in
  the schedule can then never fix those pixels, and on the linear-classifier tests (tests/test_attacks_linear.py)
  that leaves points unbroken that are provably breakable;
- for images smaller than the window the side is capped at min(H, W), and the ℓ2 start uses blocks of side
  max(⌊H/5⌋, 1) (the reference fails for H < 5).

Returned point: unchanged x for points misclassified at x (as AutoAttack); otherwise x_best (the broken point,
or the lowest-margin point found).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from crobust._errors import CrobustError, check_choice
from crobust.attacks import _stepping
from crobust.attacks import losses as _losses
from crobust.attacks._common import predicts, public_attack
from crobust.attacks.apgd import chunk_size_for, map_in_chunks
from crobust.attacks._validate import check_call, check_positive_int, prepare

_TINY = 1e-12
_THRESHOLDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def _halvings(i, n_queries: int, rescale_schedule: bool = False):
    """Index b ∈ {0, …, 9} of the schedule at query i (traced i allowed): the number of thresholds
    {10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000} that i exceeds (i rescaled to ⌊10000·i/n_queries⌋ when
    ``rescale_schedule``)."""
    it = jnp.floor(i / n_queries * 10000).astype(jnp.int32) if rescale_schedule else i
    return sum((it > t).astype(jnp.int32) for t in _THRESHOLDS)


def p_selection(i, n_queries: int, p_init: float, rescale_schedule: bool = False):
    """Fraction p = p_init / 2^b of pixels a window covers at query i (traced i allowed), b = :func:`_halvings`."""
    return p_init / (2.0 ** _halvings(i, n_queries, rescale_schedule))


def window_side(p: float, h: int, w: int, norm: str) -> int:
    """Side s of the square window for fraction p, as AutoAttack computes it (in Python floats: s = round(√(p·h·w)),
    at least 1 for ℓ∞, at least 3 and odd for ℓ2), capped at min(h, w)."""
    s = int(round(math.sqrt(p * h * w)))
    s = max(s, 1) if norm == "linf" else max(s, 3) + (1 if max(s, 3) % 2 == 0 else 0)
    return min(s, min(h, w))


def window_sides(h: int, w: int, norm: str, p_init: float) -> np.ndarray:
    """(10,) int32: the window side at schedule index b = 0 … 9 (p = p_init / 2^b), computed on the host."""
    return np.asarray([window_side(p_init / 2.0 ** b, h, w, norm) for b in range(len(_THRESHOLDS) + 1)], np.int32)


def _eta_rectangles(rows: int, cols: int) -> np.ndarray:
    """(rows, cols): at (a, b), Σ_{k=c₀}^{M−1} 1/(k+1)² with c₀ = max(|a − ⌊rows/2⌋|, |b − ⌊cols/2⌋|) and
    M = max(⌊rows/2⌋, ⌊cols/2⌋) + 1 (concentric rectangles around the centre), normalised to unit ℓ2 norm."""
    a = np.arange(rows)[:, None]
    b = np.arange(cols)[None, :]
    c0 = np.maximum(np.abs(a - rows // 2), np.abs(b - cols // 2))
    tail = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, max(rows, cols) + 3) ** 2)])    # T[n] = Σ_{k≤n} 1/k²
    values = tail[max(rows // 2, cols // 2) + 1] - tail[c0]
    norm = np.sqrt(np.sum(values ** 2))
    return values / norm if norm > 0 else values


def eta_pattern(h: int, w: int, s: int, vh: int, vw: int, transpose: bool) -> np.ndarray:
    """AutoAttack's ``eta(s)`` (an s × s pattern of unit ℓ2 norm) placed at rows vh…, columns vw…, zero elsewhere.

    eta(s): the top ⌊s/2⌋ rows hold ``eta_rectangles(⌊s/2⌋, s)``, the bottom s − ⌊s/2⌋ rows hold
    −``eta_rectangles(s − ⌊s/2⌋, s)`` (:func:`_eta_rectangles`), the whole is normalised to unit norm and
    transposed when ``transpose``. Cells of the window outside the image are dropped. Computed on the host in
    float64 and returned as float32 (h, w): an attack uses at most ten window sides (:func:`window_sides`), so
    their patterns are constants of its program rather than integer arithmetic on a traced side.
    """
    s, vh, vw = int(s), int(vh), int(vw)
    if s < 1 or vh < 0 or vw < 0:
        raise CrobustError(f"eta_pattern needs s >= 1 and a corner inside the image, got s={s}, ({vh}, {vw})")
    eta = np.zeros((s, s))
    eta[:s // 2] = _eta_rectangles(s // 2, s)
    eta[s // 2:] = -_eta_rectangles(s - s // 2, s)
    eta /= np.sqrt(np.sum(eta ** 2))
    eta = eta.T if transpose else eta
    out = np.zeros((h + s, w + s))
    out[vh:vh + s, vw:vw + s] = eta
    return out[:h, :w].astype(np.float32)


def _eta_table(h: int, w: int, sides: np.ndarray) -> np.ndarray:
    """(len(sides), 2, h, w) float32: ``eta(s)`` at the origin, plain and transposed, for each side s."""
    return np.stack([np.stack([eta_pattern(h, w, s, 0, 0, False), eta_pattern(h, w, s, 0, 0, True)])
                     for s in sides])


def _window_mask(h, w, s, vh, vw):
    ii = jnp.arange(h)[:, None]
    jj = jnp.arange(w)[None, :]
    return ((ii >= vh) & (ii < vh + s) & (jj >= vw) & (jj < vw + s)).astype(jnp.float32)


def _corner(u, extent, s):
    """A window corner uniform on {0, …, extent − s} (both ends included; see the module docstring), u ~ U[0, 1)."""
    return jnp.minimum(jnp.floor(u * (extent - s + 1)).astype(jnp.int32), extent - s)


def _random_sign(key, shape):
    return jnp.sign(2.0 * jax.random.uniform(key, shape) - 1.0)


def _l2_norm(v):
    return jnp.sqrt(jnp.sum(v ** 2))


def _linf_candidate(u, sign, x, x_best, eps, s, clip, etas=None):
    """One ℓ∞ query for one example x (H, W, C); u (5,) uniforms (window corner), sign (C,) ±1."""
    h, w, c = x.shape
    mask = _window_mask(h, w, s, _corner(u[0], h, s), _corner(u[1], w, s))[:, :, None]
    x_new = x_best + mask * (2.0 * eps * sign)
    x_new = jnp.minimum(jnp.maximum(x_new, x - eps), x + eps)
    return jnp.clip(x_new, 0.0, 1.0) if clip else x_new


def _l2_candidate(u, sign, x, x_best, eps, s, clip, etas):
    """One ℓ2 query for one example x (H, W, C), following AutoAttack's update.

    u (5,): uniforms for the two window corners and the transposition; sign (C,) ±1 per channel. ``etas``
    (2, H, W): ``eta(s)`` at the origin, plain and transposed (shared by all examples of a query); the example's
    pattern is one of them shifted to its window (``jnp.roll``: the pattern is zero beyond s and the window fits,
    so nothing wraps).
    """
    h, w, c = x.shape
    vh, vw = _corner(u[0], h, s), _corner(u[1], w, s)
    vh2, vw2 = _corner(u[2], h, s), _corner(u[3], w, s)
    mask1 = _window_mask(h, w, s, vh, vw)[:, :, None]
    mask2 = _window_mask(h, w, s, vh2, vw2)[:, :, None]
    delta = x_best - x
    norms_window_1 = jnp.sqrt(jnp.sum((delta * mask1) ** 2, axis=(0, 1), keepdims=True))      # (1, 1, C)
    norm_image = _l2_norm(delta)
    # per channel, as AutoAttack's curr_norms_windows (sum over H, W only): each channel keeps its own budget
    norms_windows = jnp.sqrt(jnp.sum((delta * jnp.maximum(mask1, mask2)) ** 2, axis=(0, 1), keepdims=True))
    eta = jnp.where(u[4] > 0.5, etas[1], etas[0])
    eta = jnp.roll(eta, (vh, vw), axis=(0, 1))[:, :, None]
    new = eta * sign + delta * mask1 / (_TINY + norms_window_1)
    new_norm = jnp.sqrt(jnp.sum((new * mask1) ** 2, axis=(0, 1), keepdims=True))
    scale = jnp.sqrt(jnp.maximum(eps ** 2 - norm_image ** 2, 0.0) / c + norms_windows ** 2)
    new = new / (_TINY + new_norm) * scale
    delta = delta * (1.0 - mask2)
    delta = jnp.where(mask1 > 0, new, delta)
    x_new = x + delta / (_l2_norm(delta) + _TINY) * eps
    return jnp.clip(x_new, 0.0, 1.0) if clip else x_new


def _l2_init(key, x, eps, clip):
    """AutoAttack's ℓ2 start for one example: a grid of ±eta blocks of side max(⌊H/5⌋, 1), rescaled to ε."""
    h, w, c = x.shape
    side = max(h // 5, 1)
    start = (h - side * 5) // 2
    corners = [(start + i * side, start + j * side) for i in range(h // side) for j in range(w // side)]
    k_t, k_s = jax.random.split(key)
    transpose = jax.random.uniform(k_t, (len(corners),)) > 0.5
    signs = _random_sign(k_s, (len(corners), 1, 1, c))
    plain, transposed = (np.stack([eta_pattern(h, w, side, a, b, t) for a, b in corners]) for t in (False, True))
    blocks = jnp.where(transpose[:, None, None], transposed, plain)                            # (B, H, W)
    delta = jnp.sum(blocks[..., None] * signs, axis=0)
    x0 = x + delta / (_l2_norm(delta) + _TINY) * eps
    return jnp.clip(x0, 0.0, 1.0) if clip else x0


def _square(logits_fn, x, y, key, *, eps, norm: str = "linf", n_queries: int = 5000, p_init: float = 0.8,
           loss: str = "margin", labels: str = "true", clip: bool = True, rescale_schedule: bool = False,
           chunk_size=None):
    """Square Attack; see the module docstring for the algorithm and its deliberate differences.

    Args:
      logits_fn: images (N, H, W, C) in [0, 1] → logits (N, K). Only forward passes are used. Pass
        ``jax.tree_util.Partial(apply_fn, params)`` to reuse the compiled program across calls (new weights are
        always used), and so does a plain closure over arrays (package docstring, "Captures"); any other callable
        is compiled for that call only.
      x: clean images (N, H, W, C) in [0, 1]; (N, H, W) is read as one channel and feature vectors (N, d) as
        images of one row (N, 1, d, 1), so windows are runs of consecutive features.
      y: integer labels (N,); may be ``None`` with ``labels='predicted'``.
      key: PRNG key (the start uses ``split(key)[0]``, query i ``fold_in(split(key)[1], i)``).
      eps: radius ε ≥ 0 (scalar, may be traced).
      norm: ``'linf'`` or ``'l2'``.
      n_queries: maximum number of queries per point (AutoAttack: 5000).
      p_init: initial fraction of pixels per window (0.8).
      loss: ``'margin'`` (AutoAttack's default) or ``'ce'``.
      labels, clip: as for the other attacks.
      rescale_schedule: rescale the p schedule to ``n_queries`` (AutoAttack's evaluation uses ``False``).
      chunk_size: points per sequential chunk (``lax.map``; each chunk has its own query loop, which stops when
        its points are broken): None (default, one batch), an int, or ``'auto'`` (≤ 300 on CPU, none on
        accelerators). Only memory and speed change: every random draw (start, and per query the window corners,
        transposition and signs) is made for all N points with the unchunked shapes and the chunk's rows taken,
        so point n sees the same numbers whatever the chunking, and a point's search never reads another point.

    Returns:
      x_adv (N, H, W, C) with ‖x_adv − x‖ ≤ ε.
    """
    x, y, eps, norm, _ = prepare(logits_fn, x, y, eps, norm, labels)
    check_choice("loss", loss, ("margin", "ce"))
    n_queries = check_positive_int(n_queries, "n_queries", minimum=0)
    if x.ndim in (2, 3):
        shape = x.shape
        image = (shape[0], 1, shape[1], 1) if x.ndim == 2 else shape + (1,)
        inner = lambda q: logits_fn(q.reshape((q.shape[0],) + shape[1:]))
        out = _square(inner, x.reshape(image), y, key, eps=eps, norm=norm, n_queries=n_queries, p_init=p_init,
                      loss=loss, labels="true", clip=clip, rescale_schedule=rescale_schedule,
                      chunk_size=chunk_size)
        return out.reshape(shape)
    if x.ndim != 4:
        raise CrobustError(f"x must have shape (N, H, W, C), (N, H, W) or (N, d) for the Square attack, got {x.shape}")
    if not 0.0 < p_init <= 1.0:
        raise CrobustError(f"p_init must be in (0, 1], got {p_init}")
    n, h, w, _ = x.shape
    chunk = chunk_size_for(n, chunk_size)
    clean_correct = map_in_chunks(lambda xc, yc: _stepping.call(lambda a, b: predicts(logits_fn(a), b), xc, yc),
                                  chunk, x, y)

    k_init, k_loop = jax.random.split(key)
    sides_host = window_sides(h, w, norm, p_init)
    sides = jnp.asarray(sides_host)
    eta_table = None if norm == "linf" else jnp.asarray(_eta_table(h, w, sides_host))        # (10, 2, H, W)
    if norm == "linf":
        stripes = _random_sign(k_init, (n, 1, w, x.shape[3]))
        x_start = x + eps * stripes
        x_start = jnp.clip(x_start, 0.0, 1.0) if clip else x_start
        candidate = _linf_candidate
    else:
        x_start = jax.vmap(lambda k, xi: _l2_init(k, xi, eps, clip))(jax.random.split(k_init, n), x)
        candidate = _l2_candidate

    def search(xc, yc, x_best, correct_c, index):
        """The query loop on the points ``index`` (C,) of the batch: xc, yc, x_best (their start), correct_c."""
        def margin_and_loss(x_query):
            logits = logits_fn(x_query)
            margin = -_losses.margin(logits, yc)
            return margin, (margin if loss == "margin" else -_losses.cross_entropy(logits, yc))

        margin_min, loss_min = _stepping.call(margin_and_loss, x_best)
        rows = (lambda a: a) if chunk is None else (lambda a: jnp.take(a, index, axis=0))

        def active(margin_min):
            return correct_c & (margin_min > 0.0)

        def cond(state):
            i, _, margin_min, _ = state
            return (i < n_queries) & jnp.any(active(margin_min))

        def body(state):
            i, x_best, margin_min, loss_min = state
            b = _halvings(i, n_queries, rescale_schedule)
            s = sides[b]
            k_u, k_sign = jax.random.split(jax.random.fold_in(k_loop, i))
            uniforms = rows(jax.random.uniform(k_u, (n, 5)))                   # corners and transposition
            signs = rows(_random_sign(k_sign, (n, x.shape[3])))
            etas = None if eta_table is None else eta_table[b]
            x_new = jax.vmap(lambda u, sg, xi, xb: candidate(u, sg, xi, xb, eps, s, clip, etas))(uniforms, signs,
                                                                                                 xc, x_best)
            margin, new_loss = margin_and_loss(x_new)
            live = active(margin_min)
            lower = new_loss < loss_min
            loss_min = jnp.where(live & lower, new_loss, loss_min)
            accept = live & (lower | (margin <= 0.0))
            margin_min = jnp.where(accept, margin, margin_min)
            x_best = jnp.where(accept[:, None, None, None], x_new, x_best)
            return i + 1, x_best, margin_min, loss_min

        _, x_best, _, _ = _stepping.while_loop(cond, body, (jnp.int32(0), x_best, margin_min, loss_min))
        return jnp.where(correct_c[:, None, None, None], x_best, xc)

    return map_in_chunks(search, chunk, x, y, x_start, clean_correct, jnp.arange(n, dtype=jnp.int32))


square = public_attack(_square, check_call)
