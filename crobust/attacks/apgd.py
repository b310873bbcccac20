"""Auto-PGD (Croce & Hein, ICML 2020): APGD-CE / APGD-DLR and the targeted APGD-T, as in AutoAttack.

Usage::

    import jax, jax.numpy as jnp
    from crobust.attacks import apgd, apgd_t
    W = jax.random.normal(jax.random.key(0), (64, 10))
    logits_fn = lambda x: x.reshape(x.shape[0], -1) @ W
    x = jax.random.uniform(jax.random.key(1), (8, 8, 8, 1)); y = jnp.arange(8) % 10
    key = jax.random.key(2)
    x_adv = apgd(logits_fn, x, y, key, eps=8/255, norm="linf", loss="ce", n_iter=100)   # APGD-CE
    x_adv = apgd_t(logits_fn, x, y, key, eps=8/255, norm="linf", n_iter=100)            # APGD-T, 9 targets
    # the explicit form of the closure above (which is lifted to it): compiled once, new weights always used
    f = jax.tree_util.Partial(lambda w, x: x.reshape(x.shape[0], -1) @ w, W)
    x_adv = apgd(f, x, y, key, eps=8/255)

One run of N_iter iterations follows ``autopgd_base.py`` (``attack_single_run``) line by line:

- start x⁰ = clip(x + ε·u/‖u‖∞), u ~ U(−1, 1)^d (ℓ∞: on the surface of the box), or x + ε·g/‖g‖₂, g ~ N(0, I)
  (ℓ2: on the sphere); step η⁰ = 2ε per example;
- z = Π(xᵏ + ηᵏ·d(∇ₓ L(xᵏ))),  xᵏ⁺¹ = Π(xᵏ + α(z − xᵏ) + (1 − α)(xᵏ − xᵏ⁻¹)),  α = 1 at k = 0, else 0.75;
  d = sign (ℓ∞) or g/(‖g‖₂ + 1e-12) (ℓ2); Π clips to B_∞(x, ε) ∩ [0,1]^d, or for ℓ2 rescales δ to
  δ/(‖δ‖₂ + 1e-12)·min(ε, ‖δ‖₂) then clips to [0, 1];
- the best loss L_max, its point x_max and gradient are tracked (strict improvement); the last misclassified
  iterate is kept as the adversarial example;
- checkpoints: the first after p₁ = max(⌊0.22·N_iter⌋, 1) iterations, then every pⱼ iterations with
  pⱼ₊₁ = max(pⱼ − max(⌊0.03·N_iter⌋, 1), max(⌊0.06·N_iter⌋, 1)). At a checkpoint the step is halved and the
  iterate (and its gradient) restarts from x_max where either the loss increased in at most ρ·pⱼ of the last pⱼ
  steps (ρ = 0.75; the first window compares the first loss with 0, as the reference's zero-initialised history
  does) or the step was not reduced at the previous checkpoint and L_max did not improve since then.

The schedule is static, so the loop is the first iteration (α = 1, peeled off so that every later step uses the
constant α = 0.75), a ``lax.scan`` over checkpoints whose body is a ``lax.fori_loop`` of plain steps followed by the
(masked, per-example) checkpoint update, then a ``fori_loop`` for the steps after the last checkpoint; no
Python-level iteration. (Under :func:`crobust.attacks._stepping.host_stepped`, as the evaluation runs convolutional
models on XLA:CPU, the same loops are driven from the host, one compiled call per iteration and per checkpoint.) The previous iterate is carried (the reference's ``x_adv_old``), so the momentum term is
the reference's ``x_adv − x_adv_old`` computed inside the one fused step, and a checkpoint only resets the
iterate and its gradient, as the reference does.

Restarts and targets: AutoAttack runs restarts (and APGD-T's targets) one after another on the points not yet
broken. Here all R runs execute at once under ``vmap`` over run keys; for each example the first run (in order)
that misclassifies supplies the result, which is exactly what the sequential cascade returns (a point already
broken ignores later runs). APGD-T's targets are the classes ranked 2, 3, …, n_target_classes + 1 by the clean
logits, and run j uses target j with the loss −(z_y − z_t)/(z_π1 − ½(z_π3 + z_π4) + 1e-12).

Returned point (a choice the spec leaves open): points misclassified at x itself (argmax f(x) ≠ y) are returned
unchanged, as AutoAttack does; an example that some run misclassifies gets that run's last misclassified iterate;
an example no run breaks gets the highest-loss point of the run with the highest best loss (AutoAttack returns
x there; returning the strongest point keeps robust accuracy identical and is more useful for measuring how far
representations move).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from crobust._errors import CrobustError, check_choice
from crobust.attacks import losses as _losses
from crobust.attacks import projections as P
from crobust.attacks import _stepping
from crobust.attacks._common import predicts, public_attack, select_runs, value_and_input_grad
from crobust.attacks._validate import check_call, check_positive_int, prepare

_AA_TINY = 1e-12


def schedule(n_iter: int) -> tuple[int, int, int]:
    """AutoAttack's checkpoint constants (first interval p₁, minimum interval, decrement) for ``n_iter``."""
    return max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)


def checkpoints(n_iter: int) -> list[int]:
    """The iterations (0-based) at which the step size may be halved, for inspection and tests."""
    first, minimum, decrement = schedule(n_iter)
    out, k, counter = [], first, 0
    for i in range(n_iter):
        counter += 1
        if counter == k:
            out.append(i)
            counter, k = 0, max(k - decrement, minimum)
    return out


def _expand(v, x):
    return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def _aa_normalize(v):
    """v/(‖v‖₂ + 1e-12) per example (as one multiply by a per-example factor), and ‖v‖₂."""
    norms = P.lp_norm(v, "l2")
    return v * _expand(1.0 / (norms + _AA_TINY), v), norms


def _aa_project(x_new, x, eps, norm, clip):
    """AutoAttack's projection (ℓ2: δ/(‖δ‖+1e-12)·min(ε, ‖δ‖), then clip).

    The ℓ2 rescaling is computed as δ·[min(ε, ‖δ‖)/(‖δ‖ + 1e-12)] (one per-example factor), which differs from
    the reference's order of operations only by float rounding and is cheaper on CPU.
    """
    if norm == "linf":
        out = jnp.minimum(jnp.maximum(x_new, x - eps), x + eps)
    else:
        delta = x_new - x
        norms = P.lp_norm(delta, "l2")
        out = x + delta * _expand(jnp.minimum(eps, norms) / (norms + _AA_TINY), x)
    return jnp.clip(out, 0.0, 1.0) if clip else out


def _init_point(key, x, eps, norm, clip):
    if norm == "linf":
        t = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
        unit = t / _expand(P.lp_norm(t, "linf") + _AA_TINY, t)
    else:
        unit, _ = _aa_normalize(jax.random.normal(key, x.shape, x.dtype))
    out = x + eps * unit
    return jnp.clip(out, 0.0, 1.0) if clip else out


def apgd_single_run(logits_fn, loss_fn, x, y, key, eps, norm: str, n_iter: int, rho: float = 0.75,
                    clip: bool = True, x_init=None):
    """One APGD run (AutoAttack's ``attack_single_run``), no input checks.

    Args:
      loss_fn: logits (N, C) → loss (N,) to maximise (labels / targets already bound).
      y: labels (N,) that define success (argmax ≠ y).
      x_init: a start point (N, ...) replacing the random one (for tests against a reference; ``key`` unused).

    Returns:
      (x_best (N, ...) highest-loss point, robust (N,) bool — no iterate was misclassified, loss_best (N,),
      x_best_adv (N, ...) last misclassified iterate, or the start point if none).
    """
    first, minimum, decrement = schedule(n_iter)
    image_shape = x.shape
    x = x.reshape(image_shape[0], -1)  # work on (N, d): cheaper per-example broadcasting on CPU
    evaluate = value_and_input_grad(lambda q: logits_fn(q.reshape(image_shape)), loss_fn)
    n = x.shape[0]

    x_adv = _init_point(key, x, eps, norm, clip) if x_init is None else x_init.reshape(x.shape)
    loss, logits, grad = _stepping.call(evaluate, x_adv)
    state = dict(
        x_adv=x_adv, x_prev=x_adv, grad=grad,
        step=jnp.full((n,), 2.0, x.dtype) * eps, x_best=x_adv, grad_best=grad, loss_best=loss, x_best_adv=x_adv,
        robust=predicts(logits, y), loss_prev=jnp.zeros((n,), x.dtype), n_increase=jnp.zeros((n,), jnp.int32),
        loss_best_last_check=loss, reduced_last_check=jnp.ones((n,), bool),
    )

    if norm == "linf":
        # clip(clip(v, x − ε, x + ε), 0, 1) == clip(v, max(x − ε, 0), min(x + ε, 1)) exactly (x ∈ [0, 1]), so the
        # box is computed once: one clip per projection instead of four passes (measurably faster on CPU)
        lo, hi = (jnp.maximum(x - eps, 0.0), jnp.minimum(x + eps, 1.0)) if clip else (x - eps, x + eps)
        project = lambda v: jnp.clip(v, lo, hi)
    else:
        project = lambda v: _aa_project(v, x, eps, norm, clip)

    def one_step(s, a):
        """One iteration with momentum weight ``a`` (a Python float: 1 for the first iteration, else 0.75)."""
        x_adv = s["x_adv"]
        step = _expand(s["step"], x)
        if norm == "linf":
            z = project(x_adv + step * jnp.sign(s["grad"]))
        else:
            z = project(x_adv + step * _aa_normalize(s["grad"])[0])
        # the reference's grad2 = x_adv − x_adv_old: the previous iterate is carried, not the difference, so a
        # checkpoint only resets x_adv (as the reference does) and the step is one fused pass
        x_new = project(x_adv + (z - x_adv) * a + (x_adv - s["x_prev"]) * (1.0 - a))
        loss, logits, grad = evaluate(x_new)
        correct = predicts(logits, y)
        improved = loss > s["loss_best"]
        return dict(
            s, x_adv=x_new, x_prev=x_adv, grad=grad,
            x_best=jnp.where(_expand(improved, x), x_new, s["x_best"]),
            grad_best=jnp.where(_expand(improved, x), grad, s["grad_best"]),
            loss_best=jnp.where(improved, loss, s["loss_best"]),
            x_best_adv=jnp.where(_expand(~correct, x), x_new, s["x_best_adv"]), robust=s["robust"] & correct,
            loss_prev=loss, n_increase=s["n_increase"] + (loss > s["loss_prev"]).astype(jnp.int32),
        )

    def checkpoint(s, window):
        oscillating = s["n_increase"].astype(x.dtype) <= window.astype(x.dtype) * rho
        no_improvement = ~s["reduced_last_check"] & (s["loss_best_last_check"] >= s["loss_best"])
        reduce = oscillating | no_improvement
        back = _expand(reduce, x)
        return dict(
            s, x_adv=jnp.where(back, s["x_best"], s["x_adv"]), grad=jnp.where(back, s["grad_best"], s["grad"]),
            step=jnp.where(reduce, s["step"] / 2.0, s["step"]), n_increase=jnp.zeros_like(s["n_increase"]),
            loss_best_last_check=s["loss_best"], reduced_last_check=reduce,
        )

    def steps(s, count):
        return _stepping.fori_loop(0, count, lambda _, t: one_step(t, 0.75), s)

    def segment(s, count_and_window):
        count, window = count_and_window
        return _stepping.call(checkpoint, steps(s, count), window), None

    # The checkpoint schedule is static: iteration 0 (α = 1) is peeled off; segment j runs `counts[j]` plain steps
    # (`windows[j]`, less iteration 0 in the first) then checkpoint j; then the steps after the last checkpoint.
    marks = checkpoints(n_iter)
    windows = np.diff([-1] + marks)
    counts = windows.copy()
    counts[0] -= 1
    s = _stepping.call(lambda t: one_step(t, 1.0), state)
    if counts[0] == 0:
        s = _stepping.call(checkpoint, s, jnp.int32(windows[0]))
        counts, windows = counts[1:], windows[1:]
    if len(counts):
        s, _ = _stepping.scan(segment, s, (jnp.asarray(counts, jnp.int32), jnp.asarray(windows, jnp.int32)))
    s = steps(s, n_iter - 1 - marks[-1])
    return s["x_best"].reshape(image_shape), s["robust"], s["loss_best"], s["x_best_adv"].reshape(image_shape)


def chunk_size_for(n: int, chunk_size="auto") -> int | None:
    """Examples per chunk: ``'auto'`` → chunks of at most 300 on CPU (no chunking on accelerators); an int; None.

    On CPU an attack step on a few hundred examples keeps its working set in cache (``benchmarks/bench_attacks.py``
    compares the layouts); fewer, still cache-sized chunks are better than many small ones. The chunks split N
    evenly (⌈N/⌈N/300⌉⌉).
    """
    if chunk_size == "auto":
        if jax.default_backend() != "cpu" or n <= 300:
            return None
        return -(-n // -(-n // 300))
    if chunk_size is None:
        return None
    return check_positive_int(chunk_size, "chunk_size")


def map_in_chunks(fn, chunk, *arrays):
    """fn over consecutive chunks of the leading (example) axis with ``lax.map``; outputs re-joined on axis 0.

    Every output of ``fn`` must have the example axis first. The last chunk is padded with copies of example 0
    (dropped afterwards). ``chunk=None`` (or ≥ N) calls ``fn`` once on everything. Valid because the attacks act
    on each example independently (a per-example loss, per-example step sizes and checkpoints).
    """
    n = arrays[0].shape[0]
    if chunk is None or chunk >= n:
        return fn(*arrays)
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n

    def split(a):
        if pad:
            a = jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)])
        return a.reshape((n_chunks, chunk) + a.shape[1:])

    out = _stepping.map(lambda chunk_args: fn(*chunk_args), tuple(split(a) for a in arrays))
    return jax.tree.map(lambda o: o.reshape((n_chunks * chunk,) + o.shape[2:])[:n], out)


def _runs(logits_fn, loss_of, x, y, eps, norm, n_iter, rho, clip, starts, extra, chunk):
    """All runs (leading axis R of ``starts`` (R, N, ...) and ``extra`` (R, N)), chunked over examples.

    ``loss_of(extra_r, y)`` builds run r's loss (e.g. its targets). Returns (x_best, robust, loss_best,
    x_best_adv) with the run axis first.
    """
    def on_chunk(xc, yc, starts_c, extra_c):          # starts_c (n, R, ...), extra_c (n, R)
        def one_run(start, ex):
            return apgd_single_run(logits_fn, loss_of(ex, yc), xc, yc, None, eps, norm, n_iter, rho, clip,
                                   x_init=start)
        res = _stepping.vmap(one_run, in_axes=(1, 1))(starts_c, extra_c)              # (R, n, ...)
        return tuple(jnp.moveaxis(r, 0, 1) for r in res)                              # (n, R, ...)

    res = map_in_chunks(on_chunk, chunk, x, y, jnp.moveaxis(starts, 0, 1), jnp.moveaxis(extra, 0, 1))
    return tuple(jnp.moveaxis(r, 1, 0) for r in res)


def _combine(x, clean_correct, x_best, robust, loss_best, x_best_adv):
    """Merge R runs (leading axis) per example: first success, else the highest-loss point; see module doc."""
    success = ~robust                                                     # (R, N)
    any_success = jnp.any(success, axis=0)
    x_success = select_runs(x_best_adv, jnp.argmax(success, axis=0))
    x_strongest = select_runs(x_best, jnp.argmax(loss_best, axis=0))
    out = jnp.where(_expand(any_success, x), x_success, x_strongest)
    return jnp.where(_expand(clean_correct, x), out, x)


def _apgd(logits_fn, x, y, key, *, eps, norm: str = "linf", loss: str = "ce", n_iter: int = 100,
         n_restarts: int = 1, rho: float = 0.75, labels: str = "true", clip: bool = True, chunk_size="auto"):
    """APGD with an untargeted loss (AutoAttack's ``APGDAttack.perturb``); see the module docstring.

    Args:
      logits_fn: images (N, ...) in [0, 1] → logits (N, C). Call form for speed and correctness:
        ``apgd(jax.tree_util.Partial(model.apply, params), x, y, key, eps=...)`` — the parameters are traced
        leaves, so a second call with the same ``model.apply`` and shapes reuses the compiled program and new
        weights are always used; a plain closure over arrays is lifted into such a Partial (package docstring,
        "Captures"); any other callable is compiled for that call only (inside ``jit``/``vmap`` the attack is
        traced into the caller's program).
      x: clean images (N, ...) in [0, 1].
      y: integer labels (N,); may be ``None`` with ``labels='predicted'``.
      key: PRNG key; restart r starts from ``split(key, n_restarts)[r]``.
      eps: radius ε ≥ 0 (pixel units; scalar, may be traced).
      norm: ``'linf'`` or ``'l2'``.
      loss: ``'ce'`` (APGD-CE), ``'dlr'`` (APGD-DLR, C ≥ 3) or ``'margin'``.
      n_iter: iterations per run (AutoAttack: 100).
      n_restarts: runs (AutoAttack standard: 1), executed in parallel.
      rho: the checkpoint's fraction threshold ρ (0.75).
      labels: ``'true'`` or ``'predicted'``.
      clip: clip to [0, 1] (``False``: unclipped, as the reference code's ART attacks).
      chunk_size: examples per sequential chunk (``lax.map``): ``'auto'`` (≤ 300 on CPU, none on accelerators),
        an int, or None. Only speed changes (``logits_fn`` must accept any batch size and act per example).

    Returns:
      x_adv (N, ...) with ‖x_adv − x‖ ≤ ε.
    """
    x, y, eps, norm, _ = prepare(logits_fn, x, y, eps, norm, labels)
    loss_fn = _losses.get(loss)
    n_iter = check_positive_int(n_iter, "n_iter")
    n_restarts = check_positive_int(n_restarts, "n_restarts")
    chunk = chunk_size_for(x.shape[0], chunk_size)
    clean_correct = _stepping.call(lambda xs: predicts(logits_fn(xs), y), x)
    # start points drawn for the whole batch, so results do not depend on the chunking
    starts = jax.vmap(lambda k: _init_point(k, x, eps, norm, clip))(jax.random.split(key, n_restarts))
    unused = jnp.zeros((n_restarts, x.shape[0]), jnp.int32)
    results = _runs(logits_fn, lambda _, yc: (lambda z: loss_fn(z, yc)), x, y, eps, norm, n_iter, rho, clip,
                    starts, unused, chunk)
    return _combine(x, clean_correct, *results)


def _apgd_t(logits_fn, x, y, key, *, eps, norm: str = "linf", n_iter: int = 100, n_target_classes: int = 9,
           n_restarts: int = 1, rho: float = 0.75, loss: str = "dlr-targeted", labels: str = "true",
           clip: bool = True, chunk_size="auto"):
    """APGD-T: APGD on the targeted DLR loss towards each of the top ``n_target_classes`` other classes.

    Targets are ranked by the clean logits f(x): run j (j = 1 … n_target_classes) targets the class with the
    (j+1)-th largest clean logit, as AutoAttack's ``APGDAttack_targeted`` does; each target gets ``n_restarts``
    runs (AutoAttack standard: 1) with keys ``split(key, n_target_classes·n_restarts)``. All runs execute at once.

    Args are as :func:`apgd` (call form ``apgd_t(jax.tree_util.Partial(apply_fn, params), x, y, key, eps=...)``,
    ``chunk_size`` included), plus ``n_target_classes`` (AutoAttack: 9; min(n_target_classes, C − 1) targets are
    used, so a 3-class or binary model gets 2 or 1) and ``loss`` (``'dlr-targeted'``, needs C ≥ 4, or
    ``'ce-targeted'``, the log-probability of the target, any C ≥ 2).
    """
    x, y, eps, norm, num_classes = prepare(logits_fn, x, y, eps, norm, labels)
    check_choice("loss", loss, tuple(_losses.TARGETED))
    loss_fn = _losses.TARGETED[loss]
    n_iter = check_positive_int(n_iter, "n_iter")
    n_restarts = check_positive_int(n_restarts, "n_restarts")
    n_target_classes = check_positive_int(n_target_classes, "n_target_classes")
    n_target_classes = min(n_target_classes, num_classes - 1)
    if n_target_classes < 1:
        raise CrobustError(f"apgd_t needs at least 2 classes, the logits have C={num_classes}")
    if loss == "dlr-targeted" and num_classes < 4:
        raise CrobustError(f"loss 'dlr-targeted' needs at least 4 classes, the logits have C={num_classes}")
    clean_logits = _stepping.call(logits_fn, x)
    clean_correct = predicts(clean_logits, y)
    ranked = jax.lax.top_k(clean_logits, n_target_classes + 1)[1][:, 1:]         # (N, T)
    targets = jnp.repeat(ranked.T, n_restarts, axis=0)                           # (T·R, N), target-major order
    chunk = chunk_size_for(x.shape[0], chunk_size)
    keys = jax.random.split(key, n_target_classes * n_restarts)
    starts = jax.vmap(lambda k: _init_point(k, x, eps, norm, clip))(keys)
    results = _runs(logits_fn, lambda target, yc: (lambda z: loss_fn(z, yc, target)), x, y, eps, norm, n_iter,
                    rho, clip, starts, targets, chunk)
    return _combine(x, clean_correct, *results)


apgd = public_attack(_apgd, check_call)
apgd_t = public_attack(_apgd_t, check_call)
