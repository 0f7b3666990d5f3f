"""Trunks that return one representation per task: per-task parameter sets
read from the model's structure, and the alternating invariant on them."""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_same_arrays, optimizer_slots

import keras_mtl
from keras_mtl import training


@keras.saving.register_keras_serializable(package="tests_per_task")
class CrossStitch(keras.layers.Layer):
    """Misra et al. (2016): [a', b'] = A [a, b], A a learnt 2x2 mixing matrix
    (initialized near the identity)."""

    def build(self, input_shape):
        self.alpha = self.add_weight(
            shape=(2, 2),
            name="alpha",
            initializer=keras.initializers.Constant([[0.9, 0.1], [0.1, 0.9]]),
        )

    def call(self, inputs):
        a, b = inputs
        return [
            self.alpha[0, 0] * a + self.alpha[0, 1] * b,
            self.alpha[1, 0] * a + self.alpha[1, 1] * b,
        ]

    def compute_output_shape(self, input_shape):
        return list(input_shape)


def cross_stitch_trunk():
    """Two towers (a: Dense, BatchNormalization; b: Dense) mixed by a
    cross-stitch unit, then a private Dense per tower (`c` unused by either)."""
    inputs = keras.Input((6,), name="features")
    a = keras.layers.Dense(8, activation="relu", name="a_1")(inputs)
    b = keras.layers.Dense(8, activation="relu", name="b_1")(inputs)
    a = keras.layers.BatchNormalization(name="a_bn")(a)
    a, b = CrossStitch(name="stitch")([a, b])
    a = keras.layers.Dense(4, activation="relu", name="a_2")(a)
    b = keras.layers.Dense(4, activation="relu", name="b_2")(b)
    b = keras.layers.BatchNormalization(name="b_bn")(b)
    return keras.Model(inputs, {"a": a, "b": b}, name="towers")


def towers_model():
    return keras_mtl.MultiTaskModel(
        cross_stitch_trunk(), {"a": 1, "b": keras_mtl.Head(3, activation="softmax")}
    )


LOSS = {"a": "mse", "b": "sparse_categorical_crossentropy"}


def data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 6)).astype("float32")
    return x, {"a": x.sum(1, keepdims=True), "b": (x[:, 0] * 2.99).astype("int32")}


def _paths(variables):
    return sorted(
        v.path.split("/", 1)[-1] if v.path.startswith("multi_task_model") else v.path
        for v in variables
    )


def test_task_variables_of_a_cross_stitch_trunk_come_from_its_structure():
    model = towers_model()
    model.build((None, 6))
    assert model.per_task_trunk
    assert _paths(model.task_variables("a")) == sorted(
        [
            "a_1/kernel",
            "a_1/bias",
            "a_bn/gamma",
            "a_bn/beta",
            "b_1/kernel",
            "b_1/bias",
            "stitch/alpha",
            "a_2/kernel",
            "a_2/bias",
            "a/output/kernel",
            "a/output/bias",
        ]
    )
    assert _paths(model.task_variables("b")) == sorted(
        [
            "a_1/kernel",
            "a_1/bias",
            "a_bn/gamma",
            "a_bn/beta",
            "b_1/kernel",
            "b_1/bias",
            "stitch/alpha",
            "b_2/kernel",
            "b_2/bias",
            "b_bn/gamma",
            "b_bn/beta",
            "b/output/kernel",
            "b/output/bias",
        ]
    )


def test_a_trunk_dict_must_be_keyed_by_the_tasks():
    inputs = keras.Input((3,))
    trunk = keras.Model(
        inputs, {"a": keras.layers.Dense(2)(inputs), "c": keras.layers.Dense(2)(inputs)}
    )
    model = keras_mtl.MultiTaskModel(trunk, {"a": 1, "b": 1})
    with pytest.raises(
        ValueError, match=r"keys \['a', 'c'\] \(missing: \['b'\]\) \(not tasks: \['c'\]\)"
    ):
        model.build((None, 3))


def _all_state(model):
    return {
        id(v): v for v in model.trunk.weights + [w for h in model.heads.values() for w in h.weights]
    }


@pytest.mark.parametrize("task_optimizers", [False, True])
@pytest.mark.slow
def test_an_alternating_step_leaves_every_variable_its_task_does_not_use_bit_identical(
    task_optimizers,
):
    """Structural check: after a step of task t, every trunk/head variable
    (weights and moving statistics) that t's output does not depend on, and
    its optimizer slots, are exactly as before; t's own variables moved."""
    x, y = data()
    model = towers_model()
    model.compile(
        optimizer="adam",
        loss=LOSS,
        mode="alternating",
        sampler="round_robin",
        seed=0,
        task_optimizers={"a": keras.optimizers.Adam(), "b": keras.optimizers.Adam()}
        if task_optimizers
        else None,
    )

    def step(rows):
        model.train_on_batch(x[rows], {t: v[rows] for t, v in y.items()})

    step(slice(0, 16))  # a
    step(slice(16, 32))  # b: every optimizer slot and statistic is now non-trivial
    for task, rows in (("a", slice(32, 48)), ("b", slice(0, 16))):
        used = model._structure.state[task]
        outside = [v for i, v in _all_state(model).items() if i not in used]
        outside_trainable = [v for v in outside if v.trainable]
        assert outside and outside_trainable
        optimizer = model.task_optimizers[task] if task_optimizers else model.optimizer
        other = model.task_optimizers["b" if task == "a" else "a"] if task_optimizers else optimizer
        before = [v.numpy().copy() for v in outside]
        slots = optimizer_slots(other, outside_trainable)
        own = [v.numpy().copy() for v in model.task_variables(task)]
        step(rows)
        assert_same_arrays([v.numpy() for v in outside], before)
        assert_same_arrays(optimizer_slots(other, outside_trainable), slots)
        assert all(
            np.any(v.numpy() != b)
            for v, b in zip(model.task_variables(task), own)
            if "gamma" not in v.path and "beta" not in v.path
        )


def _functional_twin(model):
    trunk = keras.models.clone_model(model.trunk)
    trunk.set_weights(model.trunk.get_weights())
    inputs = keras.Input((6,))
    features = trunk(inputs)
    outputs = {}
    for task, head in model.heads.items():
        copy = keras.layers.deserialize(keras.layers.serialize(head))
        outputs[task] = copy(features[task])
        copy.set_weights(head.get_weights())
    return keras.Model(inputs, outputs)


@pytest.mark.slow
def test_joint_with_a_per_task_trunk_equals_the_functional_model_step_for_step():
    x, y = data()
    model = towers_model()
    model.build((None, 6))
    twin = _functional_twin(model)
    model.compile(optimizer="adam", loss=LOSS, loss_weights={"a": 1.0, "b": 2.0})
    twin.compile(optimizer="adam", loss=LOSS, loss_weights={"a": 1.0, "b": 2.0})
    for _epoch in range(2):
        for start in range(0, 48, 16):
            rows = slice(start, start + 16)
            model.train_on_batch(x[rows], {t: v[rows] for t, v in y.items()})
            twin.train_on_batch(x[rows], {t: v[rows] for t, v in y.items()})
    for task in ("a", "b"):
        np.testing.assert_allclose(
            model.predict(x, verbose=0)[task], twin.predict(x, verbose=0)[task], atol=1e-5
        )


@pytest.mark.parametrize("mode", ["joint", "alternating"])
@pytest.mark.slow
def test_save_load_and_resume_exactly_with_a_per_task_trunk(tmp_path, mode):
    x, y = data()

    def make():
        model = towers_model()
        model.compile(optimizer="adam", loss=LOSS, mode=mode, seed=1)
        return model

    keras.utils.set_random_seed(3)
    straight = make()
    straight.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    keras.utils.set_random_seed(3)
    first = make()
    first.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    first.save(tmp_path / "m.keras")
    resumed = keras.models.load_model(tmp_path / "m.keras")
    assert resumed.per_task_trunk
    resumed.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    assert_same_arrays(resumed.get_weights(), straight.get_weights(), exact=False, atol=1e-6)


@pytest.mark.slow
def test_export_serves_each_task_of_a_per_task_trunk(tmp_path):
    x, _ = data(n=5)
    model = towers_model()
    expected = model.predict(x, verbose=0)
    model.export(str(tmp_path / "1"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "1"))
    for task in ("a", "b"):
        out = served.signatures[task](features=tf.constant(x))
        assert list(out) == [task]
        np.testing.assert_allclose(out[task].numpy(), expected[task], atol=1e-5)


@pytest.mark.slow
def test_gradient_weighting_combines_only_the_shared_variables():
    x, y = data()
    model = towers_model()
    model.compile(optimizer="adam", loss=LOSS, weighting=keras_mtl.weighting.PCGrad())
    history = model.fit(x, y, epochs=2, batch_size=16, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    shared, own = training.shared_and_own_variables(model)
    assert _paths(shared) == sorted(
        [
            "a_1/kernel",
            "a_1/bias",
            "a_bn/gamma",
            "a_bn/beta",
            "b_1/kernel",
            "b_1/bias",
            "stitch/alpha",
        ]
    )
    assert "a_2/kernel" in _paths(own) and "b/output/kernel" in _paths(own)
    model.compile(optimizer="adam", loss=LOSS, weighting=keras_mtl.weighting.MGDA())
    with pytest.raises(ValueError, match="gradients='parameters'"):
        model.fit(x, y, verbose=0)


def test_gradient_weighting_with_nothing_shared_is_refused():
    inputs = keras.Input((3,))
    trunk = keras.Model(
        inputs, {"a": keras.layers.Dense(2)(inputs), "b": keras.layers.Dense(2)(inputs)}
    )
    model = keras_mtl.MultiTaskModel(trunk, {"a": 1, "b": 1})
    model.compile(optimizer="adam", loss="mse", weighting=keras_mtl.weighting.PCGrad())
    with pytest.raises(
        ValueError, match="no trainable variable of this model is used by two trained tasks"
    ):
        model.fit(np.ones((4, 3)), {"a": np.ones((4, 1)), "b": np.ones((4, 1))}, verbose=0)


def _train_towers(strategy, mode):
    keras.utils.set_random_seed(0)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = keras_mtl.MultiTaskModel(
            keras.Model(*_no_bn_towers()), {"a": 1, "b": keras_mtl.Head(3, activation="softmax")}
        )
        model.compile(optimizer="adam", loss=LOSS, mode=mode, seed=2)
    x, y = data(n=64)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    return model, model.fit(ds, epochs=2, verbose=0).history


def _no_bn_towers():
    inputs = keras.Input((6,))
    a = keras.layers.Dense(8, activation="relu")(inputs)
    b = keras.layers.Dense(8, activation="relu")(inputs)
    a, b = CrossStitch()([a, b])
    return inputs, {"a": keras.layers.Dense(4)(a), "b": keras.layers.Dense(4)(b)}


@pytest.mark.parametrize("mode", ["joint", "alternating"])
@pytest.mark.slow
def test_mirrored_training_with_a_per_task_trunk_equals_single_device(mirrored_strategy, mode):
    single, single_logs = _train_towers(None, mode)
    mirrored, mirrored_logs = _train_towers(mirrored_strategy, mode)
    assert_same_arrays(
        [v.numpy() for v in mirrored.trainable_weights],
        [v.numpy() for v in single.trainable_weights],
        exact=False,
        atol=1e-5,
    )
    for key in single_logs:
        np.testing.assert_allclose(mirrored_logs[key], single_logs[key], rtol=1e-4, err_msg=key)


@pytest.mark.slow
def test_freezing_a_tower_takes_it_out_of_the_task_sets():
    x, y = data()
    model = towers_model()
    model.build((None, 6))
    model.trunk.get_layer("a_2").trainable = False
    assert "a_2/kernel" not in _paths(model.task_variables("a"))
    model.compile(optimizer="adam", loss=LOSS, mode="alternating", seed=0)
    frozen = model.trunk.get_layer("a_2").kernel.numpy().copy()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    np.testing.assert_array_equal(model.trunk.get_layer("a_2").kernel.numpy(), frozen)
