"""Feeding data to a MultiTaskModel: target checks, absent labels, per-task datasets."""

import numpy as np
import tensorflow as tf

_ARRAY_TYPES = (np.ndarray, tf.Tensor)


def _example(task_names):
    return "{" + ", ".join(f"{t!r}: y_{t}" for t in task_names) + "}"


def _check_target_keys(model, keys, what):
    unknown = [k for k in keys if k not in model.task_names]
    if unknown:
        raise ValueError(
            f"{what} name unknown task(s) {unknown}; the model's tasks are "
            f"{list(model.task_names)}."
        )
    missing = [s.name for s in model._trained_specs if s.name not in keys]
    if missing:
        raise ValueError(
            f"{what} have no labels for task(s) {missing}. Give them, or pass "
            f"None for a task whose labels are all absent "
            f"(e.g. {{..., {missing[0]!r}: None}})."
        )


def _not_a_dict_error(model, y, method):
    return ValueError(
        f"MultiTaskModel.{method}() needs the targets `y` as a dict keyed by "
        f"task name, e.g. {method}(x, {_example(model.task_names)}), so each "
        f"label array goes to the right head. Received y of type "
        f"{type(y).__name__}."
    )


def _absent_labels(model, task, n):
    spec = model._spec(task)
    if spec.sparse_labels:
        return np.zeros((n,), np.int32)
    units = getattr(spec.head, "units", 1)
    return np.zeros((n, units), np.float32)


def _check_dataset(model, dataset, method):
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise ValueError(
            f"A dataset given to MultiTaskModel.{method}() must yield "
            f"(x, y) or (x, y, sample_weight) with y a dict keyed by task, "
            f"e.g. (x, {_example(model.task_names)}). Its element_spec is {spec}."
        )
    if not isinstance(spec[1], dict):
        raise _not_a_dict_error(model, spec[1], method)
    _check_target_keys(model, spec[1], "The dataset's targets")
    if len(spec) == 3 and isinstance(spec[2], dict):
        unknown = [k for k in spec[2] if k not in model.task_names]
        if unknown:
            raise ValueError(
                f"The dataset's sample weights name unknown task(s) {unknown}; "
                f"the model's tasks are {list(model.task_names)}."
            )
    if dataset.cardinality() == 0:
        raise ValueError(f"The dataset given to {method}() is empty: it yields no batch.")
    return spec[0]


def standardize_arrays(model, x, y, sample_weight, method):
    """Checks `fit`/`evaluate` inputs and marks `None` task labels absent.

    For arrays: `y` must be a dict with an entry for every trained task; a
    task mapped to `None` gets placeholder labels with sample weight 0 (so
    its loss and metrics ignore them). Every label array must have as many
    rows as `x`. For a `tf.data.Dataset`, the element structure is checked.
    The model is built from the input shape if it is not built yet.

    Args:
        model: the `MultiTaskModel`.
        x, y, sample_weight: as given to `fit`/`evaluate`.
        method: `"fit"`, `"evaluate"` or `"validation_data"`, for messages.

    Returns:
        `(x, y, sample_weight)` ready for Keras.
    """
    if isinstance(x, tf.data.Dataset):
        if y is not None:
            raise ValueError(
                f"When x is a tf.data.Dataset, {method}() takes no separate y: "
                "the dataset must yield (x, y) with y a dict keyed by task."
            )
        x_spec = _check_dataset(model, x, method)
        if not model.built and x_spec.shape.rank == 2:
            model._build_for(x_spec.shape)
        return x, y, sample_weight
    if not isinstance(x, _ARRAY_TYPES):
        return x, y, sample_weight  # generators / PyDataset: checked when traced
    if y is None:
        raise ValueError(
            f"MultiTaskModel.{method}() needs targets: pass y as a dict "
            f"keyed by task name, e.g. {_example(model.task_names)}."
        )
    if not isinstance(y, dict):
        raise _not_a_dict_error(model, y, method)
    _check_target_keys(model, y, "Targets `y`")
    n = int(x.shape[0])
    if n == 0:
        raise ValueError(f"`x` given to {method}() has no examples.")
    y = dict(y)
    absent = [t for t, v in y.items() if v is None]
    for task, labels in y.items():
        if labels is not None and int(np.shape(labels)[0]) != n:
            raise ValueError(
                f"Labels for task {task!r} have {int(np.shape(labels)[0])} "
                f"rows but x has {n}: every task's labels need one row per "
                "example (use NaN or sample weight 0 for missing labels)."
            )
    if isinstance(sample_weight, dict):
        unknown = [k for k in sample_weight if k not in model.task_names]
        if unknown:
            raise ValueError(
                f"`sample_weight` names unknown task(s) {unknown}; the model's "
                f"tasks are {list(model.task_names)}."
            )
    if absent or isinstance(sample_weight, dict):
        given = sample_weight
        sample_weight = {}
        for task in y:
            if task in absent:
                y[task] = _absent_labels(model, task, n)
                sample_weight[task] = np.zeros((n,), np.float32)
            elif isinstance(given, dict):
                w = given.get(task)
                sample_weight[task] = np.ones((n,), np.float32) if w is None else w
            else:
                sample_weight[task] = np.ones((n,), np.float32) if given is None else given
    if not model.built:
        model._build_for(x.shape)
    return x, y, sample_weight
