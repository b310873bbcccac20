"""Devices and hosts: the member axis of a population sharded over every device, multi-host start, padding.

Usage::

    import crobust
    from crobust import parallel
    parallel.maybe_initialize_distributed()          # only when CROBUST_DISTRIBUTED=1 (or flag=True): multi-host
    result = crobust.fit(model, data, cfg, members)  # shards the members over all devices by itself
    reports = crobust.evaluation.population_robust_accuracy(model.apply, result.best_params, x, y, key,
                                                            eps=[0, 0.1], mesh=parallel.member_mesh())

Design:

- **One mesh axis, ``'members'``.** :func:`member_mesh` is ``jax.make_mesh((n,), ('members',))`` over every
  device of every host (``jax.devices()``), with ``AxisType.Auto`` so that ``jit`` partitions the vmapped program
  itself (jax 0.10's default, ``Explicit``, makes gathers such as ``images[ids]`` on a sharded index refuse to
  trace). Members are independent, so the partitioned program has no collectives: each device trains its own
  members. One device is the same code path with a mesh of size 1.
- **Padding.** A sharded axis must be a multiple of the device count, so a population of M members is padded
  to ``padded_size(M, n)`` by repeating its last member (:func:`pad_tree`; :func:`pad_members` does the same on
  member dicts and flags the copies ``padding=True``). Padding members are trained and attacked like the others
  (their results equal the member they copy) and cut off before anything is returned or reported
  (:func:`unpad_tree`): callers only ever see the first M.
- **Keys never depend on the layout.** Every random stream of member m derives from its own seed (training:
  ``crobust.training.member_keys``; evaluation: the caller's ``member_keys``, or ``fold_in(key, m)``); padding appends
  members at the end, so a real member's numbers do not depend on the device count. Results on 1 and 8 devices
  agree to float tolerance (matmuls of different batch shapes round differently), and are bitwise identical
  run to run on the same device count.
- **Multi-host.** :func:`maybe_initialize_distributed` calls ``jax.distributed.initialize()`` only when asked
  (flag or ``CROBUST_DISTRIBUTED=1``, as big_vision's ``BV_JAX_INIT``: it fails on a plain single-host machine).
  Every host loads the whole dataset (these studies' datasets fit in host memory) and builds the whole
  population (it is a deterministic function of the member seeds); :func:`shard_population` and
  :func:`replicate` then keep on each host only its own devices' shards (``jax.make_array_from_callback``).
  Whatever the host reads back (per-block metrics, the final state) is replicated first, so every host can read
  it; only process 0 writes records (:func:`crobust.records.is_writer`).
"""

from __future__ import annotations

import os
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from crobust._errors import CrobustError

AXIS = "members"
ENV_DISTRIBUTED = "CROBUST_DISTRIBUTED"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


# --------------------------------------------------------------------------------------------------------------
# Multi-host start

def distributed_requested(flag: bool | None = None) -> bool:
    """``flag`` if given, else the environment variable ``CROBUST_DISTRIBUTED`` (1/true/yes/on or 0/false/no/off)."""
    if flag is not None:
        return bool(flag)
    value = os.environ.get(ENV_DISTRIBUTED, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise CrobustError(f"{ENV_DISTRIBUTED}={os.environ[ENV_DISTRIBUTED]!r} is not a boolean; use 1 or 0")


def maybe_initialize_distributed(flag: bool | None = None, **kwargs) -> bool:
    """Call ``jax.distributed.initialize(**kwargs)`` when asked; return whether JAX runs multi-process now.

    Asked = ``flag=True`` (``--distributed``) or ``CROBUST_DISTRIBUTED=1``. Never called otherwise: on a plain
    single-host machine ``initialize()`` has no coordinator to find and fails. It must run before anything else
    touches a JAX device. On Cloud TPU VMs, SLURM and Open MPI it configures itself; elsewhere JAX reads
    ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0) and this function passes ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` as ``num_processes`` / ``process_id`` (JAX itself does not read those two; see the README,
    "Scaling out"). Calling it twice is harmless.
    """
    if not distributed_requested(flag):
        return False
    if jax.distributed.is_initialized():
        return True
    for env, arg in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
        if arg not in kwargs and os.environ.get(env, "").strip():
            try:
                kwargs[arg] = int(os.environ[env])
            except ValueError:
                raise CrobustError(f"{env}={os.environ[env]!r} is not an integer") from None
    try:
        jax.distributed.initialize(**kwargs)
    except (RuntimeError, ValueError) as e:
        raise CrobustError(f"jax.distributed.initialize() failed ({ENV_DISTRIBUTED}=1 or --distributed was given): "
                           f"{str(e).splitlines()[0] if str(e) else type(e).__name__}; on a single machine leave "
                           f"{ENV_DISTRIBUTED} unset, elsewhere set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and "
                           f"JAX_PROCESS_ID") from None
    return True


# --------------------------------------------------------------------------------------------------------------
# Mesh and padding

def member_mesh(devices: Sequence | None = None) -> Mesh:
    """A 1-D mesh ``('members',)`` over ``devices`` (default: every device of every host, ``jax.devices()``)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise CrobustError("member_mesh needs at least one device")
    return jax.make_mesh((len(devices),), (AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def mesh_size(mesh: Mesh) -> int:
    return int(mesh.devices.size)


def padded_size(members: int, n_devices: int) -> int:
    """The smallest multiple of ``n_devices`` that is ≥ ``members``."""
    if members <= 0 or n_devices <= 0:
        raise CrobustError(f"members and devices must be positive, got {members} and {n_devices}")
    return -(-members // n_devices) * n_devices


def pad_members(members: Sequence[Mapping], n_devices: int) -> tuple[list[dict], int]:
    """``(padded, M)``: the member dicts padded to a multiple of ``n_devices`` with copies of the last member.

    Copies carry ``padding=True`` (strip them with :func:`real_members`); only the first M are ever reported.
    """
    members = [dict(m) for m in members]
    m = len(members)
    extra = padded_size(m, n_devices) - m
    return members + [{**members[-1], "padding": True} for _ in range(extra)], m


def real_members(members: Sequence[Mapping]) -> list[dict]:
    """The members that are not padding, without the flag."""
    return [{k: v for k, v in m.items() if k != "padding"} for m in members if not m.get("padding", False)]


def leading_size(tree) -> int:
    """The common leading (member) axis of every leaf of ``tree``."""
    leaves = jax.tree.leaves(tree)
    if not leaves or any(np.ndim(x) < 1 for x in leaves):
        raise CrobustError("expected a pytree of arrays with a leading member axis")
    sizes = {int(np.shape(x)[0]) for x in leaves}
    if len(sizes) != 1:
        raise CrobustError(f"leaves have different leading (member) sizes {sorted(sizes)}")
    return sizes.pop()


def pad_tree(tree, size: int):
    """Pad every leaf's leading axis to ``size`` by repeating its last row (typed PRNG keys included)."""
    m = leading_size(tree)
    if size == m:
        return tree
    if size < m:
        raise CrobustError(f"cannot pad {m} members down to {size}")
    idx = np.concatenate([np.arange(m), np.full(size - m, m - 1)])
    return jax.tree.map(lambda x: x[idx] if isinstance(x, jax.Array) else np.asarray(x)[idx], tree)


# --------------------------------------------------------------------------------------------------------------
# Placement

def member_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis over the mesh's ``'members'`` axis, the rest whole."""
    return NamedSharding(mesh, P(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def is_key(x) -> bool:
    """Whether ``x`` is an array of typed PRNG keys (``jax.random.key``), whose data must be unwrapped to move."""
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _put(x, sharding: NamedSharding):
    """``device_put`` for one host; on several hosts each keeps only its own shards of its full local copy."""
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    if is_key(x):
        data = _put(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def shard_population(tree, mesh: Mesh):
    """Place every leaf (leading member axis, a multiple of the mesh size) with its member axis sharded."""
    n, m = mesh_size(mesh), leading_size(tree)
    if m % n:
        raise CrobustError(f"{m} members cannot be sharded over {n} devices; pad them first (pad_tree)")
    sharding = member_sharding(mesh)
    return jax.tree.map(lambda x: _put(x, sharding), tree)


def replicate(tree, mesh: Mesh):
    """Place every leaf whole on every device of the mesh (the data: every host loaded all of it)."""
    sharding = replicated(mesh)
    return jax.tree.map(lambda x: _put(x, sharding), tree)


class MemberLayout:
    """How a population of ``members`` real members sits on ``mesh``: padded size, shardings, pad/unpad.

    ``put(tree)`` pads and shards a member-leading pytree; ``get(tree)`` cuts a padded (sharded) pytree back to
    the real members, replicated over the mesh when that is needed to read it on every host (padding, or
    several processes), otherwise left as it is (no copy).
    """

    def __init__(self, members: int, mesh: Mesh | None = None):
        self.mesh = member_mesh() if mesh is None else mesh
        self.members = int(members)
        self.n_devices = mesh_size(self.mesh)
        self.padded = padded_size(self.members, self.n_devices)
        self.sharding = member_sharding(self.mesh)
        self.replicated = replicated(self.mesh)
        self._cut = None

    @property
    def multi_process(self) -> bool:
        return not self.sharding.is_fully_addressable

    def put(self, tree):
        return shard_population(pad_tree(tree, self.padded), self.mesh)

    def put_replicated(self, tree):
        return replicate(tree, self.mesh)

    def place_for_eval(self, tree):
        """For a computation whose per-member outputs the host reads back: padded and member-sharded on one host;
        replicated on several (there a member-sharded output could not be read by every host)."""
        return self.put_replicated(tree) if self.multi_process else self.put(tree)

    def get(self, tree):
        if self.padded == self.members and not self.multi_process:
            return tree
        if self._cut is None:
            m = self.members
            self._cut = jax.jit(lambda t: jax.tree.map(lambda x: x[:m], t), out_shardings=self.replicated)
        return self._cut(tree)

    def jit_population(self, fn: Callable, n_member_args: int, n_replicated_args: int = 0,
                       member_outputs: bool = True, **jit_kwargs):
        """``jax.jit(fn)`` with the first ``n_member_args`` arguments member-sharded, the next ones replicated,
        and outputs member-sharded (``member_outputs``) or replicated (when the host must read them)."""
        in_sh = (self.sharding,) * n_member_args + (self.replicated,) * n_replicated_args
        return jax.jit(fn, in_shardings=in_sh, out_shardings=self.sharding if member_outputs else self.replicated,
                       **jit_kwargs)


def unpad_tree(tree, members: int):
    """The first ``members`` rows of every leaf (drop padding members); host arrays stay host arrays."""
    return jax.tree.map(lambda x: x[:members], tree)


def host(tree):
    """Device → numpy for a tree every host can read (fully addressable or replicated)."""
    return jax.tree.map(lambda x: np.asarray(jax.random.key_data(x) if is_key(x) else x), tree)


# --------------------------------------------------------------------------------------------------------------
# Laying out per-member computations

def loops_over_members() -> bool:
    """Whether compiled programs here should step members one after another rather than vmap them.

    True on a single CPU device: there one member's working set (parameters, optimiser moments, a chunk of
    activations) stays in cache, and a vmapped population only spills it (``benchmarks/bench_training.py`` and
    ``benchmarks/bench_attacks.py`` compare the layouts).
    False on accelerators (one wide program fills the device) and with several devices (the member axis is
    sharded; a loop over a sharded axis would gather it).
    """
    return jax.default_backend() == "cpu" and jax.device_count() == 1


def is_convolutional(params) -> bool:
    """Whether a member-stacked parameter tree holds a convolution kernel: a leaf of ≥ 5 axes (M, kh, kw, in, out)."""
    return any(np.ndim(x) >= 5 for x in jax.tree.leaves(params))


def host_loops_members(params) -> bool:
    """Whether the members of a population with these (member-stacked) parameters should each run as their own
    compiled calls from a host loop rather than inside one program: on a single CPU device, for convolutional
    models. XLA:CPU emits a convolution inside a loop (``scan``, ``lax.map``) or under ``vmap`` as a naive loop
    fusion instead of the library convolution, 10–100× slower (``benchmarks/bench_execution.py``); matrix
    products do not suffer, and accelerators are not measured against it (one wide program there)."""
    return loops_over_members() and is_convolutional(params)


#: environment variable overriding :func:`host_threads` (a positive integer; 1 runs members one after another)
ENV_HOST_THREADS = "CROBUST_HOST_THREADS"


def host_threads() -> int:
    """Worker threads :func:`host_map` uses: ``$CROBUST_HOST_THREADS`` where set, else the CPU cores this process
    may run on (``os.sched_getaffinity``)."""
    value = os.environ.get(ENV_HOST_THREADS, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise CrobustError(f"{ENV_HOST_THREADS} must be a positive integer, got {value!r}")
        return int(value)
    return host_cores()


def host_cores() -> int:
    """The CPU cores this process may run on (``os.sched_getaffinity``, else ``os.cpu_count``), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                                          # no affinity call on this platform
        return max(1, os.cpu_count() or 1)


def host_map(fn: Callable[[int], object], n: int, threads: int | None = None) -> list:
    """``[fn(0), …, fn(n − 1)]`` with the calls run side by side on ``threads`` worker threads (default
    :func:`host_threads`), each result blocked on before its worker takes the next index; order kept.

    For members that run as their own compiled calls on one CPU device (:func:`host_loops_members`): XLA:CPU
    keeps about one core busy with a small convolutional network's step, so two members' calls issued from two
    threads run on the two cores together (``benchmarks/bench_execution.py``, arm ``host_loop`` against
    ``host_loop_one_thread``). Each call is the same compiled program on the same inputs as in a plain loop, so
    results are bitwise those of ``threads=1``; JAX traces and compiles a function once however many threads
    call it first. JAX's thread-local settings reach the workers only for the default matmul precision, which is
    carried over; the first exception raised by a call is raised here.
    """
    threads = host_threads() if threads is None else int(threads)
    if threads <= 1 or n <= 1:
        return [fn(i) for i in range(n)]
    from concurrent.futures import ThreadPoolExecutor
    matmul_precision = jax.config.jax_default_matmul_precision

    def run(i):
        with jax.default_matmul_precision(matmul_precision):
            return jax.block_until_ready(fn(i))

    with ThreadPoolExecutor(max_workers=min(threads, n), thread_name_prefix="crobust-member") as pool:
        return list(pool.map(run, range(n)))


#: share of a device's free memory a population's groups may plan to use (the rest: XLA's scratch, fragmentation)
MEMORY_FRACTION = 0.8


def device_free_bytes(device=None) -> int | None:
    """Free memory of ``device`` (default: the first) in bytes, ``bytes_limit − bytes_in_use`` from
    ``device.memory_stats()``; None where the backend reports none (CPU)."""
    device = device if device is not None else jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:                 # some backends raise instead of returning None
        return None
    if not stats or not stats.get("bytes_limit"):
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def host_available_bytes() -> tuple[int, str] | None:
    """Bytes of host memory this process may still take, and where that figure comes from: the smallest of the
    cgroup's limit minus its usage (v2 ``memory.max − memory.current``, v1 ``memory.limit_in_bytes −
    memory.usage_in_bytes``) and the kernel's ``MemAvailable`` (``/proc/meminfo``); None where neither is known."""
    found = []
    for limit, usage, name in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "cgroup limit"),
                               ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                "/sys/fs/cgroup/memory/memory.usage_in_bytes", "cgroup limit")):
        try:
            with open(limit) as f:
                text = f.read().strip()
            if text == "max" or int(text) >= 2 ** 60:        # no limit (v1 writes a huge number)
                continue
            with open(usage) as f:
                found.append((max(int(text) - int(f.read().strip()), 0), name))
        except (OSError, ValueError):
            continue
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append((int(line.split()[1]) * 1024, "MemAvailable"))
    except (OSError, ValueError, IndexError):
        pass
    return min(found) if found else None


def check_host_memory(need: int, what: str, available: tuple[int, str] | None = None) -> None:
    """One-line :class:`~crobust._errors.CrobustError` when ``need`` bytes exceed :func:`host_available_bytes`
    (or ``available``, as ``(bytes, source)``); nothing where the host reports no figure."""
    available = host_available_bytes() if available is None else available
    if available is None:
        return
    free, source = available
    if need > free:
        raise CrobustError(f"{what} needs ~{need / 2 ** 30:.2f} GiB of host memory but this process may use "
                           f"{free / 2 ** 30:.2f} GiB ({source}): use a smaller model or fewer members, or a machine "
                           f"with more memory")


def member_step_bytes(params, *, batch_size: int, eval_batch_size: int = 0, dtype_bytes: int = 4) -> int:
    """Bytes one member's training step adds on top of the resident population state; ``params`` stacked (M, ...).

    Model (float32): the gradient and the updated parameters and two moments, written before the old ones are
    released (4 arrays of P = parameters per member), plus activations: for every parameter leaf with ≥ 2 axes
    (a dense kernel (in, out) or a conv kernel (kh, kw, in, out)), ``out`` features × batch × 4 arrays
    (pre-activation, activation and their gradients), and the validation forward pass (2 arrays × eval batch).
    Exact up to XLA's fusion choices for dense layers; a conv layer's activations also scale with its spatial
    size, which parameters do not carry — there the estimate is low and an explicit ``members_per_group`` is the
    safe choice.
    """
    leaves = jax.tree.leaves(params)
    p = sum(int(np.prod(x.shape[1:])) for x in leaves)
    outs = sum(int(x.shape[-1]) for x in leaves if x.ndim >= 3)
    act = outs * (4 * int(batch_size) + 2 * int(eval_batch_size))
    return dtype_bytes * (4 * p + act)


def members_per_group_for_memory(per_member_bytes: int, free_bytes: int, members: int,
                                 fraction: float = MEMORY_FRACTION) -> int | None:
    """Group size G so that G members' step working sets fit in ``fraction`` of ``free_bytes``.

    None when all ``members`` fit at once (one vmapped program), else G = ⌊fraction·free / per_member⌋ ≥ 1 (the
    block then steps groups of G one after another, :func:`map_members`). Raises a one-line
    :class:`~crobust._errors.CrobustError` when one member alone does not fit.
    """
    return _members_that_fit(per_member_bytes, free_bytes, members, fraction, "one member's training step needs")


def _members_that_fit(need: int, free_bytes: int, members: int, fraction: float, what: str) -> int | None:
    """⌊fraction·free / need⌋ members, None when that is all ``members``; a one-line error when it is 0."""
    usable = fraction * max(int(free_bytes), 0)
    need = max(int(need), 1)
    if need > usable:
        raise CrobustError(f"{what} ~{need / 2 ** 30:.2f} GiB but the device has {free_bytes / 2 ** 30:.2f} GiB "
                           f"free ({fraction:.0%} of it usable): use a smaller model or batch size, or a device "
                           f"with more memory")
    n = int(usable // need)
    return None if n >= members else n


def state_bytes(tree) -> int:
    """Bytes of every array leaf of ``tree``, arrays or ``jax.ShapeDtypeStruct`` (typed PRNG keys counted by their
    key data)."""
    total = 0
    for x in jax.tree.leaves(tree):
        if jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key):
            x = jax.eval_shape(jax.random.key_data, x)
        total += int(np.prod(np.shape(x))) * np.dtype(x.dtype).itemsize
    return total


def offload_chunk_for_memory(state_per_member: int, step_per_member: int, free_bytes: int | None, members: int,
                             fraction: float = MEMORY_FRACTION) -> int | None:
    """Members per device-resident chunk when the population's state does not fit on the device, else None.

    The state of all M members (``state_per_member`` bytes each: parameters, best parameters, optimiser state,
    splits …) normally lives on the device for the whole run. When M · (state + step working set) exceeds
    ``fraction · free_bytes``, the state stays in host memory and the block is run on chunks of
    C = ⌊fraction · free / (state + step)⌋ members, each copied in, stepped and copied back
    (:func:`crobust.training.fit`, ``offload``). None when everything fits or the backend reports no memory
    (``free_bytes`` None: a CPU, where host and device memory are the same); a one-line
    :class:`~crobust._errors.CrobustError` when one member alone does not fit.
    """
    if free_bytes is None:
        return None
    return _members_that_fit(int(state_per_member) + int(step_per_member), free_bytes, members, fraction,
                             "one member's state and training step need")


def map_members(fn: Callable, *member_trees, group: int | None | str = "auto"):
    """``fn`` applied to each member (the leading axis of every tree), laid out as ``group`` says.

    ``None``: one ``vmap`` over every member. An integer G: ``lax.map`` over groups of G members, vmapped inside a
    group (G = 1: a plain loop, so a ``lax.cond`` in ``fn`` really skips work). ``"auto"``: 1 where
    :func:`loops_over_members`, else ``None``. Same values in every layout (up to float rounding of batched ops).
    """
    if group == "auto":
        group = 1 if loops_over_members() else None
    if group is None or group >= leading_size(member_trees):
        return jax.vmap(fn)(*member_trees)
    return jax.lax.map(lambda args: fn(*args), member_trees, batch_size=None if group == 1 else group)


def population_map(fn: Callable, *member_trees, mesh: Mesh | None = None, replicated_args: Sequence = ()):
    """``jax.jit(jax.vmap(fn))(*member_trees, *replicated_args)`` with the member axis padded and sharded; where
    :func:`host_loops_members` (convolutional members on one CPU device), ``jax.jit(fn)`` called member after
    member instead (one compilation, each call without a loop or vmap around the model, members side by side on
    the cores: :func:`host_map`), outputs stacked.

    ``fn(*member_slices, *replicated_args)`` works on one member. Returns the outputs of the real members only
    (leading axis M), readable on every host. Both forms agree to float round-off.
    """
    m = leading_size(member_trees)
    if host_loops_members(member_trees):            # one device: no padding, no sharding
        one = jax.jit(fn)
        outs = host_map(lambda i: one(*(jax.tree.map(lambda a: a[i], t) for t in member_trees), *replicated_args), m)
        return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
    layout = MemberLayout(m, mesh)
    in_axes = (0,) * len(member_trees) + (None,) * len(replicated_args)
    run = layout.jit_population(jax.vmap(fn, in_axes=in_axes), len(member_trees), len(replicated_args),
                                member_outputs=not layout.multi_process)
    out = run(*(layout.put(t) for t in member_trees), *(layout.put_replicated(a) for a in replicated_args))
    return layout.get(out)


__all__ = ["AXIS", "ENV_DISTRIBUTED", "ENV_HOST_THREADS", "distributed_requested", "maybe_initialize_distributed",
           "member_mesh", "mesh_size", "padded_size", "pad_members", "real_members", "leading_size", "pad_tree",
           "unpad_tree", "member_sharding", "replicated", "shard_population", "replicate", "MemberLayout", "host",
           "population_map", "loops_over_members", "map_members", "is_convolutional", "host_loops_members", "host_cores",
           "host_threads", "host_map"]
