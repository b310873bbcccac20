"""Benchmark (issue 20): member-execution strategies for convolutional populations on the CPU, against sequential
PyTorch eager on the same cores — the table ``auto`` (:mod:`crobust.training.execution`) is derived from.

What is timed, per setting (rows of :data:`SETTINGS`):

* **crobust** — one :func:`crobust.training.fit` call, end to end: population initialisation, compilation (every
  cache cleared first: ``jax.clear_caches()`` and the trainer's block cache), every block, validation of each
  member's 10 % split after every ``eval_every`` steps, host syncs. SGD (momentum 0.9, weight decay 5e-4), no
  augmentation, no early stopping. One arm per strategy: ``host_loop`` member by member (``members_per_group=1``:
  each call one step of one member; members side by side on one worker thread per core,
  :func:`crobust.parallel.host_map`), ``host_loop_one_thread`` (the same, ``CROBUST_HOST_THREADS=1``: members one
  after another), ``host_loop_vmapped`` (every member in each call, ``members_per_group=None``)
  and ``scan`` (the block in one ``lax.scan`` program, members ``lax.map``-ped one at a time on a CPU — the trainer
  before issue 20). images/s = members × steps × batch / wall seconds.
* **PyTorch** (``make bench-extras``) — the same network written in ``torch.nn`` (:func:`_torch_model`), eager, SGD
  with the same settings, the training set in memory as a float tensor, random batch indices each step, forward /
  backward / step, no validation (favours PyTorch), ``torch.set_num_threads(cores)``. A sequential loop over M
  members takes M times one member's time, so one member is timed for ``torch_steps`` steps after 3 untimed ones.

The machine may be loaded by other processes, so the figures that count are **ratios**: every crobust arm is timed
between two PyTorch runs in the same process (interleaved, one at a time), and its ratio is its images/s over the
mean of those two PyTorch rates. Absolute rates are reported beside them with the share of the machine other
processes used meanwhile (``others_cpu``); re-run on an idle machine for figures to quote.

Settings (full): 8 members of ResNet-18 (CIFAR stem, width 8) on 32×32×3 at batch 64 for 200 steps (the issue's
target); the plain 8-layer CNN (:class:`PlainCNN`, no batch norm) on 32×32×3; ResNet-18 width 16 on 28×28×1. The
``scan`` and ``host_loop_vmapped`` arms run ``other_steps`` (4) steps, not 200, in full mode (at their measured
0.01–0.1× the full run would take most of an hour per arm): their ``images_per_s`` include their compilation over
those few steps, and a second identical fit() on the compiled programs gives ``steady_images_per_s``, their speed
per step without compilation (the fair comparison with the 200-step arms, whose compile is a small share).
``quick=True``: 2 members, 6 steps in blocks of 3, 512 training points, 6 PyTorch steps — a smoke run whose ratios
are dominated by compilation, not the target.

Where the JAX step stays below PyTorch's, :func:`layer_breakdown` times each distinct ResNet-18 layer's forward +
backward (convolution, batch norm, ReLU) in both, so the gap is seen per layer.

The evaluation's layouts (:func:`apgd_layouts`): APGD-CE on a small conv population in one program (``lax.map``
or ``vmap`` over members) or one compiled call per member — the rule ``population_robust_accuracy`` follows.

:func:`apgd_vs_autoattack` (with ``make bench-extras``): APGD-CE on the 8-member ResNet-18 population against
AutoAttack's APGD-CE run member after member.

Targets (issue 20, CPU, full mode only): the ``auto`` strategy on the ResNet-18 width-8 setting ≥ 1.0× sequential
PyTorch (1.5× the aim); APGD-CE on that population ≥ 1.0× AutoAttack's member after member.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _machine as _machine_info
from benchmarks._timing import call_times
from benchmarks.bench_training import _conv_model, _cpu_snapshot, _others_cpu, synthetic_dataset
from crobust import parallel, training
from crobust.training import execution
from crobust.training import loop as _loop

TARGET_VS_TORCH = 1.0
AIM_VS_TORCH = 1.5
TARGET_APGD_VS_AUTOATTACK = 1.0

SETTINGS = {
    "resnet18_w8_32x32x3": {"model": "resnet18", "width": 8, "image_shape": (32, 32, 3), "batch_size": 64},
    "plain_cnn_w16_32x32x3": {"model": "plain_cnn", "width": 16, "image_shape": (32, 32, 3), "batch_size": 64},
    "resnet18_w16_28x28x1": {"model": "resnet18", "width": 16, "image_shape": (28, 28, 1), "batch_size": 64},
}
# arm -> (TrainConfig.execution, fit's members_per_group, $CROBUST_HOST_THREADS or None for the default)
ARMS = {"host_loop": ("host_loop", 1, None), "host_loop_one_thread": ("host_loop", 1, "1"),
        "host_loop_vmapped": ("host_loop", None, None), "scan": ("scan", "auto", None)}
FULL_STEP_ARMS = ("host_loop", "host_loop_one_thread")


class PlainCNN(nn.Module):
    """The plain CNN: 7 conv3×3 layers with bias and ReLU, no batch norm — widths w, w, 2w (stride 2), 2w, 4w
    (stride 2), 4w, 4w — then global average pooling and a dense head: 8 weight layers."""

    num_classes: int = 10
    width: int = 16
    mean: tuple = (0.5,)
    std: tuple = (0.2887,)
    LAYERS = ((1, 1), (1, 1), (2, 2), (2, 1), (4, 2), (4, 1), (4, 1))      # (width multiple, stride)

    @nn.compact
    def __call__(self, x, train: bool = False, return_repr: bool = False):
        x = (jnp.asarray(x, jnp.float32) - jnp.asarray(self.mean)) / jnp.asarray(self.std)
        for mult, stride in self.LAYERS:
            x = nn.relu(nn.Conv(self.width * mult, (3, 3), strides=stride, padding=1)(x))
        z = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(self.num_classes)(z)
        return (logits, z) if return_repr else logits


def _model(spec, data):
    if spec["model"] == "plain_cnn":
        return PlainCNN(width=spec["width"], mean=tuple(data.mean), std=tuple(data.std)), \
            f"PlainCNN(width={spec['width']})"
    return _conv_model(data, spec["width"])


def _torch_model(spec, torch):
    """The same network in torch.nn (NCHW): ResNet-18 with the CIFAR stem at ``width``, or the plain CNN."""
    nn_ = torch.nn
    c_in, w = spec["image_shape"][-1], spec["width"]
    if spec["model"] == "plain_cnn":
        layers, prev = [], c_in
        for mult, stride in PlainCNN.LAYERS:
            layers += [nn_.Conv2d(prev, w * mult, 3, stride, 1), nn_.ReLU()]
            prev = w * mult
        return nn_.Sequential(*layers, nn_.AdaptiveAvgPool2d(1), nn_.Flatten(), nn_.Linear(prev, 10))

    class Block(nn_.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1, self.bn1 = nn_.Conv2d(cin, cout, 3, stride, 1, bias=False), nn_.BatchNorm2d(cout)
            self.conv2, self.bn2 = nn_.Conv2d(cout, cout, 3, 1, 1, bias=False), nn_.BatchNorm2d(cout)
            self.down = (nn_.Sequential(nn_.Conv2d(cin, cout, 1, stride, bias=False), nn_.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn_.Identity())

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.down(x))

    layers, cin = [nn_.Conv2d(c_in, w, 3, 1, 1, bias=False), nn_.BatchNorm2d(w), nn_.ReLU()], w
    for s in range(4):
        for b in range(2):
            layers.append(Block(cin, w * 2 ** s, 2 if (s > 0 and b == 0) else 1))
            cin = w * 2 ** s
    return nn_.Sequential(*layers, nn_.AdaptiveAvgPool2d(1), nn_.Flatten(), nn_.Linear(cin, 10))


def _torch_rate(spec, data, steps: int, torch) -> dict:
    """Images/s of one member trained eagerly for ``steps`` steps (after 3 untimed ones), with others_cpu."""
    torch.manual_seed(0)
    net = _torch_model(spec, torch).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x = torch.from_numpy(np.ascontiguousarray(data.train_images.transpose(0, 3, 1, 2))).float().div_(255.0)
    y = torch.from_numpy(np.asarray(data.train_labels, np.int64))
    b = spec["batch_size"]

    def run(k):
        for _ in range(k):
            idx = torch.randint(0, x.shape[0], (b,))
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    run(3)
    a = _cpu_snapshot()
    run(steps)
    z = _cpu_snapshot()
    return {"images_per_s": steps * b / (z[0] - a[0]), "s": z[0] - a[0], "steps": steps,
            "others_cpu": _others_cpu(a, z)}


def _crobust_run(spec, data, model, members: int, steps: int, eval_every: int, arm: str,
                 steady: bool = False) -> dict:
    """One fit() end to end, compilation included (caches cleared first). ``steady``: then a second identical fit()
    on the compiled programs, timed as ``steady_images_per_s`` (the arm's per-step speed without its compile)."""
    ex, group, threads = ARMS[arm]
    cfg = training.TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
                               batch_size=spec["batch_size"], max_steps=steps, eval_every=min(eval_every, steps),
                               patience=None, val_ratio=0.1, eval_batch_size=512, execution=ex)
    jax.clear_caches()
    _loop._BLOCK_CACHE.clear()
    saved = os.environ.pop(parallel.ENV_HOST_THREADS, None)
    if threads is not None:
        os.environ[parallel.ENV_HOST_THREADS] = threads

    def one_fit():
        a = _cpu_snapshot()
        res = training.fit(model, data, cfg, training.grid(seeds=range(members)), progress=False,
                           members_per_group=group)
        jax.block_until_ready(res.state.params)
        return res, a, _cpu_snapshot()

    try:
        res, a, z = one_fit()
        again = one_fit() if steady else None
    finally:
        os.environ.pop(parallel.ENV_HOST_THREADS, None)
        if saved is not None:
            os.environ[parallel.ENV_HOST_THREADS] = saved
    images = members * steps * spec["batch_size"]
    out = {"images_per_s": images / (z[0] - a[0]), "s": z[0] - a[0],
           "steps": steps, "members": members, "compiles": res.compiles, "execution": res.execution,
           "members_per_group": group, "host_threads": int(threads) if threads else parallel.host_threads(),
           "others_cpu": _others_cpu(a, z),
           "final_train_loss_mean": float(np.mean(res.history["train_loss"][-1]))}
    if again is not None:
        _, a2, z2 = again
        out.update(steady_images_per_s=images / (z2[0] - a2[0]), steady_s=z2[0] - a2[0],
                   steady_others_cpu=_others_cpu(a2, z2))
    return out


def run_setting(name: str, quick: bool, torch) -> dict:
    spec = SETTINGS[name]
    members, steps, other_steps, eval_every, n_train, torch_steps = (
        (2, 6, 6, 3, 512, 6) if quick else (8, 200, 4, 50, 4096, 100))
    data = synthetic_dataset(spec["image_shape"], n_train)
    model, described = _model(spec, data)
    state0 = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *spec["image_shape"]))))
    stacked = jax.tree.map(lambda s: np.zeros((1, *s.shape), s.dtype), state0["params"])
    out = {"model": described, "image_shape": list(spec["image_shape"]), "batch_size": spec["batch_size"],
           "members": members, "eval_every": eval_every, "auto": execution.resolve("auto", stacked), "arms": {}}
    torch_before = _torch_rate(spec, data, torch_steps, torch) if torch is not None else None
    for arm in ARMS:
        full = arm in FULL_STEP_ARMS
        r = _crobust_run(spec, data, model, members, steps if full else other_steps, eval_every, arm,
                         steady=not full)
        if torch is not None:
            torch_after = _torch_rate(spec, data, torch_steps, torch)
            t_rate = (torch_before["images_per_s"] + torch_after["images_per_s"]) / 2
            r["torch_images_per_s_around"] = [torch_before, torch_after]
            r["vs_sequential_torch"] = r["images_per_s"] / t_rate
            if "steady_images_per_s" in r:
                r["steady_vs_sequential_torch"] = r["steady_images_per_s"] / t_rate
            torch_before = torch_after
        out["arms"][arm] = r
        print(f"[execution] {name} {arm}: {r['images_per_s']:.0f} images/s, "
              f"{r.get('vs_sequential_torch', float('nan')):.3f}x sequential torch"
              + (f"; steady {r['steady_images_per_s']:.0f} images/s" if "steady_images_per_s" in r else ""),
              file=sys.stderr, flush=True)
    auto_arm = "host_loop" if out["auto"] == "host_loop" else "scan"
    out["auto_arm"] = auto_arm
    out["auto_vs_sequential_torch"] = out["arms"][auto_arm].get("vs_sequential_torch")
    return out


def resnet18_layers(width: int, size: int, c_in: int):
    """The distinct convolution + batch-norm + ReLU layers of ResNet-18 (CIFAR stem) at ``width`` on size × size
    × c_in images: ``[(name, h_in, c_in, c_out, kernel, stride, count)]``, count the times the network holds it."""
    layers = [("stem 3x3", size, c_in, width, 3, 1, 1), ("stage1 3x3", size, width, width, 3, 1, 4)]
    h, c = size, width
    for stage in (2, 3, 4):
        out = width * 2 ** (stage - 1)
        layers += [(f"stage{stage} 3x3 stride 2", h, c, out, 3, 2, 1),
                   (f"stage{stage} 1x1 shortcut", h, c, out, 1, 2, 1)]
        h = -(-h // 2)
        layers.append((f"stage{stage} 3x3", h, out, out, 3, 1, 3))
        c = out
    return layers


def layer_breakdown(spec, torch, repeats: int) -> dict:
    """Forward + backward of each distinct layer (convolution, batch norm in train mode, ReLU; gradients for the
    input, kernel, scale and offset) at the setting's batch size: seconds per call for one jitted JAX call and for
    PyTorch eager (``torch.set_num_threads(cores)``), each the median of ``repeats`` after 2 untimed calls, and
    the layer's share of a step (seconds × count). Where the JAX total over PyTorch's is the whole step's ratio,
    the layers with the largest JAX − PyTorch difference are where the time goes."""
    b = spec["batch_size"]
    size, c_in = spec["image_shape"][0], spec["image_shape"][-1]
    rows, tot_j, tot_t = [], 0.0, 0.0
    for name, h, ci, co, k, s, count in resnet18_layers(spec["width"], size, c_in):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((b, h, h, ci)).astype(np.float32)
        kern = (rng.standard_normal((k, k, ci, co)) / np.sqrt(k * k * ci)).astype(np.float32)
        h_out = -(-h // s)
        g = rng.standard_normal((b, h_out, h_out, co)).astype(np.float32)
        pad = ((k // 2, k // 2),) * 2

        def layer(x, kern, scale, offset, s=s, pad=pad):
            y = jax.lax.conv_general_dilated(x, kern, (s, s), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
            mean = jnp.mean(y, axis=(0, 1, 2))
            var = jnp.mean((y - mean) ** 2, axis=(0, 1, 2))
            return jax.nn.relu((y - mean) * jax.lax.rsqrt(var + 1e-5) * scale + offset)

        f = jax.jit(lambda x, kern, sc, of, g: jax.vjp(layer, x, kern, sc, of)[1](g))
        args = [jnp.asarray(a) for a in (x, kern, np.ones(co, np.float32), np.zeros(co, np.float32), g)]
        t_j = _median_call(lambda: jax.block_until_ready(f(*args)), repeats)
        row = {"layer": name, "input": [b, h, h, ci], "out_channels": co, "kernel": k, "stride": s, "count": count,
               "jax_s": t_j}
        if torch is not None:
            conv = torch.nn.Conv2d(ci, co, k, s, k // 2, bias=False)
            bn = torch.nn.BatchNorm2d(co).train()
            xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
            gt = torch.from_numpy(g.transpose(0, 3, 1, 2).copy())

            def torch_call():
                out = torch.relu(bn(conv(xt)))
                out.backward(gt)

            row["torch_s"] = _median_call(torch_call, repeats)
            row["jax_over_torch"] = t_j / row["torch_s"]
            tot_t += row["torch_s"] * count
        tot_j += t_j * count
        rows.append(row)
    out = {"layers": rows, "jax_total_s": tot_j, "torch_total_s": tot_t or None}
    if tot_t:
        out["jax_over_torch_total"] = tot_j / tot_t
        worst = max(rows, key=lambda r: (r["jax_s"] - r["torch_s"]) * r["count"])
        out["largest_gap"] = worst["layer"]
    return out


def _median_call(call, repeats: int) -> float:
    """Median wall seconds of ``repeats`` calls after two untimed ones (:func:`benchmarks._timing.call_times` takes
    one: PyTorch builds its oneDNN primitives for a shape over its first calls)."""
    call()
    return float(np.median(call_times(call, repeats=repeats)))


def apgd_vs_autoattack(torch, quick: bool = False) -> dict:
    """APGD-CE with AutoAttack's settings (100 iterations, 1 restart, ρ = 0.75, ℓ∞ ε = 8/255) on the training
    target's population (ResNet-18, CIFAR stem, width 8, 32×32×3, batch norm in eval mode): crobust's
    :func:`crobust.evaluation.population_robust_accuracy` (``execution='auto'``: ``'host_steps'``, every attack
    iteration one compiled call driven from the host, members side by side) against ``pyautoattack``'s ``APGDAttack`` on the same architecture in PyTorch, run member
    after member (one member timed, × M, as the training comparison).

    Both sides attack every point: the members are copies of one randomly initialised network and the labels are
    its clean predictions (AutoAttack attacks only correctly classified points; crobust's cost does not depend on
    them). Weights differ between the two sides (each its framework's initialisation): this is a speed comparison,
    the cost of a forward and backward pass does not depend on the weights. crobust's time is its second call
    (``first_s``: the first, compilation included); AutoAttack's the fastest of 2 runs."""
    from pyautoattack.autopgd_base import APGDAttack
    from crobust import evaluation
    from crobust.training import eval_apply
    members, n, n_iter = (2, 8, 5) if quick else (8, 128, 100)
    spec = SETTINGS["resnet18_w8_32x32x3"]
    x = np.random.default_rng(1).uniform(0, 1, (n, 32, 32, 3)).astype(np.float32)
    model, described = _conv_model(synthetic_dataset((32, 32, 3), 16), spec["width"])
    variables = model.init(jax.random.key(0), jnp.asarray(x[:1]))
    apply_fn, one = eval_apply(model, {"params": variables["params"]}, {"batch_stats": variables["batch_stats"]})
    stacked = jax.tree.map(lambda a: jnp.stack([a] * members), one)
    y = np.asarray(jnp.argmax(apply_fn(one, jnp.asarray(x)), -1))
    kw = dict(eps=[8 / 255], attacks=(("apgd-ce", {"n_iter": n_iter, "n_restarts": 1}),), on_fail="ignore",
              member_keys=jax.random.split(jax.random.key(2), members))
    times = []
    for _ in range(2):
        t = time.perf_counter()
        reports = evaluation.population_robust_accuracy(apply_fn, stacked, jnp.asarray(x), jnp.asarray(y), **kw)
        times.append(time.perf_counter() - t)
    out = {"model": described, "members": members, "points": n, "n_iter": n_iter,
           "crobust": {"first_s": times[0], "s": times[1], "host_threads": parallel.host_threads(),
                       "robust_acc_member0": float(reports[0].robust_acc[-1])}}
    torch.manual_seed(0)
    net = _torch_model(spec, torch).eval()
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        yt = net(xt).argmax(1)
    runs = []
    for seed in range(2):
        attack = APGDAttack(net, n_iter=n_iter, norm="Linf", eps=8 / 255, seed=seed, loss="ce", n_restarts=1,
                            rho=0.75, device="cpu")
        t = time.perf_counter()
        x_adv = attack.perturb(xt, yt)
        runs.append(time.perf_counter() - t)
    with torch.no_grad():
        acc = float((net(x_adv).argmax(1) == yt).float().mean())
    out["autoattack"] = {"one_member_s": min(runs), "sequential_s": min(runs) * members, "robust_acc": acc}
    out["speedup_vs_autoattack_sequential"] = out["autoattack"]["sequential_s"] / times[1]
    return out


def apgd_layouts(quick: bool = False) -> dict:
    """APGD-CE (1 restart) on a small batch-norm conv population (:class:`~benchmarks.bench_training.BenchCNN`,
    32×32×3, random weights and points): the members in one compiled program — ``lax.map``-ped (the CPU layout
    before issue 20) or vmapped — against one call per member of :func:`crobust.evaluation.robust_accuracy`'s
    compiled program (``population_robust_accuracy(execution='host_loop')``), and against one compiled call per
    iteration (``execution='host_steps'``, :mod:`crobust.attacks._stepping`). Each arm is compiled once
    (``first_s``), then called ``repeats`` times interleaved with the others; seconds per population call."""
    from jax.tree_util import Partial
    from benchmarks.bench_training import BenchCNN
    from crobust import evaluation as E, parallel
    members, n, width, n_iter, repeats = (2, 16, 4, 5, 2) if quick else (3, 64, 8, 20, 3)
    model = BenchCNN(width=width)
    x = jax.random.uniform(jax.random.key(0), (n, 32, 32, 3))
    y = jax.random.randint(jax.random.key(1), (n,), 0, 10)
    stacked = jax.vmap(lambda k: model.init(k, x[:1]))(jax.random.split(jax.random.key(10), members))
    specs = E._attack_specs((("apgd-ce", {"n_iter": n_iter, "n_restarts": 1}),), 10)
    static = dict(norm="linf", frozen=E._freeze(specs), adv_index=(), eps_loop=False, point_chunk=None)
    eps = jnp.asarray([8 / 255], jnp.float32)
    keys = jax.random.split(jax.random.key(2), members)

    def program(group):
        def f(params, keys, x, y):
            one = lambda p, k: E._core(Partial(model.apply, p), x, y, k, eps, **static)
            return parallel.map_members(one, params, keys, group=group)
        return jax.jit(f)

    def per_member(params, keys, x, y):
        return [E._run_one(Partial(model.apply, jax.tree.map(lambda leaf: leaf[m], params)), x, y, keys[m], eps,
                           **static) for m in range(members)]

    def host_steps(params, keys, x, y):
        return [E._run_one_stepped(Partial(model.apply, jax.tree.map(lambda leaf: leaf[m], params)), x, y, keys[m],
                                   eps, **static) for m in range(members)]

    arms = {"program_lax_map": program(1), "program_vmap": program(None), "per_member_calls": per_member,
            "per_member_host_steps": host_steps}
    out = {"model": f"BenchCNN(width={width})", "members": members, "points": n, "n_iter": n_iter, "arms": {}}
    for k, f in arms.items():
        t = time.perf_counter()
        jax.block_until_ready(f(stacked, keys, x, y))
        out["arms"][k] = {"first_s": time.perf_counter() - t, "s": []}
    for _ in range(repeats):
        for k, f in arms.items():
            t = time.perf_counter()
            jax.block_until_ready(f(stacked, keys, x, y))
            out["arms"][k]["s"].append(time.perf_counter() - t)
    for k in arms:
        out["arms"][k]["median_s"] = float(np.median(out["arms"][k]["s"]))
    out["per_member_over_lax_map_speedup"] = (out["arms"]["program_lax_map"]["median_s"]
                                              / out["arms"]["per_member_calls"]["median_s"])
    out["host_steps_over_per_member_speedup"] = (out["arms"]["per_member_calls"]["median_s"]
                                                 / out["arms"]["per_member_host_steps"]["median_s"])
    return out


def run(quick: bool = False) -> dict:
    try:
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
        torch_note = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    except ImportError as e:
        torch, torch_note = None, f"not run: {e} (make bench-extras installs torch)"
    results = {name: run_setting(name, quick, torch) for name in SETTINGS}
    results["layer_breakdown_resnet18_w8"] = layer_breakdown(SETTINGS["resnet18_w8_32x32x3"], torch,
                                                             3 if quick else 20)
    results["apgd_layouts"] = apgd_layouts(quick)
    have_aa = torch is not None and importlib.util.find_spec("pyautoattack") is not None
    results["apgd_vs_autoattack"] = (apgd_vs_autoattack(torch, quick) if have_aa else
                                     {"skipped": "pyautoattack or torch not installed (make bench-extras)"})
    v = results["resnet18_w8_32x32x3"]["auto_vs_sequential_torch"]
    measured = not quick and jax.default_backend() == "cpu"
    met = "not measured" if (v is None or not measured) else bool(v >= TARGET_VS_TORCH)
    a = results["apgd_vs_autoattack"].get("speedup_vs_autoattack_sequential")
    targets = {"cpu_resnet18_w8_8_members_auto_vs_sequential_torch": {
        "value": v, "target": TARGET_VS_TORCH, "aim": AIM_VS_TORCH, "met": met},
        "cpu_resnet18_w8_8_members_apgd_ce_vs_autoattack_sequential": {
        "value": a, "target": TARGET_APGD_VS_AUTOATTACK,
        "met": "not measured" if (a is None or not measured) else bool(a >= TARGET_APGD_VS_AUTOATTACK)}}
    return {"name": "execution", "quick": quick, "backend": jax.default_backend(), "torch": torch_note,
            "machine": _machine_info.describe(torch=getattr(torch, "__version__", None)), "results": results,
            "targets": targets, "loadavg_end": _machine_info.loadavg(),
            "note": "ratios are taken against PyTorch runs interleaved in the same process; absolute rates depend "
                    "on the machine's load (others_cpu). quick mode: a smoke run dominated by compilation"
                    if quick else "ratios against PyTorch runs interleaved in the same process"}


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
