"""FAB (Croce & Hein, ICML 2020, "Minimally distorted adversarial examples with a fast adaptive boundary attack"):
the untargeted FAB and the targeted FAB-T, as in AutoAttack.

Usage::

    import jax, jax.numpy as jnp
    from crobust.attacks import fab, fab_t
    from crobust.attacks.fab import fab_min_norm
    W = jax.random.normal(jax.random.key(0), (64, 10))
    logits_fn = lambda x: x.reshape(x.shape[0], -1) @ W
    x = jax.random.uniform(jax.random.key(1), (8, 8, 8, 1)); y = jnp.arange(8) % 10
    key = jax.random.key(2)
    x_adv = fab_t(logits_fn, x, y, key, eps=8/255, norm="linf", n_iter=100)     # FAB-T, 9 targets
    x_adv = fab(logits_fn, x, y, key, eps=8/255, norm="l2")                       # untargeted FAB
    x_min, radius = fab_min_norm(logits_fn, x, y, key, eps=8/255)                 # smallest adversarial found

FAB looks for the adversarial example of smallest ‖·‖_p (p = ∞ or 2) near x. Images are flattened to vectors of
dimension D; x₀ is the clean point, x¹ the iterate (x¹ = x₀, or for restarts after the first a random start
x₀ + ½ε·u/‖u‖_p clipped to [0, 1], u ~ U(−1, 1)^D for ℓ∞ and N(0, I) for ℓ2). One iteration (AutoAttack's
``FABAttack.attack_single_run``):

- linearise the decision boundary at x¹: for every class j ≠ y, f_j = z_j(x¹) − z_y(x¹) and g_j = ∇ₓ(z_j − z_y)(x¹)
  (FAB-T: only the target t); the boundary of class j is approximated by the hyperplane {ξ: ⟨g_j, ξ − x¹⟩ + f_j = 0},
  whose distance from x¹ is |f_j|/‖g_j‖_q (q the dual norm: ℓ1 for ℓ∞, ℓ2 for ℓ2; 1e-12 added to the
  denominator); the closest one, j*, gives w = g_{j*}, b = ⟨w, x¹⟩ − f_{j*};
- project x¹ and x₀ onto the intersection of that hyperplane and the box [0, 1]^D:
  δ(v) = argmin ‖δ‖_p s.t. ⟨w, v + δ⟩ = b, v + δ ∈ [0, 1]^D (:func:`projection_linf`, :func:`projection_l2`).
  Both solutions have the form δ_i = s_i·min(μ, m_i) (a sign, a scalar multiplier μ ≥ 0 and a cap m_i per
  coordinate), μ the root of the nondecreasing concave piecewise-linear equation Σ_i ω_i·min(μ, m_i) = c, found
  by Newton's method from the left (AutoAttack sorts the m_i and bisects over the sorted positions instead; the
  solution is the same up to float rounding); if the hyperplane misses the box the nearest box corner in the
  direction of the hyperplane is returned;
- convex combination with the bias towards x₀: with a₁ = max(‖δ(x¹)‖_p, 1e-8), a₂ = max(‖δ(x₀)‖_p, 1e-8),
  α = min(max(a₁/(a₁ + a₂), 0), α_max), x¹ ← clip((1 − α)(x¹ + η·δ(x¹)) + α(x₀ + η·δ(x₀)), 0, 1), η > 1 the
  overshoot (AutoAttack: α_max = 0.1, η = 1.05);
- if argmax z(x¹) ≠ y: x¹ is recorded as the adversarial example when ‖x¹ − x₀‖_p is smaller than the best so far,
  then x¹ is pulled back towards x₀ (backward step β = 0.9): x¹ ← x₀ + β(x¹ − x₀).

After N_iter iterations (AutoAttack: 100) a run returns its smallest adversarial point and its norm r (∞ when none
was found). A point counts as broken at radius ε when r ≤ ε; AutoAttack's ε enters only there and in the random
start's scale. One iteration costs one forward pass with C (FAB-T: 1) backward passes, batched as one vjp over the
C cotangents e_j − e_y, plus one forward pass for the misclassification check.

Restarts and targets: AutoAttack runs restarts (FAB-T: targets, each with its restarts; standard: 9 targets × 1
restart, no random start) one after another on the points not yet broken; for each example the first run (in
that order) with r ≤ ε supplies the result. :func:`fab` and :func:`fab_t` do the same when their arrays are
concrete: run r attacks only the points that runs 1 … r − 1 left unbroken, gathered into calls of 256 points (on
CPU; the last call padded to 128 or 256 rows) that compile once per shape. Traced (inside ``jit``, ``vmap`` or
``grad``, where which points remain is not known), all runs execute at once on every point (``vmap`` over runs,
chunked over points as APGD is) and the first qualifying run is selected per example afterwards, which is the
same result; :func:`fab_min_norm` always runs them all. FAB-T's targets are the classes ranked 2, 3, …,
n_target_classes + 1 by the clean logits; its success criterion is still misclassification (argmax ≠ y), as in
AutoAttack.

Returned point: x where x is misclassified already (as AutoAttack does), the first qualifying run's smallest
adversarial point where some run found one within ε, and x otherwise (FAB keeps no "strongest non-adversarial"
point; AutoAttack also returns x). :func:`fab_min_norm` returns, per point, the smallest adversarial point over all
runs and its norm (0 for points misclassified at x, ∞ where none was found).

Differences from AutoAttack: the gradients of z_j − z_y are computed as one vjp per cotangent rather than as the
differences of the C logit gradients (equal up to float rounding); traced calls run all restarts/targets on every
point (the result is the cascade's); the projections solve for their multiplier by Newton's method rather than by
sorting the breakpoints. With ``clip=False`` the box is dropped: the projections are onto the hyperplane alone
(closed form) and iterates are not clipped.
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from crobust._errors import CrobustError
from crobust.attacks import _stepping
from crobust.attacks._closure import as_data
from crobust.attacks._common import predicts, public_attack, select_runs
from crobust.attacks._validate import check_call, check_positive_int, prepare
from crobust.attacks.apgd import chunk_size_for, map_in_chunks

_NOT_FOUND = 1e10          # AutoAttack's initial res2


def _take(a, idx):
    """a[n, idx[n]] for a (N, K) and integer idx (N,)."""
    return jnp.take_along_axis(a, idx[:, None], axis=1)[:, 0]


def _capped_root(weight, cap, c):
    """Per row, the smallest v ≥ 0 with h(v) = Σ_i weight_i·min(v, cap_i) ≥ c (weight, cap ≥ 0), at most max cap.

    h is continuous, nondecreasing, concave and piecewise linear with kinks at the caps; on a segment it is
    linear with slope Σ_{cap_i > v} weight_i. Newton's method from v₀ = c / Σ_i weight_i (h(v₀) ≤ c) stays left of
    the root (a tangent of a concave function lies above it) and lands on it exactly once it starts from the
    root's segment, so it ends after at most D + 1 steps (one segment or more per step; in practice a handful).
    The steps stop when no row moves (in float32: within an ulp or so of the root, up to the rounding of the row
    sums); at v = max cap the slope is 0 and v stays there, which is the answer when c > h(∞) (c out of reach).
    """
    top = jnp.max(jnp.where(weight > 0, cap, 0.0), axis=1)
    total = jnp.sum(weight, axis=1)
    v0 = jnp.minimum(c / jnp.where(total > 0, total, 1.0), top)

    def body(state):
        v, _, k = state
        h = jnp.sum(weight * jnp.minimum(v[:, None], cap), axis=1)
        slope = jnp.sum(jnp.where(cap > v[:, None], weight, 0.0), axis=1)
        step = jnp.where(slope > 0, v + (c - h) / jnp.where(slope > 0, slope, 1.0), top)
        v_next = jnp.clip(step, v, top)
        return v_next, jnp.any(v_next != v), k + 1

    max_steps = cap.shape[1] + 2
    v, _, _ = jax.lax.while_loop(lambda state: state[1] & (state[2] < max_steps), body,
                                 (v0, jnp.array(True), jnp.int32(0)))
    return v


def _oriented(t, w, b):
    """(w, c) with the sign of the hyperplane flipped so that c = ⟨w, t⟩ − b ≥ 0: δ must lower ⟨w, ·⟩ by c."""
    c = jnp.sum(w * t, axis=1) - b
    sign = jnp.where(c >= 0, 1.0, -1.0).astype(t.dtype)
    return w * sign[:, None], c * sign


def projection_linf(t, w, b):
    """argmin_δ ‖δ‖_∞ s.t. ⟨w, t + δ⟩ = b and t + δ ∈ [0, 1]^D, per row (AutoAttack's ``projection_linf``).

    With the sign chosen so that c = ⟨w, t⟩ − b ≥ 0, coordinate i moves towards 1 where w_i < 0 and towards 0
    where w_i > 0, by at most its room p_i (1 − t_i or t_i); at radius ρ the largest decrease of ⟨w, ·⟩ is
    h(ρ) = Σ_i |w_i|·min(ρ, p_i), so the solution is δ_i = −sign(w_i)·min(ρ*, p_i) with ρ* the smallest root of
    h(ρ) = c (:func:`_capped_root`; exact up to float32 rounding of the row sums). Coordinates with w_i = 0 do
    not move. When the hyperplane does not meet the box (c > h(∞)), δ moves t to the box corner nearest the
    hyperplane (δ_i = 1[w_i < 0] − t_i on w_i ≠ 0).

    Args: t (N, D) points in [0, 1], w (N, D) normals, b (N,) offsets. Returns δ (N, D).
    """
    w, c = _oriented(t, w, b)
    up = w < 0
    room = jnp.where(up, 1 - t, t)
    step = jnp.minimum(_capped_root(jnp.abs(w), room, c)[:, None], room)
    return jnp.where(w == 0, 0.0, jnp.where(up, step, -step))


def projection_l2(t, w, b):
    """argmin_δ ‖δ‖_2 s.t. ⟨w, t + δ⟩ = b and t + δ ∈ [0, 1]^D, per row (AutoAttack's ``projection_l2``).

    With c = ⟨w, t⟩ − b ≥ 0 (sign flipped as for ℓ∞) the KKT solution is δ_i = clip(−λ w_i, −t_i, 1 − t_i) =
    −w_i·min(λ, r_i) for a multiplier λ ≥ 0, r_i = max(t_i/w_i, (t_i − 1)/w_i) the value at which coordinate i
    reaches its bound; ⟨w, δ⟩ = −Σ_i w_i²·min(λ, r_i), so λ is the smallest root of Σ_i w_i²·min(λ, r_i) = c
    (:func:`_capped_root`). Coordinates with |w_i| < 1e-8 do not move; when the hyperplane misses the box every
    coordinate goes to its bound (the nearest corner). Args and returns as :func:`projection_linf`.
    """
    w, c = _oriented(t, w, b)
    moves = jnp.abs(w) >= 1e-8
    w_safe = jnp.where(moves, w, 1.0)
    r = jnp.where(moves, jnp.clip(jnp.maximum(t / w_safe, (t - 1) / w_safe), 0.0, 1e12), 0.0)
    lam = _capped_root(jnp.where(moves, w * w, 0.0), r, c)
    return jnp.where(moves, -w * jnp.minimum(lam[:, None], r), 0.0)


def projection_hyperplane(t, w, b, norm: str):
    """argmin_δ ‖δ‖_p s.t. ⟨w, t + δ⟩ = b without the box (``clip=False``): δ = (b − ⟨w, t⟩)·sign(w)/‖w‖₁ (ℓ∞) or
    (b − ⟨w, t⟩)·w/‖w‖₂² (ℓ2), 1e-12 added to the denominators."""
    gap = (b - jnp.sum(w * t, axis=1))[:, None]
    if norm == "linf":
        return gap * jnp.sign(w) / (jnp.sum(jnp.abs(w), axis=1, keepdims=True) + 1e-12)
    return gap * w / (jnp.sum(w * w, axis=1, keepdims=True) + 1e-12)


def _norm(v, norm):
    """‖v‖_p over the last axis."""
    if norm == "linf":
        return jnp.max(jnp.abs(v), axis=-1)
    return jnp.sqrt(jnp.sum(v * v, axis=-1))


def _dual_norm(v, norm):
    if norm == "linf":
        return jnp.sum(jnp.abs(v), axis=-1)
    return jnp.sqrt(jnp.sum(v * v, axis=-1))


def _random_start(key, x, eps, norm, clip):
    """AutoAttack's restart start x + ½·min(1e10, ε)·u/‖u‖_p (u uniform in [−1, 1]^D for ℓ∞, Gaussian for ℓ2)."""
    if norm == "linf":
        u = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
    else:
        u = jax.random.normal(key, x.shape, x.dtype)
    out = x + jnp.minimum(_NOT_FOUND, eps) * u / _norm(u, norm)[:, None] * 0.5
    return jnp.clip(out, 0.0, 1.0) if clip else out


def fab_single_run(logits_fn, x, y, target, start, norm: str, n_iter: int, alpha_max: float = 0.1,
                   eta: float = 1.05, beta: float = 0.9, clip: bool = True, targeted: bool = False):
    """One FAB run (AutoAttack's ``attack_single_run``) on flat points, no input checks.

    Args:
      logits_fn: flat points (N, D) → logits (N, C).
      x: clean points (N, D); y: labels (N,) defining success (argmax ≠ y); target: (N,) target classes (used when
        ``targeted``); start: the first iterate (N, D).

    Returns:
      (adv (N, D) the smallest adversarial iterate found (x where none), radius (N,) its ‖adv − x‖_p or 1e10).
    """
    num_classes = jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(x.shape, x.dtype)).shape[1]
    onehot_y = jax.nn.one_hot(y, num_classes, dtype=x.dtype)
    if norm == "linf":
        project = projection_linf if clip else (lambda t, w, b: projection_hyperplane(t, w, b, "linf"))
    else:
        project = projection_l2 if clip else (lambda t, w, b: projection_hyperplane(t, w, b, "l2"))
    box = (lambda v: jnp.clip(v, 0.0, 1.0)) if clip else (lambda v: v)

    def differences(x1):
        """(f (N, K), g (N, K, D)): z_j − z_y and its gradient for the K candidate classes."""
        logits, vjp = jax.vjp(logits_fn, x1)
        z_y = jnp.sum(logits * onehot_y, axis=1)
        if targeted:
            cot = jax.nn.one_hot(target, num_classes, dtype=x.dtype) - onehot_y
            return (jnp.sum(logits * cot, axis=1))[:, None], vjp(cot)[0][:, None]
        cot = jnp.eye(num_classes, dtype=x.dtype)[:, None, :] - onehot_y[None]          # (C, N, C)
        grads = jax.vmap(lambda c: vjp(c)[0])(cot)                                       # (C, N, D)
        f = jnp.where(onehot_y > 0, _NOT_FOUND, logits - z_y[:, None])
        return f, jnp.moveaxis(grads, 0, 1)

    def one_step(_, s):
        x1 = s["x1"]
        f, g = differences(x1)
        dist = jnp.abs(f) / (1e-12 + _dual_norm(g, norm))
        ind = jnp.argmin(dist, axis=1)
        w = jnp.take_along_axis(g, ind[:, None, None], axis=1)[:, 0]
        b = -_take(f, ind) + jnp.sum(w * x1, axis=1)
        d3 = project(jnp.concatenate([x1, x]), jnp.concatenate([w, w]), jnp.concatenate([b, b]))
        d1, d2 = d3[:n], d3[n:]
        a0 = jnp.maximum(_norm(d3, norm), 1e-8)
        a1, a2 = a0[:n], a0[n:]
        alpha = jnp.minimum(jnp.maximum(a1 / (a1 + a2), 0.0), alpha_max)[:, None]
        x1 = box((x1 + eta * d1) * (1 - alpha) + (x + d2 * eta) * alpha)
        is_adv = ~predicts(logits_fn(x1), y)
        t = _norm(x1 - x, norm)
        better = is_adv & (t < s["radius"])
        return dict(x1=jnp.where(is_adv[:, None], x + (x1 - x) * beta, x1),
                    adv=jnp.where(better[:, None], x1, s["adv"]), radius=jnp.where(better, t, s["radius"]))

    n = x.shape[0]
    state = dict(x1=start, adv=x, radius=jnp.full((n,), _NOT_FOUND, x.dtype))
    s = _stepping.fori_loop(0, n_iter, one_step, state)
    return s["adv"], s["radius"]


def _runs(logits_fn, x, y, eps, norm, n_iter, alpha_max, eta, beta, clip, targeted, keys, targets, chunk):
    """All R runs: ``keys`` = (random (R,) bool: run r starts at random, else at x; keys (R,)), targets (R, N).
    Returns (adv (R, N, ...), radius (R, N))."""
    image_shape = x.shape
    flat = x.reshape(image_shape[0], -1)
    f = lambda q: logits_fn(q.reshape((q.shape[0],) + image_shape[1:]))
    random, keys = keys
    starts = jax.vmap(lambda k: _random_start(k, flat, eps, norm, clip))(keys)          # (R, N, D)
    starts = jnp.where(random[:, None, None], starts, flat[None])

    def on_chunk(xc, yc, starts_c, targets_c):                 # starts_c (n, R, D), targets_c (n, R)
        def one_run(start, target):
            return fab_single_run(f, xc, yc, target, start, norm, n_iter, alpha_max, eta, beta, clip, targeted)
        res = _stepping.vmap(one_run, in_axes=(1, 1))(starts_c, targets_c)              # (R, n, ...)
        return tuple(jnp.moveaxis(r, 0, 1) for r in res)

    adv, radius = map_in_chunks(on_chunk, chunk, flat, y, jnp.moveaxis(starts, 0, 1), jnp.moveaxis(targets, 0, 1))
    adv = jnp.moveaxis(adv, 1, 0).reshape((-1,) + image_shape)
    return adv, jnp.moveaxis(radius, 1, 0)


def _stage(logits_fn, flat, y, target, start, *, image_shape, norm, n_iter, alpha_max, eta, beta, clip, targeted,
           chunk):
    """One run on flat points (n, D) (``image_shape`` their shape as images): (adv (n, D), radius (n,)), chunked
    over points."""
    f = lambda q: logits_fn(q.reshape((q.shape[0],) + image_shape[1:]))

    def on_chunk(xc, yc, tc, sc):
        return fab_single_run(f, xc, yc, tc, sc, norm, n_iter, alpha_max, eta, beta, clip, targeted)

    return map_in_chunks(on_chunk, chunk, flat, y, target, start)


_STAGE_STATIC = ("image_shape", "norm", "n_iter", "alpha_max", "eta", "beta", "clip", "targeted", "chunk")
_compiled_stage = jax.jit(_stage, static_argnames=_STAGE_STATIC)


_CASCADE_CHUNK = 256       # points per stage call on CPU: a cache-sized batch, one program for every stage


def _pieces(m: int, n: int, chunk_size) -> list[tuple[int, int, int]]:
    """How a stage of the cascade covers its m points (of n): (first, count, rows) per compiled call, rows ≥ count
    padded with copies. With chunks of c points (``chunk_size`` an int, or 256 for ``'auto'`` on CPU): full chunks,
    then the rest in c/2 or c rows, so at most two shapes compile; without chunks: one call padded to the next power
    of two (at least 8, at most n), at most ⌈log2 n⌉ − 2 shapes."""
    if chunk_size == "auto":
        chunk = _CASCADE_CHUNK if jax.default_backend() == "cpu" else None
    else:
        chunk = None if chunk_size is None else check_positive_int(chunk_size, "chunk_size")
    if chunk is None:
        return [(0, m, min(n, max(8, 1 << (m - 1).bit_length())))]
    out = []
    for first in range(0, m, chunk):
        count = min(chunk, m - first)
        out.append((first, count, chunk if count > chunk // 2 or chunk < 2 else chunk // 2))
    return out


def _cascade(logits_fn, x, y, eps, norm, n_iter, alpha_max, eta, beta, clip, targeted, keys, targets,
             clean_correct, chunk_size, compiled):
    """AutoAttack's cascade on concrete arrays: run r attacks only the points no earlier run broke within ε
    (compacted, in the calls of :func:`_pieces`), and a point takes the first run's point that is within ε."""
    image_shape = x.shape
    n = image_shape[0]
    flat = x.reshape(n, -1)
    random, run_keys = keys
    eps_value = float(eps)
    todo = np.asarray(clean_correct).copy()
    out = np.array(flat)
    stage = _compiled_stage if compiled else _stage
    for r in range(targets.shape[0]):
        idx = np.flatnonzero(todo)
        if idx.size == 0:
            break
        start = flat if not bool(random[r]) else _random_start(run_keys[r], flat, eps, norm, clip)
        for first, count, rows in _pieces(idx.size, n, chunk_size):
            part = idx[first:first + count]
            take = jnp.asarray(np.concatenate([part, np.full(rows - count, part[0])]).astype(np.int32))
            adv, radius = stage(logits_fn, flat[take], y[take], targets[r][take], start[take],
                                image_shape=(rows,) + image_shape[1:], norm=norm, n_iter=n_iter,
                                alpha_max=alpha_max, eta=eta, beta=beta, clip=clip, targeted=targeted, chunk=None)
            won = np.asarray(radius[:count] <= eps_value)
            out[part[won]] = np.asarray(adv[:count])[won]
            todo[part[won]] = False
    return jnp.asarray(out).reshape(image_shape)


def _schedule(key, x, y, logits_fn, targeted, n_target_classes, n_restarts, num_classes):
    """(random-start flags (R,), keys (R,), targets (R, N), clean_correct (N,)) for the R runs in cascade order."""
    clean_logits = _stepping.call(logits_fn, x)
    clean_correct = predicts(clean_logits, y)
    if targeted:
        n_target_classes = min(check_positive_int(n_target_classes, "n_target_classes"), num_classes - 1)
        if n_target_classes < 1:
            raise CrobustError(f"fab_t needs at least 2 classes, the logits have C={num_classes}")
        ranked = jax.lax.top_k(clean_logits, n_target_classes + 1)[1][:, 1:]           # (N, T)
        targets = jnp.repeat(ranked.T, n_restarts, axis=0)                             # target-major
    else:
        n_target_classes = 1
        targets = jnp.zeros((n_restarts, x.shape[0]), jnp.int32)
    random = jnp.tile(jnp.arange(n_restarts) > 0, n_target_classes)
    keys = jax.random.split(key, n_target_classes * n_restarts)
    return (random, keys), targets.astype(jnp.int32), clean_correct


def _all_runs(logits_fn, x, y, key, eps, norm, n_iter, n_restarts, alpha_max, eta, beta, labels, clip,
              targeted, n_target_classes, chunk_size):
    x, y, eps, norm, num_classes = prepare(logits_fn, x, y, eps, norm, labels)
    n_iter = check_positive_int(n_iter, "n_iter")
    n_restarts = check_positive_int(n_restarts, "n_restarts")
    keys, targets, clean_correct = _schedule(key, x, y, logits_fn, targeted, n_target_classes, n_restarts,
                                             num_classes)
    chunk = chunk_size_for(x.shape[0], chunk_size)
    adv, radius = _runs(logits_fn, x, y, eps, norm, n_iter, alpha_max, eta, beta, clip, targeted, keys, targets,
                        chunk)
    return x, eps, clean_correct, adv, radius


def _concrete(*trees) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(trees))


def _at_radius(logits_fn, x, y, key, eps, norm, n_iter, n_restarts, alpha_max, eta, beta, labels, clip, targeted,
               n_target_classes, chunk_size, compiled=False):
    """FAB / FAB-T's result at ε: the host cascade when the schedule and ε are concrete, else all runs at once
    (``compiled``: the cascade's stages run as one cached program each, ``logits_fn`` then a Partial)."""
    x, y, eps, norm, num_classes = prepare(logits_fn, x, y, eps, norm, labels)
    n_iter = check_positive_int(n_iter, "n_iter")
    n_restarts = check_positive_int(n_restarts, "n_restarts")
    keys, targets, clean_correct = _schedule(key, x, y, logits_fn, targeted, n_target_classes, n_restarts,
                                             num_classes)
    if _concrete(x, y, eps, keys, targets, clean_correct):
        return _cascade(logits_fn, x, y, eps, norm, n_iter, alpha_max, eta, beta, clip, targeted, keys, targets,
                        clean_correct, chunk_size, compiled)
    chunk = chunk_size_for(x.shape[0], chunk_size)
    adv, radius = _runs(logits_fn, x, y, eps, norm, n_iter, alpha_max, eta, beta, clip, targeted, keys, targets,
                        chunk)
    return _at_eps(x, eps, clean_correct, adv, radius)


def _expand(v, x):
    return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def _at_eps(x, eps, clean_correct, adv, radius):
    """The cascade's result at radius ε: the first run whose smallest adversarial point has norm ≤ ε, else x."""
    success = radius <= eps                                              # (R, N); 1e10 never qualifies
    out = jnp.where(_expand(jnp.any(success, axis=0), x), select_runs(adv, jnp.argmax(success, axis=0)), x)
    return jnp.where(_expand(clean_correct, x), out, x)


def _fab(logits_fn, x, y, key, *, eps, norm: str = "linf", n_iter: int = 100, n_restarts: int = 1,
         alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, labels: str = "true", clip: bool = True,
         chunk_size="auto"):
    """Untargeted FAB (AutoAttack's ``FABAttack.perturb`` with ``targeted=False``); see the module docstring.

    Args:
      logits_fn: images (N, ...) in [0, 1] → logits (N, C); call forms as :func:`crobust.attacks.apgd`.
      x: clean images (N, ...) in [0, 1].
      y: integer labels (N,); may be ``None`` with ``labels='predicted'``.
      key: PRNG key; restart r > 0 starts at random with ``split(key, n_restarts)[r]`` (restart 0 starts at x).
      eps: radius ε ≥ 0 (pixel units; scalar, may be traced): the success criterion and the random-start scale.
      norm: ``'linf'`` or ``'l2'``.
      n_iter: iterations per run (AutoAttack: 100).
      n_restarts: runs (AutoAttack standard for untargeted FAB: 5; ``version='plus'``), in the cascade of the module
        docstring.
      alpha_max, eta, beta: the step's bias bound α_max, overshoot η and backward step β (0.1, 1.05, 0.9).
      labels: ``'true'`` or ``'predicted'``.
      clip: keep iterates in [0, 1] (the box enters the projection); ``False`` drops the box.
      chunk_size: examples per sequential chunk, as :func:`crobust.attacks.apgd`.

    Returns:
      x_adv (N, ...) with ‖x_adv − x‖ ≤ ε: the smallest adversarial point of the first run that found one within
      ε, else x.
    """
    return _at_radius(logits_fn, x, y, key, eps, norm, n_iter, n_restarts, alpha_max, eta, beta, labels, clip, False,
                      1, chunk_size)


def _fab_t(logits_fn, x, y, key, *, eps, norm: str = "linf", n_iter: int = 100, n_target_classes: int = 9,
           n_restarts: int = 1, alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, labels: str = "true",
           clip: bool = True, chunk_size="auto"):
    """FAB-T: FAB towards each of the top ``n_target_classes`` other classes (AutoAttack's ``targeted=True``).

    Run j (j = 1 … T, T = min(n_target_classes, C − 1)) linearises only z_t − z_y for the class t with the
    (j+1)-th largest clean logit; each target gets ``n_restarts`` runs (AutoAttack standard: 1, so no random
    start), keys ``split(key, T·n_restarts)`` in target-major order. Success is misclassification. Other args and
    the return value as :func:`fab`.
    """
    return _at_radius(logits_fn, x, y, key, eps, norm, n_iter, n_restarts, alpha_max, eta, beta, labels, clip, True,
                      n_target_classes, chunk_size)


def _fab_min_norm(logits_fn, x, y, key, *, eps, norm: str = "linf", n_iter: int = 100, n_restarts: int = 1,
                  targeted: bool = False, n_target_classes: int = 9, alpha_max: float = 0.1, eta: float = 1.05,
                  beta: float = 0.9, labels: str = "true", clip: bool = True, chunk_size="auto"):
    """The smallest adversarial perturbation FAB (``targeted=False``) or FAB-T finds, over all runs.

    ``eps`` only scales the random starts of restarts after the first. Returns (x_min (N, ...), radius (N,)):
    radius = ‖x_min − x‖_p, 0 where x is misclassified already (x_min = x), ∞ where no run found an adversarial
    point (x_min = x).
    """
    x, eps, clean_correct, adv, radius = _all_runs(logits_fn, x, y, key, eps, norm, n_iter, n_restarts, alpha_max,
                                                   eta, beta, labels, clip, targeted, n_target_classes, chunk_size)
    best = jnp.argmin(radius, axis=0)
    r = jnp.min(radius, axis=0)
    found = clean_correct & (r < _NOT_FOUND)
    x_min = jnp.where(_expand(found, x), select_runs(adv, best), x)
    r = jnp.where(clean_correct, jnp.where(found, r, jnp.inf), 0.0)
    return x_min, r


def _cascading(impl, targeted: bool):
    """The public form of :func:`_fab` / :func:`_fab_t`: as :func:`crobust.attacks._common.public_attack`, except
    that a call with concrete arrays and a model that can be passed as data runs the cascade from the host, each
    stage one cached program (per bucket size), instead of compiling all runs into one program."""
    traced = public_attack(impl, check_call)
    signature = inspect.signature(impl)
    caller = "crobust.attacks." + impl.__name__.lstrip("_")

    @functools.wraps(impl)
    def attack(logits_fn, x, y, key=None, **kwargs):
        if _concrete(x, y, key, kwargs.get("eps")) and not _stepping.active():
            model = logits_fn if isinstance(logits_fn, jax.tree_util.Partial) else as_data(logits_fn, caller)
            if model is not None and _concrete(model):
                bound = signature.bind(model, x, y, key, **kwargs)
                bound.apply_defaults()
                a = bound.arguments
                check_call(logits_fn, x, y, **{k: v for k, v in a.items() if k not in ("logits_fn", "x", "y", "key")})
                return _at_radius(model, x, y, key, a["eps"], a["norm"], a["n_iter"], a["n_restarts"],
                                  a["alpha_max"], a["eta"], a["beta"], a["labels"], a["clip"], targeted,
                                  a.get("n_target_classes", 1), a["chunk_size"], compiled=True)
        return traced(logits_fn, x, y, key, **kwargs)

    attack.impl = impl
    attack.compiled = traced.compiled
    return attack


fab = _cascading(_fab, targeted=False)
fab_t = _cascading(_fab_t, targeted=True)
fab_min_norm = public_attack(_fab_min_norm, check_call)
