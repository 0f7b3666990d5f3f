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

from keras_mtl import _keras_internals, _losses, tasks
from keras_mtl import data as data_module
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
    update(model, data)
    return model._training_logs()


def update(model, data):
    """The update of one training step (joint or alternating), without logs."""
    model._prepare_training(data)
    if model.mode == "alternating":
        _alternating_step(model, data)
    else:
        _joint_step(model, data)


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
    return tf.cast(tf.shape(tf.nest.flatten(x)[0])[0], tf.float32)


def _available_tasks(model, data):
    """Which trained tasks have a label in the batch (bool `[T]`); in a
    replica fn, on ANY replica (summed over replicas, then compared)."""
    x, y, sample_weight = unpack(data)
    data_module.check_targets(model, y, sample_weight)
    present = tf.stack(
        [
            _losses.has_labels(y.get(s.name), _task_sample_weight(sample_weight, s.name))
            for s in model._mtl.trained
        ]
    )
    if _replicas() == 1:
        return present
    return _all_reduce_sum(tf.cast(present, tf.float32)) > 0


def task_variables(model, spec):
    """The variables an update of `spec`'s task changes: those its output
    depends on (`MultiTaskModel.task_variables`: the trunk and its head, or
    its part of a per-task trunk), and its own weighting variables, if any."""
    variables = model.task_variables(spec.name)
    if model._mtl.weighting is not None:
        variables += model._mtl.weighting.task_variables(spec.index)
    return variables


def joint_variables(model):
    """The variables a joint update changes: trunk, every trained head and
    the weighting method's trainable variables (the shared optimizer is
    built on all of the model's trainable variables, as in Keras)."""
    variables = list(model.trunk.trainable_variables)
    for spec in model._mtl.trained:
        variables += spec.head.trainable_variables
    if model._mtl.weighting is not None:
        variables += model._mtl.weighting.trainable_variables
    return variables


def _apply(optimizer, grads, variables):
    """`optimizer.apply`, leaving out variables without a gradient (the
    heads of tasks whose labels are absent from this batch's structure)."""
    pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
    if pairs:
        optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])


class _Batch:
    """One task's share of a batch on one replica: clean labels, weights, loss sums."""

    def __init__(self, spec, y_true, sample_weight, y_pred):
        _losses.check_label_shape(spec.name, spec.loss, y_true.shape, y_pred.shape)
        self.spec = spec
        self.y_pred = y_pred
        self.y_clean, self.weights, self.count = _losses.label_mask(y_true, sample_weight)
        self.loss_sum = self.normalizer = None
        if spec.trained:
            self.loss_sum, self.normalizer = _losses.loss_sums(
                spec.name,
                spec.loss,
                self.y_clean,
                y_pred,
                self.weights,
                self.count,
                mask=_keras_internals.keras_mask(y_pred),
            )


# One step's loss pieces on one replica:
#   shares: per trained task (in order; 0 for a task without labels in the
#     batch's structure), loss_weight * sum(w * l) / (the reduction's
#     normalizer on ALL replicas), so that summing gradients over replicas
#     gives the single-device gradient of the task's loss;
#   regularization: the penalties of the trunk and of the trained heads
#     updated by this step, divided by the number of replicas likewise;
#   logged_penalty: the trunk's and every trained head's penalty (the `loss`
#     log adds it, so that training and evaluation `loss` compare);
#   batches: the tasks with labels, for trackers and metrics; batch: this
#     replica's batch size; features: the trunk output; counts: each trained
#     task's present labels on all replicas (float32 `[T]`).
_Terms = collections.namedtuple(
    "_Terms",
    ["shares", "regularization", "logged_penalty", "batches", "batch", "features", "counts"],
)


def _penalty(model, specs):
    penalties = model.trunk.losses + [p for s in specs for p in s.head.losses]
    if not penalties:
        return tf.constant(0.0)
    return tf.add_n([tf.cast(p, tf.float32) for p in penalties])


def _terms(model, specs, data, training):
    x, y, sample_weight = unpack(data)
    data_module.check_targets(model, y, sample_weight)
    features = model.trunk(model._in_trunk_order(x), training=training)
    batches = [
        _Batch(
            s,
            y[s.name],
            _task_sample_weight(sample_weight, s.name),
            s.head(features[s.name] if isinstance(features, dict) else features, training=training),
        )
        for s in specs
        if y.get(s.name) is not None
    ]
    trained = [b for b in batches if b.spec.trained]
    # Sum the normalizers and counts over replicas in one all-reduce.
    local = [b.count for b in trained] + [b.normalizer for b in trained if b.normalizer is not None]
    totals = tf.unstack(_all_reduce_sum(tf.stack(local))) if _replicas() > 1 and local else local
    counts = dict(zip([b.spec.index for b in trained], totals[: len(trained)]))
    normalizers = iter(totals[len(trained) :])
    shares = {}
    for b in trained:
        if b.normalizer is None:  # reduction="sum"
            share = b.loss_sum
            b.tracked = (b.loss_sum * counts[b.spec.index], b.count)
        else:
            share = tf.math.divide_no_nan(b.loss_sum, next(normalizers))
            b.tracked = (b.loss_sum, b.normalizer)
        shares[b.spec.index] = share if b.spec.weight == 1.0 else b.spec.weight * share
    zero = tf.constant(0.0)
    all_trained = model._mtl.trained
    regularization = _penalty(model, [s for s in specs if s.trained])
    logged = regularization if len(specs) >= len(all_trained) else _penalty(model, all_trained)
    return _Terms(
        shares=[shares.get(s.index, zero) for s in all_trained],
        regularization=regularization / _replicas(),
        logged_penalty=logged,
        batches=batches,
        batch=_batch_size(x),
        features=features,
        counts=tf.stack([counts.get(s.index, zero) for s in all_trained]),
    )


def _replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


def _context(model, counts=None):
    return weighting_module.Context(
        step=tf.convert_to_tensor(model.step_counter),
        seed=model._mtl.seed,
        # Keras resets the metrics at the start of every epoch.
        epoch_start=model._mtl.metrics.epoch_started(),
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


def _record(model, terms, weights=None):
    """Updates the loss trackers, metrics and logged task weights."""
    model._mtl.metrics.record_regularization(terms.logged_penalty, terms.batch)
    for b in terms.batches:
        if b.spec.trained:
            b.spec.loss_tracker.update_state(*b.tracked)
        tasks.update_metrics(b.spec, b.y_clean, b.y_pred, b.weights, b.count)
    if weights is not None:
        trained = model._mtl.trained
        for spec, w in zip(trained, tf.unstack(tf.reshape(weights, [len(trained)]))):
            spec.weight_tracker.update_state(w * spec.weight)


def _alternating_replica_step(model, spec, data):
    """Replica fn: one update of task `spec` (trunk + its head only)."""
    optimizer = model._mtl.optimizers.by_task[spec.name]
    variables = task_variables(model, spec)
    method = model._mtl.weighting
    weight = None
    # A per-task trunk computes every task's part; put back the state (e.g.
    # moving statistics) of the parts this task's output does not use.
    untouched = model._structure.state_outside(spec.name) if model._structure is not None else []
    saved = [tf.identity(v) for v in untouched]
    with tf.GradientTape() as tape:
        terms = _terms(model, [spec], data, True)
        share = terms.shares[spec.index]
        if method is None:
            loss = share + terms.regularization
        else:
            task_loss = _all_reduce_sum(tf.stop_gradient(share))
            weight, extra = method.single_task_weight(spec.index, task_loss, _context(model))
            loss = weight * share + terms.regularization + extra / _replicas()
        scaled = optimizer.scale_loss(loss)
    # With gradient accumulation, `iterations` advances on real updates only.
    updates_before = tf.identity(optimizer.iterations)
    _apply(optimizer, tape.gradient(scaled, variables), variables)
    for v, old in zip(untouched, saved):
        v.assign(old)
    _record(model, terms)
    if weight is not None:
        spec.weight_tracker.update_state(weight * spec.weight)
    spec.update_counter.update_state(optimizer.iterations - updates_before)


def _joint_replica_step(model, data):
    """Replica fn: one update of every trained task at once."""
    method = model._mtl.weighting
    if isinstance(method, weighting_module.GradientWeighting):
        return _gradient_weighted_replica_step(model, data)
    optimizer = model._mtl.optimizers.shared
    variables = joint_variables(model)
    weights = None
    with tf.GradientTape() as tape:
        terms = _terms(model, model._mtl.trained, data, True)
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
    _apply(optimizer, tape.gradient(scaled, variables), variables)
    if method is not None:
        if method.needs_losses_after_update:
            # The same batch's losses after the update (e.g. FAMO), no dropout.
            after = _terms(model, model._mtl.trained, data, False)
            method.after_update(losses, _all_reduce_sum(tf.stack(after.shares)), context)
        restore()
    _record(model, terms, weights)


def _gradient_weighted_replica_step(model, data):
    """Replica fn: a joint update whose trunk gradient is `sum_t c_t g_t`.

    The per-task trunk gradients `g_t` (or, for `gradients="representation"`,
    the gradients of the trunk output) are summed over replicas before the
    method sees them, so every replica computes the same coefficients and the
    result equals single-device training. Heads get their own task's
    gradient; regularization is added unchanged.
    """
    method = model._mtl.weighting
    optimizer = model._mtl.optimizers.shared
    trunk, heads = shared_and_own_variables(model)
    with tf.GradientTape(persistent=True) as tape:
        terms = _terms(model, model._mtl.trained, data, True)
        shares = optimizer.scale_loss(tf.stack(terms.shares))
        task_shares = tf.unstack(shares)  # sliced under the tape, so each is differentiable
        plain = tf.reduce_sum(shares) + optimizer.scale_loss(terms.regularization)
    losses = _all_reduce_sum(tf.stop_gradient(tf.stack(terms.shares)))
    context = _context(model, terms.counts)
    all_present = tf.reduce_all(terms.counts > 0)  # else: plain sum, state kept
    restore = _restore_state_unless(all_present, method)
    task_count = len(terms.shares)
    if method.gradients == "representation":
        rows = []
        for t in range(task_count):
            g = tape.gradient(task_shares[t], terms.features)
            rows.append(tf.reshape(tf.zeros_like(terms.features) if g is None else g, [-1]))
        matrix = tf.stack(rows)
        gram = _all_reduce_sum(tf.matmul(matrix, matrix, transpose_b=True))
        coefficients = _fallback(all_present, method.coefficients(gram, losses, context))
        trunk_grads = tape.gradient(
            shares,
            trunk,
            output_gradients=coefficients,
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )
    else:
        rows = []
        for t in range(task_count):
            grads = tape.gradient(task_shares[t], trunk)
            rows.append(
                tf.concat(
                    [
                        tf.reshape(g, [-1]) if g is not None else tf.zeros([v.shape.num_elements()])
                        for g, v in zip(grads, trunk)
                    ],
                    0,
                )
            )
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
    _apply(optimizer, trunk_grads + head_grads, trunk + heads)
    restore()
    _record(model, terms, coefficients)


def shared_and_own_variables(model):
    """The variables a gradient weighting method combines (those of the trunk
    that two or more trained tasks depend on) and the others (each used by
    one task only: its head and, in a per-task trunk, its own experts and
    gates), which get their task's gradient as it is."""
    trained = model._mtl.trained
    if model._structure is None:
        trunk = list(model.trunk.trainable_variables)
        return trunk, [v for s in trained for v in s.head.trainable_variables]
    users = collections.Counter(id(v) for s in trained for v in model.task_variables(s.name))
    shared, own, seen = [], [], set()
    for s in trained:
        for v in model.task_variables(s.name):
            if id(v) not in seen:
                seen.add(id(v))
                (shared if users[id(v)] > 1 else own).append(v)
    return shared, own


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
    task = model._mtl.sampler.sample(model.step_counter, model._mtl.seed, available, uniforms)
    labels = unpack(data)[1]

    def branch(spec):
        if labels.get(spec.name) is None:
            return lambda: None  # never drawn: the batch has no labels for it
        step = functools.partial(_alternating_replica_step, model, spec)
        return lambda: strategy.run(step, args=(data,))

    # The last branch is "no task has labels in this batch": no update.
    # TensorFlow lowers this Case into Switch/Merge nodes inlined in the
    # step's graph. Keeping it a function call (private TF API) made the
    # seed benchmark's alternating step ~5% faster but the wide one ~15%
    # slower, so the public, lowered form stays (benchmarks/RESULTS.md).
    tf.switch_case(task, [branch(s) for s in model._mtl.trained] + [lambda: None])
    model.step_counter.assign_add(1)


def _joint_step(model, data):
    """Cross-replica: one joint update of every trained task."""
    model.distribute_strategy.run(functools.partial(_joint_replica_step, model), args=(data,))
    model.step_counter.assign_add(1)


def evaluation_step(model, data):
    """Replica fn for `evaluate()`: every task's loss and metrics, no update.

    Every task whose labels the batch holds is evaluated, trained or not;
    the logged `loss` is the static `loss_weights` sum of the trained tasks
    (see `keras_mtl/tasks.py`), whatever `weighting` trains.
    """
    _record(model, _terms(model, model._mtl.specs, data, False))
