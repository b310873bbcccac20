"""Square attack's building blocks against literal ports of AutoAttack's square.py, and the universal
perturbation against the linear classifier's exact answer."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crobust.attacks as A
from crobust.attacks.square import eta_pattern, p_selection, window_side


def _eta_rectangles_reference(x, y):
    """AutoAttack's ``SquareAttack.eta_rectangles`` with its loops, in NumPy."""
    delta = np.zeros([x, y])
    x_c, y_c = x // 2 + 1, y // 2 + 1
    counter2 = [x_c - 1, y_c - 1]
    for counter in range(0, max(x_c, y_c)):
        delta[max(counter2[0], 0):min(counter2[0] + (2 * counter + 1), x),
              max(0, counter2[1]):min(counter2[1] + (2 * counter + 1), y)] += 1.0 / (counter + 1) ** 2
        counter2[0] -= 1
        counter2[1] -= 1
    with np.errstate(invalid="ignore"):
        delta /= np.sqrt((delta ** 2).sum())
    return delta


def _eta_reference(s, transpose):
    delta = np.zeros([s, s])
    delta[:s // 2] = _eta_rectangles_reference(s // 2, s)
    delta[s // 2:] = -1.0 * _eta_rectangles_reference(s - s // 2, s)
    delta /= np.sqrt((delta ** 2).sum())
    return delta.T if transpose else delta


@pytest.mark.parametrize("s", [1, 2, 3, 4, 5, 7, 8])
def test_eta_pattern_matches_the_reference_loops(s):
    """float64 on the host rounded once to float32: within 1e-6 of the reference's float64 (entries ≤ 1)."""
    h = w = 10
    for vh, vw, transpose in [(0, 0, False), (2, 1, True), (h - s, w - s, False), (1, h - s, True), (h - 1, 0, False)]:
        got = eta_pattern(h, w, s, vh, vw, transpose)
        expected = np.zeros((h + s, w + s))
        expected[vh:vh + s, vw:vw + s] = _eta_reference(s, transpose)
        np.testing.assert_allclose(got, expected[:h, :w], atol=1e-6)


@pytest.mark.parametrize("shape,p_init", [((32, 32), 0.8), ((28, 28), 0.3), ((10, 12), 0.8)])
def test_the_attacks_pattern_table_is_the_reference_pattern_at_every_window_side_of_the_schedule(shape, p_init):
    """The ℓ2 query reads its side and pattern from host tables indexed by the schedule position b; each entry
    must be AutoAttack's side for p_init/2^b and its eta (plain and transposed)."""
    from crobust.attacks.square import _eta_table, window_sides
    h, w = shape
    sides = window_sides(h, w, "l2", p_init)
    table = _eta_table(h, w, sides)
    assert table.shape == (10, 2, h, w)
    for b, s in enumerate(sides):
        want = max(int(round(np.sqrt(p_init / 2 ** b * h * w))), 3)
        assert s == min(want + (want % 2 == 0), h, w)
        for t in (False, True):
            expected = np.zeros((h, w))
            expected[:s, :s] = _eta_reference(int(s), t)
            np.testing.assert_allclose(table[b, int(t)], expected, atol=1e-6)


def test_p_schedule_and_window_sides_match_the_reference():
    def reference_p(it, n_queries, p_init, rescale):
        if rescale:
            it = int(it / n_queries * 10000)
        for lo, hi, div in [(10, 50, 2), (50, 200, 4), (200, 500, 8), (500, 1000, 16), (1000, 2000, 32),
                            (2000, 4000, 64), (4000, 6000, 128), (6000, 8000, 256)]:
            if lo < it <= hi:
                return p_init / div
        return p_init / 512 if it > 8000 else p_init

    its = np.array([0, 1, 10, 11, 50, 51, 199, 200, 201, 500, 999, 1000, 1001, 2500, 4000, 4001, 6001, 8000, 8001,
                    9999])
    for rescale, n_queries in [(False, 10000), (True, 1000)]:
        got = np.asarray(jax.vmap(lambda i: p_selection(i, n_queries, 0.8, rescale))(jnp.asarray(its)))
        np.testing.assert_allclose(got, [reference_p(int(i), n_queries, 0.8, rescale) for i in its], rtol=1e-6)
    for p in [0.8, 0.4, 0.05, 0.025, 0.0125, 0.8 / 512]:
        n = 32 * 32
        linf = max(int(round(np.sqrt(p * n))), 1)
        l2 = max(int(round(np.sqrt(p * n))), 3)
        l2 += 1 if l2 % 2 == 0 else 0
        assert window_side(p, 32, 32, "linf") == linf
        assert window_side(p, 32, 32, "l2") == l2


def test_square_stays_feasible_on_colour_images_and_needs_no_gradient():
    """Square only queries the model: it works through a model whose gradient is blocked, on (N, 16, 16, 3)
    (ℓ2, whose per-channel window renormalisation is the intricate part; ℓ∞ is checked on 8×8×1 exactly)."""
    norm, eps = "l2", 0.5
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0, 1, (20, 16, 16, 3)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(16 * 16 * 3, 5)).astype(np.float32))
    f = lambda q: jax.lax.stop_gradient(q).reshape(q.shape[0], -1) @ w
    y = jnp.argmax(f(x), -1)
    x_adv = jax.jit(lambda: A.square(f, x, y, jax.random.key(0), eps=eps, norm=norm, n_queries=300))()
    delta = np.asarray(x_adv - x).reshape(20, -1)
    size = np.abs(delta).max(1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert size.max() <= eps + 1e-5 and float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert float(jnp.mean(jnp.argmax(f(x_adv), -1) == y)) < 0.9      # it breaks points without gradients
    assert float(jnp.mean(jnp.argmax(f(A.fgsm(f, x, y, eps=eps)), -1) == y)) == 1.0   # FGSM sees zero gradient


# ------------------------------------------------------------------------------------------- universal

def _binary_linear(seed, n):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(64, 2)).astype(np.float32)
    x = rng.uniform(0.3, 0.7, size=(n, 64)).astype(np.float32)
    wj = jnp.asarray(w)
    f = lambda q: q.reshape(q.shape[0], -1) @ wj
    return f, w.astype(np.float64), x


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_universal_perturbation_on_a_linear_classifier_is_the_analytic_one(norm):
    """All points of one class c: every CE gradient is a positive multiple of u = w_other − w_c, so the universal δ
    must converge to ε·sign(u) (ℓ∞) or ε·u/‖u‖₂ (ℓ2), and accuracy under it is the fraction of points whose
    margin exceeds ε‖u‖₁ (ℓ∞) or ε‖u‖₂ (ℓ2) — points in [0.3, 0.7] and ε ≤ 0.2 keep the box out of play."""
    f, w, x = _binary_linear(0, 256)
    pred = (x @ w).argmax(1)
    c = int(np.bincount(pred, minlength=2).argmax())
    u = w[:, 1 - c] - w[:, c]
    x = x[pred == c]
    margin = -(x @ u)
    assert len(x) > 100 and margin.min() > 0
    y = np.full(len(x), c, np.int32)
    dual = np.abs(u).sum() if norm == "linf" else np.linalg.norm(u)
    eps = float(np.median(margin) / dual)
    if norm == "l2":
        eps = min(eps, 0.2)
    xi = jnp.asarray(x.reshape(-1, 8, 8, 1))
    delta = jax.jit(lambda k: A.universal_perturbation(f, xi, y, k, eps=eps, norm=norm, n_passes=3,
                                                        batch_size=48))(jax.random.key(0))
    expected = eps * (np.sign(u) if norm == "linf" else u / np.linalg.norm(u))
    np.testing.assert_allclose(np.asarray(delta).reshape(-1), expected, atol=1e-5)
    decided = np.abs(margin - eps * dual) > 1e-3
    acc = float(A.universal_accuracy(f, xi[decided], y[decided], delta))
    assert acc == pytest.approx(np.mean(margin[decided] > eps * dual), abs=1e-6)


def test_universal_perturbation_hurts_more_than_random_noise_on_an_mlp():
    from crobust.models import MLP

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0, 1, (512, 8, 8, 1)).astype(np.float32))
    model = MLP(num_classes=4, width=32, depth=2)
    params = model.init(jax.random.key(0), x[:1])
    f = functools.partial(model.apply, params)
    y = jnp.argmax(f(x), -1)                            # clean accuracy 1 by construction
    eps = 0.1

    @jax.jit
    def run():
        delta = A.universal_perturbation(f, x, y, jax.random.key(1), eps=eps, norm="linf", n_passes=2)
        noise = eps * jnp.sign(jax.random.normal(jax.random.key(2), (8, 8, 1)))
        return delta, A.universal_accuracy(f, x, y, delta), A.universal_accuracy(f, x, y, noise)

    delta, uap_acc, noise_acc = run()
    assert float(jnp.max(jnp.abs(delta))) <= eps + 1e-7 and delta.shape == (8, 8, 1)
    assert float(uap_acc) < float(noise_acc) - 0.1
    assert float(uap_acc) < 0.8


def _l2_candidate_reference(x, x_best, eps, s, vh, vw, vh2, vw2, eta, sign):
    """AutoAttack's ℓ2 Square update for one example (H, W, C), written out in numpy from square.py: window norms
    per channel (sums over H and W only), the new window mass sqrt(max(ε² − ‖δ‖², 0)/C + ‖δ_c on both windows‖²)
    per channel c, then the whole δ rescaled to ε."""
    delta = (x_best - x).astype(np.float64)
    c = x.shape[-1]
    mask1 = np.zeros_like(delta)
    mask1[vh:vh + s, vw:vw + s] = 1
    mask2 = np.zeros_like(delta)
    mask2[vh2:vh2 + s, vw2:vw2 + s] = 1
    norm_image = np.sqrt((delta ** 2).sum())
    win1 = np.sqrt((delta[vh:vh + s, vw:vw + s] ** 2).sum(axis=(0, 1), keepdims=True))             # (1, 1, C)
    wins = np.sqrt(((delta * np.maximum(mask1, mask2)) ** 2).sum(axis=(0, 1), keepdims=True))      # (1, 1, C)
    new = eta[:, :, None] * sign + delta[vh:vh + s, vw:vw + s] / (1e-12 + win1)
    new = new / (1e-12 + np.sqrt((new ** 2).sum(axis=(0, 1), keepdims=True))) * np.sqrt(
        np.maximum(eps ** 2 - norm_image ** 2, 0) / c + wins ** 2)
    delta = delta * (1 - mask2)
    delta[vh:vh + s, vw:vw + s] = new
    return np.clip(x + delta / (np.sqrt((delta ** 2).sum()) + 1e-12) * eps, 0, 1)


def test_square_l2_update_keeps_each_channels_budget_as_autoattack():
    """One ℓ2 query on a colour image against AutoAttack's per-channel formula: the window norms are per channel,
    so a channel with little perturbation mass is not inflated by the others (a δ concentrated in one channel
    tells a per-channel from a pooled norm apart)."""
    from crobust.attacks.square import _l2_candidate, _corner, eta_pattern
    rng = np.random.default_rng(3)
    h = w = 10
    c, s, eps = 3, 5, 1.0
    x = rng.uniform(0.3, 0.7, (h, w, c)).astype(np.float32)
    delta = rng.normal(size=(h, w, c)) * np.array([0.05, 0.01, 0.002])       # very unequal channel masses
    delta = delta / np.linalg.norm(delta) * 0.8
    x_best = (x + delta).astype(np.float32)
    u = np.array([0.2, 0.7, 0.55, 0.1, 0.3], np.float32)
    sign = np.array([1.0, -1.0, 1.0], np.float32)
    etas = jnp.stack([eta_pattern(h, w, s, 0, 0, False), eta_pattern(h, w, s, 0, 0, True)])
    got = np.asarray(_l2_candidate(jnp.asarray(u), jnp.asarray(sign), jnp.asarray(x), jnp.asarray(x_best), eps, s,
                                   True, etas))
    vh, vw, vh2, vw2 = (int(_corner(jnp.float32(v), h, s)) for v in u[:4])
    eta = np.asarray(eta_pattern(h, w, s, 0, 0, False))[:s, :s]
    want = _l2_candidate_reference(x, x_best, eps, s, vh, vw, vh2, vw2, eta.astype(np.float64), sign)
    np.testing.assert_allclose(got, want, atol=2e-6)     # float32 vs float64 of O(1) values
