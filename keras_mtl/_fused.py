"""Fused training: the steps of an execution as one XLA program.

With `compile(jit_compile=True, steps_per_execution=N)` on one device, a
call of the train function that `fit()` makes runs its N steps as one
XLA-compiled `tf.while_loop`: the task draws, label masks, forward and
backward passes, optimizer and metric updates of all N steps are one
compiled program, instead of N compiled steps dispatched one by one from a
TensorFlow loop (whose per-step dispatch, not arithmetic, bounds small
models). `evaluate()`'s test function runs its executions the same way
(`_execution.make_test_function`).

Where an execution's batches come from:

* `fit()` on in-memory arrays (`keras_mtl/_array_source.py`): the arrays are
  inputs of the program, which reads its rows from the pass's order and
  gathers each step's batch itself (`_run_rows`): no `tf.data` per batch.
  XLA compiles one program per shape: with epochs of whole passes, at most
  three per fit (the full execution, the epoch's last partial execution and
  a smaller last batch).
* any other input (a `tf.data.Dataset`, a generator): `_pull` (a
  `tf.function`, not XLA: `tf.data` cannot enter XLA) takes up to N batches
  from the iterator `fit()` hands over, exactly the batches the unfused
  path would take, and concatenates each leaf of them (`x`, every label,
  sample weights) with the batch sizes. Consecutive batches of equal size
  form a block `[k, batch, ...]` (normally the whole execution; a last
  smaller batch of an epoch is a block of its own), and `_run_block` (XLA)
  runs the block's steps, each step on `block[i]`, in the order they came.

What it cannot run falls back, with a one-time warning that says why, to
the unfused path (`_execution`'s loop of XLA-compiled steps): a
`tf.distribute` strategy, batches with other than plain tensors (ragged,
sparse, strings), and a step XLA fails to compile as a loop (the batches
of that execution then run unfused, so nothing is skipped).
"""

import warnings

import tensorflow as tf

from keras_mtl import _array_source


def _warn(reason):
    warnings.warn(
        f"steps_per_execution steps run unfused (not as one XLA program per execution): {reason}",
        stacklevel=4,
    )


def wanted(model):
    """Whether `model`'s compile settings ask for fused executions."""
    return bool(model.jit_compile) and model.steps_per_execution > 1 and not model.run_eagerly


def _unfusable_reason(model, element_spec):
    if model._mtl_strategy is not None:
        return (
            "the model trains under a tf.distribute strategy; fused executions run on one device."
        )
    for spec in tf.nest.flatten(element_spec):
        if spec is None or type(spec).__name__ == "NoneTensorSpec":
            continue  # a task without labels (`y={task: None}`): the step sees None
        if not isinstance(spec, tf.TensorSpec):
            return f"a batch holds a {type(spec).__name__}; a fused block holds only tensors."
        if spec.dtype == tf.string:
            return "a batch holds strings, which XLA cannot take."
        if spec.shape.rank == 0:
            return "a batch holds a scalar; a fused block stacks batches of examples."
    return None


def _tensor_leaves(element_spec):
    """Indices of the leaves of a batch that are tensors (not `None`)."""
    return [
        i for i, spec in enumerate(tf.nest.flatten(element_spec)) if isinstance(spec, tf.TensorSpec)
    ]


class FusedTrainFunction:
    """`fit()`'s train function (or `evaluate()`'s test function): runs an
    execution's batches as one XLA program.

    Args:
        model: A compiled `MultiTaskModel` (one device, `jit_compile=True`,
            `steps_per_execution > 1`).
        step: `(data, draws) -> logs`, one training step (the unfused
            path's), traced inside the XLA loop.
        draws_for: `count -> [count, T]` task draws of an execution (the
            unfused path's), or `None` in joint mode.
        logs_after: `None` when each step returns the logs (an overridden
            `train_step`), else a function returning the logs once after
            the steps.
        unfused: The unfused train function, for what cannot be fused.
        arrays: The model attribute holding the `ArraySource` of the running
            `fit()` (`"_mtl_source"`), or of `evaluate()` for a test
            function built the same way (`"_mtl_eval_source"`).
    """

    def __init__(self, model, step, draws_for, logs_after, unfused, arrays="_mtl_source"):
        self.model = model
        self.arrays = arrays
        self.step = step
        self.draws_for = draws_for
        self.logs_after = logs_after
        self.unfused = unfused
        self.failed = None  # why XLA could not compile the fused loop
        self._warned = set()  # reasons already given (once per train function)
        self._pull = tf.function(self._pull_batches, autograph=False)
        self._block = tf.function(self._run_block, jit_compile=True, autograph=False)
        self._rows = tf.function(self._run_rows, jit_compile=True, autograph=False)
        self._traced = set()  # the array programs traced (see _source_program)

    # -- taking the batches -------------------------------------------------
    def _pull_batches(self, iterator):
        """Up to `steps_per_execution` batches: `(count, sizes, leaves)`, each
        tensor leaf the concatenation of the batches' along axis 0."""
        spe = self.model.steps_per_execution
        specs = tf.nest.flatten(iterator.element_spec)
        index = _tensor_leaves(iterator.element_spec)
        arrays = [
            tf.TensorArray(
                specs[i].dtype,
                size=0,
                dynamic_size=True,
                infer_shape=False,
                element_shape=specs[i].shape,
            )
            for i in index
        ]
        sizes = tf.TensorArray(tf.int32, size=0, dynamic_size=True)

        def body(count, optional, arrays, sizes):
            leaves = tf.nest.flatten(optional.get_value())
            arrays = [a.write(count, leaves[i]) for a, i in zip(arrays, index)]
            sizes = sizes.write(count, tf.shape(leaves[index[0]])[0])
            count += 1
            following = tf.cond(count < spe, iterator.get_next_as_optional, lambda: optional)
            return count, following, arrays, sizes

        count, _, arrays, sizes = tf.while_loop(
            lambda count, optional, *_: tf.logical_and(count < spe, optional.has_value()),
            body,
            [tf.constant(0), iterator.get_next_as_optional(), arrays, sizes],
        )
        # TensorArray.concat of zero elements fails; an empty pull returns
        # empty leaves.
        leaves = [
            tf.cond(
                count > 0,
                lambda a=a: a.concat(),
                lambda s=specs[i]: tf.zeros([0] + [d or 0 for d in s.shape[1:]], s.dtype),
            )
            for a, i in zip(arrays, index)
        ]
        return count, sizes.stack(), leaves

    # -- the fused program --------------------------------------------------
    def _run_block(self, block):
        """XLA: the steps of `block` (a batch structure with leaves
        `[k, batch, ...]`), one per index, in order; returns the logs."""
        count = next(v for v in tf.nest.flatten(block) if v is not None).shape[0]
        return self._run_steps(count, lambda i: _step_of(block, i))

    def _run_rows(self, data, order, begin, count, size):
        """XLA: `count` steps on a fit()'s arrays `data`, step `i` on the
        `size` rows `order[begin + i * size:][:size]`; returns the logs.
        `count` and `size` are Python ints (XLA needs static shapes)."""

        def batch(i):
            start = begin + tf.cast(i, tf.int64) * size
            return _array_source.gather(data, tf.slice(order, [start], [size]))

        return self._run_steps(count, batch)

    def _run_steps(self, count, batch):
        """The `count` steps of an execution, step `i` on `batch(i)`."""
        draws = self.draws_for(count)

        def one(i):
            return self.step(batch(i), None if draws is None else draws[i])

        if self.logs_after is not None:

            def body(i):
                one(i)
                return (i + 1,)

            tf.while_loop(lambda i: i < count, body, [tf.constant(0)], maximum_iterations=count)
            return self.logs_after()
        # An overridden train_step: the logs of the last step. The first
        # step runs outside the loop to give the logs their structure.
        logs = one(0)

        def body_logs(i, logs):
            return i + 1, one(i)

        _, logs = tf.while_loop(
            lambda i, logs: i < count,
            body_logs,
            [tf.constant(1), logs],
            maximum_iterations=count - 1,
        )
        return logs

    def _warn_once(self, reason):
        if reason not in self._warned:
            self._warned.add(reason)
            _warn(reason)

    # -- fit()'s entry point ------------------------------------------------
    def __call__(self, iterator):
        model = self.model
        if not isinstance(iterator, (tf.data.Iterator, tf.distribute.DistributedIterator)):
            return self.unfused(iterator)
        source = getattr(model, self.arrays, None)
        if source is not None:
            return self._run_source(source, iterator)
        model._prepare_training(iterator.element_spec)
        reason = self.failed or _unfusable_reason(model, iterator.element_spec)
        if reason:
            self._warn_once(reason)
            return self.unfused(iterator)
        count, sizes, leaves = self._pull(iterator)
        count = int(count)
        if count == 0:
            raise StopIteration
        return self._run_blocks(iterator.element_spec, sizes.numpy(), leaves)

    def _run_source(self, source, iterator):
        """An execution on a fit()'s arrays: the rows of its batches are
        gathered inside the XLA program (no `tf.data` per batch)."""
        model = self.model
        model._prepare_training(source.element_spec)
        reason = self.failed or _unfusable_reason(model, source.element_spec)
        if reason:
            self._warn_once(reason)
            return self.unfused(iterator)
        first, count = source.take(model, iterator, model.steps_per_execution)
        size = source.batch_size
        begin = first * size
        full = min(count, (source.num_samples - begin) // size)
        logs = None
        # One XLA program per execution, plus one for an epoch's smaller
        # last batch; the rows are read from the pass's order inside it.
        for start, steps, rows in (
            (begin, full, size),
            # The pass's last batch, when this execution reaches it and it is smaller.
            (begin + full * size, count - full, source.num_samples - begin - full * size),
        ):
            if steps:
                logs = self._run_one(
                    lambda start=start, steps=steps, rows=rows: self._source_program(
                        source, steps, rows
                    )(source.data, source.order, tf.constant(start, tf.int64), steps, rows),
                    lambda start=start, steps=steps, rows=rows: [
                        _array_source.gather(
                            source.data, source.order[start + i * rows : start + (i + 1) * rows]
                        )
                        for i in range(steps)
                    ],
                )
        return logs

    def _source_program(self, source, count, size):
        # XLA still compiles per shape; `count` and `size` are static.
        return _array_source.traced_once(
            self._rows,
            self._traced,
            (count, size, source.structure_key),
            lambda: (
                source.element_spec,
                tf.TensorSpec([None], tf.int64),
                tf.TensorSpec([], tf.int64),
                count,
                size,
            ),
        )

    def _run_blocks(self, element_spec, sizes, leaves):
        specs = tf.nest.flatten(element_spec)
        index = _tensor_leaves(element_spec)
        logs, start, row = None, 0, 0
        while start < len(sizes):
            size = int(sizes[start])
            end = start
            while end < len(sizes) and sizes[end] == size:
                end += 1
            rows = (end - start) * size
            flat = [None] * len(specs)
            for leaf, i in zip(leaves, index):
                part = leaf[row : row + rows]
                flat[i] = tf.reshape(part, [end - start, size] + part.shape[1:].as_list())
            block = tf.nest.pack_sequence_as(element_spec, flat)
            logs = self._run_one_block(block)
            start, row = end, row + rows
        return logs

    def _run_one_block(self, block):
        count = next(v for v in tf.nest.flatten(block) if v is not None).shape[0]
        return self._run_one(
            lambda: self._block(block),
            lambda: [_step_of(block, i) for i in range(count)],
        )

    def _run_one(self, fused, batches):
        """Runs `fused()` (an XLA program); if XLA cannot compile it, warns
        once and runs `batches()` (the same batches) through the unfused step."""
        if self.failed is None:
            try:
                return fused()
            except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
                if not _is_compile_error(error):
                    raise
                first = str(error).strip().splitlines()[0]
                self.failed = f"XLA could not compile the steps as one loop ({first})."
                self._warn_once(self.failed)
        return self.unfused(batches())


def _step_of(block, i):
    """Step `i`'s batch of `block` (leaves `[k, batch, ...]`, or `None`)."""
    return tf.nest.map_structure(lambda v: None if v is None else v[i], block)


def _is_compile_error(error):
    text = str(error)
    return any(
        marker in text
        for marker in ("XLA", "xla", "Detected unsupported operations", "compil", "JIT")
    )
