"""One task's loss on a batch: label shapes, missing labels and reductions.

Both training modes and evaluation compute a task's loss here, so the
masking rule lives in one place:

* a label is missing when its sample weight is 0 or, for float labels,
  when any of its values is NaN; a task whose labels are `None` in the
  batch has no label at all;
* the per-example loss is the loss's own `call(y_true, y_pred)` (Keras's
  per-element loss, averaged over any inner dimension), and the loss's
  `reduction` is applied over the examples whose label is present:
  `"sum_over_batch_size"` (Keras's default) and `"mean"` divide
  `sum(w * l)` by the number of present labels (Keras's usual mean when all
  are present), `"mean_with_sample_weight"` by `sum(w)`, `"sum"` not at all.
  With no present label the loss is exactly 0, with zero gradient;
* a Keras mask on the predictions (e.g. padded timesteps after
  `Embedding(mask_zero=True)` reaching a per-timestep head) leaves the masked
  elements out, and a mean divides by the unmasked elements, as Keras's
  losses do.

What labels a loss takes is read from shapes, not names: labels with the
head's output shape are dense; labels with one value per example (or per
timestep) for a head of k > 1 units are class ids. Keras's own loss
functions are known to take one form only (`sparse_categorical_crossentropy`
takes ids, `mean_squared_error` dense values...), so their labels are
checked strictly; a loss of your own takes either.
"""

import keras
import tensorflow as tf

# Reductions a task's loss may use, as Keras names them.
_MEAN = ("sum_over_batch_size", "mean")
_REDUCTIONS = _MEAN + ("sum", "mean_with_sample_weight")

_DENSE_FUNCTIONS = (
    "mean_squared_error",
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error",
    "huber",
    "log_cosh",
    "binary_crossentropy",
    "binary_focal_crossentropy",
    "categorical_crossentropy",
    "categorical_focal_crossentropy",
    "categorical_hinge",
    "hinge",
    "squared_hinge",
    "kl_divergence",
    "poisson",
    "cosine_similarity",
)
_ID_FUNCTIONS = ("sparse_categorical_crossentropy",)


def _keras_functions(names):
    return tuple(f for f in (getattr(keras.losses, n, None) for n in names) if f is not None)


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


def loss_name(loss):
    """A readable name of a `Loss` (its function's name, if it wraps one)."""
    fn = getattr(loss, "fn", None)
    return getattr(fn, "__name__", None) or getattr(loss, "name", None) or type(loss).__name__


def label_form(loss):
    """Which labels `loss` takes: `"dense"`, `"ids"` or `None` (either).

    Known for Keras's own loss functions (by identity, whatever the name
    they are given under); `None` for any other loss.
    """
    fn = getattr(loss, "fn", None)
    if fn is None:
        return None
    if fn in _keras_functions(_ID_FUNCTIONS):
        return "ids"
    if fn in _keras_functions(_DENSE_FUNCTIONS):
        return "dense"
    return None


def resolve_loss(task, identifier, units):
    """Returns the `Loss` object for one task's loss argument, or `None`.

    Args:
        task: The task name, for messages.
        identifier: A loss name, a `keras.losses.Loss`, a function
            `loss(y_true, y_pred)`, or `None` (the task is not trained).
        units: The head's number of output units, or `None` if unknown.

    Returns:
        A `keras.losses.Loss`, or `None`.
    """
    if identifier is None:
        return None
    if isinstance(identifier, str) and identifier.lower() in ("crossentropy", "ce"):
        if units != 1:
            size = f"with {units} units" if units is not None else "of unknown output size"
            raise ValueError(
                f"loss {identifier!r} for task {task!r} is ambiguous for a head "
                f"{size}: use 'sparse_categorical_crossentropy' "
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
    if loss.reduction not in _REDUCTIONS:
        raise ValueError(
            f"Loss for task {task!r} has reduction={loss.reduction!r}, but a "
            "task's loss must reduce to one number per batch: use "
            f"{', '.join(repr(r) for r in _REDUCTIONS)} (Keras's default is "
            "'sum_over_batch_size'); missing labels are left out of each."
        )
    return loss


def check_label_shape(task, loss, label_shape, output_shape):
    """Raises a clear error when labels cannot match the head's output.

    Runs on static shapes: on every fit/evaluate call for arrays and
    dataset specs, and again while a step is traced, before any update.

    Args:
        task: The task name, for the message.
        loss: The task's `Loss` (or `None` for an untrained task).
        label_shape: The labels' shape, batch dimension first.
        output_shape: The head's output shape, batch dimension first.

    Returns:
        None.
    """
    label = (
        tuple(tf.TensorShape(label_shape)[1:].as_list()) if tf.TensorShape(label_shape).rank else ()
    )
    output = tuple(tf.TensorShape(output_shape)[1:].as_list())
    form = label_form(loss) if loss is not None else None
    same = (
        label == output
        or (output == (1,) and label == ())
        or (
            len(label) == len(output)
            and all(a is None or b is None or a == b for a, b in zip(label, output))
        )
    )
    ids = bool(output) and output[-1] != 1 and label in (output[:-1], output[:-1] + (1,))
    if form == "ids":
        ok, expected = ids, "integer class ids of shape " + _shape(output[:-1])
    elif form == "dense":
        ok, expected = same, "shape " + _shape(output)
    else:
        ok = same or ids
        expected = f"shape {_shape(output)}" + (
            f" or class ids of shape {_shape(output[:-1])}" if output and output[-1] != 1 else ""
        )
    if not ok:
        name = loss_name(loss) if loss is not None else "none"
        raise ValueError(
            f"Labels for task {task!r} have shape {_shape(label)}, but its head "
            f"outputs {_shape(output)} and its loss ({name}) expects {expected}."
        )


def _shape(dims):
    return "(" + ", ".join(["batch"] + ["None" if d is None else str(d) for d in dims]) + ")"


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
    if y_true is None:
        return tf.constant(False)
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


def _elementwise_loss(task, loss, y_clean, y_pred):
    values = loss.call(tf.cast(y_clean, loss.dtype), tf.cast(y_pred, loss.dtype))
    if values.shape.rank == 0:
        raise ValueError(
            f"The loss of task {task!r} returned a scalar; keras_mtl needs "
            "one value per example to leave missing labels out. Return shape (batch,)."
        )
    return values


def per_example_loss(task, loss, y_clean, y_pred):
    """The loss's value for each example, `(batch,)`."""
    values = _elementwise_loss(task, loss, y_clean, y_pred)
    rank = values.shape.rank
    if rank is not None and rank > 1:
        values = tf.reduce_mean(values, axis=list(range(1, rank)))
    return values


def _mask_like(mask, values):
    """The Keras mask as float32 weights of the loss values' shape, or `None`
    when it does not describe them (e.g. a mask that a pooling layer used)."""
    mask = tf.cast(mask, tf.float32)
    if mask.shape.rank == values.shape.rank + 1 and mask.shape[-1] == 1:
        mask = tf.squeeze(mask, -1)
    if mask.shape.rank != values.shape.rank or values.shape.rank < 2:
        return None
    return mask


def loss_sums(task, loss, y_clean, y_pred, weights, count, mask=None):
    """A task's loss on one batch (or one replica's share of it), unreduced.

    Args:
        task: The task name, for messages.
        loss: The task's `Loss`.
        y_clean, y_pred: Labels (missing ones cleaned) and predictions.
        weights: float32 `(batch,)` weights, 0 for missing labels, or `None`.
        count: float32 scalar, the number of present labels.
        mask: The Keras mask of `y_pred` (e.g. padded timesteps of a
            sequence after `Embedding(mask_zero=True)`), or `None`. As in
            Keras, masked elements are left out and a mean divides by the
            number of unmasked elements (of the examples whose label is
            present).

    Returns:
        `(total, normalizer)`: `sum(w * l)` and what the loss's reduction
        divides it by (present labels, `sum(w)`, or `None` for `"sum"`);
        summed over replicas before dividing, so that a distributed step
        computes the single-device loss.
    """
    element_mask = None
    if mask is not None:
        values = _elementwise_loss(task, loss, y_clean, y_pred)
        element_mask = _mask_like(mask, values)
    if element_mask is None:
        values = per_example_loss(task, loss, y_clean, y_pred)
        total = tf.reduce_sum(values) if weights is None else tf.reduce_sum(values * weights)
        if loss.reduction in _MEAN:
            return total, count
        if loss.reduction == "mean_with_sample_weight":
            return total, count if weights is None else tf.reduce_sum(weights)
        return total, None
    # Per-element weights: the mask times the example's weight.
    inner = [1] * (values.shape.rank - 1)
    example = None if weights is None else tf.reshape(weights, [-1] + inner)
    weighted = element_mask if example is None else element_mask * example
    total = tf.reduce_sum(values * weighted)
    if loss.reduction in _MEAN:
        present = (
            element_mask if example is None else element_mask * tf.cast(example > 0, tf.float32)
        )
        return total, tf.reduce_sum(present)
    if loss.reduction == "mean_with_sample_weight":
        return total, tf.reduce_sum(weighted)
    return total, None
