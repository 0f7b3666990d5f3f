"""What one task is (its loss, weight and metrics) and what the epoch logs say.

`build_task_specs` turns the dict arguments of `MultiTaskModel.compile` into
one `TaskSpec` per head, checking every name and value up front.
`TaskMetrics` holds every task's trackers and metrics and turns them into
the logs Keras's callbacks see:

* `<task>_loss` is the task's mean loss over the labels it saw in the epoch
  (`keras_mtl/_losses.py` says how missing labels are left out), and
  `<task>_<metric>` its compiled metrics;
* a task that saw no label in the epoch (never sampled, or all its labels
  missing) logs NaN for all of these, never a 0 a callback could take for an
  improvement;
* `loss` is `sum_t loss_weight_t * <task>_loss` over the trained tasks that
  saw labels, plus the mean regularization penalty: the same formula in
  training and evaluation, in both modes, so `loss` and `val_loss` compare.
"""

import weakref

import keras
import tensorflow as tf

from keras_mtl import _checks, _keras_internals, _losses

_NAN = float("nan")
# TaskMetrics -> its result() as a tf.function, for eager calls.
_EAGER_RESULTS = weakref.WeakKeyDictionary()


class LossTracker(keras.metrics.Metric):
    """Running mean kept as a total and a count; NaN when nothing was counted.

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
        _keras_internals.set_direction(self, "down")

    def update_state(self, total, count):
        self.total.assign_add(tf.cast(total, self.dtype))
        self.count.assign_add(tf.cast(count, self.dtype))

    def result(self):
        return tf.where(self.count > 0, tf.math.divide_no_nan(self.total, self.count), _NAN)


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
        self.count.assign_add(_first_replica(self.dtype) * tf.cast(updates, self.dtype))

    def result(self):
        return tf.identity(self.count)


class WeightTracker(keras.metrics.Metric):
    """Mean of the weight a task's loss got per step in the epoch (NaN if none)."""

    def __init__(self, name, **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, weight):
        # Every replica computes the same weight: record it once.
        first = _first_replica(self.dtype)
        self.total.assign_add(first * tf.cast(weight, self.dtype))
        self.count.assign_add(first)

    def result(self):
        return tf.where(self.count > 0, tf.math.divide_no_nan(self.total, self.count), _NAN)


def _first_replica(dtype):
    replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
    return tf.cast(tf.equal(replica_id, 0), dtype)


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
        loss_tracker: `LossTracker` logged as `<task>_loss` (trained tasks).
        labels_seen: `LossTracker` counting the labels an untrained task
            with metrics saw (its metrics log NaN without any), else `None`.
        update_counter: `UpdateCounter` logged as `<task>_updates`
            (alternating mode only), else `None`.
        weight_tracker: `WeightTracker` logged as `<task>_weight` when a
            weighting method is compiled, else `None`.
        index: position among the trained tasks, or `None`.
    """

    def __init__(self, name, head, loss, weight, metrics, index, alternating):
        self.name = name
        self.head = head
        self.loss = loss
        self.weight = weight
        self.metrics = metrics
        self.index = index
        self.loss_tracker = LossTracker(name=f"{name}_loss") if loss is not None else None
        self.labels_seen = LossTracker(name=f"{name}_labels") if loss is None and metrics else None
        self.update_counter = (
            UpdateCounter(name=f"{name}_updates") if alternating and loss is not None else None
        )
        self.weight_tracker = None

    @property
    def trained(self):
        return self.loss is not None

    def seen(self):
        """The number of labels the task saw in the epoch (a float tensor)."""
        tracker = self.loss_tracker if self.trained else self.labels_seen
        return tf.convert_to_tensor(tracker.count) if tracker is not None else tf.constant(0.0)

    def state_metrics(self):
        """Every metric object of this task that `evaluate()` resets."""
        out = [m for m in (self.loss_tracker, self.labels_seen) if m is not None]
        return out + [m for m, _ in self.metrics]

    def training_only_metrics(self):
        """Logs of `fit()` that `evaluate()` does not report."""
        return [m for m in (self.update_counter, self.weight_tracker) if m is not None]


class TaskMetrics(_keras_internals.MetricsList):
    """Every task's trackers and metrics, logged as described in the module.

    A `MetricsList` so that Keras's `EarlyStopping`/`ModelCheckpoint` find
    `<task>_loss` among `model.metrics` and infer `mode="min"`.
    """

    def __init__(self, specs, name="task_metrics"):
        self.specs = list(specs)
        self.regularization = LossTracker(name="regularization")
        super().__init__(
            [self.regularization] + [m for s in self.specs for m in s.state_metrics()], name=name
        )

    def record_regularization(self, penalty, examples):
        """Adds one step's regularization penalty, weighted by its examples."""
        self.regularization.update_state(penalty * examples, examples)

    def epoch_started(self):
        """Whether no step was recorded since the metrics were reset."""
        return tf.equal(self.regularization.count, 0.0)

    def result(self):
        if not tf.executing_eagerly():
            return self._result()
        # Keras reads the logs eagerly at every epoch's end; as one graph
        # they cost one call instead of some 30 eager ops (kept outside the
        # object, so that no saved model tracks the function).
        function = _EAGER_RESULTS.get(self)
        if function is None:
            function = _EAGER_RESULTS[self] = tf.function(self._result, autograph=False)
        return function()

    def _result(self):
        total = tf.where(self.regularization.count > 0, self.regularization.result(), 0.0)
        logs = {"loss": None}
        for spec in self.specs:
            seen = spec.seen() > 0
            if spec.trained:
                task_loss = spec.loss_tracker.result()
                total += tf.where(seen, spec.weight * task_loss, 0.0)
                logs[spec.loss_tracker.name] = task_loss
            for metric, _ in spec.metrics:
                logs[metric.name] = tf.where(seen, tf.cast(metric.result(), tf.float32), _NAN)
        logs["loss"] = total
        return logs


# The names users gave their metric instances, for those keras_mtl had to
# rename (metrics that cannot be copied), so a second compile() finds them.
_ORIGINAL_NAMES = weakref.WeakKeyDictionary()


def _copy_metric(metric, name):
    """A fresh copy of `metric` named `name`, or `None` if it cannot be copied."""
    try:
        config = dict(metric.get_config(), name=name)
        copy = type(metric).from_config(config)
    except Exception:  # a metric without a working get_config/from_config
        return None
    return copy if isinstance(copy, keras.metrics.Metric) else None


def _label_kind(y_true, y_pred):
    """`"binary"`, `"ids"` (class ids) or `"one_hot"`, read from the shapes."""
    if y_pred.shape[-1] == 1:
        return "binary"
    if y_true.shape.rank < y_pred.shape.rank or y_true.shape[-1] == 1:
        return "ids"
    return "one_hot"


_ACCURACY = {
    "binary": keras.metrics.binary_accuracy,
    "ids": keras.metrics.sparse_categorical_accuracy,
    "one_hot": keras.metrics.categorical_accuracy,
}
_CROSSENTROPY = {
    "binary": keras.metrics.binary_crossentropy,
    "ids": keras.metrics.sparse_categorical_crossentropy,
    "one_hot": keras.metrics.categorical_crossentropy,
}


def _accuracy(y_true, y_pred):
    """Accuracy of the kind the shapes say: binary, class ids or one-hot."""
    return _ACCURACY[_label_kind(y_true, y_pred)](y_true, y_pred)


def _crossentropy(y_true, y_pred):
    """Crossentropy of the kind the shapes say: binary, class ids or one-hot."""
    return _CROSSENTROPY[_label_kind(y_true, y_pred)](y_true, y_pred)


# Metric names resolved by the shapes of labels and outputs, with the
# direction Keras's monitor callbacks need (as its own classes declare).
_BY_SHAPE = {
    "accuracy": (_accuracy, "up"),
    "acc": (_accuracy, "up"),
    "crossentropy": (_crossentropy, "down"),
    "ce": (_crossentropy, "down"),
}


def _resolve_metric(task, identifier, claimed):
    """The metric object task `task` logs for `identifier`, named `<task>_<name>`.

    User instances are never changed: each task gets its own copy, so a
    recompile keeps the names and one instance given to two tasks gives
    two independent metrics. `claimed` holds the instances already used
    without copying in this compile.
    """
    if isinstance(identifier, str) and identifier.lower() in _BY_SHAPE:
        fn, direction = _BY_SHAPE[identifier.lower()]
        metric = keras.metrics.MeanMetricWrapper(fn, name=f"{task}_{identifier}")
        _keras_internals.set_direction(metric, direction)
        return metric
    if isinstance(identifier, keras.metrics.Metric):
        base = _ORIGINAL_NAMES.get(identifier, identifier.name)
        copy = _copy_metric(identifier, f"{task}_{base}")
        if copy is not None:
            return copy
        if identifier in claimed:
            raise ValueError(
                f"The metric {base!r} is given to several tasks, but it cannot be "
                f"copied for task {task!r} (its get_config()/from_config() fail). "
                "Give each task its own instance, or implement get_config()."
            )
        claimed.add(identifier)
        _ORIGINAL_NAMES[identifier] = base
        identifier.name = f"{task}_{base}"
        return identifier
    try:
        metric = keras.metrics.get(identifier)
    except (ValueError, TypeError):
        raise ValueError(
            f"Unknown metric {identifier!r} for task {task!r}: use a Keras "
            "metric name such as 'mae' or 'accuracy', a keras.metrics.Metric "
            "or a function metric(y_true, y_pred)."
        ) from None
    base = identifier if isinstance(identifier, str) else getattr(identifier, "__name__", "metric")
    if isinstance(metric, keras.metrics.Metric):  # a new instance of our own
        metric.name = f"{task}_{base}"
        return metric
    return keras.metrics.MeanMetricWrapper(metric, name=f"{task}_{base}")


def _as_list(value):
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


def _units(head):
    """A head's number of output units, where its layer says it (`None` if not)."""
    if isinstance(head, keras.Sequential) and head.layers:
        head = head.layers[-1]
    units = getattr(head, "units", None)
    return units if isinstance(units, int) else None


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
    weighted_metrics = _per_task(
        "weighted_metrics", weighted_metrics, task_names, allow_single=False
    )

    specs = []
    index = 0
    claimed = set()
    for task, head in heads.items():
        loss_obj = _losses.resolve_loss(task, losses[task], _units(head))
        weight = _checks.check_non_negative_finite("loss_weights", weights.get(task, 1.0), task)
        task_metrics = [
            (_resolve_metric(task, m, claimed), False) for m in _as_list(metrics.get(task))
        ] + [
            (_resolve_metric(task, m, claimed), True) for m in _as_list(weighted_metrics.get(task))
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
                task,
                head,
                loss_obj,
                weight,
                task_metrics,
                index if loss_obj is not None else None,
                alternating,
            )
        )
        if loss_obj is not None:
            index += 1
    if index == 0:
        raise ValueError(
            "Every task's loss is None, so nothing would be trained. Give at least one task a loss."
        )
    return specs


def update_metrics(spec, y_clean, y_pred, weights, count):
    """Updates a task's compiled metrics, ignoring missing labels."""
    if spec.labels_seen is not None:
        spec.labels_seen.update_state(0.0, count)
    if not spec.metrics:
        return
    present = None if weights is None else tf.cast(weights > 0, tf.float32)
    for metric, weighted in spec.metrics:
        metric.update_state(y_clean, y_pred, sample_weight=weights if weighted else present)
