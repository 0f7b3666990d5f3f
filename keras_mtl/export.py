"""Exporting a MultiTaskModel as a SavedModel that TF Serving can load.

The SavedModel holds only TensorFlow functions and variables: serving it
needs neither keras_mtl nor the Python class. It has

* `serving_default` (also named `serve`): one named input, returning a dict
  with one output per head, named after the head;
* one signature per task, named after the task, that computes only the trunk
  and that head and returns `{task: output}`.

Every signature runs the model in inference mode (dropout off) and takes
float32 inputs with a dynamic batch dimension.
"""

import keras
import tensorflow as tf

SIGNATURE_DEFAULT = "serving_default"


def _input_spec(model, input_signature, input_name):
    if input_signature is not None:
        spec = input_signature[0] if isinstance(input_signature, (list, tuple)) else input_signature
        if not isinstance(spec, tf.TensorSpec) or spec.shape.rank != 2:
            raise ValueError(
                "`input_signature` must be one tf.TensorSpec of shape "
                f"(None, features), e.g. tf.TensorSpec((None, 10), tf.float32). "
                f"Received: {input_signature!r}."
            )
        if not model.built:
            model._build_for(spec.shape)
        features = spec.shape[-1]
    elif not model.built:
        raise ValueError(
            "Cannot export a MultiTaskModel that has not been built: its input "
            "size is unknown. Call it on a batch first (e.g. model.predict(x), "
            "or fit), or pass input_signature=tf.TensorSpec((None, n_features), "
            "tf.float32)."
        )
    else:
        features = model.trunk.layers[0].kernel.shape[0]
    return tf.TensorSpec((None, features), tf.float32, name=input_name)


def export_saved_model(model, filepath, input_name="features", input_signature=None, verbose=True):
    """Writes `model` as a SavedModel for TF Serving.

    Args:
        model: A `MultiTaskModel`.
        filepath: Directory to write, e.g. `"serving/my_model/1"` (TF
            Serving's versioned layout `<base>/<name>/<version>`).
        input_name: Name of the signatures' input. Defaults to
            `"features"`; a TF Serving client sends
            `{"instances": [[...], ...]}` or
            `{"inputs": {"features": [[...], ...]}}`.
        input_signature: Optional `tf.TensorSpec((None, n), tf.float32)`;
            needed only if the model was never built.
        verbose: Whether to print what was written.

    Returns:
        The list of signature names written.
    """
    if not isinstance(input_name, str) or not input_name.isidentifier():
        raise ValueError(
            f"`input_name` must be a valid identifier such as 'features'. Received: {input_name!r}."
        )
    spec = _input_spec(model, input_signature, input_name)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve_all(features):
        return model(tf.cast(features, tf.float32), training=False)

    # Registered first, so ExportArchive also publishes it as serving_default.
    archive.add_endpoint("serve", serve_all, input_signature=[spec])
    for task in model.task_names:
        archive.add_endpoint(task, _task_endpoint(model, task), input_signature=[spec])
    archive.write_out(str(filepath), verbose=verbose)
    return [SIGNATURE_DEFAULT, "serve", *model.task_names]


def _task_endpoint(model, task):
    """`features -> {task: output}`, computing the trunk and this head only."""

    def serve_task(features):
        return {task: model.call_task(tf.cast(features, tf.float32), task, training=False)}

    return serve_task
