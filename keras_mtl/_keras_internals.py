"""The few private Keras names keras_mtl relies on, in one place.

Everything else in keras_mtl uses public Keras and TensorFlow APIs. Each name
here has no public replacement; `tests/test_keras_internals.py` checks every
one against the installed Keras, so an upgrade that moves one fails loudly
there rather than silently elsewhere.

* `MetricsList`: Keras's `EarlyStopping`/`ModelCheckpoint`/`ReduceLROnPlateau`
  look inside `CompileMetrics`/`MetricsList` objects of `model.metrics` for
  a metric named like the monitored log to infer `mode="min"`/`"max"`.
* `Metric._direction`: what they read there ("up"/"down").
* `Layer._seed_generators` and `Layer._flatten_layers`: where layers (e.g.
  `Dropout`) keep their random generators. Keras's `save_own_variables`
  skips their state, so a restored model would draw other dropout masks than
  the run it resumes.
* `Layer._flatten_layers` also gives any layer's direct sublayers (for the
  paths of frozen layers: a custom layer has no public `layers`).
* `tensor._keras_mask`: the mask a layer such as `Embedding(mask_zero=True)`
  attaches to its output; Keras's own losses read it there to leave padded
  timesteps out, and so do keras_mtl's task losses.
* `optimizer._distribution_strategy`: the strategy an optimizer was created
  in; an optimizer made outside the model's `strategy.scope()` fails later
  with an obscure error, so it is refused up front.
* `Trainer._maybe_symbolic_build`: overridden by `TrainerHooks` below.
* `TFLayer._default_save_signature`: the signature TensorFlow's SavedModel
  writer traces for a tracked model (also inside `model.export()`); Keras
  builds it from the build shapes with one float dtype, which is wrong for
  named inputs of other dtypes (strings). `TrainerHooks` gives the model's
  real input specification instead.
* The contract between Keras's `fit()`/`evaluate()` and the functions that
  `make_train_function()`/`make_test_function()` return (an iterator in, the
  last step's logs out, `StopIteration` at the end of the data), which
  `keras_mtl/_execution.py` implements: public method names, but the
  contract itself is Keras's internal business.
"""

import keras
from keras.src.trainers.compile_utils import MetricsList  # noqa: F401


def seed_generator_states(layer):
    """The state variables of every random generator under `layer`, in a
    stable order (layer traversal order)."""
    states = []
    for sublayer in layer._flatten_layers(include_self=True):
        states += [g.state for g in getattr(sublayer, "_seed_generators", [])]
    return states


def sublayers(layer):
    """The direct sublayers of `layer`, in tracking order (any layer: a
    `Model`'s `layers`, a custom layer's attributes; an `InputLayer` left out)."""
    return [
        sub
        for sub in layer._flatten_layers(include_self=False, recursive=False)
        if not isinstance(sub, keras.layers.InputLayer)
    ]


def keras_mask(tensor):
    """The Keras mask a layer attached to its output (e.g. after
    `Embedding(mask_zero=True)`), or `None`."""
    return getattr(tensor, "_keras_mask", None)


def optimizer_strategy(optimizer):
    """The `tf.distribute` strategy in whose scope `optimizer` was created.

    Keras's TensorFlow optimizer records it as `_distribution_strategy`
    (its variables are created in it); no public attribute says it.
    """
    return getattr(optimizer, "_distribution_strategy", None)


def set_direction(metric, direction):
    """Tells Keras's monitor callbacks whether higher (`"up"`) or lower
    (`"down"`) values of `metric` are better.

    `EarlyStopping`, `ModelCheckpoint` and `ReduceLROnPlateau` with
    `mode="auto"` read a metric's private `_direction` to decide; without it
    they raise for a monitored `<task>_loss` or `<task>_accuracy`.
    """
    metric._direction = direction


class TrainerHooks:
    """Overrides of private `keras.Model` hooks that `MultiTaskModel` needs."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras's fit()/evaluate() build a model under a strategy from a first
        # batch that they reduce across replicas, which fails under
        # MultiWorkerMirroredStrategy for dict targets. A MultiTaskModel is
        # built (with its optimizers) from the input shape before that.
        if self.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    @property
    def _default_save_signature(self):
        spec = getattr(self, "_mtl_input_spec", None)
        if spec is None:
            return super()._default_save_signature
        import tensorflow as tf

        @tf.function(input_signature=(spec,))
        def serving_default(inputs):
            return self(inputs)

        return serving_default
