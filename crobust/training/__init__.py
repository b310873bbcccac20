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
(members, keys, the stacked :class:`PopulationState` pytree, initialisation), :mod:`~crobust.training.objective`
(a step's loss: clean, PGD mix, TRADES, a given adversary), :mod:`~crobust.training.update` (a step's update:
gradient mask → freeze → optimiser → projection), :mod:`~crobust.training.block` (the compiled block of
``eval_every`` steps, validation and early stopping), :mod:`~crobust.training.loop` (:func:`fit`, the host loop;
:func:`evaluate`).

Design (docs/design.md §2, "a population, not a seed"):

- **Members.** A member is a dict of hyper-parameters plus a ``seed``: any member axis of :data:`HPARAMS`
  (``alpha``, ``lr``, ``weight_decay``, ``momentum``, ``at_eps``, ``at_step_size``, ``at_ratio``, ``trades_beta``,
  and the strength of each extra penalty term, named after its penalty, e.g. ``beta_control``), the others taking
  the config's values. All members share array shapes and are stacked on a leading axis; their
  hyper-parameters are traced arrays on that axis, so one compiled program serves the whole grid.
- **Keys.** Every random stream of a member derives from its own seed, never from its position or the device
  layout: ``key = jax.random.key(seed)``; stream s is fold_in(key, s) (:data:`STREAMS`): init 0, data order 1,
  validation split 2, attack noise 3, augmentation 4 (each folded with the step where it is per step). Members with the same seed and different α therefore share
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
- **Early stopping** (docs/reference-code.md §4, ``--val_criterion loss --val_keep_best_model``): at each block end a
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
- **Loss** = mean cross-entropy + regulariser(params, α) + the config's further penalty terms, each at its own
  member axis (``TrainConfig.penalties``, :func:`crobust.regularizers.combined_penalty`); after each optimiser step
  the optional projection (``frobenius``: every hidden layer back to its initial Frobenius norm) is applied.
  The learning rate is multiplied by the schedule's factor of the epoch (``TrainConfig.lr_schedule``).
- **Freezing and stages.** ``TrainConfig.trainable`` (a regex on parameter paths) trains only the parameters it
  matches; the others do not move at all — no gradient step, no weight decay, no optimiser state, and their
  layers' batch-norm statistics kept (:mod:`~crobust.training.update`). :func:`~crobust.training.stages.start_from`
  starts a population from another's trained members through a parameter map (keep the encoder, fresh head).
- **Model state** (batch norm). A model whose ``init`` returns collections besides ``params`` keeps them per
  member in ``PopulationState.model_state``; steps run it in train mode (batch statistics, running statistics
  updated), validation, adversarial-example generation and evaluation in eval mode (running statistics, nothing
  updated). ``best_model_state`` goes with ``best_params``; :func:`for_evaluation` gives ``(apply_fn, variables)``
  for :mod:`crobust.evaluation`. Models without it (the MLPs) are applied as ``model.apply(params, x)``.
- **Augmentation** (``TrainConfig.augment``) and **adversarial training** (``TrainConfig.adversarial``: PGD batch
  mixing or TRADES) run inside the jitted step (:mod:`~crobust.training.augmentation`,
  :mod:`~crobust.training.adversarial`).
"""

from crobust.training import stages, update
from crobust.training.augmentation import augment
from crobust.training.block import (MEMBER_CACHE_BUDGET_BYTES, auto_members_per_group, block_batch_indices,
                                    chunked_loss_acc, lr_factor, make_block_fn)
from crobust.training.config import (AUGMENTATIONS, HPARAM_NAMES, HPARAMS, LR_SCHEDULES, OPTIMIZERS,
                                     AdversarialTraining, HParam, TrainConfig)
from crobust.training.loop import Progress, evaluate, fit
from crobust.training.objective import cross_entropy
from crobust.training.population import (STREAMS, FitResult, PopulationState, eval_apply, for_evaluation, grid,
                                         init_population, member_hparams, member_keys, population_bytes,
                                         split_indices, stream_key)

__all__ = [
    "AUGMENTATIONS", "AdversarialTraining", "FitResult", "HPARAMS", "HPARAM_NAMES", "HParam", "LR_SCHEDULES",
    "MEMBER_CACHE_BUDGET_BYTES", "OPTIMIZERS", "PopulationState", "Progress", "STREAMS", "TrainConfig", "augment",
    "auto_members_per_group", "block_batch_indices", "chunked_loss_acc", "cross_entropy", "eval_apply", "evaluate",
    "fit", "for_evaluation", "grid", "init_population", "lr_factor", "make_block_fn", "member_hparams",
    "member_keys", "population_bytes", "split_indices", "stages", "stream_key", "update",
]
