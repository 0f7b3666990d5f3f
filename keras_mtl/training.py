"""The training steps: joint and alternating updates.

Read top to bottom, an alternating step is the tutorial's loop: pick the
task, compute its loss, take gradients of the trunk and its head, apply
them with that task's optimizer. A joint step computes every task's loss,
sums them with their weights and applies one update to everything.

`train_step` is the entry point, as in Keras
--------------------------------------------
`fit()` runs `model.train_step(data)` for every step (through
`keras_mtl/_execution.py`, which runs `steps_per_execution` of them in one
compiled call), so a subclass that overrides `train_step`, with or without
`super().train_step(data)`, changes what `fit()` does, as Keras's guide
"Customizing what happens in fit()" describes. One difference from Keras:
`MultiTaskModel.train_step` runs in *cross-replica* context. On one device
that changes nothing. Under a `tf.distribute` strategy, `train_step` chooses
the task and calls `strategy.run` itself for that task's update (below), so
code a subclass adds around `super().train_step(data)` also runs in
cross-replica context: per-replica work goes through
`self.distribute_strategy.run`.

Why the task is chosen outside the replica function
---------------------------------------------------
Under a `tf.distribute` strategy, `optimizer.apply` all-reduces gradients
through `merge_call`, and TensorFlow refuses a `merge_call` inside a
`tf.cond`/`tf.switch_case` that runs in replica context ("merge_call called
while defining a new graph or a tf.function ... control flow statement which
contains a synchronization point"; keras-team/keras#20582, #18666). So the
alternating step branches in *cross-replica* context, and each branch
starts its own `strategy.run` of a plain (cond-free) per-task step, the
shape of Keras's own `LossScaleOptimizer._tf_apply`. The branch index is a
pure function of the seed, the step counter (a replicated model variable)
and the all-reduced label counts, so every replica and every worker takes
the same branch. Keras's default train function calls `train_step` inside
`strategy.run`, which leaves no room for that, so `MultiTaskModel` has its
own train function (`keras_mtl/_execution.py`); it keeps Keras's contract
(an iterator in, the last step's logs out, `steps_per_execution` steps per
call, `StopIteration` at the end of the data).

Every optimizer is built on its variables before the first step is traced
(and inside the strategy's scope), because a Keras optimizer refuses
variables it was not built with, and creating optimizer variables while a
distributed step is traced fails (keras-team/keras#23085).
"""

import collections
import contextlib
import functools

import keras
import tensorflow as tf

from keras_mtl import _checks
from keras_mtl import _random
from keras_mtl import data as data_module
from keras_mtl import tasks
from keras_mtl import weighting as weighting_module

# The alternating task draws of the step being traced, when the loop that
# runs it drew a whole execution's at once (see `precomputed_draws`).
_DRAWS = []


@contextlib.contextmanager
def precomputed_draws(uniforms):
    """Hands this step's task draws to the `train_step` traced inside it.

    `keras_mtl._execution` draws the tasks of a whole execution in one
    vectorized op; `train_step(data)` keeps Keras's signature, so the draws
    reach the alternating step through this trace-time context instead.

    Args:
        uniforms: float32 `[num_tasks]`, `_random.uniform(seed, step, T)` for
            the step about to run, or `None` to draw inside the step.

    Returns:
        A context manager.
    """
    _DRAWS.append(uniforms)
    try:
        yield
    finally:
        _DRAWS.pop()


def train_step(model, data):
    """One training step of `model` on `data`, in cross-replica context.

    What `MultiTaskModel.train_step` runs: the joint or alternating update,
    then the logs.

    Args:
        model: A compiled `MultiTaskModel`.
        data: A batch `(x, y)` or `(x, y, sample_weight)`.

    Returns:
        Dict of logs (metric results).
    """
    model._prepare_training(data)
    if model.mode == "alternating":
        _alternating_step(model, data)
    else:
        _joint_step(model, data)
    return model._training_logs()


def unpack(data):
    """Splits a batch into `(x, y, sample_weight)`."""
    return keras.utils.unpack_x_y_sample_weight(data)


def _task_sample_weight(sample_weight, task):
    if isinstance(sample_weight, dict):
        return sample_weight.get(task)
    return sample_weight


def _all_reduce_sum(values):
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, values)
    return values


def _batch_size(x):
    return tf.cast(tf.shape(x)[0], tf.float32)


def _available_tasks(model, data):
    """Which trained tasks have a label in the batch (bool `[T]`); in a
    replica fn, on ANY replica (summed over replicas, then compared)."""
    x, y, sample_weight = unpack(data)
    data_module.check_targets(model, y, sample_weight)
    present = tf.stack([
        tasks.has_labels(y[s.name], _task_sample_weight(sample_weight, s.name))
        for s in model._trained_specs
    ])
    if _replicas() == 1:
        return present
    return _all_reduce_sum(tf.cast(present, tf.float32)) > 0


def task_variables(model, spec):
    """The variables an update of `spec`'s task changes: trunk and its head
    (and the task's own weighting variables, if any)."""
    variables = model.trunk.trainable_variables + spec.head.trainable_variables
    if model._weighting is not None:
        variables += model._weighting.task_variables(spec.index)
    return variables


def joint_variables(model):
    """The variables a joint update changes: trunk, every trained head and
    the weighting method's trainable variables (the shared optimizer is
    built on all of the model's trainable variables, as in Keras)."""
    variables = list(model.trunk.trainable_variables)
    for spec in model._trained_specs:
        variables += spec.head.trainable_variables
    if model._weighting is not None:
        variables += model._weighting.trainable_variables
    return variables


class _Batch:
    """One task's share of a batch: its clean labels, weights and loss sum."""

    def __init__(self, spec, y, sample_weight, y_pred):
        y_true = y[spec.name]
        tasks.check_label_shape(spec, y_true, y_pred)
        self.spec = spec
        self.y_pred = y_pred
        self.y_clean, self.weights, self.count = tasks.label_mask(y_true, sample_weight)
        self.loss_sum = (
            tasks.weighted_loss_sum(spec, self.y_clean, y_pred, self.weights)
            if spec.trained
            else None
        )


# One step's loss pieces on one replica:
#   shares: per trained task, loss_weight * sum(w * l) / (present labels on
#     ALL replicas), so that summing gradients over replicas gives the
#     single-device gradient of the task's mean loss;
#   regularization: the trunk's and these heads' penalties, divided by the
#     number of replicas for the same reason;
#   batches, batch, global_batch: for metrics and logs (batch sizes on this
#   replica and on all); features: the trunk output; counts: each trained
#   task's present labels on all replicas.
_Terms = collections.namedtuple(
    "_Terms",
    ["shares", "regularization", "batches", "batch", "global_batch", "features", "counts"],
)


def _terms(model, specs, data, training):
    x, y, sample_weight = unpack(data)
    data_module.check_targets(model, y, sample_weight)
    features = model.trunk(x, training=training)
    batches = [
        _Batch(s, y, _task_sample_weight(sample_weight, s.name), s.head(features, training=training))
        for s in specs
    ]
    trained = [b for b in batches if b.spec.trained]
    batch = _batch_size(x)
    if _replicas() > 1:
        totals = tf.unstack(_all_reduce_sum(tf.stack([b.count for b in trained] + [batch])))
    else:
        totals = [b.count for b in trained] + [batch]  # no stacking: fewer ops per step
    shares = []
    for b, count in zip(trained, totals):
        share = b.loss_sum / tf.maximum(count, 1.0)
        shares.append(share if b.spec.weight == 1.0 else b.spec.weight * share)
    penalties = model.trunk.losses + [p for s in specs for p in s.head.losses]
    regularization = (
        tf.add_n([tf.cast(p, tf.float32) for p in penalties]) / _replicas()
        if penalties
        else tf.constant(0.0)
    )
    counts = tf.stack(totals[:-1]) if model._weighting is not None else None
    return _Terms(shares, regularization, batches, batch, totals[-1], features, counts)


def _replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


def _context(model, counts=None):
    return weighting_module.Context(
        step=tf.convert_to_tensor(model.step_counter),
        seed=model._seed,
        # Keras resets the metrics at the start of every epoch.
        epoch_start=tf.equal(model._mtl_loss_tracker.count, 0.0),
        present=None if counts is None else counts > 0,
    )


def _restore_state_unless(condition, method):
    """Reads the method's state now; the returned function puts it back
    unless `condition` holds (a `tf.where`, not a `tf.cond`: an assign in a
    replica-context cond would break under MirroredStrategy)."""
    state = list(method.non_trainable_variables)
    saved = [tf.identity(v) for v in state]

    def restore():
        for variable, old in zip(state, saved):
            variable.assign(tf.where(condition, variable, old))

    return restore


def _record(model, loss, terms, weights=None):
    """Updates the loss trackers, metrics and logged task weights."""
    model._mtl_loss_tracker.update_state(loss * terms.global_batch, terms.batch)
    for b in terms.batches:
        if b.spec.trained:
            b.spec.loss_tracker.update_state(b.loss_sum, b.count)
        tasks.update_metrics(b.spec, b.y_clean, b.y_pred, b.weights)
    if weights is not None:
        trained = [b.spec for b in terms.batches if b.spec.trained]
        for spec, w in zip(trained, tf.unstack(tf.reshape(weights, [len(trained)]))):
            spec.weight_tracker.update_state(w * spec.weight)


def _alternating_replica_step(model, spec, data):
    """Replica fn: one update of task `spec` (trunk + its head only)."""
    optimizer = model._mtl_optimizers.by_task[spec.name]
    variables = task_variables(model, spec)
    method = model._weighting
    weight = None
    with tf.GradientTape() as tape:
        terms = _terms(model, [spec], data, True)
        share = terms.shares[0]
        if method is None:
            loss = share + terms.regularization
        else:
            task_loss = _all_reduce_sum(tf.stop_gradient(share))
            weight, extra = method.single_task_weight(spec.index, task_loss, _context(model))
            loss = weight * share + terms.regularization + extra / _replicas()
        scaled = optimizer.scale_loss(loss)
    # With gradient accumulation, `iterations` advances on real updates only.
    updates_before = tf.identity(optimizer.iterations)
    optimizer.apply(tape.gradient(scaled, variables), variables)
    _record(model, loss, terms, weight)
    spec.update_counter.update_state(optimizer.iterations - updates_before)


def _joint_replica_step(model, data):
    """Replica fn: one update of every trained task at once."""
    method = model._weighting
    if isinstance(method, weighting_module.GradientWeighting):
        return _gradient_weighted_replica_step(model, data)
    optimizer = model.optimizer
    variables = joint_variables(model)
    weights = None
    with tf.GradientTape() as tape:
        terms = _terms(model, model._trained_specs, data, True)
        shares = tf.stack(terms.shares)
        if method is None:
            loss = tf.reduce_sum(shares) + terms.regularization
        else:
            # A step where some task has no label uses the static sum and
            # leaves the method's state as it was (see weighting.Context).
            all_present = tf.reduce_all(terms.counts > 0)
            restore = _restore_state_unless(all_present, method)
            losses = _all_reduce_sum(tf.stop_gradient(shares))
            context = _context(model, terms.counts)
            weights, extra = method.loss_weights(losses, context)
            weights = tf.where(all_present, weights, tf.ones_like(weights))
            loss = tf.reduce_sum(weights * shares) + terms.regularization
            if extra is not None:
                loss += tf.where(all_present, extra, 0.0) / _replicas()
        scaled = optimizer.scale_loss(loss)
    optimizer.apply(tape.gradient(scaled, variables), variables)
    if method is not None:
        if method.needs_losses_after_update:
            # The same batch's losses after the update (e.g. FAMO), no dropout.
            after = _terms(model, model._trained_specs, data, False)
            method.after_update(losses, _all_reduce_sum(tf.stack(after.shares)), context)
        restore()
    _record(model, loss, terms, weights)


def _gradient_weighted_replica_step(model, data):
    """Replica fn: a joint update whose trunk gradient is `sum_t c_t g_t`.

    The per-task trunk gradients `g_t` (or, for `gradients="representation"`,
    the gradients of the trunk output) are summed over replicas before the
    method sees them, so every replica computes the same coefficients and the
    result equals single-device training. Heads get their own task's
    gradient; regularization is added unchanged.
    """
    method = model._weighting
    optimizer = model.optimizer
    trunk = list(model.trunk.trainable_variables)
    heads = [v for s in model._trained_specs for v in s.head.trainable_variables]
    with tf.GradientTape(persistent=True) as tape:
        terms = _terms(model, model._trained_specs, data, True)
        shares = optimizer.scale_loss(tf.stack(terms.shares))
        task_shares = tf.unstack(shares)  # sliced under the tape, so each is differentiable
        plain = tf.reduce_sum(shares) + optimizer.scale_loss(terms.regularization)
    losses = _all_reduce_sum(tf.stop_gradient(tf.stack(terms.shares)))
    context = _context(model, terms.counts)
    all_present = tf.reduce_all(terms.counts > 0)  # else: plain sum, state kept
    restore = _restore_state_unless(all_present, method)
    task_count = len(terms.shares)
    if method.gradients == "representation":
        rows = [
            tf.reshape(tape.gradient(task_shares[t], terms.features), [-1])
            for t in range(task_count)
        ]
        matrix = tf.stack(rows)
        gram = _all_reduce_sum(tf.matmul(matrix, matrix, transpose_b=True))
        coefficients = _fallback(all_present, method.coefficients(gram, losses, context))
        trunk_grads = tape.gradient(shares, trunk, output_gradients=coefficients)
    else:
        rows = []
        for t in range(task_count):
            grads = tape.gradient(task_shares[t], trunk)
            rows.append(tf.concat([
                tf.reshape(g, [-1]) if g is not None else tf.zeros([v.shape.num_elements()])
                for g, v in zip(grads, trunk)
            ], 0))
        matrix = _all_reduce_sum(tf.stack(rows))
        gram = tf.matmul(matrix, matrix, transpose_b=True)
        coefficients = _fallback(all_present, method.coefficients(gram, losses, context))
        # Every replica holds the same global combination; the optimizer
        # sums gradients over replicas, so each contributes 1/R of it.
        combined = tf.linalg.matvec(matrix, coefficients, transpose_a=True) / _replicas()
        trunk_grads = _unflatten(combined, trunk)
    penalty = tape.gradient(optimizer.scale_loss(terms.regularization), trunk)
    trunk_grads = [g if p is None else g + p for g, p in zip(trunk_grads, penalty)]
    head_grads = tape.gradient(plain, heads)
    del tape
    optimizer.apply(trunk_grads + head_grads, trunk + heads)
    restore()
    loss = tf.reduce_sum(tf.stack(terms.shares)) + terms.regularization
    _record(model, loss, terms, coefficients)


def _fallback(all_present, coefficients):
    """The method's coefficients, or 1s (the plain sum) if a task lacks labels."""
    coefficients = tf.stop_gradient(coefficients)
    return tf.where(all_present, coefficients, tf.ones_like(coefficients))


def _unflatten(vector, variables):
    out, start = [], 0
    for v in variables:
        size = v.shape.num_elements()
        out.append(tf.reshape(vector[start : start + size], v.shape))
        start += size
    return out


def _alternating_step(model, data):
    """Cross-replica: choose this step's task, then run its update."""
    strategy = model.distribute_strategy
    uniforms = _DRAWS[-1] if _DRAWS else None
    if model._mtl_strategy is None:
        # One device: no replicas to sum over, and strategy.run's wrapping
        # would lengthen the chain of ops that the task choice waits for.
        available = _available_tasks(model, data)
    else:
        present = strategy.run(functools.partial(_available_tasks, model), args=(data,))
        available = strategy.experimental_local_results(present)[0]
    task = model._sampler.sample(model.step_counter, model._seed, available, uniforms)

    def branch(spec):
        step = functools.partial(_alternating_replica_step, model, spec)
        return lambda: strategy.run(step, args=(data,))

    # The last branch is "no task has labels in this batch": no update.
    # TensorFlow lowers this Case into Switch/Merge nodes inlined in the
    # step's graph. Keeping it a function call (private TF API) made the
    # seed benchmark's alternating step ~5% faster but the wide one ~15%
    # slower, so the public, lowered form stays (benchmarks/RESULTS.md).
    tf.switch_case(task, [branch(s) for s in model._trained_specs] + [lambda: None])
    model.step_counter.assign_add(1)


def _joint_step(model, data):
    """Cross-replica: one joint update of every trained task."""
    model.distribute_strategy.run(functools.partial(_joint_replica_step, model), args=(data,))
    model.step_counter.assign_add(1)


def evaluation_step(model, data):
    """Replica fn for `evaluate()`: every task's loss and metrics, no update.

    The loss is the static `loss_weights` sum, whatever `weighting` trains.
    """
    terms = _terms(model, model._evaluated_specs(unpack(data)[1]), data, False)
    loss = tf.add_n(terms.shares) + terms.regularization
    _record(model, loss, terms)
