"""Exporting a MultiTaskModel as a SavedModel that TF Serving can load.

The SavedModel holds only TensorFlow functions and variables: serving it
needs neither keras_mtl nor the Python class. It has

* `serving_default` (also named `serve`): one named input, returning a dict
  with one output per head, named after the head;
* one signature per task, named after the task, that computes only the trunk
  and that head and returns `{task: output}`.

Every signature runs the model in inference mode (dropout off) and takes
the trunk's inputs with a dynamic batch dimension: one float32 tensor named
`features` for the Dense shortcut, and for a trunk with named inputs one
input per name with its dtype (strings where the trunk looks them up), an
input of shape `(batch, 1)` served as one value per example.
"""

import keras
import tensorflow as tf

SIGNATURE_DEFAULT = "serving_default"


def _serving_input(spec, name):
    """One input's serving spec: a `(batch, 1)` input is served as one value
    per example, `(batch,)`, so a client sends `{"price": 3.5}` rather than
    `{"price": [3.5]}`."""
    shape = spec.shape
    if shape.rank == 2 and shape[1] == 1:
        shape = tf.TensorShape([None])
    return tf.TensorSpec(shape, spec.dtype, name=name)


def serving_signature(model, input_name="features"):
    """The serving inputs of a built model: the trunk's inputs by name and dtype.

    Args:
        model: A built `MultiTaskModel`.
        input_name: The name of a single (unnamed) input.

    Returns:
        `(signature, to_model)`: the structure of `tf.TensorSpec` a signature
        takes (one spec, a dict named after the trunk's inputs, or a list),
        and a function turning the served tensors into the model's inputs.
    """
    spec = model._mtl_input_spec
    if isinstance(spec, tf.TensorSpec):
        signature = tf.TensorSpec(spec.shape, spec.dtype, name=input_name)
    elif isinstance(spec, dict):
        signature = {k: _serving_input(s, k) for k, s in spec.items()}
    else:
        signature = [
            _serving_input(s, f"{input_name}_{i}") for i, s in enumerate(tf.nest.flatten(spec))
        ]
        signature = tf.nest.pack_sequence_as(spec, signature)

    def to_model(served):
        def adapt(value, s):
            if value.shape.rank == 1 and s.shape.rank == 2:
                value = tf.expand_dims(value, -1)
            return tf.cast(value, s.dtype) if s.dtype.is_floating else value

        if isinstance(spec, dict):  # in the trunk's order, as a plain dict
            return {k: adapt(served[k], s) for k, s in spec.items()}
        return tf.nest.map_structure(adapt, served, spec)

    return signature, to_model


def _build(model, input_signature):
    if input_signature is not None:
        if isinstance(input_signature, (list, tuple)) and len(input_signature) == 1:
            input_signature = input_signature[0]
        leaves = tf.nest.flatten(input_signature)
        if not leaves or not all(isinstance(s, tf.TensorSpec) for s in leaves):
            raise ValueError(
                "`input_signature` must be a tf.TensorSpec (or a dict of them, one "
                "per named input of the trunk), e.g. tf.TensorSpec((None, 10), "
                f"tf.float32). Received: {input_signature!r}."
            )
        if not model.built:
            model._build_for(input_signature)
    elif not model.built:
        raise ValueError(
            "Cannot export a MultiTaskModel that has not been built: its inputs "
            "are unknown. Call it on a batch first (e.g. model.predict(x), or "
            "fit), or pass input_signature=tf.TensorSpec((None, n_features), "
            "tf.float32)."
        )


def export_saved_model(model, filepath, input_name="features", input_signature=None, verbose=True):
    """Writes `model` as a SavedModel for TF Serving.

    Args:
        model: A `MultiTaskModel`.
        filepath: Directory to write, e.g. `"serving/my_model/1"` (TF
            Serving's versioned layout `<base>/<name>/<version>`).
        input_name: Name of the signatures' input when the trunk takes one
            unnamed tensor. Defaults to `"features"`; a TF Serving client
            sends `{"instances": [[...], ...]}` or
            `{"inputs": {"features": [[...], ...]}}`. A trunk with named
            inputs is served with those names and dtypes.
        input_signature: Optional `tf.TensorSpec((None, n), tf.float32)` (or
            a dict of specs); needed only if the model was never built.
        verbose: Whether to print what was written.

    Returns:
        The list of signature names written.
    """
    if not isinstance(input_name, str) or not input_name.isidentifier():
        raise ValueError(
            f"`input_name` must be a valid identifier such as 'features'. Received: {input_name!r}."
        )
    _build(model, input_signature)
    signature, to_model = serving_signature(model, input_name)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve_all(inputs):
        return model(to_model(inputs), training=False)

    # Registered first, so ExportArchive also publishes it as serving_default.
    archive.add_endpoint("serve", serve_all, input_signature=[signature])
    for task in model.task_names:
        archive.add_endpoint(
            task, _task_endpoint(model, task, to_model), input_signature=[signature]
        )
    archive.write_out(str(filepath), verbose=verbose)
    return [SIGNATURE_DEFAULT, "serve", *model.task_names]


def _task_endpoint(model, task, to_model):
    """`inputs -> {task: output}`, computing the trunk and this head only."""

    def serve_task(inputs):
        return {task: model.call_task(to_model(inputs), task, training=False)}

    return serve_task
