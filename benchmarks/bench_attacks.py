"""Benchmark (issue 4): APGD-CE in crobust against AutoAttack's reference APGD-CE in PyTorch, and population scaling.

What is measured:

* **Setting** — ``MLP(10, width=64, depth=3)`` (64→64→64→10, bias-free ReLU, normalisation inside) trained for 300
  AdamW steps on sklearn digits[1000:] (797 images, 8×8×1 in [0, 1] = digits/16); the attacked points are the
  1000 images digits[:1000]. APGD-CE with AutoAttack's settings: 100 iterations, 1 restart, ρ = 0.75, ℓ∞
  ε = 16/255 and ℓ2 ε = 0.5 (radii at which robust accuracy is well inside (0, 1) for this model).
* **crobust** — ``crobust.attacks.apgd`` with its defaults under ``jax.jit``. Like with like: AutoAttack's
  ``perturb`` first classifies the 1000 points and runs its iterations only on those classified correctly (~90 %;
  the others are returned unchanged, and crobust's ``apgd`` returns them unchanged too), so the timed crobust call
  does the same: a jitted clean forward pass on the 1000 points, selection of the correctly classified ones on
  the host, one jitted ``apgd`` call on them (compiled once for that count) and the results scattered back into
  the 1000 points — all inside the timed region. The time of one jitted call on all 1000 points (which also
  iterates on the misclassified ones, only to return them unchanged) is reported as ``linf_all_points`` /
  ``l2_all_points`` with its speedup, and so is the one-batch time (``chunk_size=None``; otherwise on CPU the
  default ``chunk_size='auto'`` runs ~250-point chunks sequentially inside the program, which keeps the working
  set in cache). Compile time is reported separately; the time is the minimum (and median) over repeated calls
  (``block_until_ready`` included). Robust accuracy = mean over 3 seeds of the accuracy at the returned points
  (for both paths). crobust and the reference alternate in rounds (2; quick: 1) so that drifting load on a shared
  machine hits both.
* **AutoAttack** (optional extra: ``pip install torch==2.13.0 pyautoattack``) — ``pyautoattack``'s
  ``APGDAttack(n_iter=100, norm, eps, loss='ce', n_restarts=1)`` on the **same weights** exported to a PyTorch
  module with the same normalisation (NCHW input, permuted to the JAX layout), in a **separate process** (no
  thread-pool interference with XLA), batch = all 1000 points, seeds 0, 1, 2. Its time is the minimum over runs
  with 2 threads and with 1 thread (the faster of the two: the stricter comparison on a shared machine).
  CPU (process) seconds are recorded too: on a loaded machine the wall-clock ratio favours crobust (a Python loop
  of small torch ops suffers more from time-slicing than one compiled XLA loop), and the CPU-time ratio (1 torch
  thread) is the load-robust proxy; both are reported, the target uses wall-clock time as the issue states.
* **Population scaling** — 16 such MLPs (different seeds, trained together under ``vmap``) attacked by APGD-CE
  (ℓ∞, 16/255) in one jitted call laid out as the library lays out populations
  (:func:`crobust.parallel.map_members`: a ``lax.map`` over members on one CPU device, ``vmap`` on accelerators),
  versus 16 sequential calls of one jitted single-model function (compiled once, parameters as an argument); the
  plain ``vmap`` call is timed too (``one_call_plain_vmap_s``: on this CPU it spills the cache and is slower than
  the sequential calls). All are steady-state times (compilation excluded); the agreement of the per-point robust
  flags between the one call and the sequential calls is reported.

* **Direct call** (issue 11) — ``crobust.attacks.apgd(jax.tree_util.Partial(model.apply, params), x, y, key,
  eps=..., norm=...)`` called as a user would, outside any ``jit`` of the caller, on all 1000 points: the first
  call (compiles) and the steady-state second and later calls (the public attack is one cached ``jax.jit`` with
  the parameters as traced leaves, so later calls reuse it; each call also runs the eager value checks on x and
  y). Target: the second call ≥ 3× faster than AutoAttack's APGD-CE (which attacks only the ~90 % correctly
  classified points: the comparison favours AutoAttack).
* **Ensemble cost** (issue 11) — ``crobust.evaluation.population_robust_accuracy`` on a small population (4
  members; quick: 2) and 500 points (quick: 200) at ℓ∞ ε = 16/255, with the ``'standard'`` ensemble (APGD-CE,
  APGD-T with 9 targets, Square 5000 queries) and with APGD-CE alone: steady-state seconds (a first call
  compiles), milliseconds per member and point, and the ratio — what the headline ensemble costs over the
  single attack. On an accelerator the same code runs there (``machine.backend`` says which).
* **Closure form** (issue 20) — the direct call with ``logits_fn = lambda q: model.apply(params, q)`` (a fresh
  closure each call, as a batch loop builds it) beside the Partial form: first call (compilation included) and
  steady-state later calls. Target: the closure form's second call within 1.5× of the Partial form's
  (``targets.apgd_ce_*_closure_second_call_over_partial``); the first-call times of both forms are reported beside
  AutoAttack's total time for the same attack (``comparison.*_first_call``; ``autoattack_total_s`` is null when
  the optional extra is not installed).
* **FMN** — ``crobust.attacks.fmn`` (100 iterations, defaults) on the same model and the 1000 points, ℓ∞ and ℓ2:
  first call (compiles) and steady-state seconds, the fraction of points with a finite radius, the median radius
  over the clean-correct points, robust accuracy read off the radii at the APGD radii above (one FMN run for
  every ε, beside APGD-CE's robust accuracy), and the median certified radius of
  :func:`crobust.metrics.certified_radius` with the naive MLP constants (a lower bound, for scale). A reference FMN
  (Foolbox, adv-lib) is compared when importable; ``fmn.reference`` says when none is installed.

* **FAB-T** — ``crobust.attacks.fab_t`` (AutoAttack's standard FAB-T: 100 iterations, 9 targets, 1 restart, no
  random start) called directly with ``Partial(model.apply, params)`` on the 1000 points, steady state (the second
  and later calls; the first compiles), against ``pyautoattack``'s ``FABAttack_PT(targeted=True,
  n_target_classes=9, n_restarts=1, n_iter=100)`` on the same weights in a separate process with 1 torch thread
  (batch = all 1000 points; both attack only the correctly classified ones, target after target on the points
  still unbroken: crobust's direct call runs that cascade from the host). Both norms at the radii above; robust accuracies and per-point agreement are recorded. Target: ≥ 3× AutoAttack
  (``targets.fab_t_*_speedup_vs_autoattack``). ``python -m benchmarks.bench_attacks --fab-only`` runs this part
  alone.

Targets (issue 4): crobust ≥ 3× faster than AutoAttack's APGD-CE on this CPU, robust accuracy within 0.5
percentage points (both norms). ``quick=True``: fewer repeats, one round, 1 torch thread only (2 threads collapse
under oversubscription on a shared machine), 4 members for the population; same sizes otherwise.

Run: ``python -m benchmarks.bench_attacks [--quick]`` (prints JSON) or through ``python -m benchmarks``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from crobust import parallel
import crobust.attacks as A
from crobust.models import MLP

TARGET_SPEEDUP = 3.0
TARGET_ACC_DIFF_PP = 0.5
TARGET_CLOSURE_RATIO = 1.5
SETTINGS = (("linf", 16 / 255), ("l2", 0.5))
SEEDS = (0, 1, 2)


def _data():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    return x[1000:], y[1000:], x[:1000], y[:1000]


def _train(keys, x_train, y_train, model, steps=300):
    """Train one MLP per key (vmapped), 300 AdamW steps of batch 128; returns stacked params."""
    opt = optax.adamw(3e-3)
    xt, yt = jnp.asarray(x_train), jnp.asarray(y_train)

    def fit(key):
        params = model.init(key, xt[:1])

        def step(carry, k):
            p, s = carry
            idx = jax.random.randint(k, (128,), 0, xt.shape[0])
            grad = jax.grad(lambda q: optax.softmax_cross_entropy_with_integer_labels(
                model.apply(q, xt[idx]), yt[idx]).mean())(p)
            updates, s = opt.update(grad, s, p)
            return (optax.apply_updates(p, updates), s), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(jax.random.fold_in(key, 1),
                                                                                          steps))
        return params

    return jax.jit(jax.vmap(fit))(keys)


def _timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times))


def _accuracy(logits_fn, x, y):
    return float(jnp.mean(jnp.argmax(logits_fn(x), -1) == y))


# ------------------------------------------------------------------------------------------- reference (subprocess)

def _torch_mlp(torch, data):
    """The exported MLP (``kernel_0..2``, ``mean``, ``std`` in ``data``) as a torch module: NCHW in [0, 1] →
    logits, the MLP's maths in the JAX layout (x @ kernel, ReLU between layers), in eval mode."""
    kernels = [torch.tensor(data[f"kernel_{i}"]) for i in range(3)]
    mean, std = float(data["mean"]), float(data["std"])

    class Net(torch.nn.Module):
        def forward(self, q):
            z = ((q.permute(0, 2, 3, 1) - mean) / std).reshape(q.shape[0], -1)
            for i, k in enumerate(kernels):
                z = z @ k
                z = torch.relu(z) if i < len(kernels) - 1 else z
            return z

    return Net().eval()


def _torch_worker(npz_path: str, threads: int, repeats: int) -> dict:
    """Runs in a separate process: AutoAttack's APGD-CE on the exported weights; prints nothing, returns a dict."""
    import torch
    from pyautoattack.autopgd_base import APGDAttack

    torch.set_num_threads(threads)
    data = np.load(npz_path)
    net = _torch_mlp(torch, data)
    x = torch.tensor(data["x"]).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor(data["y"]).long()
    out = {"threads": threads, "torch": torch.__version__}
    for norm, eps in SETTINGS:
        name = {"linf": "Linf", "l2": "L2"}[norm]
        times, cpu_times, accs = [], [], []
        for r in range(max(repeats, len(SEEDS))):
            seed = SEEDS[r % len(SEEDS)]
            attack = APGDAttack(net, n_iter=100, norm=name, eps=eps, seed=seed, loss="ce", n_restarts=1,
                                device="cpu")
            t, c = time.perf_counter(), time.process_time()
            x_adv = attack.perturb(x, y)
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - c)
            if r < len(SEEDS):
                with torch.no_grad():
                    accs.append(float((net(x_adv).argmax(1) == y).float().mean()))
        out[norm] = {"time_min_s": min(times), "time_median_s": float(np.median(times)),
                     "cpu_time_min_s": min(cpu_times), "robust_acc": accs}
    return out


def _fab_worker(npz_path: str, threads: int, repeats: int) -> dict:
    """Separate process: AutoAttack's FAB-T on the exported weights (times, robust flags per norm)."""
    import torch
    from pyautoattack.fab_pt import FABAttack_PT

    torch.set_num_threads(threads)
    data = np.load(npz_path)
    net = _torch_mlp(torch, data)
    x = torch.tensor(data["x"]).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor(data["y"]).long()
    out = {"threads": threads, "torch": torch.__version__}
    for norm, eps in SETTINGS:
        times, cpu_times = [], []
        for _ in range(repeats):
            attack = FABAttack_PT(net, norm={"linf": "Linf", "l2": "L2"}[norm], n_restarts=1, n_iter=100, eps=eps,
                                  seed=0, targeted=True, n_target_classes=9, device="cpu")
            t, c = time.perf_counter(), time.process_time()
            x_adv = attack.perturb(x, y)
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - c)
        with torch.no_grad():
            robust = (net(x_adv).argmax(1) == y).numpy()
        out[norm] = {"time_min_s": min(times), "time_median_s": float(np.median(times)),
                     "cpu_time_min_s": min(cpu_times), "robust": robust.astype(int).tolist()}
    return out


def _run_fab_t(model, params, x, y, repeats) -> dict:
    """FAB-T: crobust's direct call (steady state) against AutoAttack's in a subprocess (module docstring)."""
    f = jax.tree_util.Partial(model.apply, params)
    out = {}
    for norm, eps in SETTINGS:
        call = lambda: A.fab_t(f, x, y, jax.random.key(0), eps=eps, norm=norm, **A.presets.FAB_T)
        t = time.perf_counter()
        x_adv = jax.block_until_ready(call())
        first = time.perf_counter() - t
        best, median = _timed(call, repeats)
        robust = np.asarray(jnp.argmax(f(x_adv), -1) == y)
        out[norm] = {"eps": eps, "first_call_s": first, "time_min_s": best, "time_median_s": median,
                     "robust_acc": float(robust.mean()), "robust": robust}
    if any(importlib.util.find_spec(m) is None for m in ("torch", "pyautoattack")):
        for norm, _ in SETTINGS:
            out[norm].pop("robust")
        out["autoattack"] = {"skipped": "skipped (extra not installed): pip install torch==2.13.0 pyautoattack"}
        return out
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "weights.npz")
        kernels = [np.asarray(params["params"][k]["kernel"]) for k in ("hidden_0", "hidden_1", "head")]
        np.savez(path, x=np.asarray(x), y=np.asarray(y), mean=model.mean[0], std=model.std[0],
                 **{f"kernel_{i}": k for i, k in enumerate(kernels)})
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_attacks", "--fab-worker", path, "1",
                               str(max(1, repeats // 2))], cwd=root, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        out["autoattack"] = {"skipped": f"reference failed: {proc.stderr.strip().splitlines()[-1:]}"}
        return out
    ref = json.loads(proc.stdout.strip().splitlines()[-1])
    out["autoattack"] = {"torch": ref["torch"], "threads": 1}
    for norm, _ in SETTINGS:
        ref_robust = np.asarray(ref[norm]["robust"], bool)
        mine = out[norm]
        out["autoattack"][norm] = {k: ref[norm][k] for k in ("time_min_s", "time_median_s", "cpu_time_min_s")}
        out["autoattack"][norm]["robust_acc"] = float(ref_robust.mean())
        mine["agreement"] = float(np.mean(ref_robust == mine.pop("robust")))
        mine["speedup"] = ref[norm]["time_min_s"] / mine["time_min_s"]
    return out


def _run_reference(params, model, x, y, repeats, thread_counts=(2, 1)) -> dict:
    missing = [m for m in ("torch", "pyautoattack") if importlib.util.find_spec(m) is None]
    if missing:
        return {"skipped": "skipped (extra not installed): pip install torch==2.13.0 pyautoattack"}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "weights.npz")
        kernels = [np.asarray(params["params"][k]["kernel"]) for k in ("hidden_0", "hidden_1", "head")]
        np.savez(path, x=np.asarray(x), y=np.asarray(y), mean=model.mean[0], std=model.std[0],
                 **{f"kernel_{i}": k for i, k in enumerate(kernels)})
        runs = {}
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        for threads in thread_counts:
            proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_attacks", "--torch-worker", path,
                                   str(threads), str(repeats)], cwd=root, capture_output=True, text=True,
                                  timeout=1800)
            if proc.returncode != 0:
                return {"skipped": f"reference failed: {proc.stderr.strip().splitlines()[-1:]}"}
            runs[threads] = json.loads(proc.stdout.strip().splitlines()[-1])
    out = {"torch": runs[thread_counts[0]]["torch"], "runs": {str(t): r for t, r in runs.items()}}
    if 2 not in runs:
        out["note"] = "1 torch thread only (quick mode): a 2-thread OpenMP loop can collapse on a loaded machine"
    for norm, _ in SETTINGS:
        best = min(runs.values(), key=lambda r: r[norm]["time_min_s"])
        out[norm] = {"time_min_s": best[norm]["time_min_s"], "time_median_s": best[norm]["time_median_s"],
                     "threads": best["threads"], "robust_acc": runs[thread_counts[0]][norm]["robust_acc"],
                     "cpu_time_min_s_1_thread": runs[1][norm]["cpu_time_min_s"] if 1 in runs else None}
    return out


# ------------------------------------------------------------------------------------------- crobust

def _compile_crobust(model, params, x, y) -> tuple[dict, dict]:
    """Compiled APGD-CE per norm, and the record (compile time, clean accuracy, robust accuracy per seed)."""
    f = functools.partial(model.apply, params)
    out, compiled = {"clean_acc": _accuracy(f, x, y)}, {}
    predict = jax.jit(lambda q: jnp.argmax(f(q), -1)).lower(x).compile()
    y_host = np.asarray(y)
    n_correct = int(np.sum(np.asarray(predict(x)) == y_host))
    for norm, eps in SETTINGS:
        def on_subset(idx, k, norm=norm, eps=eps):     # attack x[idx] and put the results back into x
            return x.at[idx].set(A.apgd(f, x[idx], y[idx], k, eps=eps, norm=norm, loss="ce", n_iter=100))

        t = time.perf_counter()
        sub = jax.jit(on_subset).lower(jnp.arange(n_correct), jax.random.key(0)).compile()
        compile_s = time.perf_counter() - t

        def attack(k, sub=sub):     # AutoAttack's perturb: iterate only on the correctly classified points
            return sub(np.flatnonzero(np.asarray(predict(x)) == y_host), k)

        compiled[norm] = attack
        out[norm] = {"eps": eps, "compile_s": compile_s, "points_attacked": n_correct,
                     "robust_acc": [_accuracy(f, compiled[norm](jax.random.key(s)), y) for s in SEEDS],
                     "times_s": [], "cpu_times_s": []}
        every = jax.jit(lambda k, norm=norm, eps=eps: A.apgd(f, x, y, k, eps=eps, norm=norm, loss="ce", n_iter=100))
        compiled[norm + "_all_points"] = every.lower(jax.random.key(0)).compile()
        out[norm + "_all_points"] = {
            "eps": eps, "times_s": [], "cpu_times_s": [],
            "robust_acc": [_accuracy(f, compiled[norm + "_all_points"](jax.random.key(s)), y) for s in SEEDS]}
        whole = jax.jit(lambda k, norm=norm, eps=eps: A.apgd(f, x, y, k, eps=eps, norm=norm, loss="ce", n_iter=100,
                                                             chunk_size=None))
        compiled[norm + "_one_batch"] = whole.lower(jax.random.key(0)).compile()
        out[norm + "_one_batch"] = {"eps": eps, "times_s": [], "cpu_times_s": []}
    return compiled, out


def _time_crobust(compiled, out, repeats) -> None:
    for norm in [n + suffix for suffix in ("", "_all_points", "_one_batch") for n, _ in SETTINGS]:
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            jax.block_until_ready(compiled[norm](jax.random.key(0)))
            out[norm]["times_s"].append(time.perf_counter() - t)
            out[norm]["cpu_times_s"].append(time.process_time() - c)
        out[norm]["time_min_s"] = min(out[norm]["times_s"])
        out[norm]["time_median_s"] = float(np.median(out[norm]["times_s"]))
        out[norm]["cpu_time_min_s"] = min(out[norm]["cpu_times_s"])


def _run_population(model, x_train, y_train, x, y, members, repeats) -> dict:
    params = _train(jax.random.split(jax.random.key(10), members), x_train, y_train, model)
    eps = 16 / 255
    keys = jax.random.split(jax.random.key(11), members)

    def attack(p, k):
        f = functools.partial(model.apply, p)
        return jnp.argmax(f(A.apgd(f, x, y, k, eps=eps, norm="linf", n_iter=100)), -1) == y

    # the library's population layout (crobust.parallel.map_members: a loop over members on one CPU device, vmap
    # on accelerators), as crobust.evaluation.population_robust_accuracy runs it; plain vmap reported beside it
    together = jax.jit(lambda p, k: parallel.map_members(attack, p, k)).lower(params, keys).compile()
    vmapped = jax.jit(jax.vmap(attack)).lower(params, keys).compile()
    one = jax.jit(attack).lower(jax.tree.map(lambda p: p[0], params), keys[0]).compile()
    members_params = [jax.tree.map(lambda p, m=m: p[m], params) for m in range(members)]

    def sequential():
        return [one(members_params[m], keys[m]) for m in range(members)]

    flags_together = np.asarray(together(params, keys))
    flags_alone = np.stack([np.asarray(v) for v in sequential()])
    t_together, t_together_med = _timed(lambda: together(params, keys), repeats)
    t_seq, t_seq_med = _timed(sequential, repeats)
    t_vmap, _ = _timed(lambda: vmapped(params, keys), repeats)
    return {"members": members, "eps": eps, "layout": "lax.map over members" if parallel.loops_over_members()
            else "vmap over members", "one_call_s": t_together, "one_call_median_s": t_together_med,
            "one_call_plain_vmap_s": t_vmap, "speedup_plain_vmap": t_seq / t_vmap,
            "sequential_s": t_seq, "sequential_median_s": t_seq_med, "speedup": t_seq / t_together,
            "per_member_ms_one_call": 1e3 * t_together / members, "per_member_ms_sequential": 1e3 * t_seq / members,
            "robust_acc_per_member": flags_together.mean(1).round(4).tolist(),
            "flags_agree_fraction": float(np.mean(flags_together == flags_alone))}


def _time_calls(make_fn, call, repeats, compiled) -> dict:
    """First call (compiles) and ``repeats`` later calls of ``call(make_fn(), key)``, a fresh function each call."""
    t = time.perf_counter()
    first = jax.block_until_ready(call(make_fn(), jax.random.key(0)))
    first_s = time.perf_counter() - t
    cache = compiled._cache_size()
    times = []
    for r in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(call(make_fn(), jax.random.key(r + 1)))
        times.append(time.perf_counter() - t)
    return {"first_call_s": first_s, "second_call_s": times[0], "time_min_s": min(times),
            "time_median_s": float(np.median(times)), "times_s": times,
            "recompiled": compiled._cache_size() != cache, "first": first}


def _run_direct_call(model, params, x, y, repeats) -> dict:
    """The public attack called directly, as a user would: the Partial form and the closure form (issue 20).

    Each call builds its ``logits_fn`` afresh (``Partial(model.apply, params)`` / ``lambda q: model.apply(params,
    q)``), as a loop over batches or models written the natural way does; the closure form's captured arrays are
    lifted into traced leaves (``crobust.attacks._closure``), so both forms compile once.
    """
    out = {}
    forms = (("partial", lambda: jax.tree_util.Partial(model.apply, params)),
             ("closure", lambda: (lambda q: model.apply(params, q))))
    for norm, eps in SETTINGS:
        call = lambda f, k, norm=norm, eps=eps: A.apgd(f, x, y, k, eps=eps, norm=norm, loss="ce", n_iter=100)
        out[norm] = {"eps": eps, "points": int(x.shape[0])}
        for form, make_fn in forms:
            timed = _time_calls(make_fn, call, repeats, A.apgd.compiled)
            timed["robust_acc"] = _accuracy(make_fn(), timed.pop("first"), y)
            out[norm][form] = timed
        # kept flat for the Partial form (the keys earlier reports used)
        out[norm].update({k: v for k, v in out[norm]["partial"].items() if k != "robust_acc"},
                         robust_acc=out[norm]["partial"]["robust_acc"])
        out[norm]["closure_over_partial_second_call"] = (out[norm]["closure"]["second_call_s"]
                                                         / out[norm]["partial"]["second_call_s"])
        out[norm]["closure_over_partial_median"] = (out[norm]["closure"]["time_median_s"]
                                                    / out[norm]["partial"]["time_median_s"])
    return out


def _run_ensemble_cost(model, x_train, y_train, x, y, members, n_points, repeats) -> dict:
    """Seconds per member and point: the standard ensemble vs APGD-CE alone, as population_robust_accuracy runs."""
    from crobust import evaluation

    params = _train(jax.random.split(jax.random.key(20), members), x_train, y_train, model)
    x, y = x[:n_points], y[:n_points]
    keys = jax.random.split(jax.random.key(21), members)
    out = {"members": members, "points": n_points, "eps": 16 / 255, "norm": "linf"}
    for label, attacks in (("standard", "standard"), ("apgd_ce", ("apgd-ce",))):
        run_once = lambda: evaluation.population_robust_accuracy(model.apply, params, x, y, eps=[16 / 255],
                                                                 attacks=attacks, member_keys=keys, on_fail="ignore")
        t = time.perf_counter()
        reports = run_once()
        first_s = time.perf_counter() - t
        best, median = _timed(run_once, repeats)
        out[label] = {"first_call_s": first_s, "time_min_s": best, "time_median_s": median,
                      "ms_per_member_point": 1e3 * best / (members * n_points),
                      "robust_acc": [r.robust_acc[0] for r in reports], "description": reports[0].description}
    out["ensemble_over_apgd_ce"] = out["standard"]["time_min_s"] / out["apgd_ce"]["time_min_s"]
    return out


def _fab_targets(fab: dict) -> dict:
    targets = {}
    for norm, _ in SETTINGS:
        speedup = fab[norm].get("speedup")
        targets[f"fab_t_{norm}_speedup_vs_autoattack"] = {
            "value": None if speedup is None else round(speedup, 2), "target": TARGET_SPEEDUP,
            "met": bool(speedup is not None and speedup >= TARGET_SPEEDUP),
            "note": fab["autoattack"].get("skipped", "second and later direct calls A.fab_t(Partial(...), ...) on "
                                                     "all 1000 points vs FABAttack_PT (1 thread)")}
    return targets


def run_fab_only(quick: bool = False) -> dict:
    """The FAB-T comparison alone (``--fab-only``)."""
    x_train, y_train, x, y = _data()
    model = MLP(num_classes=10, width=64, depth=3, mean=(float(x_train.mean()),), std=(float(x_train.std()),))
    params = jax.tree.map(lambda p: p[0], _train(jax.random.key(0)[None], x_train, y_train, model))
    loadavg_start = os.getloadavg()
    fab = _run_fab_t(model, params, jnp.asarray(x), jnp.asarray(y), 2 if quick else 3)
    return {"name": "attacks_fab_t", "setting": {"attack": "FAB-T, 100 iterations, 9 targets, 1 restart",
                                                 "eps": dict(SETTINGS), "points": int(x.shape[0])},
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__,
                        "backend": jax.default_backend(), "loadavg_start": loadavg_start,
                        "loadavg_end": os.getloadavg()},
            "fab_t": fab, "targets": _fab_targets(fab)}


def run(quick: bool = False) -> dict:
    repeats = 3 if quick else 7
    members = 4 if quick else 16
    x_train, y_train, x, y = _data()
    model = MLP(num_classes=10, width=64, depth=3, mean=(float(x_train.mean()),), std=(float(x_train.std()),))
    params = jax.tree.map(lambda p: p[0], _train(jax.random.key(0)[None], x_train, y_train, model))
    x, y = jnp.asarray(x), jnp.asarray(y)

    loadavg_start = os.getloadavg()
    compiled, ours = _compile_crobust(model, params, x, y)
    # crobust and the reference alternate in rounds so that drifting machine load hits both; minima over rounds
    rounds, reference = (1 if quick else 2), None
    for _ in range(rounds):
        _time_crobust(compiled, ours, repeats)
        ref_round = _run_reference(params, model, x, y, 3 if quick else 5, (1,) if quick else (2, 1))
        if "skipped" in ref_round or reference is None:
            reference = ref_round
        else:
            for norm, _ in SETTINGS:
                if ref_round[norm]["time_min_s"] < reference[norm]["time_min_s"]:
                    reference[norm] = ref_round[norm]
        if "skipped" in reference:
            break
    population = _run_population(model, x_train, y_train, x, y, members, 2 if quick else 3)
    direct = _run_direct_call(model, params, x, y, repeats)
    ensemble = _run_ensemble_cost(model, x_train, y_train, x, y, 2 if quick else 4, 200 if quick else 500,
                                  1 if quick else 2)
    fab = _run_fab_t(model, params, x, y, 2 if quick else 3)
    fmn_record = _run_fmn(model, params, x, y, ours, repeats)

    targets, comparison = _fab_targets(fab), {}
    for norm, eps in SETTINGS:
        ratio = direct[norm]["closure_over_partial_second_call"]
        targets[f"apgd_ce_{norm}_closure_second_call_over_partial"] = {
            "value": round(ratio, 2), "target": TARGET_CLOSURE_RATIO, "met": bool(ratio <= TARGET_CLOSURE_RATIO),
            "note": "second direct call with lambda q: model.apply(params, q) over the same with "
                    "Partial(model.apply, params), all 1000 points, a fresh function each call; median ratio "
                    f"{direct[norm]['closure_over_partial_median']:.2f}"}
        # first-call time (compilation included) beside AutoAttack's total time for the same attack
        comparison[f"{norm}_first_call"] = {
            "partial_first_call_s": direct[norm]["partial"]["first_call_s"],
            "closure_first_call_s": direct[norm]["closure"]["first_call_s"],
            "autoattack_total_s": None if "skipped" in reference else reference[norm]["time_min_s"]}
        mine = ours[norm]
        acc = float(np.mean(mine["robust_acc"]))
        if "skipped" in reference:
            targets[f"apgd_ce_{norm}_speedup_vs_autoattack"] = {
                "value": None, "target": TARGET_SPEEDUP, "met": False, "note": reference["skipped"]}
            targets[f"apgd_ce_{norm}_robust_acc_diff_pp"] = {
                "value": None, "target": TARGET_ACC_DIFF_PP, "met": False, "note": reference["skipped"]}
            continue
        ref = reference[norm]
        speedup = ref["time_min_s"] / mine["time_min_s"]
        diff_pp = 100.0 * (acc - float(np.mean(ref["robust_acc"])))
        comparison[norm] = {"crobust_s": mine["time_min_s"], "autoattack_s": ref["time_min_s"],
                            "speedup": speedup, "speedup_median": ref["time_median_s"] / mine["time_median_s"],
                            # CPU seconds (1 torch thread vs crobust's process): a proxy robust to machine load
                            "speedup_cpu_time": (ref["cpu_time_min_s_1_thread"] / mine["cpu_time_min_s"]
                                                 if ref["cpu_time_min_s_1_thread"] else None),
                            "crobust_robust_acc": acc, "autoattack_robust_acc": float(np.mean(ref["robust_acc"])),
                            "diff_pp": diff_pp,
                            # one jitted call on all 1000 points (also iterating on the misclassified ones)
                            "crobust_all_points_s": ours[norm + "_all_points"]["time_min_s"],
                            "speedup_all_points": ref["time_min_s"] / ours[norm + "_all_points"]["time_min_s"],
                            "crobust_all_points_robust_acc": float(np.mean(ours[norm + "_all_points"]["robust_acc"]))}
        targets[f"apgd_ce_{norm}_speedup_vs_autoattack"] = {"value": round(speedup, 2), "target": TARGET_SPEEDUP,
                                                            "met": bool(speedup >= TARGET_SPEEDUP)}
        targets[f"apgd_ce_{norm}_robust_acc_diff_pp"] = {"value": round(diff_pp, 3), "target": TARGET_ACC_DIFF_PP,
                                                         "met": bool(abs(diff_pp) <= TARGET_ACC_DIFF_PP)}
        direct_speedup = ref["time_min_s"] / direct[norm]["second_call_s"]
        comparison[norm].update(direct_call_second_s=direct[norm]["second_call_s"],
                                direct_call_min_s=direct[norm]["time_min_s"],
                                direct_call_first_s=direct[norm]["first_call_s"],
                                speedup_direct_call=direct_speedup)
        targets[f"apgd_ce_{norm}_direct_call_speedup_vs_autoattack"] = {
            "value": round(direct_speedup, 2), "target": TARGET_SPEEDUP, "met": bool(direct_speedup >= TARGET_SPEEDUP),
            "note": "second direct call A.apgd(Partial(model.apply, params), ...) on all 1000 points"}
    return {
        "name": "attacks",
        "setting": {"model": "MLP(10, width=64, depth=3), bias-free, normalisation inside",
                    "data": "sklearn digits: train digits[1000:] (300 AdamW steps), attack digits[:1000]",
                    "attack": "APGD-CE, 100 iterations, 1 restart, rho 0.75", "eps": dict(SETTINGS),
                    "seeds": list(SEEDS), "repeats": repeats, "rounds": rounds, "quick": quick},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__,
                    "backend": jax.default_backend(), "loadavg_start": loadavg_start,
                    "loadavg_end": os.getloadavg()},
        "crobust": ours, "autoattack": reference, "comparison": comparison, "population": population,
        "direct_call": direct, "ensemble_cost": ensemble, "fab_t": fab, "fmn": fmn_record, "targets": targets,
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--torch-worker":
        print(json.dumps(_torch_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "--fab-worker":
        print(json.dumps(_fab_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    elif "--fab-only" in sys.argv:
        print(json.dumps(run_fab_only(quick="--quick" in sys.argv), indent=2))
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
