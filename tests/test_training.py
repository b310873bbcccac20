"""crobust.training: a population equals its members trained one by one; one compile serves every block and
every α; early stopping, divergence and the Frobenius projection behave per member; AdamW and SGD steps equal
torch's update rules written out in numpy; per-member data order and validation splits; the paper's mechanism
(nuclear α concentrates the spectrum at fixed Frobenius norm) at small scale; bad input.

Real data (sklearn digits, 1437 train images of 8×8), tiny MLPs. The expensive part is XLA compilation, so the
trained populations are module-scoped fixtures shared by several tests.
"""

import dataclasses
import functools
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _trees import assert_trees_close, member
from crobust import optim, parallel, training
from crobust._errors import CrobustError
from crobust.data import load_dataset
from crobust.models import MLP, hidden_matrices, layer_matrices
from crobust.shuffle import index_shuffle
from crobust.training import TrainConfig, fit, grid, init_population, make_block_fn

DATA = load_dataset("digits")
N = DATA.train_labels.shape[0]

# The shared population: nuclear norm + Frobenius projection, early stopping on validation loss.
# Two choices keep float32 round-off from being amplified, so that a population and its members trained alone
# agree to ~1e-6 over the whole run (checked while writing these tests; both are properties of the dynamics,
# not of the trainer):
# - SGD, not Adam: Adam divides each gradient coordinate by its own running RMS, so a coordinate whose gradient
#   is round-off in one program and exactly zero in the other (a nearly dead ReLU unit) takes a full lr step in
#   one of them; such runs drift apart by O(1) within ~150 steps even at α = 0;
# - one hidden layer (64 → 16, rectangular): the nuclear-norm gradient U Vᵀ is the polar factor of W, whose
#   sensitivity grows like 1/(σ_i + σ_j); a square 16 × 16 layer has near-zero singular values and the same
#   drift appears at α = 0.01.
MODEL = MLP(10, width=16, depth=2, mean=DATA.mean, std=DATA.std)
CFG = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-3, batch_size=64, max_steps=200,
                  eval_every=20, patience=40, min_steps=100, val_ratio=0.2, regularizer="nuclear",
                  projection="frobenius")
MEMBERS = grid(alpha=[0.0, 0.01], seeds=[0, 1])        # [(0, s0), (0, s1), (0.01, s0), (0.01, s1)]
BIG_ALPHA = 0.3

# A tiny model for the optimiser-parity and divergence tests.
TINY = MLP(10, width=8, depth=2, mean=DATA.mean, std=DATA.std)


def _host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


# Two programs that lay the members out differently (all vmapped, one at a time, groups of 3, a member alone) use
# different kernels (a batched vs an unbatched GEMM, other blocking), so each product's float32 sum is taken in
# another order: up to ~√k·ε ≈ 1e-6 relative per product (k = 64 inputs). 200 SGD steps with momentum, early stopping
# and the nuclear norm's polar factor amplify that by the trajectory's sensitivity: measured ≤ 1e-5 of the leaf's
# scale on a Xeon, 2.0e-5 on an AMD EPYC (same packages). A layout bug (a member skipped, stepped twice or mixed
# with another) moves the weights by a whole step, ≥ 1e-2 relative; 1e-4 separates the two with margin.
LAYOUT_RTOL = 1e-4


_assert_trees_close = functools.partial(assert_trees_close, rtol=LAYOUT_RTOL)


def _spectral_ratio(w):
    s = np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)
    return s[..., 0] / np.sqrt(np.sum(s ** 2, axis=-1))


def _np_val_loss(params, idx):
    """Mean cross-entropy in float64 of one member's parameters on train_images[idx], by a numpy forward pass."""
    x = DATA.train_images[idx].astype(np.float64) / 255.0
    x = ((x - np.asarray(DATA.mean)) / np.asarray(DATA.std)).reshape(len(idx), -1)
    mats = [np.asarray(w, np.float64) for w in layer_matrices(params).values()]
    for w in mats[:-1]:
        x = np.maximum(x @ w.T, 0.0)
    logits = x @ mats[-1].T
    logits -= logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-np.mean(logp[np.arange(len(idx)), DATA.train_labels[idx]]))


@functools.partial(jax.jit, static_argnums=2)
def _epoch_permutation(key, epoch, n):
    return index_shuffle(jax.random.fold_in(jax.random.fold_in(key, 1), epoch), jnp.arange(n), n)


def _batch_indices(key, train_idx, batch_size, step):
    """The documented data order: epoch e is the permutation index_shuffle(fold_in(fold_in(key, 1), e), ·, n_train)
    of train_idx (whole, materialised here), consumed in n_train // B full batches."""
    n_train = train_idx.shape[0]
    epoch, pos = divmod(step, n_train // batch_size)
    perm = np.asarray(_epoch_permutation(key, epoch, n_train))
    np.testing.assert_array_equal(np.sort(perm), np.arange(n_train))
    return np.asarray(train_idx)[perm[pos * batch_size:(pos + 1) * batch_size]]


# ----------------------------------------------------------------------------------------------------------
# Shared populations


@pytest.fixture(scope="module")
def pop():
    """MEMBERS trained together, through one traced-once block function; every block's state kept."""
    block_fn = jax.jit(chex.assert_max_traces(make_block_fn(MODEL, CFG), n=1))
    init = init_population(MODEL, DATA, CFG, MEMBERS)
    snaps = []
    res = fit(MODEL, DATA, CFG, MEMBERS, state=init, block_fn=block_fn, progress=False,
              on_block=lambda state, metrics: snaps.append(_host((state.params, state.opt_state, state.step))))
    return types.SimpleNamespace(init=init, res=res, block_fn=block_fn, snaps=snaps)


@pytest.fixture(scope="module")
def sequential(pop):
    """Each of MEMBERS fitted alone (M = 1), sharing one jitted M=1 block function.

    The last member is initialised alone too (its own ``init_population``). The others start from their slice of
    the population's initial state: an initialisation costs one XLA compile of several seconds per call on this
    CPU, and that it is a per-seed function of the member alone is what the last member (at position 3 in the
    population, 0 alone) and test_validation_split_and_data_order_per_member check.
    """
    block_fn = jax.jit(make_block_fn(MODEL, CFG))
    runs = []
    for i, m in enumerate(MEMBERS):
        state = None if i == len(MEMBERS) - 1 else jax.tree.map(lambda a: a[i:i + 1], pop.init)
        runs.append(fit(MODEL, DATA, CFG, [m], state=state, block_fn=block_fn, progress=False))
    return runs


@pytest.fixture(scope="module")
def big_alpha(pop):
    """The same seeds at α ∈ {0, BIG_ALPHA}: same shapes, so the same compiled block and the same initial state."""
    members = grid(alpha=[0.0, BIG_ALPHA], seeds=[0, 1])
    snaps = []
    res = fit(MODEL, DATA, CFG, members, state=pop.init, block_fn=pop.block_fn, progress=False,
              on_block=lambda state, metrics: snaps.append(_host((state.params, state.opt_state, state.step))))
    return types.SimpleNamespace(res=res, snaps=snaps)


# ----------------------------------------------------------------------------------------------------------
# Population == sequential, one compile


def _assert_schedule_far_from_ties(history, margin=10 * LAYOUT_RTOL):
    """The premise of comparing early-stopping schedules (steps, best steps, stops) exactly across programs: each is
    decided by strict comparisons ``val_loss < best_val`` of evaluated, eligible losses, which layout round-off
    (≤ LAYOUT_RTOL relative, measured ≤ 2e-5) can flip only where the two are that close. Every such comparison in
    the reference history is checked to be at least ``margin`` (relative) apart."""
    val, evaluated, step = history["val_loss"], history["evaluated"], history["step"]
    for m in range(val.shape[1]):
        best = np.inf
        for b in range(val.shape[0]):
            if not evaluated[b, m] or step[b, m] < CFG.min_steps:
                continue
            if np.isfinite(best):
                assert abs(val[b, m] - best) > margin * abs(best), (m, b, val[b, m], best)
            best = min(best, val[b, m])


def test_population_equals_members_trained_alone(pop, sequential):
    res = pop.res
    _assert_schedule_far_from_ties(res.history)
    # the member initialised alone got the same key, split and (through its whole trajectory, below) weights
    # as at its position in the population
    solo, last = sequential[-1].state, len(MEMBERS) - 1
    np.testing.assert_array_equal(jax.random.key_data(solo.key)[0], jax.random.key_data(pop.init.key)[last])
    np.testing.assert_array_equal(np.asarray(solo.train_idx)[0], np.asarray(pop.init.train_idx)[last])
    # α is per member: same seed, different α gives a different loss (CE + α·‖W‖_*) and trajectory
    assert abs(res.history["train_loss"][1, 0] - res.history["train_loss"][1, 2]) > 1e-3
    assert np.max(np.abs(np.asarray(res.params["params"]["hidden_0"]["kernel"][0])
                         - np.asarray(res.params["params"]["hidden_0"]["kernel"][2]))) > 1e-3
    n_blocks = res.history["step"].shape[0]
    for i, alone in enumerate(sequential):
        assert alone.history["step"].shape[1] == 1
        _assert_trees_close(member(res.params, i), member(alone.params, 0))
        _assert_trees_close(member(res.best_params, i), member(alone.best_params, 0))
        assert int(res.state.best_step[i]) == int(alone.state.best_step[0])
        np.testing.assert_allclose(float(res.state.best_val[i]), float(alone.state.best_val[0]), rtol=LAYOUT_RTOL)
        assert int(res.state.step[i]) == int(alone.state.step[0])
        np.testing.assert_array_equal(np.asarray(res.state.val_idx[i]), np.asarray(alone.state.val_idx[0]))
        np.testing.assert_array_equal(np.asarray(res.state.train_idx[i]), np.asarray(alone.state.train_idx[0]))
        assert bool(alone.state.stopped[0]) and not bool(alone.state.diverged[0])
        n = alone.history["step"].shape[0]
        assert n <= n_blocks
        for k, v in alone.history.items():
            if v.dtype == bool or np.issubdtype(v.dtype, np.integer):
                np.testing.assert_array_equal(res.history[k][:n, i], v[:, 0], err_msg=k)
            else:
                np.testing.assert_allclose(res.history[k][:n, i], v[:, 0], rtol=LAYOUT_RTOL, atol=1e-6, err_msg=k)
        # after the member finished alone, the population keeps it frozen and says so
        assert not res.history["alive"][n - 1:, i].any()
        assert not res.history["evaluated"][n:, i].any()
        assert (res.history["step"][n:, i] == alone.history["step"][-1, 0]).all()


@pytest.mark.parametrize("group", [1, 3])
def test_member_layout_does_not_change_results(pop, group):
    """Members stepped one at a time (lax.map + lax.cond skipping stopped members) or in groups of 3 (a group and a
    remainder of 1) give what the all-vmapped population gives: members are independent, whatever the layout."""
    group = training.auto_members_per_group(pop.init.params)
    assert group is None or group >= len(MEMBERS)      # pop itself ran all vmapped (None: every member, off CPU)
    block_fn = jax.jit(make_block_fn(MODEL, CFG, members_per_group=group))
    res = fit(MODEL, DATA, CFG, MEMBERS, state=pop.init, block_fn=block_fn, progress=False)
    _assert_schedule_far_from_ties(pop.res.history)
    assert res.history["alive"].shape == pop.res.history["alive"].shape
    assert len(set(pop.res.history["alive"].sum(axis=0))) > 1, "members should stop at different blocks"
    _assert_trees_close(res.params, pop.res.params)
    _assert_trees_close(res.best_params, pop.res.best_params)
    _assert_trees_close(res.state.opt_state, pop.res.state.opt_state)
    for k, v in pop.res.history.items():
        if v.dtype == bool or np.issubdtype(v.dtype, np.integer):
            np.testing.assert_array_equal(res.history[k], v, err_msg=k)
        else:
            np.testing.assert_allclose(res.history[k], v, rtol=LAYOUT_RTOL, atol=1e-6, err_msg=k)


def test_a_host_resident_state_stepped_in_chunks_gives_the_same_population(pop):
    """offload=3: the state stays in host memory and every block steps members 0–2, then 3 with two padding copies
    of it (dropped) — one compiled chunk shape, and the results of the device-resident population."""
    res = fit(MODEL, DATA, CFG, MEMBERS, state=pop.init, offload=3, progress=False)
    assert res.compiles <= 1                                 # one chunk shape (0: an earlier test compiled it)
    _assert_schedule_far_from_ties(pop.res.history)
    assert res.history["alive"].shape == pop.res.history["alive"].shape
    _assert_trees_close(res.params, pop.res.params)
    _assert_trees_close(res.best_params, pop.res.best_params)
    _assert_trees_close(res.state.opt_state, pop.res.state.opt_state)
    assert all(a.devices() == {jax.devices("cpu")[0]} for a in jax.tree.leaves(res.params))
    for k, v in pop.res.history.items():
        if v.dtype == bool or np.issubdtype(v.dtype, np.integer):
            np.testing.assert_array_equal(res.history[k], v, err_msg=k)
        else:
            np.testing.assert_allclose(res.history[k], v, rtol=LAYOUT_RTOL, atol=1e-6, err_msg=k)
    with pytest.raises(CrobustError, match="offload must be"):
        fit(MODEL, DATA, CFG, MEMBERS, offload=0, progress=False)


def test_offload_chunk_from_free_memory():
    """C = ⌊0.8 · free / (state + step)⌋ per chunk; None when all fit or the backend reports no memory; one member
    that does not fit is a one-line error."""
    gib = 2 ** 30
    assert parallel.offload_chunk_for_memory(gib, gib, 10 * gib, members=8) == 4          # ⌊8 GiB / 2 GiB⌋
    assert parallel.offload_chunk_for_memory(gib, gib, 100 * gib, members=8) is None      # 16 GiB fit in 80
    assert parallel.offload_chunk_for_memory(gib, gib, None, members=8) is None           # a CPU: no statistics
    with pytest.raises(CrobustError, match="one member's state and training step need ~3.00 GiB"):
        parallel.offload_chunk_for_memory(2 * gib, gib, 2 * gib, members=8)
    key_tree = {"k": jax.random.split(jax.random.key(0), 3), "w": jnp.zeros((3, 5), jnp.float32)}
    assert parallel.state_bytes(key_tree) == 3 * 2 * 4 + 3 * 5 * 4                       # threefry: 2 uint32


def test_auto_members_per_group_keeps_a_groups_optimiser_state_in_budget(monkeypatch):
    # the single-CPU-device rule, on any backend (off CPU the function answers None: every member vmapped)
    monkeypatch.setattr(parallel, "loops_over_members", lambda: True)
    big = {"w": jnp.zeros((32, 784, 400)), "h": jnp.zeros((32, 400, 10))}       # 16 B × 317,600 > the budget
    small = {"w": jnp.zeros((32, 64, 64)), "h": jnp.zeros((32, 64, 10))}        # 16 B × 4,736 = 75,776
    assert training.auto_members_per_group(big) == 1
    assert training.auto_members_per_group(small) == training.MEMBER_CACHE_BUDGET_BYTES // (16 * 4736)
    assert training.auto_members_per_group({"w": jnp.zeros((2, 4, 4))}) == 2     # never more than M
    with pytest.raises(CrobustError, match="members_per_group"):
        make_block_fn(MODEL, CFG, members_per_group=0)


def test_auto_members_per_group_on_an_accelerator_follows_free_memory(monkeypatch, pop):
    """Off a single CPU, the group size comes from the device's free memory (here a pretend device): all members
    vmapped when they fit, groups of ⌊0.8·free / need⌋ when not, and one clear error when one member does not fit;
    a block traced with too little memory raises that error rather than running out of memory."""
    monkeypatch.setattr(parallel, "loops_over_members", lambda: False)
    params = {"w": jnp.zeros((8, 64, 32)), "b": jnp.zeros((8, 32))}
    need = parallel.member_step_bytes(params, batch_size=16, eval_batch_size=64)
    free = {"bytes": None}
    monkeypatch.setattr(parallel, "device_free_bytes", lambda device=None: free["bytes"])
    kw = dict(batch_size=16, eval_batch_size=64)
    assert training.auto_members_per_group(params, **kw) is None                  # no statistics: all vmapped
    free["bytes"] = 100 * need
    assert training.auto_members_per_group(params, **kw) is None                  # all 8 fit
    free["bytes"] = int(3.9 * need / 0.8)
    assert training.auto_members_per_group(params, **kw) == 3
    free["bytes"] = need // 2
    with pytest.raises(CrobustError, match="one member's training step needs"):
        training.auto_members_per_group(params, **kw)
    with pytest.raises(CrobustError, match="one member's training step needs"):
        jax.jit(make_block_fn(MODEL, CFG)).lower(pop.init, training.member_hparams(MEMBERS, CFG),
                                                 jnp.asarray(DATA.train_images), jnp.asarray(DATA.train_labels))


def test_one_compile_serves_every_block_and_every_alpha(pop, big_alpha):
    # chex.assert_max_traces(n=1) wraps the block function: a second trace raises inside fit
    assert pop.res.history["step"].shape[0] >= 5                 # several blocks ran
    assert pop.res.compiles == 1
    assert big_alpha.res.compiles == 1                                 # new α values: traced arrays, no retrace
    assert pop.block_fn._cache_size() == 1


def test_a_second_fit_with_the_same_model_config_and_shapes_reuses_the_compiled_block():
    cfg = dataclasses.replace(CFG, max_steps=2 * CFG.eval_every, patience=None)
    first = fit(MODEL, DATA, cfg, MEMBERS[:2], progress=False)
    again = fit(MODEL, DATA, cfg, grid(alpha=[0.5, 0.25], seeds=[7]), progress=False)   # new α and seeds
    other = fit(MODEL, DATA, dataclasses.replace(cfg, lr=2 * cfg.lr), MEMBERS[:2], progress=False)
    assert (first.compiles, again.compiles, other.compiles) == (1, 0, 1)    # a new config is a new program
    # the reused program computes for its own members: the same members trained again give the same numbers
    repeat = fit(MODEL, DATA, cfg, MEMBERS[:2], progress=False)
    assert repeat.compiles == 0
    chex.assert_trees_all_equal(repeat.state.params, first.state.params)   # same program, same inputs


# ----------------------------------------------------------------------------------------------------------
# Early stopping


def _replay_early_stopping(steps, val_losses, cfg):
    """The documented rule (docs/reference-code.md §4) replayed on one member's evaluations, in plain Python.

    At each evaluation step t ≥ min_steps a strictly lower validation loss becomes the best; the member stops at
    the first evaluation with t − best_step ≥ patience, or at max_steps. Returns (stop step, best step, best val).
    """
    best_val, best_step = np.inf, -1
    for t, v in zip(steps, val_losses):
        if t >= cfg.min_steps and v < best_val:
            best_val, best_step = v, int(t)
        if (best_step >= 0 and t - best_step >= cfg.patience) or t >= cfg.max_steps:
            return int(t), best_step, best_val
    return None, best_step, best_val


def test_early_stopping_semantics(pop, big_alpha):
    p, s = CFG.patience, CFG.min_steps
    stopped_by_patience = min_steps_mattered = 0
    for res in (pop.res, big_alpha.res):
        st, h = res.state, res.history
        best_step, best_val, step = (np.asarray(a) for a in (st.best_step, st.best_val, st.step))
        assert np.all(np.asarray(st.stopped)) and not np.any(np.asarray(st.diverged))
        for i in range(len(MEMBERS)):
            ev = h["evaluated"][:, i]
            # the trainer's decisions are the rule replayed on its own validation losses
            assert _replay_early_stopping(h["step"][ev, i], h["val_loss"][ev, i], CFG) == (
                step[i], best_step[i], best_val[i])
            # (a) never a best before min_steps; the best is an evaluation step
            assert best_step[i] >= s and best_step[i] % CFG.eval_every == 0
            # (b) best_val is the minimum of the member's evaluated validation losses at steps ≥ min_steps
            ok = ev & (h["step"][:, i] >= s)
            assert best_val[i] == h["val_loss"][ok, i].min()
            min_steps_mattered += bool(h["val_loss"][ev & ~ok, i].min() < best_val[i])
            # (c) it stopped because patience ran out (at the first evaluation where it did) or at max_steps
            assert step[i] - best_step[i] >= p or step[i] == CFG.max_steps
            if step[i] < CFG.max_steps:
                assert step[i] - best_step[i] < p + CFG.eval_every
                stopped_by_patience += 1
            # (d) best_params evaluated on the member's own validation split reproduce best_val
            val_idx = np.asarray(st.val_idx[i])
            np.testing.assert_allclose(_np_val_loss(member(res.best_params, i), val_idx), best_val[i], rtol=2e-5)
            if step[i] > best_step[i]:                   # and the final parameters are worse (or no better)
                assert _np_val_loss(member(res.params, i), val_idx) >= best_val[i] * (1 - 1e-5)
    # the fixtures exercise both rules: members stopped by patience, and a lower loss before min_steps ignored
    assert stopped_by_patience >= 2 and min_steps_mattered >= 1, (stopped_by_patience, min_steps_mattered)


def test_a_stopped_member_is_frozen_while_others_train(pop, big_alpha):
    witnessed = 0
    for run in (pop, big_alpha):
        h, snaps = run.res.history, run.snaps
        last = h["step"].shape[0] - 1
        for i in range(h["step"].shape[1]):
            if h["alive"][:, i].all() or h["alive"][last - 1, i]:
                continue                                      # never stopped, or only in the last block
            b = int(np.argmin(h["alive"][:, i]))              # the block at whose end it stopped
            assert not h["alive"][b:, i].any()
            params_b, opt_b, step_b = (member(x, i) for x in snaps[b])
            for later in snaps[b + 1:]:                       # bit for bit: parameters, optimiser state, step
                params_l, opt_l, step_l = (member(x, i) for x in later)
                chex.assert_trees_all_equal(params_l, params_b)
                chex.assert_trees_all_equal(opt_l, opt_b)
                assert step_l == step_b
            others = [j for j in range(h["step"].shape[1]) if h["alive"][b, j]]   # still training after b
            for j in others:                                  # while the others kept moving
                w_b = snaps[b][0]["params"]["hidden_0"]["kernel"][j]
                w_end = snaps[-1][0]["params"]["hidden_0"]["kernel"][j]
                assert np.max(np.abs(w_end - w_b)) > 1e-4
                assert snaps[-1][2][j] > snaps[b][2][j]
            witnessed += bool(others)
    assert witnessed, "the fixtures should contain a member that stops while another keeps training"


# ----------------------------------------------------------------------------------------------------------
# Projection and the paper's mechanism


def test_frobenius_projection_holds_every_hidden_layer_at_its_initial_norm(pop, big_alpha):
    init_norms = {k: np.sqrt(np.sum(np.asarray(w, np.float64) ** 2, axis=(-1, -2)))
                  for k, w in hidden_matrices(pop.init.params).items()}
    for res in (pop.res, big_alpha.res):
        ref = _host(res.state.ref_norms)
        assert set(ref) == {"hidden_0"}
        for params in (res.params, res.best_params):
            for name, w in hidden_matrices(params).items():
                norm = np.sqrt(np.sum(np.asarray(w, np.float64) ** 2, axis=(-1, -2)))
                np.testing.assert_allclose(norm, ref[name], rtol=1e-5)
                np.testing.assert_allclose(norm, init_norms[name], rtol=1e-5)
        # the head is free: it moved away from its initial norm
        head0 = np.linalg.norm(np.asarray(pop.init.params["params"]["head"]["kernel"]), axis=(-1, -2))
        head1 = np.linalg.norm(np.asarray(res.params["params"]["head"]["kernel"]), axis=(-1, -2))
        assert np.all(np.abs(head1 / head0 - 1) > 1e-2)


def test_nuclear_alpha_concentrates_the_spectrum_at_fixed_norm(pop, big_alpha):
    # members: [(0, s0), (0, s1), (BIG, s0), (BIG, s1)]
    for name, w in hidden_matrices(big_alpha.res.params).items():
        r = _spectral_ratio(w)
        r0, r_big = r[:2].mean(), r[2:].mean()
        assert r_big > r0 + 0.1, (name, r)
    # and the small-α population sits in between or at α = 0 (monotone in α), averaged over layers and seeds
    small = np.mean([_spectral_ratio(w)[2:].mean() for w in hidden_matrices(pop.res.params).values()])
    zero = np.mean([_spectral_ratio(w)[:2].mean() for w in hidden_matrices(big_alpha.res.params).values()])
    big = np.mean([_spectral_ratio(w)[2:].mean() for w in hidden_matrices(big_alpha.res.params).values()])
    assert zero - 0.02 <= small <= big


# ----------------------------------------------------------------------------------------------------------
# Per-member data order and validation split


def test_validation_split_and_data_order_per_member(pop):
    st = pop.init
    val, train = np.asarray(st.val_idx), np.asarray(st.train_idx)
    n_val = int(np.floor(CFG.val_ratio * N))
    assert val.shape == (4, n_val) and train.shape == (4, N - n_val)
    for i in range(4):
        assert np.intersect1d(val[i], train[i]).size == 0
        np.testing.assert_array_equal(np.sort(np.concatenate([val[i], train[i]])), np.arange(N))
    # same seed, different α: identical split, initial weights and first batch (common random numbers)
    np.testing.assert_array_equal(val[0], val[2])
    np.testing.assert_array_equal(val[1], val[3])
    chex.assert_trees_all_equal(member(st.params, 0), member(st.params, 2))
    # different seeds: different split and different initial weights
    assert not np.array_equal(np.sort(val[0]), np.sort(val[1]))
    assert not np.allclose(st.params["params"]["head"]["kernel"][0], st.params["params"]["head"]["kernel"][1])
    batches = [_batch_indices(st.key[i], train[i], CFG.batch_size, 0) for i in range(4)]
    np.testing.assert_array_equal(batches[0], batches[2])
    assert not np.array_equal(batches[0], batches[1])
    # the trainer's own batch schedule is the documented one, and an epoch visits each training point once
    spe = train.shape[1] // CFG.batch_size
    got = np.asarray(jax.jit(training.block_batch_indices, static_argnums=(3, 4))(
        jax.random.fold_in(st.key[1], 1), 0, st.train_idx[1],
                                                   CFG.batch_size, spe + 2))
    for t in (0, 1, spe - 1, spe, spe + 1):
        np.testing.assert_array_equal(got[t], _batch_indices(st.key[1], train[1], CFG.batch_size, t))
    epoch = got[:spe].ravel()
    assert len(np.unique(epoch)) == spe * CFG.batch_size and np.isin(epoch, train[1]).all()
    assert not np.array_equal(got[spe], got[0])                     # each epoch is reshuffled


# ----------------------------------------------------------------------------------------------------------
# Optimiser parity: the trainer's first steps against torch's update rules in numpy


def _run_steps(cfg, members, n_steps):
    """Initial state and each member's params after steps 1..n_steps (one step per block)."""
    init = init_population(TINY, DATA, cfg, members)
    snaps = []
    fit(TINY, DATA, cfg, members, state=init, progress=False,
        on_block=lambda state, metrics: snaps.append(_host(state.params)))
    assert len(snaps) >= n_steps
    return init, snaps


@jax.jit
def _ce_grad_jit(params, x, y):
    return jax.grad(lambda p: training.cross_entropy(TINY.apply(p, x / 255.0), y))(params)


def _ce_grad(params, idx):
    """Gradient of the mean cross-entropy of TINY on train_images[idx] (plain jax, outside the trainer)."""
    return _host(_ce_grad_jit(params, jnp.asarray(DATA.train_images[idx], jnp.float32),
                              jnp.asarray(DATA.train_labels[idx])))


def test_adamw_steps_equal_torch_adamw_in_numpy():
    cfg = TrainConfig(optimizer="adamw", batch_size=32, max_steps=2, eval_every=1, patience=None, val_ratio=0.2)
    members = [{"lr": 1e-2, "weight_decay": 0.1, "seed": 0}, {"lr": 3e-3, "weight_decay": 0.0, "seed": 3}]
    init, snaps = _run_steps(cfg, members, 2)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for i, m in enumerate(members):
        lr, wd = m["lr"], m["weight_decay"]
        p = member(_host(init.params), i)
        mu = jax.tree.map(np.zeros_like, p)
        nu = jax.tree.map(np.zeros_like, p)
        for t in (1, 2):
            idx = _batch_indices(init.key[i], init.train_idx[i], cfg.batch_size, t - 1)
            g = _ce_grad(p, idx)
            mu = jax.tree.map(lambda a, gg: b1 * a + (1 - b1) * gg, mu, g)
            nu = jax.tree.map(lambda a, gg: b2 * a + (1 - b2) * gg * gg, nu, g)
            # torch.optim.AdamW: p ← p·(1 − lr·wd) − lr · m̂ / (√v̂ + eps)
            p = jax.tree.map(lambda x, a, v: x * (1 - lr * wd) - lr * (a / (1 - b1 ** t)) / (
                np.sqrt(v / (1 - b2 ** t)) + eps), p, mu, nu)
            _assert_trees_close(member(snaps[t - 1], i), p, rtol=1e-4)
        # the step really moved the weights by ~lr per coordinate (a wrong rule would not be this close)
        assert np.max(np.abs(p["params"]["head"]["kernel"] - member(_host(init.params), i)["params"]["head"]
                             ["kernel"])) > 0.5 * lr


# ----------------------------------------------------------------------------------------------------------
# SGD parity and divergence (one compiled block for both populations)

SGD_CFG = TrainConfig(optimizer="sgd", momentum=0.9, batch_size=32, max_steps=8, eval_every=1, patience=None,
                      val_ratio=0.2, min_steps=0)
SANE_A = {"lr": 0.05, "weight_decay": 1e-3, "seed": 0}
SANE_B = {"lr": 0.02, "weight_decay": 0.0, "seed": 2}


@pytest.fixture(scope="module")
def sgd_runs():
    """[A, X, B] with X diverging (lr 1e15) and the same population with X sane (lr 0.05), one compiled block.

    The sane population's state is the diverging one's with X's learning rate reset: the per-member lr lives in
    the optimiser state (:class:`crobust.optim.OptState`), and re-initialising would cost another XLA compile.
    """
    block_fn = jax.jit(make_block_fn(TINY, SGD_CFG))
    diverging = [SANE_A, {"lr": 1e15, "weight_decay": 0.0, "seed": 1}, SANE_B]
    sane = [SANE_A, {"lr": 0.05, "weight_decay": 0.0, "seed": 1}, SANE_B]
    init_div = init_population(TINY, DATA, SGD_CFG, diverging)
    hp = training.member_hparams(sane, SGD_CFG)
    init_sane = init_div.replace(opt_state=jax.vmap(optim.with_hparams)(init_div.opt_state, hp["lr"],
                                                                             hp["weight_decay"]))
    out = {}
    for name, members, init in (("diverging", diverging, init_div), ("sane", sane, init_sane)):
        snaps = []
        res = fit(TINY, DATA, SGD_CFG, members, state=init, block_fn=block_fn, progress=False,
                  on_block=lambda state, metrics: snaps.append(_host((state.params, state.step))))
        out[name] = types.SimpleNamespace(init=init, res=res, snaps=snaps, members=members)
    assert float(optim.learning_rate(out["sane"].init.opt_state)[1]) == np.float32(0.05)
    assert float(optim.learning_rate(out["diverging"].init.opt_state)[1]) == np.float32(1e15)
    return out


def test_sgd_steps_equal_torch_sgd_in_numpy(sgd_runs):
    run = sgd_runs["sane"]
    mom = SGD_CFG.momentum
    for i in (0, 2):
        lr, wd = run.members[i]["lr"], run.members[i]["weight_decay"]
        p = member(_host(run.init.params), i)
        buf = None
        for t in (1, 2, 3):
            idx = _batch_indices(run.init.key[i], run.init.train_idx[i], SGD_CFG.batch_size, t - 1)
            d = jax.tree.map(lambda gg, x: gg + wd * x, _ce_grad(p, idx), p)       # coupled L2 decay
            # torch.optim.SGD: first buf = d, then buf ← momentum·buf + d; p ← p − lr·buf
            buf = d if buf is None else jax.tree.map(lambda b, dd: mom * b + dd, buf, d)
            p = jax.tree.map(lambda x, b: x - lr * b, p, buf)
            _assert_trees_close(member(run.snaps[t - 1][0], i), p, rtol=1e-4)


def test_a_diverging_member_is_frozen_finite_and_isolated(sgd_runs):
    div, sane = sgd_runs["diverging"], sgd_runs["sane"]
    st = div.res.state
    assert bool(st.diverged[1]) and not bool(st.diverged[0]) and not bool(st.diverged[2])
    n_ok = int(st.step[1])
    assert 1 <= n_ok < SGD_CFG.max_steps, "the huge lr should overflow within a few steps"
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(member(_host(st.params), 1)))
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(member(_host(div.res.best_params), 1)))
    # its parameters are the last finite ones: those after its last applied step, unchanged since
    last_applied = [b for b, (_, steps) in enumerate(div.snaps) if steps[1] == n_ok][0]
    for snap_params, _ in div.snaps[last_applied:]:
        chex.assert_trees_all_equal(member(snap_params, 1), member(_host(st.params), 1))
    assert np.max(np.abs(member(_host(st.params), 1)["params"]["head"]["kernel"])) > 1e3   # it did blow up
    assert not div.res.history["alive"][last_applied + 1:, 1].any()
    # the other members are exactly what they are without it
    for i in (0, 2):
        chex.assert_trees_all_close(member(div.res.params, i), member(sane.res.params, i), rtol=1e-6, atol=1e-7)
        chex.assert_trees_all_close(member(div.res.best_params, i), member(sane.res.best_params, i),
                                    rtol=1e-6, atol=1e-7)
        assert int(div.res.state.step[i]) == int(sane.res.state.step[i]) == SGD_CFG.max_steps
        assert int(div.res.state.best_step[i]) == int(sane.res.state.best_step[i])
        for k in div.res.history:
            np.testing.assert_allclose(div.res.history[k][:, i], sane.res.history[k][:, i], rtol=1e-6, err_msg=k)


def test_divergence_mid_block_returns_to_the_block_start_and_max_steps_ends_mid_block():
    """Blocks of 4 steps, max_steps 10: a member diverging inside a block gets back its state at that block's
    start (not the last finite step), and every other member stops at exactly step 10, inside the third block."""
    cfg = dataclasses.replace(SGD_CFG, eval_every=4, max_steps=10)
    members = [SANE_A, {"lr": 1e15, "weight_decay": 0.0, "seed": 1}]
    init, snaps = init_population(TINY, DATA, cfg, members), []
    res = fit(TINY, DATA, cfg, members, state=init, progress=False,
              on_block=lambda state, metrics: snaps.append(_host((state.params, state.opt_state, state.step))))
    np.testing.assert_array_equal(res.history["step"][:, 0], [4, 8, 10])
    assert int(res.state.step[0]) == 10 and bool(res.state.stopped[0]) and not bool(res.state.diverged[0])
    st = res.state
    assert bool(st.diverged[1]) and int(st.step[1]) % cfg.eval_every == 0, int(st.step[1])
    # the block it diverged in: the first whose history shows it not alive; its state is the one before that block
    first_dead = int(np.flatnonzero(~res.history["alive"][:, 1])[0])
    assert not res.history["evaluated"][first_dead, 1]
    before = _host((init.params, init.opt_state)) if first_dead == 0 else snaps[first_dead - 1][:2]
    chex.assert_trees_all_equal(member(_host(st.params), 1), member(before[0], 1))
    chex.assert_trees_all_equal(member(_host(st.opt_state), 1), member(before[1], 1))
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(member(_host(st.params), 1)))


# ----------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("cfg_kwargs, members, match", [
    ({}, [{"alpha": -0.1, "seed": 0}], "alpha"),
    ({"batch_size": 1300}, [{"seed": 0}], "batch_size"),                  # 1437 − 143 held out = 1294
    ({"optimizer": "adam"}, [{"seed": 0}], "optimizer.*adamw, sgd"),
    ({"regularizer": "nucnorm"}, [{"seed": 0}], "regularizer.*nuclear"),
    ({"projection": "spectral"}, [{"seed": 0}], "projection.*frobenius"),
    ({}, [{"alpah": 0.1, "seed": 0}], "member key.*alpah"),
    ({"val_ratio": 0.0, "patience": 100}, [{"seed": 0}], "val_ratio"),
    ({}, [{"lr": 0.0, "seed": 0}], "lr"),
    ({}, [{"lr": float("inf"), "seed": 0}], "lr must be > 0, got inf"),          # a member's lr must be finite
    ({"lr": float("inf")}, [{"seed": 0}], "lr must be > 0, got inf"),
    ({"weight_decay": float("nan")}, [{"seed": 0}], "weight_decay must be >= 0, got nan"),
    ({}, [], "member"),
])
def test_bad_input_raises_a_clear_error(cfg_kwargs, members, match):
    cfg = TrainConfig(**{"max_steps": 10, "eval_every": 5, **cfg_kwargs})
    with pytest.raises(CrobustError, match=match):
        fit(TINY, DATA, cfg, members, progress=False)


def test_grid_and_batch_size_boundary():
    members = grid(alpha=[0.0, 0.5], seeds=range(3))
    assert members == [{"alpha": a, "seed": s} for a in (0.0, 0.5) for s in range(3)]
    with pytest.raises(CrobustError, match="hyper-parameter"):
        grid(beta=[1.0])
    TrainConfig(batch_size=N - int(0.1 * N)).validate(N)              # exactly the training split is fine
    with pytest.raises(CrobustError, match="batch_size"):
        TrainConfig(batch_size=N - int(0.1 * N) + 1).validate(N)
    TrainConfig(val_ratio=0.0, patience=None).validate(N)             # no validation without early stopping
    for field in ("lr", "weight_decay", "lr_gamma"):
        with pytest.raises(CrobustError, match=f"{field} must be a finite number"):
            TrainConfig(**{field: float("nan")}).validate()


def test_a_state_of_other_members_is_refused(pop):
    other_lr = [dict(m, lr=0.5) for m in MEMBERS]
    with pytest.raises(CrobustError, match="member 0 .*lr 0.5 but the given state was initialised with 0.1"):
        fit(MODEL, DATA, CFG, other_lr, state=pop.init, block_fn=pop.block_fn, progress=False)
    with pytest.raises(CrobustError, match="4 members but 2 were given"):
        fit(MODEL, DATA, CFG, MEMBERS[:2], state=pop.init, block_fn=pop.block_fn, progress=False)
