"""What `fit`, `evaluate`, `train_on_batch` and `test_on_batch` do to their inputs first.

Every entry point takes the same forms, checked on every call before any
step runs, with errors that name the task or argument:

* `x`: what the trunk takes (`keras_mtl/_inputs.py`): for the Dense
  shortcut one float array `(batch, features)` (NumPy, a tensor, a pandas
  DataFrame of numeric columns); for a trunk of your own arrays of any rank
  and dtype, a dict of named inputs, or a DataFrame whose columns feed a
  named-input trunk by name; or a `tf.data.Dataset` of `(x, y)` /
  `(x, y, sample_weight)`, or a generator / `keras.utils.PyDataset` (checked
  when its first batch is traced);
* `y`: a dict `{task: labels}` or a pandas DataFrame with one column per
  task; a task mapped to `None` has every label absent (Keras carries the
  `None` through to the step, which leaves the task out);
* `sample_weight`: one array for every task or a dict `{task: weights}`;
* `class_weight`: a dict `{task: {class: weight}}`, turned into per-task
  sample weights (multiplied with any given);
* every label array's shape is checked against its head's output shape
  (`keras_mtl/_losses.py`), for arrays and dataset specs alike.
"""

import numbers

import numpy as np
import tensorflow as tf

from keras_mtl import _checks, _losses
from keras_mtl import _inputs as inputs_module
from keras_mtl import data as data_module

_ARRAY_TYPES = (np.ndarray, tf.Tensor)


_is_dataframe = inputs_module._is_dataframe
_is_series = inputs_module._is_series


def _inputs(model, x, method):
    """`x` as the trunk takes it (checked), or a clear error."""
    if model.trunk_units is not None:
        return _dense_inputs(model, x, method)
    declared = inputs_module.trunk_input_spec(model.trunk)
    if _is_dataframe(x):
        if isinstance(declared, dict):
            return inputs_module.frame_to_inputs(x, declared, method)
        return _numeric_frame(x, method)
    if isinstance(x, dict):
        x = {k: _array(v) for k, v in x.items()}
        if isinstance(declared, dict):
            missing = [k for k in declared if k not in x]
            unknown = [k for k in x if k not in declared]
            if missing or unknown:
                raise ValueError(
                    f"MultiTaskModel.{method}() received `x` with keys {sorted(x)}, but "
                    f"the trunk takes the named inputs {sorted(declared)}"
                    + (f"; missing: {missing}" if missing else "")
                    + (f"; not inputs of the trunk: {unknown}" if unknown else "")
                    + "."
                )
        elif declared is not None:
            raise ValueError(
                f"MultiTaskModel.{method}() received `x` as a dict with keys {sorted(x)}, "
                "but the trunk does not take named inputs: pass its input as one array."
            )
    elif isinstance(x, (list, tuple)) and not inputs_module._is_leaf_sequence(x):
        x = [_array(v) for v in x]
    else:
        x = _array(x)
    _check_same_rows(x, method)
    return _to_declared_rank(x, declared)


def _to_declared_rank(x, declared):
    """`(n,)` arrays as `(n, 1)` where the trunk declares a `(batch, 1)` input,
    so that every call passes the same ranks (Keras's predict function
    retraces with unknown shapes when the rank changes between calls)."""
    if declared is None:
        return x

    def adjust(value, spec):
        if len(value.shape) == spec.shape.rank - 1 and spec.shape[-1] == 1:
            return (
                tf.expand_dims(value, -1) if isinstance(value, tf.Tensor) else value.reshape(-1, 1)
            )
        return value

    if isinstance(x, dict) and isinstance(declared, dict):
        return {k: adjust(v, declared[k]) if k in declared else v for k, v in x.items()}
    if isinstance(declared, tf.TensorSpec) and hasattr(x, "shape"):
        return adjust(x, declared)
    return x


def _array(value):
    if _is_series(value):
        value = value.to_numpy()
    return inputs_module.as_tensor_if_text(
        value if isinstance(value, _ARRAY_TYPES) else np.asarray(value)
    )


def _check_same_rows(x, method):
    leaves = inputs_module.flat_arrays(x)
    rows = {path: _rows(v) for path, v in leaves if len(getattr(v, "shape", ())) > 0}
    if len(set(rows.values())) > 1:
        raise ValueError(
            f"The inputs given to {method}() have different numbers of rows "
            f"{rows}: every input needs one row per example."
        )
    scalars = [path for path, v in leaves if len(getattr(v, "shape", ())) == 0]
    if scalars:
        raise ValueError(
            f"Input {scalars[0]} given to {method}() is a scalar: every input needs "
            "a batch dimension (one row per example)."
        )


def _numeric_frame(x, method):
    non_numeric = [
        c
        for c, t in x.dtypes.items()
        if not np.issubdtype(t, np.number) and not np.issubdtype(t, np.bool_)
    ]
    if non_numeric:
        raise ValueError(
            f"MultiTaskModel.{method}() takes numeric features here, but the "
            f"DataFrame `x` has non-numeric columns {non_numeric}: encode "
            "them as numbers first, or use a trunk with named inputs "
            "(a functional keras.Model whose keras.Input names are the columns), "
            "which takes a DataFrame's columns by name, text included."
        )
    return x.to_numpy(dtype="float32")


def _dense_inputs(model, x, method):
    """`x` for the Dense shortcut trunk: one float array (batch, features)."""
    if _is_dataframe(x):
        return _numeric_frame(x, method)
    several = isinstance(x, (list, tuple)) and not inputs_module._is_leaf_sequence(x)
    if several or isinstance(x, dict):
        _too_many_inputs(model, x, method)  # Keras reads these as several inputs
    if not isinstance(x, _ARRAY_TYPES):
        x = np.asarray(x)
    dtype = tf.as_dtype(x.dtype) if isinstance(x, tf.Tensor) else None
    numeric = (
        (dtype.is_floating or dtype.is_integer or dtype.is_bool)
        if dtype is not None
        else (np.issubdtype(x.dtype, np.number) or x.dtype == bool)
    )
    if len(x.shape) != 2 or not numeric:
        raise ValueError(
            f"MultiTaskModel.{method}() takes `x` as one float array of shape "
            f"(batch, features); received {'shape ' + str(tuple(x.shape)) if numeric else 'dtype ' + str(x.dtype)}. "
            "Flatten, encode or preprocess the inputs first, or pass your own "
            "Keras layer as `trunk` (any input rank and dtype, named inputs)."
        )
    return x


def _too_many_inputs(model, x, method):
    kind = (
        f"a dict with keys {sorted(x)}"
        if isinstance(x, dict)
        else f"a {type(x).__name__} of {len(x)} arrays"
    )
    raise ValueError(
        f"MultiTaskModel.{method}() received `x` as {kind}, but its Dense trunk "
        "takes one float array of shape (batch, features): concatenate the "
        "features into one array (e.g. np.concatenate([...], axis=1)), or pass "
        "your own trunk that takes named inputs (a functional keras.Model)."
    )


def predict_inputs(model, x):
    """`x` for `predict()`: a DataFrame's columns by name for a trunk with
    named inputs; anything else as given (Keras checks it)."""
    if model.trunk_units is None and (
        _is_dataframe(x) or isinstance(x, (dict, list, tuple, np.ndarray))
    ):
        return _inputs(model, x, "predict")
    return x


def _targets(model, y, method):
    """`y` as a dict `{task: array or None}`; a DataFrame gives its columns."""
    if _is_dataframe(y):
        unknown = [c for c in y.columns if c not in model.task_names]
        if unknown:
            raise ValueError(
                f"The DataFrame `y` has column(s) {unknown} that are not tasks; "
                f"its columns must be task names among {list(model.task_names)}."
            )
        y = {c: y[c] for c in y.columns}
    if not isinstance(y, dict):
        data_module.check_targets(model, y, None, method)  # raises the usual message
    return {
        t: None if v is None else (v.to_numpy() if _is_series(v) or _is_dataframe(v) else v)
        for t, v in y.items()
    }


def _rows(value):
    return int(value.shape[0]) if hasattr(value, "shape") else len(value)


def standardize(model, x, y, sample_weight, class_weight, method, steps=None):
    """Checks one call's inputs and returns `(x, y, sample_weight)` for Keras.

    Args:
        model: The `MultiTaskModel`.
        x, y, sample_weight: As given to `fit`/`evaluate`/`train_on_batch`.
        class_weight: `None` or `{task: {class: weight}}`.
        method: `"fit"`, `"evaluate"`, `"validation_data"`,
            `"train_on_batch"`... for messages.
        steps: The number of steps the caller asked for (`steps_per_epoch`,
            `steps`, `validation_steps`), to refuse an infinite dataset
            without one.

    Returns:
        `(x, y, sample_weight)`, with class weights folded into
        `sample_weight` (or into the dataset).
    """
    if class_weight is not None:
        _check_class_weight(model, class_weight)
    if isinstance(x, tf.data.Dataset):
        return _dataset(model, x, y, sample_weight, class_weight, method, steps)
    if not (isinstance(x, _ARRAY_TYPES + (list, tuple, dict)) or _is_dataframe(x)):
        if class_weight is not None:
            raise ValueError(
                "`class_weight` needs `x` as arrays or a tf.data.Dataset; for a "
                "generator or PyDataset, yield per-task sample weights instead."
            )
        return x, y, sample_weight  # generators / PyDataset: checked when traced
    x = _inputs(model, x, method)
    if y is None:
        raise ValueError(
            f"MultiTaskModel.{method}() needs targets: pass y as a dict keyed by "
            f"task name, e.g. {data_module._example(model.task_names)}."
        )
    y = _targets(model, y, method)
    data_module.check_targets(model, y, sample_weight, method)
    n = _rows(inputs_module.flat_arrays(x)[0][1])
    if n == 0:
        raise ValueError(f"`x` given to {method}() has no examples.")
    for task, labels in y.items():
        if labels is not None:
            if not isinstance(labels, _ARRAY_TYPES):
                labels = y[task] = np.asarray(labels)
            if _rows(labels) != n:
                raise ValueError(
                    f"Labels for task {task!r} have {_rows(labels)} rows but x has "
                    f"{n}: every task's labels need one row per example (use NaN "
                    "or sample weight 0 for missing labels)."
                )
    if not model.built:
        model._build_for(x)
    _check_label_shapes(model, {t: v.shape for t, v in y.items() if v is not None})
    if class_weight is not None:
        sample_weight = _with_class_weights(model, y, sample_weight, class_weight)
    if isinstance(sample_weight, dict):
        sample_weight = _weights_for_every_task(y, sample_weight, n)
    return x, y, sample_weight


def _weights_for_every_task(y, sample_weight, n):
    """A `{task: weights}` dict with the structure of `y`, as Keras requires:
    ones for a task without weights, `None` for a task without labels."""
    for task, weights in sample_weight.items():
        if weights is not None and _rows(weights) != n:
            raise ValueError(
                f"`sample_weight[{task!r}]` has {_rows(weights)} rows but x has {n}: "
                "give one weight per example."
            )
    return {
        t: None
        if labels is None
        else (sample_weight[t] if sample_weight.get(t) is not None else np.ones((n,), np.float32))
        for t, labels in y.items()
    }


def _check_label_shapes(model, shapes):
    for spec in model._mtl.specs:
        if spec.name in shapes:
            output = model._output_shape(spec.name)
            _losses.check_label_shape(spec.name, spec.loss, shapes[spec.name], output)


def _dataset(model, dataset, y, sample_weight, class_weight, method, steps):
    if y is not None or sample_weight is not None:
        raise ValueError(
            f"When x is a tf.data.Dataset, {method}() takes no separate y or "
            "sample_weight: the dataset must yield (x, y) or (x, y, sample_weight) "
            "with y a dict keyed by task."
        )
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise ValueError(
            f"A dataset given to MultiTaskModel.{method}() must yield (x, y) or "
            f"(x, y, sample_weight) with y a dict keyed by task, e.g. "
            f"(x, {data_module._example(model.task_names)}). Its element_spec is {spec}."
        )
    data_module.check_targets(model, spec[1], spec[2] if len(spec) == 3 else None, method)
    x_spec = spec[0]
    if not isinstance(x_spec, tf.TensorSpec) and model.trunk_units is not None:
        _too_many_inputs(model, x_spec, method)
    if dataset.cardinality() == 0:
        raise ValueError(f"The dataset given to {method}() is empty: it yields no batch.")
    if dataset.cardinality() == tf.data.INFINITE_CARDINALITY and not steps:
        arg = {"fit": "steps_per_epoch", "evaluate": "steps"}.get(method, "validation_steps")
        raise ValueError(
            f"The dataset given to {method}() is infinite (for example from "
            f"keras_mtl.data.interleave), so pass `{arg}=...`: the number "
            "of batches that make one epoch."
        )
    if not model.built:
        model._build_for(x_spec)
    if model.built:
        _check_label_shapes(
            model, {t: s.shape for t, s in spec[1].items() if isinstance(s, tf.TensorSpec)}
        )
    if class_weight is None:
        return dataset, None, None

    def weigh(*element):
        x, labels = element[0], element[1]
        given = element[2] if len(element) == 3 else None
        return x, labels, _with_class_weights(model, labels, given, class_weight)

    return dataset.map(tf.autograph.experimental.do_not_convert(weigh)), None, None


def _check_class_weight(model, class_weight):
    if not isinstance(class_weight, dict) or not all(
        isinstance(v, dict) for v in class_weight.values()
    ):
        raise ValueError(
            "`class_weight` must be a dict keyed by task, each value a dict "
            "{class: weight}, e.g. class_weight={"
            + ", ".join(f"{t!r}: {{0: 1.0, 1: 5.0}}" for t in model.task_names[:2])
            + f"}}; the model's tasks are {list(model.task_names)}. "
            f"Received: {class_weight!r}."
        )
    _checks.check_task_keys("class_weight", class_weight, model.task_names)
    for task, weights in class_weight.items():
        for cls, w in weights.items():
            if isinstance(cls, bool) or not isinstance(cls, numbers.Integral) or cls < 0:
                raise ValueError(
                    f"`class_weight[{task!r}]` must map class indices (ints >= 0) "
                    f"to weights. Received the key {cls!r}."
                )
            _checks.check_non_negative_finite(f"class_weight[{task!r}]", w, task)


def class_indices(labels):
    """The class of each example: argmax of one-hot rows, else the (rounded)
    label itself; -1 where a float label is NaN (a missing label)."""
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank and labels.shape.rank > 1 and labels.shape[-1] != 1:
        classes = tf.argmax(labels, axis=-1, output_type=tf.int64)
        missing = (
            tf.reduce_any(tf.math.is_nan(labels), axis=-1) if labels.dtype.is_floating else None
        )
    else:
        flat = tf.reshape(labels, [-1])
        missing = tf.math.is_nan(flat) if flat.dtype.is_floating else None
        classes = tf.cast(
            tf.round(tf.where(missing, 0.0, flat)) if missing is not None else flat, tf.int64
        )
    return classes if missing is None else tf.where(missing, tf.constant(-1, tf.int64), classes)


def _weights_of(table, labels):
    """Each example's class weight (1 for a class the table does not name)."""
    classes = class_indices(labels)
    size = max(table) + 1
    values = tf.constant([table.get(c, 1.0) for c in range(size)], tf.float32)
    inside = tf.logical_and(classes >= 0, classes < size)
    return tf.where(inside, tf.gather(values, tf.clip_by_value(classes, 0, size - 1)), 1.0)


def _with_class_weights(model, y, sample_weight, class_weight):
    """`sample_weight` as a dict with each task's class weights multiplied in."""
    eager = tf.executing_eagerly()
    out = (
        dict(sample_weight)
        if isinstance(sample_weight, dict)
        else {t: sample_weight for t in model.task_names if y.get(t) is not None}
    )
    for task, table in class_weight.items():
        labels = y.get(task)
        if labels is None or not table:
            continue
        weights = _weights_of({int(k): float(v) for k, v in table.items()}, labels)
        given = out.get(task)
        if given is not None:
            weights = weights * tf.reshape(tf.cast(given, tf.float32), [-1])
        out[task] = weights.numpy() if eager else weights
    return {t: w for t, w in out.items() if w is not None}
