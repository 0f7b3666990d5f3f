"""In-memory arrays held as tensors, each step's rows gathered in the graph.

For `fit()` on in-memory arrays (NumPy arrays, tensors, DataFrames and dicts
of them, after `keras_mtl/_standardize.py`) on one device, `MultiTaskModel`
does not hand the arrays to Keras's data adapter. It keeps them as tensors
(on the accelerator when there is one and they are small enough) and owns
their order:

* each pass over the data (an epoch, unless `steps_per_epoch` splits it) is
  a permutation of the rows drawn from `(seed, step_counter at the pass's
  start)` with a stateless shuffle, so a shuffled run is reproducible from
  the compile seed and a run resumed from a checkpoint (which restores
  `step_counter`) continues with the same orders; `shuffle=False` keeps the
  rows in order;
* batch `b` of a pass is rows `order[b * batch_size : (b + 1) * batch_size]`
  (the last one smaller), as Keras's array adapter slices them;
* Keras's `fit()` still runs the epochs, callbacks and validation: it is
  given `tf.data.Dataset.range(number of batches)` in place of the data, so
  it counts the same batches, and its iterator only marks where a pass
  begins (a new iterator is a new pass; its elements are not read); the
  steps take their rows from here (`take`), which is what lets a fused execution
  (`keras_mtl/_fused.py`) gather all of its batches inside one XLA program
  instead of pulling them one by one from `tf.data`.

The unfused and fused paths gather the same rows, so they train on the same
batches in the same order. `evaluate()` holds its arrays the same way (in
order, one pass per call). Under a `tf.distribute` strategy, with
`shuffle="batch"`, or for inputs other than dense arrays (ragged, sparse),
Keras's adapter is used as before.
"""

import contextlib
import math

import keras
import numpy as np
import tensorflow as tf

# Arrays above this size stay in host memory when there is an accelerator
# (then Keras's adapter streams them): a copy on the device must leave room
# for the model.
DEVICE_BYTES_LIMIT = 2 * 1024**3

# Keeps the shuffle's seed stream apart from the task sampler's.
_SHUFFLE_SALT = 0x5EED5EED


class ArraySource:
    """The arrays of one `fit()` or `evaluate()` call and the order of each pass.

    Args:
        data: The batch structure `(x, y)` or `(x, y, sample_weight)` as
            Keras's array adapter yields it, each leaf a dense tensor of all
            `n` rows (or `None`).
        batch_size: int, rows per batch.
        shuffle: bool, whether each pass draws a new permutation.
        seed: int, the compile seed.
    """

    def __init__(self, data, batch_size, shuffle, seed):
        self.data = data
        leaves = [v for v in tf.nest.flatten(data) if v is not None]
        self.num_samples = int(leaves[0].shape[0])
        self.batch_size = int(batch_size)
        self.num_batches = math.ceil(self.num_samples / self.batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.element_spec = tf.nest.map_structure(
            lambda v: None if v is None else tf.TensorSpec([None] + v.shape[1:], v.dtype), data
        )
        self.structure_key = repr(self.element_spec)  # equal for arrays traced alike
        self.order = None  # the row order of the current pass (int64 tensor)
        self._iterator = None  # Keras's iterator of the current pass
        self._taken = 0  # batches of the current pass already taken
        self._last_key = None  # step_counter that keyed the last pass's order

    def take(self, model, iterator, steps):
        """Claims the next (up to) `steps` batches of the pass `iterator` marks.

        Args:
            model: The `MultiTaskModel` (its `step_counter` keys a new pass).
            iterator: The iterator Keras's `fit()` passes to the train
                function; a different one than last time starts a new pass.
            steps: How many batches the execution wants.

        Returns:
            `(first, count)`: the index in the pass of the first batch and
            how many batches there are (`count <= steps`).

        Raises:
            StopIteration: When the pass has no batch left (as an exhausted
                iterator would).
        """
        if iterator is not self._iterator:
            self._iterator = iterator
            self._taken = 0
            self.order = self._permutation(model)
        count = min(steps, self.num_batches - self._taken)
        if count <= 0:
            raise StopIteration
        first = self._taken
        self._taken += count
        return first, count

    def _permutation(self, model):
        rows = tf.range(self.num_samples, dtype=tf.int64)
        if not self.shuffle:
            return _on_device(rows)
        start = int(model.step_counter.numpy())
        # A train_step that does not advance step_counter would give every
        # pass of this fit() the same key (not reset by a restored
        # step_counter: a resumed fit() is a new source).
        if self._last_key is not None and start <= self._last_key:
            start = self._last_key + 1
        self._last_key = start
        seed = tf.constant([self.seed ^ _SHUFFLE_SALT, start], tf.int64)
        # Drawn on the CPU, so that a machine with an accelerator draws the same orders.
        with tf.device("CPU:0"):
            order = tf.random.experimental.stateless_shuffle(rows, seed=seed)
        return _on_device(order)


def traced_once(function, traced, key, specs):
    """`function` (a `tf.function`), traced once per `key` with `specs()`.

    Steps take a call's arrays whole, with their row count in the shapes;
    tracing once with an unknown row count lets later calls on other arrays
    (a new `fit()`, validation data) reuse the trace instead of tracing
    again. `get_concrete_function` costs some 300 us even when the trace
    exists, so the keys already traced are kept in the set `traced`.

    Args:
        function: The `tf.function` the steps run.
        traced: A set of the keys already traced (updated).
        key: Hashable: what makes a trace different besides row counts
            (an `ArraySource.structure_key`, plus Python arguments).
        specs: A function returning the arguments to trace with
            (`TensorSpec`s, Python values); called only to trace.

    Returns:
        `function`.
    """
    if key not in traced:
        traced.add(key)
        function.get_concrete_function(*specs())
    return function


@contextlib.contextmanager
def held(model, attribute, source):
    """Makes `source` the model's `attribute` (`"_mtl_source"` for `fit()`,
    `"_mtl_eval_source"` for `evaluate()`) for the duration of a call, then
    puts back what was there (fit()'s validation runs inside fit())."""
    outer = getattr(model, attribute, None)
    setattr(model, attribute, source)
    try:
        yield
    finally:
        setattr(model, attribute, outer)


def gather(data, rows):
    """The batch of `data` (a structure of tensors or `None`) at `rows`."""
    return tf.nest.map_structure(lambda v: None if v is None else tf.gather(v, rows), data)


def batch_rows(order, index, batch_size):
    """Graph-friendly: the rows of batch `index` (a scalar tensor) of `order`."""
    size = tf.shape(order, out_type=tf.int64)[0]
    begin = tf.cast(index, tf.int64) * batch_size
    return order[begin : tf.minimum(begin + batch_size, size)]


def for_fit(model, x, y, sample_weight, batch_size, steps_per_epoch, shuffle, validation_split):
    """An `ArraySource` for a `fit()` (or `evaluate()`) call on arrays, or `None`.

    Args:
        model: The `MultiTaskModel` (built; its inputs already checked).
        x, y, sample_weight: As `_standardize` returned them.
        batch_size, steps_per_epoch, shuffle, validation_split: `fit()`'s
            (for `evaluate()`: its `batch_size` and `steps`, `False`, 0).

    Returns:
        `(source, batches, validation)`: `source` is `None` when Keras's
        adapter keeps the data (then the others are `None` too); else
        `batches` is the dataset Keras's `fit()` gets in place of the data
        (one element per batch) and `validation` the arrays
        `validation_split` set apart, or `None`.
    """
    if model._mtl_strategy is not None or not isinstance(shuffle, bool):
        return None, None, None
    leaves = tf.nest.flatten((x, y, sample_weight))
    if not all(v is None or _is_dense_array(v) for v in leaves):
        return None, None, None
    n = int(next(v for v in leaves if v is not None).shape[0])
    validation = None
    if validation_split:
        split = int(math.floor(n * (1.0 - validation_split)))
        if split in (0, n):
            raise ValueError(
                f"Training data contains {n} samples, which is not sufficient to split "
                f"it into a validation and training set as specified by "
                f"`validation_split={validation_split}`. Either provide more data, or a "
                "different value for the `validation_split` argument."
            )

        def part(begin, end):
            return tf.nest.map_structure(
                lambda v: None if v is None else v[begin:end], (x, y, sample_weight)
            )

        (x, y, sample_weight), validation = part(0, split), part(split, n)
        n = split
    if not batch_size:
        batch_size = int(math.ceil(n / steps_per_epoch)) if steps_per_epoch else 32
    data = _as_batch(x, y, sample_weight)
    if _placed_on_accelerator() and _bytes(data) > DEVICE_BYTES_LIMIT:
        return None, None, None
    data = tf.nest.map_structure(lambda v: None if v is None else _on_device(v), data)
    source = ArraySource(data, batch_size, shuffle, model.seed)
    # Keras counts the batches and starts a pass with a new iterator of this
    # (cheap to create: an iterator of Keras's array adapter costs ~10 ms).
    return source, tf.data.Dataset.range(source.num_batches), validation


def _is_dense_array(value):
    if isinstance(value, np.ndarray):
        return value.dtype != object
    return isinstance(value, tf.Tensor)


def _as_batch(x, y, sample_weight):
    """`(x, y[, sample_weight])` as Keras's array adapter yields a batch:
    tensors, other floats cast to `floatx`, lists as tuples, one weight
    array repeated for every task."""
    floatx = keras.backend.floatx()

    def tensor(value):
        if value is None:
            return None
        value = tf.convert_to_tensor(value)
        if value.dtype.is_floating and value.dtype.name != floatx:
            value = tf.cast(value, floatx)
        return value

    if sample_weight is not None and not isinstance(sample_weight, dict):
        sample_weight = keras.tree.map_structure(lambda _: sample_weight, y)
    data = (x, y) if sample_weight is None else (x, y, sample_weight)
    return keras.tree.lists_to_tuples(tf.nest.map_structure(tensor, data))


def _placed_on_accelerator():
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def _bytes(data):
    return sum(
        v.shape.num_elements() * v.dtype.size
        for v in tf.nest.flatten(data)
        if v is not None and v.dtype != tf.string
    )


def _on_device(value):
    """`value` on the default device (the accelerator, if any): an input of
    an XLA program on a GPU would otherwise be copied there at every call."""
    if value.dtype == tf.string or not _placed_on_accelerator():
        return value
    return tf.identity(value)
