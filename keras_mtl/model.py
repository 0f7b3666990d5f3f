"""`MultiTaskModel`: a shared Dense trunk with one named head per task.

The class is the architecture (trunk, heads, config, export);
`keras_mtl/trainer.py` adds how it compiles and trains, as Keras's `Model` is a
`Layer` plus a `Trainer`, and `keras_mtl/_saving.py` how it saves.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_mtl import _checks
from keras_mtl import _keras_internals
from keras_mtl import _optimizer_setup
from keras_mtl import _saving
from keras_mtl import export as export_module
from keras_mtl import trainer as trainer_module
from keras_mtl.heads import _check_activation
from keras_mtl.heads import head_items
from keras_mtl.heads import make_head


def _check_trunk_units(trunk_units):
    if (
        isinstance(trunk_units, (int, str))
        or not hasattr(trunk_units, "__len__")
        or len(trunk_units) == 0
        or not all(isinstance(u, (int, np.integer)) and not isinstance(u, bool) and u > 0 for u in trunk_units)
    ):
        raise ValueError(
            "`trunk_units` must be a non-empty list of positive ints, one per "
            f"shared Dense layer, e.g. [64, 64]. Received: {trunk_units!r}."
        )
    return [int(u) for u in trunk_units]


@keras.saving.register_keras_serializable(package="keras_mtl")
class MultiTaskModel(
    _keras_internals.TrainerHooks, _saving.SavingMixin, trainer_module.Trainer, keras.Model
):
    """A shared Dense trunk with one named output head per task.

    The model maps one input `(batch, features)` to a dict of outputs, one
    per head, named after the head. `compile(mode=...)` picks how `fit()`
    trains it:

    * `"joint"`: every step computes every task's loss and applies one update
      of `sum_t w_t * L_t` to all weights (as a Keras multi-output model does);
    * `"alternating"`: every step picks ONE task (see `keras_mtl.samplers`),
      computes only its loss and updates only the trunk and that head; every
      other head and its optimizer state stay exactly as they were.

    Args:
        trunk_units: List of positive ints, one shared Dense layer per entry.
        heads: Dict `{task_name: head}` where `head` is an int (a Dense
            output layer with that many units and `head_activation`) or a
            `keras_mtl.Head`. Task names must be valid identifiers; they are
            the output names, the keys of `loss`/`metrics`/`y`, and the
            prefixes of the logs.
        trunk_activation: Activation of the trunk layers. Defaults to
            `"relu"`.
        head_activation: Activation of int-shorthand heads. Defaults to
            `None` (linear).
        trunk_dropout: Float in [0, 1), dropout after each trunk layer in
            training. Defaults to `0.0`.
        kernel_initializer: Initializer of the trunk's and int-shorthand
            heads' kernels. Defaults to `"glorot_uniform"`.
        kernel_regularizer: Optional regularizer of those kernels.
        **kwargs: Base model arguments such as `name`.

    Returns:
        A `keras.Model` whose `predict(x)` returns `{task: array}`.

    Example:

    >>> import numpy as np, keras_mtl
    >>> model = keras_mtl.MultiTaskModel(
    ...     trunk_units=[16],
    ...     heads={"y1": 1, "y2": keras_mtl.Head(3, activation="softmax")},
    ... )
    >>> model.compile(
    ...     optimizer="adam",
    ...     loss={"y1": "mse", "y2": "sparse_categorical_crossentropy"},
    ...     mode="alternating", seed=1,
    ... )
    >>> x = np.random.rand(64, 4).astype("float32")
    >>> y = {"y1": x.sum(1), "y2": (x[:, 0] * 3).astype("int32")}
    >>> history = model.fit(x, y, epochs=1, verbose=0)
    >>> sorted(model.predict(x, verbose=0))
    ['y1', 'y2']
    """

    def __init__(
        self,
        trunk_units,
        heads,
        trunk_activation="relu",
        head_activation=None,
        trunk_dropout=0.0,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # The strategy whose scope created the model (None: one device).
        self._mtl_strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
        self.trunk_units = _check_trunk_units(trunk_units)
        self.trunk_activation = _check_activation("trunk_activation", trunk_activation)
        self.head_activation = _check_activation("head_activation", head_activation)
        self.trunk_dropout = _checks.check_rate("trunk_dropout", trunk_dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

        trunk_layers = []
        for i, units in enumerate(self.trunk_units):
            trunk_layers.append(
                keras.layers.Dense(
                    units,
                    activation=self.trunk_activation,
                    kernel_initializer=self.kernel_initializer,
                    kernel_regularizer=self.kernel_regularizer,
                    name=f"dense_{i}",
                )
            )
            if self.trunk_dropout:
                trunk_layers.append(keras.layers.Dropout(self.trunk_dropout, name=f"dropout_{i}"))
        self.trunk = keras.Sequential(trunk_layers, name="trunk")
        self.heads = {
            name: make_head(
                name, spec, activation=self.head_activation,
                kernel_initializer=self.kernel_initializer,
                kernel_regularizer=self.kernel_regularizer,
            )
            for name, spec in head_items(heads)
        }
        # Counts training steps; the alternating task is a pure function of
        # (seed, step_counter), so saving it lets a restored run continue
        # the same task sequence. Replicated; updated in cross-replica context.
        self.step_counter = self.add_weight(
            name="step_counter",
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )
        self._mtl = None
        self._output_shapes = None
        self._training_ready = False

    # ------------------------------------------------------------------
    # Architecture
    # ------------------------------------------------------------------
    @property
    def task_names(self):
        """The task (head) names, in order (tuple of str)."""
        return tuple(self.heads)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 2:
            raise ValueError(
                "MultiTaskModel takes inputs of shape (batch, features). "
                f"Received input shape {input_shape}; flatten or preprocess "
                "the inputs first."
            )
        # In the model's distribution scope, so its variables are replicated
        # even when build() is called outside `strategy.scope()`.
        with self.distribute_strategy.scope():
            self.trunk.build(input_shape)
            features = self.trunk.compute_output_shape(input_shape)
            self._output_shapes = {}
            for task, head in self.heads.items():
                head.build(features)
                self._output_shapes[task] = tuple(head.compute_output_shape(features))
        if self._mtl is not None:
            # Optimizer state must exist before anything loads it (e.g.
            # BackupAndRestore at the start of fit(), or load_weights).
            _optimizer_setup.build_optimizers(self)

    def _build_for(self, input_shape):
        """Builds the model for inputs of `input_shape` (any batch size)."""
        self.build((None,) + tuple(input_shape)[1:])

    def _output_shape(self, task):
        """The output shape of `task`'s head, batch dimension first."""
        return self._output_shapes[task]

    def call(self, inputs, training=None):
        features = self.trunk(inputs, training=training)
        return {name: head(features, training=training) for name, head in self.heads.items()}

    def call_task(self, inputs, task, training=None):
        """Computes the trunk and ONE task's head, not the others.

        Args:
            inputs: Tensor of shape `(batch, features)`.
            task: The task name.
            training: Whether dropout is active. Defaults to `None` (off).

        Returns:
            The head's output tensor, `(batch, units)`.

        Example:

        >>> import numpy as np, keras_mtl
        >>> model = keras_mtl.MultiTaskModel([8], {"a": 2, "b": 5})
        >>> model.call_task(np.ones((3, 4), "float32"), "b").shape
        TensorShape([3, 5])
        """
        if task not in self.heads:
            raise ValueError(f"Unknown task {task!r}; the model's tasks are {list(self.heads)}.")
        return self.heads[task](self.trunk(inputs, training=training), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(
            format_version=_saving.FORMAT_VERSION,
            trunk_units=list(self.trunk_units),
            heads={name: keras.saving.serialize_keras_object(h) for name, h in self.heads.items()},
            trunk_activation=keras.activations.serialize(self.trunk_activation),
            head_activation=keras.activations.serialize(self.head_activation),
            trunk_dropout=self.trunk_dropout,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            frozen_layers=self.frozen_layers(),
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        _saving.check_format_version(config)
        frozen = config.pop("frozen_layers", [])
        model = cls(**config)
        model._freeze(frozen)
        return model

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None,
               input_name="features", **kwargs):
        """Exports the model for inference; for TF Serving by default.

        With `format="tf_saved_model"` the SavedModel needs neither
        keras_mtl nor this class to serve. It has a `serving_default`
        signature returning one output per head (named after the head) and
        one signature per task, named after the task, that computes only the
        trunk and that head. Inputs are float32 `(batch, features)` named
        `input_name`; dropout is off. Other formats go to
        `keras.Model.export`.

        Args:
            filepath: Directory to write; for TF Serving use
                `<base>/<model_name>/<version>`, e.g. `"serving/mtl/1"`.
            format: `"tf_saved_model"` (default) or another format that
                `keras.Model.export` supports.
            verbose: Whether to print a summary of what was written.
            input_signature: Optional `tf.TensorSpec((None, n), tf.float32)`,
                needed only if the model was never built.
            input_name: Name of the signatures' input. Defaults to
                `"features"`.
            **kwargs: Passed to `keras.Model.export` for other formats.

        Returns:
            The list of signature names written (for `"tf_saved_model"`).

        Example:

        >>> import tempfile, keras_mtl, tensorflow as tf
        >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 3})
        >>> model.build((None, 4))
        >>> path = tempfile.mkdtemp() + "/1"
        >>> model.export(path, verbose=False)
        ['serving_default', 'serve', 'a', 'b']
        >>> served = tf.saved_model.load(path)
        >>> sorted(served.signatures["b"](features=tf.ones((2, 4))))
        ['b']
        """
        if format != "tf_saved_model":
            return super().export(filepath, format=format, verbose=verbose,
                                  input_signature=input_signature, **kwargs)
        if kwargs:
            raise TypeError(f"Unexpected arguments for format='tf_saved_model': {sorted(kwargs)}.")
        return export_module.export_saved_model(
            self, filepath, input_name=input_name, input_signature=input_signature,
            verbose=True if verbose is None else verbose,
        )
