"""What one task is: its loss, weight, metrics and label masking.

`build_task_specs` turns the dict arguments of `MultiTaskModel.compile` into
one `TaskSpec` per head, checking every name and value up front. The
functions below it compute a task's loss on a batch with missing labels
masked out; both training modes and evaluation use them, so the masking
rule lives in one place:

* a label is missing when its sample weight is 0 or, for float labels,
  when any of its values is NaN;
* a task's loss on a batch is `sum(w * l) / count_present` over the
  examples whose label is present (Keras's usual mean when all are
  present); with no present label it is exactly 0, with zero gradient.
"""

import keras
import tensorflow as tf

from keras_mtl import _checks

_SUPPORTED_REDUCTIONS = ("sum_over_batch_size", "mean")


class LossTracker(keras.metrics.Metric):
    """Running mean kept as a total and a count.

    Updating with sums and counts (rather than batch means) makes the
    epoch value exact when batches have missing labels or are split over
    replicas: the result is `sum(total) / sum(count)`.
    """

    def __init__(self, name, **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")
        # Lets EarlyStopping / ModelCheckpoint infer mode="min" for
        # monitor="val_<task>_loss".
        self._direction = "down"

    def update_state(self, total, count):
        self.total.assign_add(tf.cast(total, self.dtype))
        self.count.assign_add(tf.cast(count, self.dtype))

    def result(self):
        return tf.math.divide_no_nan(self.total, self.count)


class UpdateCounter(keras.metrics.Metric):
    """Counts the updates of one task's head in the epoch (alternating mode).

    An update is a step that changed the task's weights: with an
    accumulating optimizer (`gradient_accumulation_steps=k`), only every
    k-th step of the task.
    """

    def __init__(self, name, **kwargs):
        super().__init__(name=name, **kwargs)
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, updates=1):
        # Metric variables are summed over replicas when read, and every
        # replica runs the same step: count it on the first replica only.
        replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
        first = tf.cast(tf.equal(replica_id, 0), self.dtype)
        self.count.assign_add(first * tf.cast(updates, self.dtype))

    def result(self):
        return tf.identity(self.count)


class WeightTracker(keras.metrics.Metric):
    """Mean of the weight a task's loss got per step in the epoch."""

    def __init__(self, name, **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, weight):
        # Every replica computes the same weight: record it once.
        replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
        first = tf.cast(tf.equal(replica_id, 0), self.dtype)
        self.total.assign_add(first * tf.cast(weight, self.dtype))
        self.count.assign_add(first)

    def result(self):
        return tf.math.divide_no_nan(self.total, self.count)


class TaskSpec:
    """Everything a training or evaluation step needs to know about a task.

    Attributes:
        name: the task (head) name.
        head: the head layer.
        loss: a `keras.losses.Loss`, or `None` for a task that is not
            trained.
        weight: the static loss weight (float).
        metrics: list of `(metric, weighted)` pairs; `weighted` metrics use
            the sample weights, the others only the missing-label mask.
        loss_tracker: `LossTracker` logged as `<task>_loss`.
        update_counter: `UpdateCounter` logged as `<task>_updates`
            (alternating mode only), else `None`.
        weight_tracker: `WeightTracker` logged as `<task>_weight` when a
            weighting method is compiled, else `None`.
        sparse_labels: whether the loss takes integer class ids.
        index: position among the trained tasks, or `None`.
    """

    def __init__(self, name, head, loss, weight, metrics, sparse_labels, index, alternating):
        self.name = name
        self.head = head
        self.loss = loss
        self.weight = weight
        self.metrics = metrics
        self.sparse_labels = sparse_labels
        self.index = index
        self.loss_tracker = LossTracker(name=f"{name}_loss") if loss is not None else None
        self.update_counter = (
            UpdateCounter(name=f"{name}_updates")
            if alternating and loss is not None
            else None
        )
        self.weight_tracker = None

    @property
    def trained(self):
        return self.loss is not None

    def all_metrics(self):
        """The loss tracker and metrics logged for this task, in log order.

        The update counter and weight tracker are not among them: they are
        training-only logs.
        """
        out = [self.loss_tracker] if self.loss_tracker is not None else []
        return out + [m for m, _ in self.metrics]

    def training_only_metrics(self):
        """Logs of `fit()` that `evaluate()` does not report."""
        return [m for m in (self.update_counter, self.weight_tracker) if m is not None]


def _loss_name(loss):
    if isinstance(loss, keras.losses.Loss):
        fn = getattr(loss, "fn", None)
        return getattr(fn, "__name__", None) or type(loss).__name__
    return getattr(loss, "__name__", type(loss).__name__)


class _FunctionLoss(keras.losses.Loss):
    """Wraps a `loss(y_true, y_pred)` function as a per-example `Loss`."""

    def __init__(self, fn, name=None):
        super().__init__(name=name or getattr(fn, "__name__", "loss"))
        self.fn = fn

    def call(self, y_true, y_pred):
        y_true, y_pred = match_rank(y_true, y_pred)
        return self.fn(y_true, y_pred)


def match_rank(y_true, y_pred):
    """Makes labels and predictions the same rank, as Keras losses expect."""
    rt, rp = y_true.shape.rank, y_pred.shape.rank
    if rt is None or rp is None or rt == rp:
        return y_true, y_pred
    if rt == rp - 1:
        if y_pred.shape[-1] == 1 and rt > 1:
            return y_true, tf.squeeze(y_pred, -1)
        return tf.expand_dims(y_true, -1), y_pred
    if rt == rp + 1 and y_true.shape[-1] == 1:
        return tf.squeeze(y_true, -1), y_pred
    return y_true, y_pred


def resolve_loss(task, identifier, units):
    """Returns the `Loss` object for one task's loss argument, or `None`."""
    if identifier is None:
        return None
    if isinstance(identifier, str) and identifier.lower() in ("crossentropy", "ce"):
        if units != 1:
            raise ValueError(
                f"loss {identifier!r} for task {task!r} is ambiguous for a head "
                f"with {units} units: use 'sparse_categorical_crossentropy' "
                "(integer class ids) or 'categorical_crossentropy' (one-hot)."
            )
        identifier = "binary_crossentropy"
    try:
        loss = keras.losses.get(identifier)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"Unknown loss {identifier!r} for task {task!r}: use a Keras loss "
            f"name such as 'mse', a keras.losses.Loss or a function "
            f"loss(y_true, y_pred). ({e})"
        ) from None
    if loss is None:
        raise ValueError(f"Unknown loss {identifier!r} for task {task!r}.")
    if not isinstance(loss, keras.losses.Loss):
        if not callable(loss):
            raise ValueError(f"Loss for task {task!r} is not callable: {identifier!r}.")
        loss = _FunctionLoss(loss)
    if loss.reduction not in _SUPPORTED_REDUCTIONS:
        raise ValueError(
            f"Loss for task {task!r} has reduction={loss.reduction!r}. "
            "keras_mtl always averages a task's loss over the examples whose "
            "label is present; create the loss with the default reduction "
            "('sum_over_batch_size')."
        )
    return loss


def _resolve_metric(task, identifier, units, sparse_labels):
    if isinstance(identifier, str) and identifier.lower() in ("accuracy", "acc"):
        if units == 1:
            metric = keras.metrics.BinaryAccuracy()
        elif sparse_labels:
            metric = keras.metrics.SparseCategoricalAccuracy()
        else:
            metric = keras.metrics.CategoricalAccuracy()
    elif isinstance(identifier, str) and identifier.lower() in ("crossentropy", "ce"):
        if units == 1:
            metric = keras.metrics.BinaryCrossentropy()
        elif sparse_labels:
            metric = keras.metrics.SparseCategoricalCrossentropy()
        else:
            metric = keras.metrics.CategoricalCrossentropy()
    else:
        try:
            metric = keras.metrics.get(identifier)
        except (ValueError, TypeError):
            raise ValueError(
                f"Unknown metric {identifier!r} for task {task!r}: use a Keras "
                "metric name such as 'mae' or 'accuracy', a keras.metrics.Metric "
                "or a function metric(y_true, y_pred)."
            ) from None
        if not isinstance(metric, keras.metrics.Metric):
            metric = keras.metrics.MeanMetricWrapper(metric)
    base = identifier if isinstance(identifier, str) else metric.name
    metric.name = f"{task}_{base}"
    return metric


def _as_list(arg_name, task, value):
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _per_task(arg_name, value, task_names, allow_single):
    """Normalizes a compile argument to `{task: value}`."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return _checks.check_task_keys(arg_name, value, task_names)
    if allow_single:
        return {t: value for t in task_names}
    raise TypeError(
        f"`{arg_name}` must be a dict keyed by task name, e.g. "
        f"{{{', '.join(repr(t) + ': ...' for t in task_names)}}}, so each "
        f"value goes to the right head. Received: {value!r}."
    )


def build_task_specs(heads, loss, loss_weights, metrics, weighted_metrics, alternating):
    """Builds one `TaskSpec` per head from `compile()` arguments.

    Args:
        heads: ordered dict `{task: head layer}`.
        loss: a dict `{task: loss}` (a task mapped to `None` is not
            trained) or one loss for every task.
        loss_weights: optional dict `{task: float}`; missing tasks get 1.
        metrics: optional dict `{task: metric or list of metrics}`.
        weighted_metrics: like `metrics`, for metrics that use sample
            weights.
        alternating: whether the model trains in alternating mode.

    Returns:
        A list of `TaskSpec`, in head order.
    """
    task_names = list(heads)
    if loss is None:
        raise ValueError(
            "compile() needs a `loss`: a dict such as "
            f"{{{', '.join(repr(t) + ': ...' for t in task_names)}}} "
            "(map a task to None to leave it untrained), or one loss for all tasks."
        )
    losses = _per_task("loss", loss, task_names, allow_single=True)
    missing = [t for t in task_names if t not in losses]
    if missing:
        raise ValueError(
            f"`loss` has no entry for task(s) {missing}. Give each task a loss, "
            f"or map it to None to leave its head untrained "
            f"(e.g. loss={{..., {missing[0]!r}: None}})."
        )
    if loss_weights is not None and not isinstance(loss_weights, dict):
        raise TypeError(
            "`loss_weights` must be a dict keyed by task name, e.g. "
            f"{{{', '.join(repr(t) + ': 1.0' for t in task_names)}}}. "
            f"Received: {loss_weights!r}."
        )
    weights = _checks.check_task_keys("loss_weights", loss_weights or {}, task_names)
    metrics = _per_task("metrics", metrics, task_names, allow_single=False)
    weighted_metrics = _per_task("weighted_metrics", weighted_metrics, task_names, allow_single=False)

    specs = []
    index = 0
    for task, head in heads.items():
        units = getattr(head, "units", None)
        loss_obj = resolve_loss(task, losses[task], units)
        weight = _checks.check_non_negative_finite("loss_weights", weights.get(task, 1.0), task)
        sparse = loss_obj is not None and "sparse" in _loss_name(loss_obj).lower()
        task_metrics = [
            (_resolve_metric(task, m, units, sparse), False)
            for m in _as_list("metrics", task, metrics.get(task))
        ] + [
            (_resolve_metric(task, m, units, sparse), True)
            for m in _as_list("weighted_metrics", task, weighted_metrics.get(task))
        ]
        names = [m.name for m, _ in task_metrics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"Task {task!r} has several metrics named {dupes}: give each a "
                "distinct name (e.g. keras.metrics.MeanAbsoluteError(name='mae2'))."
            )
        specs.append(
            TaskSpec(
                task, head, loss_obj, weight, task_metrics, sparse,
                index if loss_obj is not None else None, alternating,
            )
        )
        if loss_obj is not None:
            index += 1
    if index == 0:
        raise ValueError(
            "Every task's loss is None, so nothing would be trained. Give at "
            "least one task a loss."
        )
    return specs


def check_label_shape(spec, y_true, y_pred):
    """Raises a clear error when labels cannot match the head's output.

    Runs on static shapes while the step is traced, before any update.
    """
    label = tuple(y_true.shape[1:])
    output = tuple(y_pred.shape[1:])
    if spec.sparse_labels:
        ok = label in ((), (1,))
        expected = "integer class ids of shape (batch,) or (batch, 1)"
    else:
        ok = label == output or (output == (1,) and label == ()) or (
            len(label) == len(output)
            and all(a is None or b is None or a == b for a, b in zip(label, output))
        )
        expected = f"shape (batch, {', '.join(str(d) for d in output)})"
    if not ok:
        raise ValueError(
            f"Labels for task {spec.name!r} have shape {tuple(y_true.shape)}, "
            f"but its head outputs {tuple(y_pred.shape)} and its loss "
            f"({_loss_name(spec.loss) if spec.loss else 'none'}) expects "
            f"{expected}."
        )


def label_mask(y_true, sample_weight):
    """Splits a task's labels into clean labels, weights and a present count.

    Args:
        y_true: the task's labels, `(batch, ...)`.
        sample_weight: `None` or per-example weights `(batch,)`/`(batch, 1)`.

    Returns:
        `(y_clean, weights, count)`: labels with NaN replaced by 0; float32
        weights `(batch,)` that are 0 where the label is missing, or `None`
        when every label is present with weight 1 (integer labels without
        sample weights: the cheap, common case); and the number of present
        labels (float32 scalar).
    """
    row_nan = None
    if y_true.dtype.is_floating:
        nan = tf.math.is_nan(y_true)
        rank = y_true.shape.rank
        row_nan = tf.reduce_any(nan, axis=list(range(1, rank))) if rank and rank > 1 else nan
        y_true = tf.where(nan, tf.zeros((), y_true.dtype), y_true)
    if sample_weight is None:
        if row_nan is None:
            return y_true, None, tf.cast(tf.shape(y_true)[0], tf.float32)
        weights = 1.0 - tf.cast(row_nan, tf.float32)
        return y_true, weights, tf.reduce_sum(weights)
    weights = tf.reshape(tf.cast(sample_weight, tf.float32), [tf.shape(y_true)[0]])
    if row_nan is not None:
        weights = tf.where(row_nan, 0.0, weights)
    return y_true, weights, tf.reduce_sum(tf.cast(weights > 0, tf.float32))


def has_labels(y_true, sample_weight):
    """Whether any example of the batch has this task's label (a bool scalar).

    A cheaper test than `label_mask`, for choosing the alternating task.
    """
    # Few ops in sequence: this runs before the task can be chosen.
    rank = y_true.shape.rank
    if y_true.dtype.is_floating:
        nan = tf.math.is_nan(y_true)
        row_missing = tf.reduce_any(nan, axis=list(range(1, rank))) if rank and rank > 1 else nan
    else:
        row_missing = None
    if sample_weight is not None:
        no_weight = tf.reshape(sample_weight, [-1]) <= 0
        row_missing = no_weight if row_missing is None else tf.logical_or(row_missing, no_weight)
    if row_missing is None:
        return tf.shape(y_true)[0] > 0
    return tf.logical_not(tf.reduce_all(row_missing))


def weighted_loss_sum(spec, y_clean, y_pred, weights):
    """`sum(w * l)` of one task over a batch, where `l` is the per-example loss."""
    loss = spec.loss
    values = loss.call(tf.cast(y_clean, loss.dtype), tf.cast(y_pred, loss.dtype))
    rank = values.shape.rank
    if rank == 0:
        raise ValueError(
            f"The loss of task {spec.name!r} returned a scalar; keras_mtl needs "
            "one value per example to mask missing labels. Return shape (batch,)."
        )
    if rank is not None and rank > 1:
        values = tf.reduce_mean(values, axis=list(range(1, rank)))
    if weights is None:
        return tf.reduce_sum(values)
    # Weights are 0 exactly where labels are missing; labels were cleaned of
    # NaN, so `values` is finite there and 0 * value adds nothing.
    return tf.reduce_sum(values * weights)


def update_metrics(spec, y_clean, y_pred, weights):
    """Updates a task's compiled metrics, ignoring missing labels."""
    if not spec.metrics:
        return
    present = None if weights is None else tf.cast(weights > 0, tf.float32)
    for metric, weighted in spec.metrics:
        metric.update_state(y_clean, y_pred, sample_weight=weights if weighted else present)
