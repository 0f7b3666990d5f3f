"""The few private Keras names keras_mtl relies on, in one place.

Keras is pinned to 3.15.x in setup.cfg; if an upgrade moves these, this is
the only file to change.

* `MetricsList`: Keras's `EarlyStopping`/`ModelCheckpoint` look inside
  `CompileMetrics`/`MetricsList` objects of `model.metrics` to infer
  `mode="min"`/`"max"` for a monitored log such as `"val_<task>_loss"`.
  Putting the per-task metrics in a `MetricsList` makes `mode="auto"` work.
* `no_automatic_dependency_tracking`: Keras's own `compile` is wrapped in
  it, so metrics created at compile time are not added to a built model's
  locked layer state.
* `Layer._seed_generators`: where a layer (e.g. `Dropout`) keeps its random
  generators. Keras's `save_own_variables` skips their state, so a restored
  model would draw different dropout masks than the run it resumes.
"""

from keras.src.trainers.compile_utils import MetricsList  # noqa: F401
from keras.src.utils.tracking import no_automatic_dependency_tracking  # noqa: F401


def seed_generator_states(layer):
    """The state variables of every random generator under `layer`, in a
    stable order (layer traversal order)."""
    states = []
    for sublayer in layer._flatten_layers(include_self=True):
        states += [g.state for g in getattr(sublayer, "_seed_generators", [])]
    return states


def optimizer_strategy(optimizer):
    """The `tf.distribute` strategy in whose scope `optimizer` was created.

    Keras's TensorFlow optimizer records it as `_distribution_strategy`
    (its variables are created in it); no public attribute says it.
    """
    return getattr(optimizer, "_distribution_strategy", None)
