"""benchmarks.bench_spectral.flop_model: its product counts agree with XLA's own cost analysis of the code it
models — the polar penalty (a 2-step schedule, so XLA, which counts a loop's body once, sees every step) and the
gradient of a crobust MLP's loss. XLA also counts elementwise work, which the model leaves out: O(h·n) per step
against O(h²·n) for the products, ~2 % at these sizes, so the bound is 5 %. The programs are compiled for the CPU on
every machine (the count is the program's, not the backend's; a GPU's gemm custom calls are counted otherwise)."""

import jax
import jax.numpy as jnp
import optax

from benchmarks import bench_spectral
from crobust import _polar
from crobust.models import MLP


def _xla_flops(fn, *args) -> float:
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        cost = jax.jit(fn).lower(*jax.device_put(args, cpu)).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def test_the_penalty_count_matches_xla_on_a_two_step_schedule():
    h, n = 96, 192
    assert _polar.schedule_steps(0.99) == 2
    xla = _xla_flops(lambda w: _polar.polar_with_info(w, lower=0.99, max_extra=0)[1], jnp.ones((1, h, n)))
    # the guard's while-loop body (1 step + 1 bound) is in the program once even with max_extra=0
    model = bench_spectral.flop_model(width=h, d=n, steps=2, extra=1)["penalty_flops"]
    assert model <= xla <= 1.05 * model, (model, xla)


def test_the_plain_step_count_matches_xla_on_an_mlp_gradient():
    batch, d, width = 32, 144, 96
    model = MLP(num_classes=10, width=width, depth=2)
    x, y = jnp.ones((batch, 12, 12, 1)), jnp.zeros((batch,), jnp.int32)
    with jax.default_device(jax.devices("cpu")[0]):
        params = model.init(jax.random.PRNGKey(0), x)
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y).mean()
    xla = _xla_flops(jax.grad(loss), params)
    count = bench_spectral.flop_model(batch=batch, d=d, width=width)["plain_step_flops"]
    assert count <= xla <= 1.05 * count, (count, xla)
