"""How `fit()` runs `train_step` (and `evaluate()` runs `test_step`).

Keras's `fit()` calls `model.train_function(iterator)` once per execution and
expects the logs of the execution's last step back; `StopIteration` (or
`OutOfRangeError`) ends the epoch. Keras's own train function calls
`train_step` inside `strategy.run`, where an alternating step cannot branch
around its optimizer update (see `keras_mtl/training.py`). This module builds
the same contract around `model.train_step` called in cross-replica context:

* each step calls `model.train_step(data)` (looked up on the model, so a
  subclass's override runs), and the execution returns what the last step
  returned; when `train_step` is not overridden, the steps run the update
  alone and the logs are read once after them (the same values, without
  reading every metric at every step);
* `evaluate()` gets the same treatment around `test_step`, which runs in each
  replica as in Keras; unlike Keras's test function, it traces every
  structure of batches exactly (no `reduce_retracing`), so label shapes that
  change between calls are checked;
* `steps_per_execution` steps run in one `tf.function`, in a `tf.while_loop`
  that stops early at the end of the data;
* on one device each step is its own `tf.function` (with XLA when
  `jit_compile=True`); under a strategy it is traced inline (a nested
  `tf.function` calling `strategy.run` inside the loop's `tf.cond` fails to
  run under MirroredStrategy, keras-team/keras#19246);
* the alternating task draws of a whole execution are computed at once (one
  vectorized hash instead of one per step) and handed to the steps through
  `training.precomputed_draws`;
* when `fit()` got in-memory arrays on one device, the model holds them
  (`keras_mtl/_array_source.py`) and the train function gathers each
  step's rows itself; Keras's iterator then only marks a new pass;
* with `jit_compile=True` and `steps_per_execution > 1` on one device, the
  steps of an execution run as one XLA program instead (`keras_mtl/_fused.py`),
  falling back to this loop for what that cannot run.
"""

import itertools

import tensorflow as tf

from keras_mtl import _array_source, _fused, _random, training

_TF_ITERATORS = (tf.data.Iterator, tf.distribute.DistributedIterator)


def _as_tensors(logs):
    return tf.nest.map_structure(tf.convert_to_tensor, logs)


def _spec_of(value):
    """A `TensorSpec` with an unknown batch size for one leaf of a batch."""
    if value is None:
        return None
    if isinstance(value, tf.TypeSpec):
        return value
    tensor = tf.convert_to_tensor(value)
    shape = tensor.shape
    if shape.rank:
        shape = tf.TensorShape([None]).concatenate(shape[1:])
    return tf.TensorSpec(shape, tensor.dtype)


def make_train_function(model, custom_step=True):
    """Builds `model.train_function(iterator) -> logs` for `fit()`.

    Args:
        model: A compiled `MultiTaskModel`.
        custom_step: Whether `model.train_step` is overridden. If not, the
            steps of an execution run the update alone and the logs are read
            once after them (what the default `train_step` would return at
            the last step), which saves reading every metric at every step.

    Returns:
        A function taking a `tf.data`/distributed iterator (or a Python
        iterable of batches, as `train_on_batch` passes) and returning the
        logs of the last step it ran; it raises `StopIteration` when the
        iterator has no batch left.
    """
    alternating = model.mode == "alternating"
    task_count = len(model._mtl.trained)

    def step(data, draws=None):
        with training.precomputed_draws(draws):
            if custom_step:
                return _as_tensors(model.train_step(data))
            training.update(model, data)
            return tf.constant(0)

    def draws_for(count):
        if not alternating:
            return None
        steps = model.step_counter + tf.range(count, dtype=tf.int64)
        return _random.uniform(model._mtl.seed, steps, task_count)

    draws_spec = tf.TensorSpec([task_count], tf.float32) if alternating else None
    logs_after = None if custom_step else model._training_logs
    unfused = _make_function(
        model,
        step,
        draws_for,
        draws_spec,
        jit_compile=bool(model.jit_compile),
        logs_after=logs_after,
        arrays="_mtl_source",
    )
    if _fused.wanted(model):
        return _fused.FusedTrainFunction(
            model, step, draws_for, logs_after, unfused, arrays="_mtl_source"
        )
    return unfused


def make_test_function(model, custom_step=True):
    """Builds `model.test_function(iterator) -> logs` for `evaluate()`.

    Keras's own calls `test_step` in each replica and traces it with
    `reduce_retracing`, whose relaxed traces hide label shapes and ranks
    that change between calls; this one keeps Keras's replica-context
    `test_step` and traces each structure of batches exactly.

    Args:
        model: A compiled `MultiTaskModel`.
        custom_step: Whether `model.test_step` is overridden (see
            `make_train_function`).

    Returns:
        A function with the contract of `make_train_function`'s. With
        `jit_compile=True` and `steps_per_execution > 1` on one device, an
        execution's steps run as one XLA program (`keras_mtl/_fused.py`);
        otherwise the steps are not compiled with XLA.
    """
    strategy = model.distribute_strategy

    def replica_step(data):
        if custom_step:
            return _as_tensors(model.test_step(data))
        training.evaluation_step(model, data)
        return tf.constant(0)

    def step(data, draws=None):
        if model._mtl_strategy is None:
            return replica_step(data)
        outputs = strategy.run(replica_step, args=(data,))
        if not custom_step:
            return tf.constant(0)
        # Metric results are synchronized: every replica holds the same value.
        return tf.nest.map_structure(
            lambda v: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None), outputs
        )

    logs_after = None if custom_step else model.get_metrics_result
    unfused = _make_function(
        model,
        step,
        lambda count: None,
        None,
        jit_compile=False,
        logs_after=logs_after,
        arrays="_mtl_eval_source",
    )
    if _fused.wanted(model) and model._mtl_strategy is None:
        # An execution's evaluation steps as one XLA program, as in fit().
        return _fused.FusedTrainFunction(
            model, step, lambda count: None, logs_after, unfused, arrays="_mtl_eval_source"
        )
    return unfused


def _make_function(model, step, draws_for, draws_spec, jit_compile, logs_after=None, arrays=None):
    """Runs `steps_per_execution` calls of `step(data, draws)` per call.

    Args:
        model: The `MultiTaskModel`.
        step: `(data, draws) -> logs`, in cross-replica context.
        draws_for: `count -> [count, T]` draws for an execution, or `None`.
        draws_spec: The `TensorSpec` of one step's draws, or `None`.
        jit_compile: Whether to compile each step with XLA (one device).
        logs_after: Optional function returning the logs, called once after
            the steps instead of returning the last step's.
        arrays: The model attribute holding the `ArraySource` of the
            running `fit()` (`"_mtl_source"`) or `evaluate()`
            (`"_mtl_eval_source"`), whose steps then gather their rows
            themselves (`keras_mtl/_array_source.py`).

    Returns:
        The function Keras's fit()/evaluate() call with an iterator.
    """
    spe = model.steps_per_execution
    one_device = model._mtl_strategy is None
    step = tf.autograph.experimental.do_not_convert(step)
    compiled_step = step
    if not model.run_eagerly and one_device:
        # No `reduce_retracing`: a relaxed trace would hide label shapes (and
        # ranks) that differ from one call to the next. Batches of arrays
        # are traced with an unknown batch size instead (see below).
        compiled_step = tf.function(step, jit_compile=jit_compile)

    def output_spec(element_spec):
        """The structure of the step's logs, from a trace of the step."""
        traced = compiled_step if compiled_step is not step else tf.function(step)
        outputs = traced.get_concrete_function(element_spec, draws_spec).structured_outputs
        return tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), outputs)

    def finish(done, logs):
        return done, logs if logs_after is None else logs_after()

    @tf.autograph.experimental.do_not_convert
    def run_steps(iterator):
        if spe == 1:
            return finish(tf.constant(1), compiled_step(iterator.get_next()))
        draws = draws_for(spe)

        def run(optional, done):
            return compiled_step(optional.get_value(), None if draws is None else draws[done])

        if model.run_eagerly:
            done, logs = 0, None
            for _ in range(spe):
                optional = iterator.get_next_as_optional()
                if not optional.has_value():
                    break
                logs = run(optional, done)
                done += 1
            return finish(tf.constant(done), logs)

        spec = output_spec(iterator.element_spec)
        empty = tf.nest.map_structure(lambda s: tf.zeros([d or 0 for d in s.shape], s.dtype), spec)

        def body(done, optional, logs):
            logs = tf.cond(optional.has_value(), lambda: run(optional, done), lambda: logs)
            done = done + tf.cast(optional.has_value(), tf.int32)
            following = tf.cond(done < spe, iterator.get_next_as_optional, lambda: optional)
            return done, following, logs

        done, _, logs = tf.while_loop(
            lambda done, optional, logs: tf.logical_and(optional.has_value(), done < spe),
            body,
            [tf.constant(0), iterator.get_next_as_optional(), empty],
            shape_invariants=[
                tf.TensorShape([]),
                None,
                tf.nest.map_structure(lambda s: s.shape, spec),
            ],
        )
        return finish(done, logs)

    @tf.autograph.experimental.do_not_convert
    def run_source_steps(data, order, first, count, batch_size):
        # Batches of arrays a `fit()` call holds (`keras_mtl/_array_source.py`):
        # the rows of batch `first + i` of the pass, gathered here.
        def batch(i):
            return _array_source.gather(
                data, _array_source.batch_rows(order, first + tf.cast(i, tf.int64), batch_size)
            )

        if spe == 1:
            return finish(tf.constant(1), compiled_step(batch(0)))
        draws = draws_for(spe)

        def run(i):
            return compiled_step(batch(i), None if draws is None else draws[i])

        if model.run_eagerly:
            logs = None
            for i in range(int(count)):
                logs = run(i)
            return finish(count, logs)
        spec = output_spec(tf.nest.map_structure(_spec_of, data))
        empty = tf.nest.map_structure(lambda s: tf.zeros([d or 0 for d in s.shape], s.dtype), spec)
        _, logs = tf.while_loop(
            lambda i, logs: i < count,
            lambda i, logs: (i + 1, run(i)),
            [tf.constant(0), empty],
            shape_invariants=[tf.TensorShape([]), tf.nest.map_structure(lambda s: s.shape, spec)],
        )
        return finish(count, logs)

    if not model.run_eagerly:
        run_steps = tf.function(run_steps)
        run_source_steps = tf.function(run_source_steps)
    traced = set()  # structures of arrays run_source_steps was traced for

    def function(iterator):
        source = getattr(model, arrays, None)
        if source is not None and isinstance(iterator, _TF_ITERATORS):
            model._prepare_training(source.element_spec)
            first, count = source.take(model, iterator, spe)
            args = (
                source.data,
                source.order,
                tf.constant(first, tf.int64),
                tf.constant(count, tf.int32),
                tf.constant(source.batch_size, tf.int64),
            )
            if model.run_eagerly:
                return run_source_steps(*args)[1]
            run = _array_source.traced_once(
                run_source_steps,
                traced,
                source.structure_key,
                lambda: tf.nest.map_structure(_spec_of, args),
            )
            return run(*args)[1]
        if isinstance(iterator, _TF_ITERATORS):
            model._prepare_training(iterator.element_spec)
            done, logs = run_steps(iterator)
            if spe > 1 and int(done) == 0:
                raise StopIteration
            return logs
        # A Python iterable of batches (e.g. from train_on_batch): trace the
        # step once per batch structure, with an unknown batch size, so a
        # last smaller batch does not trace it again.
        logs = None
        for data in itertools.islice(iterator, spe):
            model._prepare_training(data)
            if compiled_step is not step:
                compiled_step.get_concrete_function(tf.nest.map_structure(_spec_of, data), None)
            logs = compiled_step(data)
        if logs is None:
            raise StopIteration
        return logs if logs_after is None else logs_after()

    return function
