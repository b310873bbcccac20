"""crobust.precision: the policy is applied where it says. A CPU computes float32 products whatever the precision
setting, so comparing values on CPU could not catch a missing wrapper; instead every metric is *lowered* under a TF32
and a bfloat16 default context and each matrix product in its StableHLO must ask for HIGHEST (full float32 on GPU and
TPU). The training precision maps to the documented contexts, and the accelerator route of the metrics' singular
values (batched eigvalsh of Gram matrices with its SVD fallback) is checked against a float64 SVD on CPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust import metrics as M
from crobust import precision as P
from crobust import regularizers as R
from crobust._errors import CrobustError
from crobust.metrics import spectral

_rng = np.random.default_rng(0)
W1 = jnp.asarray(_rng.standard_normal((2, 12, 8)), jnp.float32)     # (members, out, in)
W2 = jnp.asarray(_rng.standard_normal((2, 10, 12)), jnp.float32)
HEAD = jnp.asarray(_rng.standard_normal((2, 3, 10)), jnp.float32)
A = jnp.asarray(_rng.standard_normal((5, 8)), jnp.float32)

METRICS = {
    "singular_values_svd": lambda: M.singular_values(W1, method="svd"),
    "singular_values_gram": lambda: M.singular_values(W1, method="gram"),
    "spectral_summary": lambda: M.spectral_summary(W1),
    "theorem31_check": lambda: M.theorem31_check(W1, kappa=0.25),
    "alignment_term_spectral": lambda: M.alignment_term(W1[0], W2[0], 2, form="spectral", p=2),
    "alignment_term_neuron": lambda: M.alignment_term(W1[0], W2[0], 2, form="neuron", p="inf"),
    "encoder_lipschitz": lambda: M.encoder_lipschitz([W1[0], W2[0]], "inf", kappa=0.25),
    "top_k_substructure": lambda: M.top_k_substructure(W1[0], 2, form="spectral"),
    "singular_direction_alignment": lambda: M.singular_direction_alignment(W1[0], A, 2),
    "matrix_report": lambda: M.matrix_report({"hidden_0": W1, "hidden_1": W2, "head": HEAD}, kappa=0.25,
                                             spectral_alignment=True, input_scale=1.0),
}


@pytest.mark.parametrize("default", ["tensorfloat32", "bfloat16"])
@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_product_of_a_metric_is_full_float32_under_a_lower_default(name, default):
    with jax.default_matmul_precision(default):
        precisions = P.dot_precisions(lambda: [x for x in jax.tree.leaves(METRICS[name]()) if hasattr(x, "dtype")])
    # SVD-only metrics on CPU and the Theorem 3.1 check (row statistics, σ by SVD there) emit no product
    if name not in ("singular_values_svd", "spectral_summary", "theorem31_check"):
        assert precisions, f"{name}: no matrix product found (the check would be vacuous)"
    assert all(p == ("HIGHEST", "HIGHEST") for p in precisions), (name, precisions)


def test_dot_precisions_sees_a_product_left_at_the_default():
    """The detector itself: a plain product under a TF32 context is reported as not full precision."""
    with jax.default_matmul_precision("tensorfloat32"):
        assert P.dot_precisions(lambda a: a @ a.T, A) == [("HIGH", "HIGH")]
        with P.full():
            assert P.dot_precisions(lambda a: a @ a.T, A) == [("HIGHEST", "HIGHEST")]
        assert P.dot_precisions(P.full_precision(lambda a: a @ a.T), A) == [("HIGHEST", "HIGHEST")]


def test_training_precision_contexts_and_the_nuclear_value():
    """The nuclear-norm penalty (value and the polar iteration for its subgradient) is traced fully at HIGHEST under
    every training precision: its guard holds only when the iterate keeps W's singular vectors to float32 round-off
    (crobust/_polar.py). A bad name is one clear error."""
    f = lambda w: jax.grad(lambda a: jnp.sum(R.nuclear_norm(a, "polar")))(w)
    for name in ("float32", "tf32", "bf16"):
        with P.training(name):
            assert set(P.dot_precisions(f, W1)) == {("HIGHEST", "HIGHEST")}, name
    with pytest.raises(CrobustError, match="matmul_precision"):
        P.training("fp16")


@pytest.mark.parametrize("fallback", [True, False])
def test_accelerator_gram_route_against_float64_svd(fallback):
    """The GPU/TPU route (batched eigvalsh of G = W Wᵀ, run here on CPU): σ of random layers to the Gram route's
    accuracy (√(GRAM_ETA·ε)·σ1 absolute on the smallest σ; 1e-5·σ1 on these), and on a rank-3 layer — whose
    zero σ the Gram route cannot resolve below ~3e-4·σ1 — the guard sends that matrix (only) to the SVD."""
    rng = np.random.default_rng(4)
    dense = rng.standard_normal((3, 20, 30)).astype(np.float32)
    low = (rng.standard_normal((20, 3)) @ rng.standard_normal((3, 30))).astype(np.float32)
    flat = np.concatenate([dense, low[None]], axis=0)
    sig, used = jax.jit(lambda w: spectral._sv_gram_eigh_batched(w, fallback))(flat)
    ref = np.linalg.svd(flat.astype(np.float64), compute_uv=False)
    s1 = ref[:, :1]
    np.testing.assert_allclose(np.asarray(sig)[:3], ref[:3], atol=1e-5 * s1[:3].max())
    if fallback:
        assert np.asarray(used).tolist() == [False, False, False, True]
        np.testing.assert_allclose(np.asarray(sig)[3], ref[3], atol=2e-6 * s1[3, 0])
    else:
        assert not np.asarray(used).any()
        assert np.abs(np.asarray(sig)[3, 3:]).max() > 1e-5 * s1[3, 0]      # unresolved zero σ: why the guard exists


def test_training_step_follows_the_config_precision():
    """TrainConfig.matmul_precision is applied around the traced block: with the default ('float32') every product
    of the step is HIGHEST even under a bfloat16 default context; with 'tf32' the model's products are TF32
    ('HIGH') while the nuclear-norm penalty's products stay HIGHEST. A bad name is one clear error."""
    from crobust import training
    from crobust.data import load_dataset
    from crobust.models import MLP

    data = load_dataset("digits")
    model = MLP(10, width=8, depth=2, mean=data.mean, std=data.std)
    members = training.grid(alpha=[0.01], seeds=[0])
    lowered = {}
    for name in ("float32", "tf32"):
        cfg = training.TrainConfig(batch_size=16, max_steps=2, eval_every=1, patience=None, val_ratio=0.1,
                                   regularizer="nuclear", matmul_precision=name)
        state = training.init_population(model, data, cfg, members)
        args = (state, training.member_hparams(members, cfg), jnp.asarray(data.train_images),
                jnp.asarray(data.train_labels))
        with jax.default_matmul_precision("bfloat16"):
            lowered[name] = set(P.dot_precisions(training.make_block_fn(model, cfg), *args))
    assert lowered["float32"] == {("HIGHEST", "HIGHEST")}
    assert ("HIGH", "HIGH") in lowered["tf32"] and ("HIGHEST", "HIGHEST") in lowered["tf32"]
    with pytest.raises(CrobustError, match="matmul_precision"):
        training.TrainConfig(matmul_precision="fp8").validate(100)
