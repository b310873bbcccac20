"""crobust.parallel: the member axis sharded over 8 virtual CPU devices — and over 2 processes × 2 devices with
jax.distributed — gives the 1-device results, padding members are never reported, the block compiles once, and
jax.distributed starts only when asked.

The multi-device runs are subprocesses: the device count (``--xla_force_host_platform_device_count``) must be set
before JAX starts, and this pytest process has already started it with one CPU device.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust import parallel, training
from crobust._errors import CrobustError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Shared by the parent (1 device) and the subprocesses: 6 members, so 8 devices pad to 8 (and 2 × 2 to 8).
SETUP = """
from crobust import data as data_lib, training
from crobust.models import MLP
ds = data_lib.subsample(data_lib.load_dataset("digits"), n_train=600, n_test=100, seed=0)
model = MLP(num_classes=10, width=32, depth=2, mean=ds.mean, std=ds.std)
members = training.grid(alpha=[0.0, 1e-3, 1e-2], seeds=range(2))
cfg = training.TrainConfig(regularizer="nuclear", projection="frobenius", batch_size=64, max_steps=300, eval_every=50,
                           patience=100, min_steps=50)
"""

CHILD = """
import json, logging, os, sys
import jax
if os.environ.get("CROBUST_DISTRIBUTED"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")   # cross-process collectives on CPU
from crobust import parallel
multi = parallel.maybe_initialize_distributed()                      # CROBUST_DISTRIBUTED=1 + JAX_* variables
""" + SETUP + """
import chex, jax.numpy as jnp, numpy as np
from jax.sharding import PartitionSpec as P
from crobust import evaluation

compiles = []
class H(logging.Handler):
    def emit(self, record):
        if "Finished XLA compilation of jit(block_fn)" in record.getMessage():
            compiles.append(record.getMessage())
logging.getLogger("jax").addHandler(H())
jax.config.update("jax_log_compiles", True)
original = training.make_block_fn
training.make_block_fn = lambda *a, **k: chex.assert_max_traces(original(*a, **k), n=1)

info = {"devices": jax.device_count(), "processes": jax.process_count(), "multi": multi}
layout = parallel.MemberLayout(len(members))
placed = layout.put(training.init_population(model, ds, cfg, members))
leaves = jax.tree.leaves(placed)
info["padded"] = layout.padded
info["state_sharded"] = all(x.sharding.spec == P("members") and x.shape[0] == 8
                            and len(x.addressable_shards) == jax.local_device_count()
                            and all(s.data.shape[0] == 8 // jax.device_count() for s in x.addressable_shards)
                            for x in leaves)

ckdir = sys.argv[2] if len(sys.argv) > 2 else None                  # multi-host: collective Orbax saves
res = training.fit(model, ds, cfg, members, progress=False, checkpoint_dir=ckdir)
info["compiles"] = res.compiles
info["xla_compiles"] = len(compiles)
jax.config.update("jax_log_compiles", False)

x = data_lib.to_float(ds.test_images[:60]); y = jnp.asarray(ds.test_labels[:60])
kw = dict(eps=[0.0, 0.05, 0.1], norm="linf", attacks=(("pgd", dict(n_iter=5, n_restarts=1)),), on_fail="ignore")
sharded = evaluation.population_robust_accuracy(model.apply, res.best_params, x, y, jax.random.key(3),
                                                mesh=parallel.member_mesh(), **kw)
single = jax.tree.map(lambda v: jax.device_put(np.asarray(v), jax.local_devices()[0]), res.best_params)
plain = evaluation.population_robust_accuracy(model.apply, single, x, y, jax.random.key(3),
                                              mesh=parallel.member_mesh(jax.local_devices()[:1]), **kw)
info["n_reports"] = len(sharded)
sq = parallel.population_map(lambda p, s: jnp.sum(p["params"]["hidden_0"]["kernel"] ** 2) * s, res.best_params,
                             jnp.arange(6.0))
out = {f"p{i}": np.asarray(v) for i, v in enumerate(jax.tree.leaves(res.params))}
out.update({f"b{i}": np.asarray(v) for i, v in enumerate(jax.tree.leaves(res.best_params))})
out.update({f"h_{k}": v for k, v in res.history.items()})
out.update(best_step=np.asarray(res.state.best_step), ra_sharded=np.array([r.robust_acc for r in sharded]),
           ra_plain=np.array([r.robust_acc for r in plain]), clean_sharded=np.array([r.clean_acc for r in sharded]),
           clean_plain=np.array([r.clean_acc for r in plain]), sq=np.asarray(sq))
np.savez(sys.argv[1], **out)
print(json.dumps(info))
"""


def _env(devices: int, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CROBUST_DISTRIBUTED", "XLA_FLAGS", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
                        "JAX_PROCESS_ID")}
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if f.startswith("--xla_backend_optimization_level")]
    env.update(XLA_FLAGS=" ".join([f"--xla_force_host_platform_device_count={devices}", *kept]), JAX_PLATFORMS="cpu",
               **extra)                                    # the suite's code-generation level (tests/conftest.py)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _spawn(args, env):
    return subprocess.Popen([sys.executable, "-c", CHILD, *map(str, args)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _compare(got, ref, info, devices, processes):
    assert info["devices"] == devices and info["processes"] == processes and info["multi"] == (processes > 1)
    assert info["padded"] == 8 and info["state_sharded"], info
    # One trace and one XLA compilation of the block for all blocks (chex.assert_max_traces would have raised).
    assert info["compiles"] == 1 and info["xla_compiles"] == 1, info
    # Padding members (6 → 8) are never reported.
    assert info["n_reports"] == 6 and got["p0"].shape[0] == 6 and got["h_step"].shape[1] == 6
    assert got["ra_sharded"].shape == (6, 3) and got["sq"].shape == (6,)

    # Sharded vs 1 device: the same schedule exactly, the same numbers to float tolerance (different matmul shapes
    # round differently; nothing depends on the layout).
    for k in ("step", "alive", "evaluated"):
        np.testing.assert_array_equal(got[f"h_{k}"], ref.history[k])
    np.testing.assert_array_equal(got["best_step"], np.asarray(ref.state.best_step))
    for k in ("train_loss", "val_loss", "val_acc"):
        np.testing.assert_allclose(got[f"h_{k}"], ref.history[k], rtol=1e-4, atol=1e-4)
    # Parameters after 300 steps, relative to each layer's norm (measured: first layer 3e-7, output layer 1e-4;
    # rounding differences grow with the steps; an L1 penalty, whose subgradient flips weights near 0, grows them
    # to ~1e-3, which is why this test uses the study's nuclear penalty).
    for i, (p, b) in enumerate(zip(jax.tree.leaves(ref.params), jax.tree.leaves(ref.best_params))):
        for name, a, r in ((f"p{i}", got[f"p{i}"], np.asarray(p)), (f"b{i}", got[f"b{i}"], np.asarray(b))):
            rel = np.linalg.norm(a - r) / np.linalg.norm(r)
            assert rel < 5e-4 and np.max(np.abs(a - r)) < 1e-3, (name, rel, np.max(np.abs(a - r)))

    # Attacks and metrics on sharded members = on one device, member by member.
    np.testing.assert_allclose(got["ra_sharded"], got["ra_plain"], atol=1 / 60 + 1e-9)
    np.testing.assert_array_equal(got["clean_sharded"], got["clean_plain"])
    w = np.asarray(ref.best_params["params"]["hidden_0"]["kernel"])
    np.testing.assert_allclose(got["sq"], (w ** 2).sum((1, 2)) * np.arange(6.0), rtol=1e-3)


def test_sharded_over_8_devices_and_over_2_hosts_match_one_device_and_never_report_padding(tmp_path):
    # 8 virtual devices in one process, and 2 processes × 2 devices started with jax.distributed (localhost
    # coordinator; CPU collectives through gloo; checkpoints written collectively), all at once.
    jobs = {"eight": _spawn([tmp_path / "eight.npz"], _env(8))}
    port = _free_port()
    for pid in (0, 1):
        jobs[f"host{pid}"] = _spawn([tmp_path / f"host{pid}.npz", tmp_path / "ck"], _env(
            2, CROBUST_DISTRIBUTED="1", JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(pid)))
    try:
        # Meanwhile, the same population on this process's single device.
        ns: dict = {}
        exec(SETUP, ns)
        ref = training.fit(ns["model"], ns["ds"], ns["cfg"], ns["members"], progress=False)
        assert jax.device_count() == 1 and ref.compiles == 1
        outputs = {name: job.communicate(timeout=600) for name, job in jobs.items()}
    finally:
        for job in jobs.values():
            if job.poll() is None:
                job.kill()
    for name, job in jobs.items():
        assert job.returncode == 0, (name, outputs[name][1][-3000:])
    infos = {name: json.loads(out.strip().splitlines()[-1]) for name, (out, _) in outputs.items()}
    got = {name: np.load(tmp_path / f"{name}.npz") for name in jobs}

    _compare(got["eight"], ref, infos["eight"], devices=8, processes=1)
    for pid in (0, 1):
        _compare(got[f"host{pid}"], ref, infos[f"host{pid}"], devices=4, processes=2)
    # Both hosts read back the same numbers, bit for bit; the checkpoint folder holds the final checkpoint.
    for k in got["host0"].files:
        assert np.array_equal(got["host0"][k], got["host1"][k], equal_nan=True), k
    assert str(got["host0"]["h_step"].shape[0]) in os.listdir(tmp_path / "ck")


def test_padding_helpers():
    members = training.grid(alpha=[0.0, 0.1, 0.2], seeds=range(2))
    padded, m = parallel.pad_members(members, 8)
    assert m == 6 and len(padded) == 8
    assert [p.get("padding", False) for p in padded] == [False] * 6 + [True] * 2
    assert padded[6]["alpha"] == members[-1]["alpha"] and padded[7]["seed"] == members[-1]["seed"]
    assert parallel.real_members(padded) == members
    assert parallel.pad_members(members, 3)[0] == members and parallel.pad_members(members, 1)[1] == 6
    assert [parallel.padded_size(m, n) for m, n in ((6, 8), (8, 8), (9, 8), (1, 4), (5, 1))] == [8, 8, 16, 4, 5]
    with pytest.raises(CrobustError):
        parallel.padded_size(0, 8)

    tree = {"w": jnp.arange(12.0).reshape(3, 4), "k": jax.vmap(jax.random.key)(jnp.arange(3)),
            "n": np.array([1, 2, 3])}
    big = parallel.pad_tree(tree, 5)
    np.testing.assert_array_equal(big["w"][3:], np.stack([np.arange(8.0, 12.0)] * 2))
    np.testing.assert_array_equal(jax.random.key_data(big["k"][4]), jax.random.key_data(tree["k"][2]))
    np.testing.assert_array_equal(big["n"], [1, 2, 3, 3, 3])
    back = parallel.unpad_tree(big, 3)
    np.testing.assert_array_equal(back["w"], tree["w"])
    with pytest.raises(CrobustError, match="different leading"):
        parallel.leading_size({"a": np.zeros((2,)), "b": np.zeros((3,))})


def test_one_device_is_the_same_code_path():
    mesh = parallel.member_mesh()
    assert mesh.axis_names == ("members",) and parallel.mesh_size(mesh) == jax.device_count() == 1
    layout = parallel.MemberLayout(3, mesh)
    tree = {"w": jnp.ones((3, 2))}
    placed = layout.put(tree)
    assert placed["w"].sharding == parallel.member_sharding(mesh)
    assert layout.get(placed) is placed             # nothing to cut: no copy
    with pytest.raises(CrobustError, match="pad them first"):
        parallel.shard_population({"w": jnp.ones((3, 2))}, _FakeMesh(2))


class _FakeMesh:
    """Only what shard_population reads before refusing an axis that is not a multiple of the device count."""

    def __init__(self, n):
        self.devices = np.empty((n,), object)


def test_distributed_starts_only_when_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.delenv("CROBUST_DISTRIBUTED", raising=False)
    assert parallel.maybe_initialize_distributed() is False and calls == []
    monkeypatch.setenv("CROBUST_DISTRIBUTED", "0")
    assert parallel.maybe_initialize_distributed() is False and calls == []
    assert parallel.maybe_initialize_distributed(True) is True and len(calls) == 1      # --distributed
    monkeypatch.setenv("CROBUST_DISTRIBUTED", "1")
    assert parallel.maybe_initialize_distributed() is True and len(calls) == 2
    assert parallel.maybe_initialize_distributed(False) is False and len(calls) == 2    # the flag wins
    monkeypatch.setenv("CROBUST_DISTRIBUTED", "perhaps")
    with pytest.raises(CrobustError, match="not a boolean"):
        parallel.maybe_initialize_distributed()

    def fail(**kw):
        raise ValueError("coordinator_address should be defined.")

    monkeypatch.setattr(jax.distributed, "initialize", fail)
    with pytest.raises(CrobustError, match="JAX_COORDINATOR_ADDRESS"):
        parallel.maybe_initialize_distributed(True)


def test_members_per_group_for_memory_and_member_step_bytes():
    """Group size from free memory: all fit → None; some fit → ⌊0.8·free / need⌋; none → one clear error.
    The working-set model is checked on an MLP-shaped tree by hand: P = 20·16 + 16 + 16·5 + 5 = 421 parameters,
    kernels' outputs 16 + 5 = 21 features."""
    from crobust._errors import CrobustError
    tree = {"h": {"kernel": np.zeros((4, 20, 16)), "bias": np.zeros((4, 16))},
            "o": {"kernel": np.zeros((4, 16, 5)), "bias": np.zeros((4, 5))}}
    need = parallel.member_step_bytes(tree, batch_size=8, eval_batch_size=32)
    assert need == 4 * (4 * 421 + 21 * (4 * 8 + 2 * 32))
    assert parallel.members_per_group_for_memory(100, 10_000, members=50) is None        # 80 fit, 50 asked
    assert parallel.members_per_group_for_memory(100, 1_000, members=50) == 8
    assert parallel.members_per_group_for_memory(100, 125, members=50) == 1              # exactly one fits
    with pytest.raises(CrobustError, match="one member's training step needs"):
        parallel.members_per_group_for_memory(100, 124, members=50)
    assert parallel.device_free_bytes() is None or parallel.device_free_bytes() > 0
