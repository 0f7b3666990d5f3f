"""Task heads: the small per-task networks that sit on the shared trunk."""

import keras
import numpy as np

from keras_mtl import _checks


def _check_activation(arg_name, activation):
    try:
        return keras.activations.get(activation)
    except ValueError:
        raise ValueError(
            f"`{arg_name}` must be a Keras activation name (e.g. 'relu', "
            f"'softmax', 'sigmoid'), a callable or None. Received: "
            f"{activation!r}."
        ) from None


@keras.saving.register_keras_serializable(package="keras_mtl")
class Head(keras.layers.Layer):
    """One task's head: optional hidden Dense layers, then an output Dense layer.

    A `MultiTaskModel` puts one head per task on top of its shared trunk.
    Give a `Head` instead of a plain unit count when a task needs hidden
    layers, dropout or an output activation. The model makes its own copy
    named after the task, so pass an unbuilt `Head`.

    Args:
        units: Positive int, the size of the head's output.
        activation: Activation of the output layer: a name such as
            `"softmax"` or `"sigmoid"`, a callable, or `None` (linear).
            Defaults to `None`.
        hidden_units: Sequence of positive ints, the sizes of Dense layers
            between the trunk and the output layer. Defaults to `()`.
        hidden_activation: Activation of the hidden layers. Defaults to
            `"relu"`.
        dropout: Float in [0, 1), dropout rate after each hidden layer,
            active only in training. Defaults to `0.0`.
        kernel_initializer: Initializer of every kernel in the head.
            Defaults to `"glorot_uniform"`.
        kernel_regularizer: Optional regularizer of every kernel in the
            head; its penalty is added to this task's loss. Defaults to
            `None`.
        **kwargs: Base layer arguments such as `name` and `dtype`.

    Returns:
        A Keras layer mapping trunk features `(batch, d)` to
        `(batch, units)`.

    Example:

    >>> import numpy as np
    >>> import keras_mtl
    >>> head = keras_mtl.Head(units=3, activation="softmax", hidden_units=[8])
    >>> head(np.ones((2, 4), "float32")).shape
    TensorShape([2, 3])
    """

    def __init__(
        self,
        units,
        activation=None,
        hidden_units=(),
        hidden_activation="relu",
        dropout=0.0,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = _checks.check_positive_int("Head(units)", units)
        if isinstance(hidden_units, int) or not all(
            isinstance(u, int) and not isinstance(u, bool) for u in hidden_units
        ):
            raise ValueError(
                "`Head(hidden_units)` must be a list of positive ints, e.g. "
                f"[32, 16]. Received: {hidden_units!r}."
            )
        self.hidden_units = tuple(
            _checks.check_positive_int("Head(hidden_units)", u) for u in hidden_units
        )
        self.activation = _check_activation("Head(activation)", activation)
        self.hidden_activation = _check_activation("Head(hidden_activation)", hidden_activation)
        self.dropout = _checks.check_rate("Head(dropout)", dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

        dense_args = dict(
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.kernel_regularizer,
            dtype=self.dtype_policy,
        )
        self.hidden_layers = []
        for i, u in enumerate(self.hidden_units):
            self.hidden_layers.append(
                keras.layers.Dense(
                    u,
                    activation=self.hidden_activation,
                    name=f"hidden_{i}",
                    **dense_args,
                )
            )
            if self.dropout:
                self.hidden_layers.append(keras.layers.Dropout(self.dropout, name=f"dropout_{i}"))
        self.output_layer = keras.layers.Dense(
            self.units, activation=self.activation, name="output", **dense_args
        )

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.hidden_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.output_layer.build(shape)

    def call(self, inputs, training=None):
        x = inputs
        for layer in self.hidden_layers:
            x = layer(x, training=training)
        return self.output_layer(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            activation=keras.activations.serialize(self.activation),
            hidden_units=list(self.hidden_units),
            hidden_activation=keras.activations.serialize(self.hidden_activation),
            dropout=self.dropout,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
        )
        return config


def head_items(heads):
    """`heads` as a list of (name, spec) pairs, checking names."""
    if isinstance(heads, dict):
        items = list(heads.items())
    elif isinstance(heads, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 for p in heads
    ):
        items = [tuple(p) for p in heads]
    else:
        raise ValueError(
            "`heads` must be a dict {task_name: head}, where a head is an int "
            "(a Dense layer with that many units), a keras_mtl.Head or a Keras "
            "layer, e.g. "
            f"{{'y1': 20, 'y2': keras_mtl.Head(3, activation='softmax')}}. "
            f"Received: {heads!r}."
        )
    if not items:
        raise ValueError("`heads` is empty: a MultiTaskModel needs at least one task head.")
    names = [_checks.check_task_name(n) for n, _ in items]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"Head names must be unique; {dupes} appear more than once in `heads`.")
    return items


def make_head(
    name, spec, activation=None, kernel_initializer="glorot_uniform", kernel_regularizer=None
):
    """The head layer of task `name` from its specification in `heads=`.

    Args:
        name: The task name (the layer's name for int and `Head` specs).
        spec: An int (a Dense output with that many units), an unbuilt
            `Head`, any other Keras layer (used as it is), or a serialized
            layer config.
        activation, kernel_initializer, kernel_regularizer: For an int spec.

    Returns:
        The head layer: a new `Head` named `name`, or the given layer.
    """
    if isinstance(spec, dict) and "class_name" in spec:
        # A head from get_config(): restore the layer unbuilt; the model
        # builds it (and loads its weights) itself.
        spec = keras.saving.deserialize_keras_object(
            {k: v for k, v in spec.items() if k != "build_config"}
        )
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if spec <= 0:
            raise ValueError(
                f"Head {name!r} must have a positive number of units. Received: {spec}."
            )
        return Head(
            int(spec),
            activation=activation,
            kernel_initializer=kernel_initializer,
            kernel_regularizer=kernel_regularizer,
            name=name,
        )
    if isinstance(spec, Head):
        if spec.built:
            raise ValueError(
                f"Head {name!r} is already built. Pass an unbuilt "
                "keras_mtl.Head; the model creates its own layer from it."
            )
        return Head.from_config({**spec.get_config(), "name": name})
    if isinstance(spec, keras.layers.Layer):
        return spec
    raise ValueError(
        f"Head {name!r} must be an int (number of units), a keras_mtl.Head or "
        f"a Keras layer (e.g. a keras.Sequential tower). Received: {spec!r}."
    )
