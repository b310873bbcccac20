"""The per-point radii measure (crobust.study.measures_radii) on a planted MLP population: certified ≤ attack radius
per point and in median for every member, the curve from the radii is robust_accuracy_curve of the kept radii, the
FMN-weaker share is recomputed from the ensemble's flags; no certificate for other models gives NaN columns; the
report section states the invariant."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust._format import format_eps
from crobust.attacks import robust_accuracy_curve
from crobust.data import load_dataset
from crobust.study import blocks, dependencies
from crobust.study import measures as M
from crobust.study import measures_radii as R
from test_attacks_mlp import trained_mlp  # the session-cached trained digits MLP (tests/ is on sys.path)

EVAL = blocks.EvalConfig(n_points=60, eps_linf=(0.0, 0.05, 0.1, 0.2), headline_linf=0.1,
                         eps_l2=(0.0, 0.25, 0.5, 1.0), headline_l2=0.5, attacks=("apgd-ce",), n_iter=10,
                         convergence_iters=(), radii_iters=60)


@functools.lru_cache(maxsize=None)
def _measured():
    """3 members (the trained MLP, weights × (1 + 0.1·noise) per member) on 60 digits: robust accuracy, then radii."""
    model, params, x, y = trained_mlp()
    keys = jax.random.split(jax.random.key(3), 3)
    members = jax.tree.map(lambda p: jnp.stack([p * (1 + 0.1 * jax.random.normal(k, p.shape)) for k in keys]),
                           params)
    ctx = M.Context(EVAL, blocks.MeasureConfig(), load_dataset("digits"), x[:60], y[:60])
    pop = M.TrainedPopulation("mlp", model, [{"seed": s} for s in range(3)], {}, None, members)
    store = R.RadiiStore()
    measures = dependencies.order([R.radii(store), M.robust_accuracy()])      # listed out of order on purpose
    out = {}
    for measure in measures:
        out.update({c.key: np.asarray(v) for c, v in measure(ctx, pop).items()})
    return ctx, out, store


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_certified_radius_stays_below_the_attack_radius_on_every_member(norm):
    ctx, out, store = _measured()
    v = store["mlp"][norm]
    cert, atk, ok = v["certified"], v["attack"], v["correct"]
    assert ok.mean() > 0.8 and np.all(cert[ok] > 0)                  # a trained model: certificates are not all 0
    # per point, up to float32 round-off of a margin over a Lipschitz constant
    assert np.all(cert <= atk * (1 + R.REL_SLACK) + R.ABS_SLACK)
    assert np.all(out[f"radius_violations[norm={norm}]"] == 0)
    assert np.all(out[f"radius_certified[norm={norm}]"] <= out[f"radius_attack[norm={norm}]"])
    ratio = out[f"radius_ratio[norm={norm}]"]
    assert np.all((ratio > 0) & (ratio <= 1 + R.REL_SLACK))
    for m in range(3):
        assert out[f"radius_attack[norm={norm}]"][m] == pytest.approx(np.median(atk[m][ok[m]]))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_the_curve_from_radii_is_robust_accuracy_curve_and_fmn_weaker_reads_the_ensembles_flags(norm):
    ctx, out, store = _measured()
    grid = EVAL.grid(norm)
    atk = store["mlp"][norm]["attack"]
    got = np.stack([out[f"robust_acc_radii[norm={norm},eps={format_eps(e)}]"] for e in grid], axis=1)
    want = np.stack([np.asarray(robust_accuracy_curve(a, grid)) for a in atk])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got[:, 0], out["clean_acc_points"], rtol=1e-6)   # ε = 0: radius > 0 iff correct
    flags = ctx.cache[("mlp", "robust_flags", norm)]                 # (M, E, N)
    weaker = np.any((atk[:, None, :] > np.asarray(grid)[None, :, None]) & ~flags, axis=1).mean(-1)
    np.testing.assert_array_equal(out[f"fmn_weaker[norm={norm}]"], weaker)


def test_no_certificate_gives_nan_columns_and_the_report_states_the_invariant():
    atk = np.array([[0.0, 0.3, np.inf, 0.1]])
    correct = np.array([[False, True, True, True]])
    flags = np.array([[[False, True, True, True], [False, False, True, True]]])     # (M, E, N) at ε 0, 0.2
    s = R.summarise(atk, None, correct, flags, (0.0, 0.2))
    assert np.isnan(s["radius_certified"]).all() and np.isnan(s["radius_ratio"]).all()
    assert s["radius_attack"].tolist() == [0.3]                       # median of 0.3, ∞, 0.1
    assert s["robust_acc_radii"].tolist() == [[0.75, 0.5]]
    assert s["fmn_weaker"].tolist() == [0.25]                         # point 1: radius 0.3 > 0.2, ensemble broke it
    ctx, _, _ = _measured()
    lines = "\n".join(R.report_lines(ctx.log["radii"] + [dict(ctx.log["radii"][0], population="conv",
                                                               certified=False, why_not=R.NO_CERTIFICATE,
                                                               violations=None)]))
    assert "certified radius ≤ true radius ≤ attack radius" in lines
    assert "| conv | linf | no: " + R.NO_CERTIFICATE in lines
