"""What a `MultiTaskModel`'s trunk takes: the structure, shapes, dtypes and
names of its inputs.

A model learns its input specification once, when it is built:

* from the trunk itself when the trunk is a functional `keras.Model` (or a
  `Sequential` started with `keras.Input`): its `input` structure gives
  every input's name, shape and dtype, e.g. a dict of named columns, one of
  them strings that a `StringLookup` inside the trunk looks up;
* otherwise from the first data the model sees (`fit`, `predict`, a call),
  with the data's dtypes (float arrays as float32, ints as ints, text as
  strings).

The specification is a nested structure (one spec, a dict or a list) of
`tf.TensorSpec` with a `None` batch dimension. `build()` calls the trunk and
heads on symbolic tensors of it; it is saved in the build config (so a
loaded model rebuilds with the same dtypes); `export()` turns it into the
serving signature, input by input; `fit()` uses it to read a DataFrame's
columns by name.
"""

import keras
import numpy as np
import tensorflow as tf


def _is_dataframe(value):
    return type(value).__name__ == "DataFrame" and hasattr(value, "columns")


def _is_series(value):
    return type(value).__name__ == "Series" and hasattr(value, "to_numpy")


def _leaf_dtype(value):
    """The dtype a model input of `value` gets (a `tf.DType`)."""
    if isinstance(value, (tf.TensorSpec, tf.Tensor, tf.Variable)):
        dtype = tf.as_dtype(value.dtype)
    elif isinstance(value, keras.KerasTensor):
        dtype = tf.as_dtype(value.dtype)
    else:
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
        if array.dtype.kind in ("U", "S", "O"):
            return tf.string
        dtype = tf.as_dtype(array.dtype)
    if dtype.is_floating:
        return tf.as_dtype(keras.config.floatx())
    return dtype


def _leaf_shape(value):
    shape = value.shape if hasattr(value, "shape") else np.shape(value)
    shape = tf.TensorShape(shape)
    if shape.rank is None or shape.rank == 0:
        raise ValueError(
            "Every model input needs a batch dimension; received an input of "
            f"shape {tuple(shape) if shape.rank is not None else 'unknown'}."
        )
    return tf.TensorShape([None]).concatenate(shape[1:])


def spec_of(value):
    """The input specification of `value`: arrays, tensors or specs, nested.

    Args:
        value: An array, tensor, `tf.TensorSpec` or `keras.KerasTensor`, or a
            dict / list / tuple of them.

    Returns:
        The same structure of `tf.TensorSpec` with a `None` batch dimension
        (named after the dict key where there is one).
    """
    if isinstance(value, dict):
        return {k: _named(spec_of(v), k) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not _is_leaf_sequence(value):
        return [spec_of(v) for v in value]
    if _is_series(value):
        value = value.to_numpy()
    return tf.TensorSpec(_leaf_shape(value), _leaf_dtype(value))


def _is_leaf_sequence(value):
    """Whether a list is one array (rows of numbers) rather than several inputs."""
    return not any(
        isinstance(v, (np.ndarray, tf.Tensor, tf.TensorSpec, keras.KerasTensor, dict))
        or _is_series(v)
        or _is_dataframe(v)
        for v in value
    )


def map_inputs(fn, structure):
    """`fn` over the leaves of an input structure, keeping dict key order
    (Keras warns when a functional model's dict inputs come in another order)."""
    if isinstance(structure, dict):
        return {k: map_inputs(fn, v) for k, v in structure.items()}
    if isinstance(structure, (list, tuple)):
        return [map_inputs(fn, v) for v in structure]
    return fn(structure)


def _named(spec, name):
    if isinstance(spec, tf.TensorSpec):
        return tf.TensorSpec(spec.shape, spec.dtype, name=name)
    return spec


def trunk_input_spec(trunk):
    """The input specification a functional trunk declares, or `None`.

    Args:
        trunk: The trunk layer.

    Returns:
        A structure of named `tf.TensorSpec`, or `None` when the trunk does not
        declare its inputs (a subclassed layer, an unbuilt `Sequential`).
    """
    if not isinstance(trunk, keras.Model):
        return None
    try:
        structure = trunk.input
    except (AttributeError, ValueError):
        return None
    return map_inputs(
        lambda t: tf.TensorSpec(tf.TensorShape(t.shape), tf.as_dtype(t.dtype), name=t.name),
        structure,
    )


def symbolic(spec):
    """`keras.KerasTensor`s of an input specification, to build layers on."""
    return map_inputs(
        lambda s: keras.KerasTensor(tuple(s.shape.as_list()), dtype=s.dtype.name, name=s.name),
        spec,
    )


def serialize(spec):
    """A JSON-friendly form of an input specification (for the build config)."""
    return map_inputs(
        lambda s: {"shape": s.shape.as_list(), "dtype": s.dtype.name, "name": s.name}, spec
    )


def deserialize(config):
    """The inverse of `serialize`."""
    if (
        isinstance(config, dict)
        and set(config) == {"shape", "dtype", "name"}
        and isinstance(config["dtype"], str)
    ):
        return tf.TensorSpec(config["shape"], config["dtype"], name=config["name"])
    if isinstance(config, dict):
        return {k: deserialize(v) for k, v in config.items()}
    return [deserialize(v) for v in config]


def input_names(spec):
    """The names of a dict specification's inputs (`None` for one tensor or a list)."""
    return list(spec) if isinstance(spec, dict) else None


def flat_arrays(x):
    """The leaves of `x` (arrays/tensors) with their paths, for messages."""
    if isinstance(x, dict):
        return [(f"x[{k!r}]", v) for k, v in x.items()]
    if isinstance(x, (list, tuple)) and not _is_leaf_sequence(x):
        return [(f"x[{i}]", v) for i, v in enumerate(x)]
    return [("x", x)]


def frame_to_inputs(frame, spec, method):
    """A DataFrame's columns as the trunk's named inputs.

    Each input named in `spec` takes the column of the same name, with the
    input's dtype (text columns as strings) and rank (`(n,)` becomes `(n, 1)`
    for an input of shape `(batch, 1)`). Other columns (e.g. the labels) are
    left out.

    Args:
        frame: A pandas DataFrame.
        spec: The trunk's dict input specification.
        method: For messages.

    Returns:
        Dict `{input name: array}`.
    """
    missing = [name for name in spec if name not in frame.columns]
    if missing:
        raise ValueError(
            f"The DataFrame `x` given to {method}() has no column(s) {missing}, "
            f"which the trunk takes as named inputs {list(spec)}: name the "
            "columns after the trunk's inputs (keras.Input(..., name=...))."
        )
    out = {}
    for name, s in spec.items():
        column = frame[name]
        if s.dtype == tf.string:
            if column.isna().any():
                raise ValueError(
                    f"Column {name!r} of `x` has missing values, but the trunk "
                    "takes it as strings: fill them first (e.g. "
                    f"x[{name!r}].fillna('')), so the lookup layer sees a value."
                )
            values = column.astype(str).to_numpy()
        else:
            try:
                values = column.to_numpy(dtype=s.dtype.as_numpy_dtype)
            except (TypeError, ValueError):
                raise ValueError(
                    f"Column {name!r} of `x` holds {column.dtype} values, but the "
                    f"trunk takes it as {s.dtype.name}: convert or encode it first."
                ) from None
        if s.shape.rank == 2 and s.shape[1] == 1:
            values = values.reshape(-1, 1)
        out[name] = as_tensor_if_text(values)
    return out


def as_tensor_if_text(value):
    """A NumPy array of text as a `tf.string` tensor (Keras's data adapters
    take text only as tensors); anything else as it is."""
    if isinstance(value, np.ndarray) and value.dtype.kind in ("U", "S", "O"):
        if value.dtype.kind == "O" and not all(isinstance(v, (str, bytes)) for v in value.flat):
            raise ValueError(
                "An input array of dtype object must hold only strings (text "
                "inputs); convert numbers with .astype('float32') and fill "
                "missing text first."
            )
        return tf.constant(value.astype(str) if value.dtype.kind != "S" else value)
    return value
