"""Benchmark (issue 6): the population trainer over devices — compiles once, agrees across device counts, and the
big-MLP training step's achieved FLOP/s against the device's matmul peak.

What is measured:

* **Compile once (this process's devices).** :func:`crobust.training.fit` on its default path (members padded
  and sharded over ``jax.devices()`` with :mod:`crobust.parallel`) trains 6 members of a 64→32→10 MLP (L1
  penalty, Frobenius projection) on synthetic digits-shaped data for several blocks; ``FitResult.compiles``
  (traces of the block = XLA compilations) must be 1.
* **8 virtual CPU devices** (a subprocess with ``--xla_force_host_platform_device_count=8``; the count must be
  set before JAX starts): the same population trained on a 1-device mesh and on the 8-device mesh (6 members
  padded to 8) in that process. Reported: compiles of each (target 1), the largest relative difference of the
  parameters after the first block of 25 steps (target ≤ 1e-3: float tolerance; the steps, stops and best steps
  of the whole run must be equal), the same difference at the end of the run (information: the L1 penalty's
  subgradient sign(w) jumps by 2α when round-off moves a weight across 0, and Adam normalises tiny gradient
  differences to full steps, so round-off grows along the run — measured 2e-7, 4e-7, 2e-4, 8e-4 after 1, 2, 4
  and 8 blocks; it is the dynamics amplifying round-off, not the sharding) and both
  throughputs — information only: virtual devices share the same cores (docs/measurements.md §1, row f), they
  exist to test the sharded code path, not for speed.
* **Big MLP training step** (the issue's setting): ``MLP(10, width=2000, depth=5)``, i.e. 3072→2000×4→10
  (18.16 M weights), 8 members, batch 100, AdamW, on synthetic CIFAR-shaped uint8 data, timed through the real
  trainer block (:func:`crobust.training.make_block_fn` under ``jit``, member axis sharded over the devices, a
  1 % validation split so that validation is negligible). FLOPs per member-step are counted as 6·B·P (forward
  2·B·P, backward 4·B·P; P = weights), the usual model-FLOPs convention; the executed count is 6·B·P − 2·B·P₁
  (no input gradient for the first layer), reported as well. The peak is measured on the same device at the
  same matmul precision: the best of large jitted float32 matmuls (8192² on a GPU/TPU, 2048² on a CPU);
  on a GPU also against the vendor's dense peak from a table (fp32 without tensor cores and TF32 tensor cores).
  The precision is whatever ``jax.default_matmul_precision`` says (unset = the backend default: full fp32 on
  CPU, TF32 tensor cores for fp32 matmuls on Ampere/Hopper GPUs, bf16 passes on TPU); the result names it.

* **The big MLP step against its roofline** (issue 12): the ceiling of a step is the larger of FLOPs ÷ the
  measured matmul peak and bytes ÷ the measured memory bandwidth (a jitted ``x·2`` over a 1 GiB array on an
  accelerator, 256 MiB on a CPU: bytes read + written ÷ time). Bytes per member-step, float32: 40·P — the forward
  reads W (4 B/weight), the backward reads W again for the input gradient and writes ∇W (8), AdamW reads
  W, ∇W, m, v and writes W, m, v (28) — plus activations (B·Σ widths·4 B written forward and read backward, < 1 %
  here). ``fraction_of_roofline`` = roofline time ÷ measured step. Where the rest goes: the same population's
  forward+backward (``vmap(grad)``) and AdamW update (:func:`crobust.optim.step`) are timed alone, each against
  its own roofline; ``rest_s`` = step − both is the trainer's own work (batch gather, step masks, and per block the
  finiteness check, best-parameter copy and validation pass, amortised over the block's steps).
  Everything runs at the training precision (``'float32'`` = full fp32, the default; on a GPU also ``'tf32'``), and
  the matmul peak is measured at that same precision.

Targets (issue 6): compiles = 1 (1 device and 8 virtual devices); 1 vs 8 devices equal to float tolerance; on a
GPU the big-MLP step reaches ≥ 40 % of the measured dense float32 matmul peak (at the same precision). Without a
GPU that target reads "not measured: no GPU"; the CPU's figure is reported as information.
``quick=True`` (< 60 s on an idle 2-core CPU): fewer blocks; on a CPU the big MLP uses 2 members and two
one-step blocks.

Run: ``python -m benchmarks.bench_scaling [--quick]`` (prints JSON) or ``python -m benchmarks --only scaling``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._timing import call_times
from crobust import optim, parallel, precision, training
from crobust.data import Dataset
from crobust.models import MLP

TARGET_PEAK_FRACTION = 0.40
TARGET_REL_DIFF = 1e-3

# Vendor spec sheets, dense (no structured sparsity), TFLOP/s: (fp32 on CUDA cores, TF32 on tensor cores).
GPU_PEAKS_TFLOPS = {
    "H200": (67.0, 494.7),
    "H100 SXM": (67.0, 494.7),
    "H100 80GB HBM3": (67.0, 494.7),
    "H100 PCIe": (51.2, 378.0),
    "A100": (19.5, 156.0),
}


def _dataset(shape, n, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n,) + tuple(shape), dtype=np.uint8)
    w = rng.normal(size=(int(np.prod(shape)), 10))
    y = np.argmax((x.reshape(n, -1) / 255.0 - 0.5) @ w, axis=1).astype(np.int32)
    c = shape[-1]
    return Dataset(name="synthetic", train_images=x, train_labels=y, test_images=x[:10], test_labels=y[:10],
                   num_classes=10, mean=(0.5,) * c, std=(0.29,) * c, source=f"synthetic uniform uint8 {shape}")


# ---------------------------------------------------------------------------------------------------------------
# (a) compile once on this process's devices, and 1 vs 8 virtual devices in a subprocess

SMALL = dict(width=32, depth=2, n=600, members=6, batch=64, eval_every=25)


def _small_fit(blocks: int, mesh=None):
    data = _dataset((8, 8, 1), SMALL["n"])
    model = MLP(num_classes=10, width=SMALL["width"], depth=SMALL["depth"], mean=data.mean, std=data.std)
    members = training.grid(alpha=[0.0, 1e-2, 1e-1], seeds=range(SMALL["members"] // 3))
    cfg = training.TrainConfig(regularizer="l1", projection="frobenius", batch_size=SMALL["batch"],
                               max_steps=blocks * SMALL["eval_every"], eval_every=SMALL["eval_every"], patience=None)
    stamps, first = [], []

    def on_block(state, metrics):
        stamps.append(time.perf_counter())
        if not first:
            first.append(jax.device_get(state.params))

    res = training.fit(model, data, cfg, members, progress=False, mesh=mesh, on_block=on_block)
    res.params_after_first_block = first[0]
    steady = np.diff(stamps)
    rate = len(members) * SMALL["eval_every"] / float(np.median(steady)) if len(steady) else float("nan")
    return res, rate


def _max_rel_diff(a, b):
    return max(float(np.linalg.norm(np.asarray(x) - np.asarray(y)) / max(np.linalg.norm(np.asarray(y)), 1e-30))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


_CHILD = """
import json, sys
import jax, numpy as np
from benchmarks import bench_scaling as b
from crobust import parallel
blocks = int(sys.argv[1])
one, rate1 = b._small_fit(blocks, mesh=parallel.member_mesh(jax.devices()[:1]))
eight, rate8 = b._small_fit(blocks)
rel_first = b._max_rel_diff(eight.params_after_first_block, one.params_after_first_block)
rel = b._max_rel_diff(eight.params, one.params)
same_schedule = all(np.array_equal(eight.history[k], one.history[k]) for k in ("step", "alive", "evaluated")) and \\
    np.array_equal(np.asarray(eight.state.best_step), np.asarray(one.state.best_step))
print(json.dumps({"devices": jax.device_count(), "compiles_1": one.compiles, "compiles_8": eight.compiles,
                  "max_rel_param_diff_first_block": rel_first, "max_rel_param_diff_end": rel,
                  "same_schedule": bool(same_schedule),
                  "members_reported": int(np.asarray(eight.state.step).shape[0]),
                  "member_steps_per_s_1dev": rate1, "member_steps_per_s_8dev": rate8}))
"""


def _virtual_devices(blocks: int, timeout: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CROBUST_DISTRIBUTED", "XLA_FLAGS")}
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", _CHILD, str(blocks)], cwd=root, env=env, capture_output=True,
                       text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"8-virtual-device subprocess failed: {r.stderr.strip().splitlines()[-1:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------------
# (b) big MLP step: achieved FLOP/s vs the measured matmul peak

def _precision() -> str:
    p = jax.config.jax_default_matmul_precision
    if p is not None:
        return f"jax.default_matmul_precision={p!r}"
    backend = jax.default_backend()
    return {"cpu": "backend default (full fp32 on CPU)",
            "gpu": "backend default (fp32 matmuls on TF32 tensor cores on Ampere/Hopper)",
            "tpu": "backend default (bf16 passes for fp32 matmuls on TPU)"}.get(backend, "backend default")


def _matmul_peak(n: int, repeats: int) -> dict:
    """Best GFLOP/s of an n×n float32 jitted matmul on device 0 (at the current precision)."""
    dev = jax.devices()[0]
    a = jax.device_put(jax.random.normal(jax.random.key(0), (n, n), jnp.float32), dev)
    b = jax.device_put(jax.random.normal(jax.random.key(1), (n, n), jnp.float32), dev)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return {"n": n, "best_s": best, "gflops": 2 * n ** 3 / best / 1e9}


def _table_peak(kind: str):
    for name, peaks in GPU_PEAKS_TFLOPS.items():
        if name.lower() in kind.lower():
            return name, peaks
    return None, None


def _copy_bandwidth(nbytes: int, repeats: int) -> dict:
    """Best GB/s of a jitted elementwise x·2 over ``nbytes`` of float32 on device 0 (bytes read + written)."""
    n = nbytes // 4
    x = jax.device_put(jnp.ones((n,), jnp.float32), jax.devices()[0])
    # donated: the output reuses the input's buffer, as the optimiser's update does (a fresh output buffer would
    # also time the allocator and, on a CPU, first-touch page faults)
    f = jax.jit(lambda a: a * 2.0, donate_argnums=0)
    x = f(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        x = f(x).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return {"bytes": 2 * 4 * n, "best_s": best, "gb_per_s": 2 * 4 * n / best / 1e9}


def _components(model, params, images, labels, batch: int, repeats: int) -> dict:
    """Seconds of the population's forward+backward alone and of its AdamW update alone (best of ``repeats``)."""
    import optax
    xb = jnp.asarray(images[:batch], jnp.float32) / 255.0
    yb = jnp.asarray(labels[:batch], jnp.int32)

    def loss(p):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, xb), yb).mean()

    grad_fn = jax.jit(jax.vmap(jax.grad(loss)))
    grads = grad_fn(params)
    st = jax.vmap(lambda p: optim.init("adamw", p, 1e-3, 1e-2))(params)
    opt_fn = jax.jit(jax.vmap(lambda p, g, s: optim.step("adamw", p, g, s, True)), donate_argnums=(0, 2))
    fwd_bwd = min(call_times(grad_fn, params, repeats=repeats))
    # the update donates its inputs, so time it on fresh copies each call
    best = float("inf")
    for _ in range(repeats + 1):
        p2, s2 = jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, st)
        jax.block_until_ready((p2, s2))
        t = time.perf_counter()
        jax.block_until_ready(opt_fn(p2, grads, s2))
        best = min(best, time.perf_counter() - t)
    return {"fwd_bwd_s": fwd_bwd, "adamw_s": best}


def _roofline(big: dict, peak_gflops: float, bw_gbs: float, widths: list[int]) -> dict:
    """The step's roofline and the components' (see the module docstring for the byte model)."""
    P, M, B = big["weights_per_member"], big["padded_members"], big["batch"]
    act = 2 * 4 * B * sum(widths) * M
    flops = 6 * B * P * M
    bytes_step = 40 * P * M + act
    t_flops, t_bytes = flops / (peak_gflops * 1e9), bytes_step / (bw_gbs * 1e9)
    roof = max(t_flops, t_bytes)
    fb_roof = max(flops / (peak_gflops * 1e9), (12 * P * M + act) / (bw_gbs * 1e9))
    opt_roof = 28 * P * M / (bw_gbs * 1e9)
    out = {"bytes_per_step": bytes_step, "flops_per_step": flops, "flops_time_s": t_flops, "bytes_time_s": t_bytes,
           "bound": "memory" if t_bytes >= t_flops else "compute", "roofline_s": roof,
           "fraction_of_roofline": roof / big["population_step_s"]}
    comp = big.get("components")
    if comp:
        out["fwd_bwd"] = {"s": comp["fwd_bwd_s"], "roofline_s": fb_roof, "fraction": fb_roof / comp["fwd_bwd_s"]}
        out["adamw"] = {"s": comp["adamw_s"], "roofline_s": opt_roof, "fraction": opt_roof / comp["adamw_s"]}
        out["rest_s"] = big["population_step_s"] - comp["fwd_bwd_s"] - comp["adamw_s"]
        out["where_the_rest_goes"] = (
            f"step {big['population_step_s'] * 1e3:.3g} ms = forward+backward {comp['fwd_bwd_s'] * 1e3:.3g} ms "
            f"({out['fwd_bwd']['fraction']:.0%} of its roofline) + AdamW {comp['adamw_s'] * 1e3:.3g} ms "
            f"({out['adamw']['fraction']:.0%} of its roofline) + trainer's own work {out['rest_s'] * 1e3:.3g} ms "
            f"(batch gather, step masks, and once per block of {big['steps_per_block']} steps the finiteness check, "
            "best-parameter copy and validation pass, amortised)")
    return out


def _big_mlp(members: int, steps_per_block: int, timed_blocks: int, components: bool = True) -> dict:
    width, depth, batch = 2000, 5, 100
    n_train = max(1000, batch * steps_per_block // 2)
    data = _dataset((32, 32, 3), n_train, seed=1)
    model = MLP(num_classes=10, width=width, depth=depth, mean=data.mean, std=data.std)
    cfg = training.TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=1e-2, batch_size=batch,
                               max_steps=10 ** 9, eval_every=steps_per_block, patience=None, val_ratio=0.01)
    mem = training.grid(seeds=range(members))
    layout = parallel.MemberLayout(members)
    state = layout.put(training.init_population(model, data, cfg, mem))
    hp = layout.put(training.member_hparams(mem, cfg))
    images = layout.put_replicated(jnp.asarray(data.train_images))
    labels = layout.put_replicated(jnp.asarray(data.train_labels, jnp.int32))
    block = jax.jit(training.make_block_fn(model, cfg), in_shardings=(layout.sharding, layout.sharding,
                                                                       layout.replicated, layout.replicated),
                    out_shardings=(layout.sharding, layout.replicated))
    t = time.perf_counter()
    state, m = block(state, hp, images, labels)
    jax.block_until_ready(m)
    compile_and_first = time.perf_counter() - t
    times = []
    for _ in range(timed_blocks):
        t = time.perf_counter()
        state, m = block(state, hp, images, labels)
        jax.block_until_ready((state.params, m))
        times.append(time.perf_counter() - t)
    d_in = 32 * 32 * 3
    p_first = d_in * width
    p = p_first + (depth - 2) * width * width + width * 10
    step_s = float(np.min(times)) / steps_per_block           # best block: the least disturbed by other load
    pop = layout.padded                                        # the devices compute the padding members too
    model_flops = 6 * batch * p * members
    comp = None
    if components:
        comp = _components(model, jax.device_get(state.params) if jax.device_count() > 1 else state.params,
                           data.train_images, data.train_labels, batch, repeats=max(2, timed_blocks))
    return {"members": members, "padded_members": pop, "batch": batch, "weights_per_member": p,
            "widths": [width] * (depth - 1) + [10], "components": comp,
            "steps_per_block": steps_per_block, "block_s": times, "compile_plus_first_block_s": compile_and_first,
            "population_step_s": step_s, "model_flops_per_step": model_flops,
            "executed_flops_per_step": (6 * batch * p - 2 * batch * p_first) * members,
            "achieved_gflops": model_flops / step_s / 1e9,
            "achieved_gflops_incl_padding": 6 * batch * p * pop / step_s / 1e9,
            "val_points_per_member": int(np.floor(cfg.val_ratio * n_train))}


def big_mlp_report(quick: bool = False) -> tuple[dict, dict]:
    """The big-MLP step: achieved FLOP/s, measured peak and bandwidth, roofline (float32; on accelerators also tf32).
    Returns (results under ``big_mlp``/``big_mlp_tf32``, targets)."""
    backend = jax.default_backend()
    on_gpu = backend == "gpu"
    on_accel = backend in ("gpu", "tpu")
    kind = jax.devices()[0].device_kind
    out: dict = {}
    targets: dict = {}
    if on_accel:
        members, steps, timed = 8, (10 if quick else 50), (2 if quick else 5)
    else:
        members, steps, timed = (2, 1, 2) if quick else (8, 5, 2)
    with precision.training("float32"):
        big = _big_mlp(members, steps, timed)
        peak = _matmul_peak(8192 if on_accel else 2048, repeats=5 if on_accel else 3)
    bw = _copy_bandwidth((1 << 30) if on_accel else (1 << 28), repeats=5 if on_accel else 3)
    big["training_precision"] = "float32"
    big["matmul_peak_measured"] = peak
    big["memory_bandwidth_measured"] = bw
    frac = big["achieved_gflops"] / peak["gflops"]
    big["fraction_of_measured_peak"] = frac
    big["roofline"] = _roofline(big, peak["gflops"], bw["gb_per_s"], big["widths"])
    roof_frac = big["roofline"]["fraction_of_roofline"]
    if on_accel:
        targets["big MLP step, fraction of its roofline (accelerator, float32)"] = {
            "value": roof_frac, "target": 0.8, "met": roof_frac >= 0.8}
        with precision.training("tf32"):
            tf = _big_mlp(members, steps, timed)
            tf_peak = _matmul_peak(8192, repeats=5)
        tf["matmul_peak_measured"] = tf_peak
        tf["roofline"] = _roofline(tf, tf_peak["gflops"], bw["gb_per_s"], tf["widths"])
        out["big_mlp_tf32"] = tf
        targets["big MLP step, fraction of its roofline (accelerator, tf32)"] = {
            "value": tf["roofline"]["fraction_of_roofline"], "target": 0.8,
            "met": tf["roofline"]["fraction_of_roofline"] >= 0.8}
    else:
        targets[f"big MLP step on {backend.upper()}, fraction of its roofline (info)"] = {
            "value": roof_frac, "target": "info", "met": None}
    if on_gpu:
        name, table = _table_peak(kind)
        if table is not None:
            big["table_peak"] = {"device": name, "fp32_tflops": table[0], "tf32_tensor_tflops": table[1],
                                 "fraction_of_fp32": big["achieved_gflops"] / (table[0] * 1e3),
                                 "fraction_of_tf32": big["achieved_gflops"] / (table[1] * 1e3)}
        else:
            big["table_peak"] = f"{kind!r} is not in the table; only the measured peak is used"
        targets["big MLP step, fraction of measured matmul peak (GPU)"] = {
            "value": frac, "target": TARGET_PEAK_FRACTION, "met": frac >= TARGET_PEAK_FRACTION}
    else:
        targets["big MLP step, fraction of measured matmul peak (GPU)"] = {
            "value": "not measured: no GPU", "target": TARGET_PEAK_FRACTION, "met": None}
        targets[f"big MLP step on {backend.upper()}, fraction of its matmul (info)"] = {
            "value": frac, "target": "info", "met": None}
    out["big_mlp"] = big
    return out, targets


def run(quick: bool = False) -> dict:
    backend = jax.default_backend()
    on_gpu = backend == "gpu"
    on_accel = backend in ("gpu", "tpu")
    kind = jax.devices()[0].device_kind
    out: dict = {"backend": backend, "devices": [d.device_kind for d in jax.devices()],
                 "device_count": jax.device_count(), "process_count": jax.process_count(),
                 "precision": _precision()}
    targets: dict = {}

    phase_s = {}
    t = time.perf_counter()
    blocks = 3 if quick else 8
    res, rate = _small_fit(blocks)
    phase_s["compile_once"] = time.perf_counter() - t
    out["this_process"] = {"compiles": res.compiles, "blocks": int(res.history["step"].shape[0]),
                           "member_steps_per_s": rate, "mesh_devices": jax.device_count()}
    targets["compiles (fit on this process's devices)"] = {"value": res.compiles, "target": 1,
                                                           "met": res.compiles == 1}
    t = time.perf_counter()
    try:
        v = _virtual_devices(blocks, timeout=300)
        v["note"] = "virtual devices share the same CPU cores: a test of the sharded path, not a speed figure"
        out["virtual_8_devices"] = v
        targets["compiles (8 virtual CPU devices, 6→8 members)"] = {
            "value": v["compiles_8"], "target": 1, "met": v["compiles_8"] == 1 and v["compiles_1"] == 1}
        targets["max rel. param diff, 8 vs 1 devices, first block"] = {
            "value": v["max_rel_param_diff_first_block"], "target": TARGET_REL_DIFF,
            "met": (v["max_rel_param_diff_first_block"] <= TARGET_REL_DIFF and v["same_schedule"]
                    and v["members_reported"] == 6)}
        targets["max rel. param diff, 8 vs 1 devices, end (info)"] = {
            "value": v["max_rel_param_diff_end"], "target": "info", "met": None}
    except Exception as e:  # recorded, not fatal
        out["virtual_8_devices"] = {"error": f"{type(e).__name__}: {e}"}
    phase_s["virtual_8_devices"] = time.perf_counter() - t

    t = time.perf_counter()
    big_out, big_targets = big_mlp_report(quick)
    phase_s["big_mlp_and_peak"] = time.perf_counter() - t
    out.update(big_out)
    targets.update(big_targets)
    out["phase_s"] = phase_s
    out["targets"] = targets
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, default=str))
