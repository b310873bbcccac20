"""The population trainer: many members (hyper-parameters × seeds) trained in one jitted program.

Usage::

    import crobust
    data = crobust.data.load_dataset("digits")
    model = crobust.models.MLP(num_classes=10, width=64, depth=3, mean=data.mean, std=data.std)
    members = crobust.training.grid(alpha=[0.0, 1e-3, 1e-2, 1e-1], seeds=range(8))      # 32 members
    cfg = crobust.training.TrainConfig(regularizer="nuclear", projection="frobenius", max_steps=2000)
    result = crobust.training.fit(model, data, cfg, members)
    result.params        # stacked final parameters, leading axis = 32 members
    result.best_params   # each member's best-validation parameters
    result.history       # per-block arrays (n_blocks, 32): step, train_loss, val_loss, val_acc, alive

Modules: :mod:`~crobust.training.config` (TrainConfig, AdversarialTraining), :mod:`~crobust.training.population`
(members, keys, the stacked :class:`PopulationState` pytree, initialisation), :mod:`~crobust.training.block` (the
compiled block of ``eval_every`` steps, validation and early stopping), :mod:`~crobust.training.loop` (:func:`fit`,
the host loop; :func:`evaluate`).

Design (DESIGN.md, "a population, not a seed"):

- **Members.** A member is a dict of hyper-parameters (``alpha``, optionally ``lr``, ``weight_decay``) plus a
  ``seed``. All members share array shapes and are stacked on a leading axis; their hyper-parameters are traced
  arrays on that axis, so one compiled program serves the whole grid.
- **Keys.** Every random stream of a member derives from its own seed, never from its position or the device
  layout: ``key = jax.random.key(seed)``; init = fold_in(key, 0), data order = fold_in(key, 1), validation split =
  fold_in(key, 2), attack noise = fold_in(key, 3). Members with the same seed and different α therefore share
  initial weights, data order and validation split (common random numbers: differences across α are due to α).
  Training a member alone gives the same result as training it inside a population (tested, to float tolerance).
- **Data.** The whole dataset is resident on the device as uint8 and scaled to [0, 1] inside the step. Each member
  has its own validation split (⌊val_ratio·N⌋ points, as the reference's ``random_split``) and its own order:
  epoch e is the keyed permutation π_e = ``crobust.shuffle.index_shuffle(fold_in(data_key, e), ·, n_train)`` of
  its training indices (a Feistel cipher with cycle walking: batch positions are computed directly, no sort),
  consumed in ``n_train // batch_size`` full batches (the remainder of an epoch is dropped so that shapes are
  static; every point is still visited because each epoch reshuffles).
- **Blocks.** ``eval_every`` steps run inside one ``lax.scan`` per member, then the validation loss is computed,
  early stopping is updated and the host receives a few numbers per member (progress, history). The members are
  vmapped (accelerators, sharded populations) or, on one CPU device, stepped in small groups one after another so
  that each member's working set stays in cache (``members_per_group`` in :func:`make_block_fn`).
- **Early stopping** (REFERENCE_CODE.md §4, ``--val_criterion loss --val_keep_best_model``): at each block end a
  member with ``step ≥ min_steps`` whose validation loss is strictly below its best so far stores its parameters
  as best (``jnp.where``, no control flow); it stops when ``step − best_step ≥ patience``. A stopped member is
  frozen (its parameters and optimiser state no longer change) while the others continue. The program ends when
  every member has stopped, diverged or reached ``max_steps``.
- **Divergence.** A step whose loss is not finite is not applied, and neither is any later step of that block;
  at the end of the block a member that met a non-finite loss or ended with non-finite parameters is put back to
  its state at the start of the block, marked ``diverged`` and frozen. Its best parameters stay as they were.
  (With ``eval_every=1`` this is the same as checking after every step.)
- **Optimisers.** ``adamw`` is torch's AdamW (β 0.9/0.999, ε 1e-8, decoupled decay on every parameter, as the
  reference's ``--lr_algorithm adam``); ``sgd`` is torch SGD with momentum and coupled L2 decay. Both are
  :mod:`crobust.optim`: the update rules written as one maskable elementwise pass, lr and weight decay stored
  per member in the optimiser state (traced values).
- **Loss** = mean cross-entropy + regulariser(params, α) (:mod:`crobust.regularizers`); after each optimiser step
  the optional projection (``frobenius``: every hidden layer back to its initial Frobenius norm) is applied.
"""

from crobust.training.block import (MEMBER_CACHE_BUDGET_BYTES, _block_batch_indices, _chunked_loss_acc,
                                    auto_members_per_group, cross_entropy, make_block_fn)
from crobust.training.config import HPARAM_NAMES, OPTIMIZERS, AdversarialTraining, TrainConfig
from crobust.training.loop import Progress, evaluate, fit
from crobust.training.population import (FitResult, PopulationState, _member_hparams, grid, init_population,
                                         member_keys, split_indices)

__all__ = [
    "AdversarialTraining", "FitResult", "HPARAM_NAMES", "MEMBER_CACHE_BUDGET_BYTES", "OPTIMIZERS",
    "PopulationState", "Progress", "TrainConfig", "auto_members_per_group", "cross_entropy", "evaluate", "fit",
    "grid", "init_population", "make_block_fn", "member_keys", "split_indices",
]
