"""Feeding data to a MultiTaskModel: target checks and per-task datasets."""

import tensorflow as tf

from keras_mtl import _checks, _random
from keras_mtl import samplers as samplers_module

# Tasks are drawn for this many batches at a time: one vectorized draw is far
# cheaper per batch than a tf.data map call per batch.
_CHOICE_BLOCK = 1024


def _example(task_names):
    return "{" + ", ".join(f"{t!r}: y_{t}" for t in task_names) + "}"


def check_targets(model, y, sample_weight, method="fit"):
    """Checks that targets are a dict with labels for every trained task.

    Used on arrays and dataset specs before training, and again on the
    tensors of a batch while the step is traced.

    Args:
        model: the `MultiTaskModel`.
        y: the targets (dict `{task: labels}` expected; values may be
            arrays, tensors, specs or `None` for absent labels).
        sample_weight: `None`, one array for every task, or a dict.
        method: the method being called (`"fit"`, `"evaluate"`...), for
            messages.

    Returns:
        None; raises `ValueError` naming the tasks at fault.

    Example:

    >>> import keras_mtl
    >>> model = keras_mtl.MultiTaskModel([4], {"a": 1, "b": 1})
    >>> model.compile(loss="mse")
    >>> keras_mtl.data.check_targets(model, {"a": [0.0], "b": None}, None)
    >>> keras_mtl.data.check_targets(model, {"a": [0.0]}, None)
    Traceback (most recent call last):
    ...
    ValueError: Targets `y` have no labels for task(s) ['b']. Give them, or pass None for a task whose labels are all absent (e.g. y={..., 'b': None}).
    """
    if not isinstance(y, dict):
        raise ValueError(
            f"MultiTaskModel.{method}() needs the targets `y` as a dict keyed by "
            f"task name, e.g. {method}(x, {_example(model.task_names)}), so each "
            f"label array goes to the right head. Received y of type "
            f"{type(y).__name__}."
        )
    _checks.check_task_keys("y", y, model.task_names)
    missing = [s.name for s in model._mtl.trained if s.name not in y]
    if missing:
        raise ValueError(
            f"Targets `y` have no labels for task(s) {missing}. Give them, or pass "
            f"None for a task whose labels are all absent "
            f"(e.g. y={{..., {missing[0]!r}: None}})."
        )
    if isinstance(sample_weight, dict):
        _checks.check_task_keys("sample_weight", sample_weight, model.task_names)


def _element_parts(task, spec):
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise ValueError(
            f"The dataset for task {task!r} must yield batches (x, y) or "
            f"(x, y, sample_weight) for that one task. Its element_spec is {spec}."
        )
    x, y = spec[0], spec[1]
    x_leaves = tf.nest.flatten(x)
    if (
        not x_leaves
        or not all(isinstance(s, tf.TensorSpec) for s in x_leaves)
        or not isinstance(y, tf.TensorSpec)
    ):
        raise ValueError(
            f"The dataset for task {task!r} must yield inputs (one tensor or a "
            f"dict of named tensors) and one label tensor per batch. Its "
            f"element_spec is {spec}."
        )
    if y.shape.rank is None or not y.shape[1:].is_fully_defined():
        raise ValueError(
            f"The labels of task {task!r} need a known shape apart from the "
            f"batch dimension; their spec is {y}."
        )
    if any(s.shape.rank is None or s.shape.rank < 1 for s in x_leaves):
        raise ValueError(
            f"The dataset for task {task!r} must be batched (x of shape "
            f"(batch, ...)); its x spec is {x}. Call .batch(n) on it."
        )
    return x, y


def _same_inputs(first, x_first, task, x_other):
    """Raises unless two tasks' input specs share structure, dtypes and shapes."""
    try:
        tf.nest.assert_same_structure(x_first, x_other)
    except (ValueError, TypeError):
        raise ValueError(
            f"The inputs of task {task!r} ({x_other}) do not have the structure of "
            f"those of task {first!r} ({x_first}): all tasks must share one input "
            "space (the same named inputs)."
        ) from None
    for a, b in zip(tf.nest.flatten(x_first), tf.nest.flatten(x_other)):
        if b.dtype != a.dtype or not b.shape[1:].is_compatible_with(a.shape[1:]):
            raise ValueError(
                f"The inputs of task {task!r} have shape {b.shape[1:]} and "
                f"dtype {b.dtype.name}, but those of task {first!r} have "
                f"{a.shape[1:]} and {a.dtype.name}: all tasks must "
                "share one input space."
            )


def _check_not_empty(task, dataset):
    cardinality = int(dataset.cardinality())
    if cardinality == 0 or (
        cardinality == tf.data.UNKNOWN_CARDINALITY and not any(True for _ in dataset.take(1))
    ):
        raise ValueError(f"The dataset for task {task!r} is empty: it yields no batch.")
    return cardinality


def interleave(datasets, sampler="uniform", seed=None):
    """Interleaves one batched dataset per task into one dataset for `fit()`.

    Each batch of the result comes from ONE task's dataset, chosen by
    `sampler`, and carries labels for every task: the chosen task's labels
    with their sample weights, and placeholder labels with sample weight 0
    (missing labels) for the others. In `mode="alternating"` a step trains
    exactly the batch's task; in `mode="joint"` the other tasks contribute
    zero loss and zero gradient.

    What an epoch is: the result is infinite. Every task's dataset is
    repeated as needed, so the sampler's proportions hold however small a
    dataset is, and a dataset continues where it stopped from one epoch to
    the next. Give `fit(..., steps_per_epoch=n)` (and `validation_steps`,
    `evaluate(..., steps=n)`); a natural choice is the total number of
    batches of all datasets, `sum(len(d) for d in datasets.values())`, which
    with `sampler="proportional"` visits each dataset about once per epoch.

    The task of batch `i` is `sampler.sample(i, seed)`: a pure function of
    `(seed, i)`, so the sequence is reproducible.

    Args:
        datasets: Dict `{task: tf.data.Dataset}`; each dataset is batched and
            yields `(x, y)` or `(x, y, sample_weight)` for that task. All
            share the structure, shapes and dtypes of `x` (one tensor, or
            a dict of named inputs); label shapes may differ.
        sampler: How to pick each batch's task: `"uniform"` (default),
            `"round_robin"`, `"proportional"` (to each dataset's number of
            batches, which must be known), a dict of fixed probabilities, or a
            `keras_mtl.samplers.Sampler`.
        seed: Optional int in [0, 2**31 - 1); `None` draws one.

    Returns:
        An infinite `tf.data.Dataset` of `(x, {task: y}, {task: weight})`,
        prefetched.

    Example:

    >>> import numpy as np, tensorflow as tf, keras_mtl
    >>> fr = tf.data.Dataset.from_tensor_slices(
    ...     (np.ones((40, 4), "float32"), np.ones((40, 2), "float32"))).batch(8)
    >>> de = tf.data.Dataset.from_tensor_slices(
    ...     (np.ones((8, 4), "float32"), np.zeros((8,), "int32"))).batch(8)
    >>> ds = keras_mtl.data.interleave({"fr": fr, "de": de}, sampler="round_robin", seed=0)
    >>> x, y, w = next(iter(ds))
    >>> sorted(y), w["fr"].numpy().tolist(), w["de"].numpy().tolist()
    (['de', 'fr'], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    """
    if not isinstance(datasets, dict) or not datasets:
        raise ValueError(
            "`datasets` must be a non-empty dict {task: tf.data.Dataset}, one "
            f"batched dataset per task. Received: {datasets!r}."
        )
    tasks = [_checks.check_task_name(t) for t in datasets]
    specs = {}
    sizes = {}
    for task, dataset in datasets.items():
        if not isinstance(dataset, tf.data.Dataset):
            raise ValueError(
                f"The dataset for task {task!r} must be a tf.data.Dataset. "
                f"Received: {type(dataset).__name__}."
            )
        specs[task] = _element_parts(task, dataset.element_spec)
        sizes[task] = _check_not_empty(task, dataset)
    first = tasks[0]
    x_spec = specs[first][0]
    for task in tasks[1:]:
        _same_inputs(first, x_spec, task, specs[task][0])

    if isinstance(sampler, str) and sampler == "proportional":
        unknown = [t for t, n in sizes.items() if n < 0]
        if unknown:
            raise ValueError(
                f"sampler='proportional' needs each dataset's number of batches, "
                f"but it is unknown for {unknown}. Pass "
                "keras_mtl.samplers.Proportional({task: size, ...}) instead."
            )
        sampler = samplers_module.Proportional(sizes)
    bound = samplers_module.get(sampler).bind(tasks)
    seed = _checks.resolve_seed(seed)

    def to_full_batch(task):
        def fn(*element):
            x, y = element[0], element[1]
            batch = tf.shape(tf.nest.flatten(x)[0])[0]
            weight = (
                tf.reshape(tf.cast(element[2], tf.float32), [batch])
                if len(element) == 3
                else tf.ones([batch], tf.float32)
            )
            labels, weights = {}, {}
            for other in tasks:
                if other == task:
                    labels[other], weights[other] = y, weight
                else:
                    y_spec = specs[other][1]
                    shape = tf.concat(
                        [[batch], tf.constant(y_spec.shape[1:].as_list(), tf.int32)], 0
                    )
                    labels[other] = tf.ensure_shape(
                        tf.zeros(shape, y_spec.dtype), [None] + y_spec.shape[1:].as_list()
                    )
                    weights[other] = tf.zeros([batch], tf.float32)
            return x, labels, weights

        return fn

    streams = [
        datasets[t].repeat().map(tf.autograph.experimental.do_not_convert(to_full_batch(t)))
        for t in tasks
    ]
    choices = (
        tf.data.Dataset.counter()
        .batch(_CHOICE_BLOCK)
        .map(tf.autograph.experimental.do_not_convert(lambda steps: _choose(bound, seed, steps)))
        .unbatch()
    )
    mixed = tf.data.Dataset.choose_from_datasets(streams, choices)
    return mixed.prefetch(tf.data.AUTOTUNE)


def _choose(sampler, seed, steps):
    """The tasks of a block of steps: `sampler.sample(step, seed)` for each."""
    uniforms = _random.uniform(seed, steps, sampler.num_tasks)
    return tf.vectorized_map(
        lambda args: tf.cast(sampler.sample(args[0], seed, uniforms=args[1]), tf.int64),
        (steps, uniforms),
    )
