"""The private Keras names in keras_mtl/_keras_internals.py still mean what we use them for.

If a Keras upgrade renames or changes one, a test here fails, naming it.
"""

import inspect

import keras
import numpy as np

import keras_mtl
from keras_mtl import _keras_internals


def test_monitor_callbacks_read_direction_inside_metrics_lists():
    # Keras infers mode="min"/"max" from `_direction` of metrics found inside
    # CompileMetrics/MetricsList objects of model.metrics.
    source = inspect.getsource(keras.callbacks.EarlyStopping._set_monitor_op)
    assert "MetricsList" in source and "_direction" in source
    metric = keras.metrics.Mean(name="a_loss")
    _keras_internals.set_direction(metric, "down")
    model = keras_mtl.MultiTaskModel([4], {"a": 1})
    model.compile(loss="mse")
    stopper = keras.callbacks.EarlyStopping(monitor="val_a_loss")
    stopper.set_model(model)
    stopper._set_monitor_op()
    assert stopper.monitor_op is keras.ops.less


def test_seed_generators_are_found_through_flatten_layers():
    model = keras_mtl.MultiTaskModel(
        [4, 4], {"a": keras_mtl.Head(1, hidden_units=[3], dropout=0.5)}, trunk_dropout=0.5
    )
    model.build((None, 3))
    states = _keras_internals.seed_generator_states(model)
    assert len(states) == 3  # two trunk Dropout layers and one in the head
    assert all(isinstance(s, keras.Variable) for s in states)
    # Keras's own save_own_variables leaves them out: that is why we save them.
    store = {}
    model.trunk.layers[1].save_own_variables(store)
    assert store == {}


def test_optimizer_records_the_strategy_it_was_created_in(mirrored_strategy):
    outside = keras.optimizers.Adam()
    with mirrored_strategy.scope():
        inside = keras.optimizers.Adam()
    assert _keras_internals.optimizer_strategy(inside) is mirrored_strategy
    assert _keras_internals.optimizer_strategy(outside) is not mirrored_strategy


def test_fit_calls_maybe_symbolic_build_that_trainer_hooks_override():
    assert hasattr(keras.Model, "_maybe_symbolic_build")
    calls = []

    class Recording(keras.Model):
        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            calls.append(True)
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    inputs = keras.Input((2,))
    model = Recording(inputs, keras.layers.Dense(1)(inputs))
    model.compile(loss="mse")
    model.fit(np.ones((4, 2)), np.ones((4, 1)), verbose=0)
    assert calls
    assert "_maybe_symbolic_build" in vars(_keras_internals.TrainerHooks)


def test_h5_store_answers_has_path_for_files_of_older_versions(tmp_path):
    # Loading keras_mtl 0.1.0 files asks the weights store whether a private
    # attribute's group exists (MultiTaskModel.load_own_variables).
    model = keras_mtl.MultiTaskModel([4], {"a": 1})
    model.build((None, 3))
    seen = {}

    original = keras_mtl.MultiTaskModel.load_own_variables

    def spy(self, store):
        seen["has_path"] = callable(getattr(store, "has_path", None))
        return original(self, store)

    path = str(tmp_path / "m.weights.h5")
    model.save_weights(path)
    keras_mtl.MultiTaskModel.load_own_variables = spy
    try:
        model.load_weights(path)
    finally:
        keras_mtl.MultiTaskModel.load_own_variables = original
    assert seen == {"has_path": True}


def test_task_optimizers_follow_keras_multi_optimizer_protocol():
    # Keras's LR callbacks look for `optimizers` on model.optimizer.
    for callback in (keras.callbacks.ReduceLROnPlateau, keras.callbacks.LearningRateScheduler):
        source = inspect.getsource(callback)
        assert 'hasattr(self.model.optimizer, "optimizers")' in source, callback


def test_fit_calls_the_made_train_function_with_a_tf_iterator_per_execution():
    # The contract keras_mtl/_execution.py implements.
    seen = []

    class Recording(keras.Model):
        def make_train_function(self, force=False):
            super().make_train_function(force)
            function = self.train_function

            def train_function(iterator):
                seen.append(type(iterator).__name__)
                return function(iterator)

            self.train_function = train_function
            return train_function

    inputs = keras.Input((2,))
    model = Recording(inputs, keras.layers.Dense(1)(inputs))
    model.compile(loss="mse", steps_per_execution=2)
    model.fit(np.ones((6, 2)), np.ones((6, 1)), batch_size=2, verbose=0)
    assert seen and all("Iterator" in name for name in seen)
    assert len(seen) == 2  # 3 batches in executions of 2 steps


def test_sublayers_come_from_flatten_layers_without_the_input_layer():
    trunk = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, name="d"), keras.layers.Dropout(0.1, name="drop")]
    )
    assert [layer.name for layer in _keras_internals.sublayers(trunk)] == ["d", "drop"]


def test_keras_masks_are_attached_as_keras_mask():
    embedded = keras.layers.Embedding(5, 2, mask_zero=True)(np.array([[1, 0]]))
    np.testing.assert_array_equal(_keras_internals.keras_mask(embedded), [[True, False]])


def test_the_default_save_signature_is_what_tensorflow_traces_for_a_model():
    import tensorflow as tf
    from keras.src.backend.tensorflow.layer import TFLayer

    assert isinstance(inspect.getattr_static(TFLayer, "_default_save_signature"), property)
    inputs = {"n": keras.Input((1,), name="n"), "s": keras.Input((1,), dtype="string", name="s")}
    lookup = keras.layers.StringLookup(vocabulary=["a"], output_mode="one_hot")(inputs["s"])
    trunk = keras.Model(inputs, keras.layers.Concatenate()([inputs["n"], lookup]))
    model = keras_mtl.MultiTaskModel(trunk, {"a": 1})
    model.build(None)
    signature = model._default_save_signature
    spec = signature.input_signature[0]
    assert spec["s"].dtype == tf.string and spec["n"].dtype == tf.float32
