"""MirroredStrategy on 2 logical CPUs trains exactly like one device."""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_same_arrays

import keras_mtl


def _data(n=64, seed=0, missing=True):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 6)).astype("float32")
    y = {
        "a": np.stack([x.sum(1), x[:, 0] - x[:, 2]], 1).astype("float32"),
        "b": (x[:, 1] * 2.99).astype("int32"),
    }
    if missing:
        # Missing labels spread unevenly: each batch of 8 is split 4/4 over
        # the replicas, and rows 0-2 of each batch (replica 0) lack 'a'.
        y["a"][np.arange(n) % 8 < 3] = np.nan
    return x, y


def _train(strategy, mode, optimizer="adam", steps_per_execution=1, task_optimizers=None):
    keras.utils.set_random_seed(0)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = keras_mtl.MultiTaskModel(
            [8],
            {"a": 2, "b": keras_mtl.Head(3, activation="softmax", hidden_units=[4])},
            kernel_regularizer=keras.regularizers.L2(0.01),
        )
        model.compile(
            optimizer=keras.optimizers.get(optimizer),
            loss={"a": "mse", "b": "sparse_categorical_crossentropy"},
            metrics={"b": ["accuracy"]},
            mode=mode,
            seed=4,
            steps_per_execution=steps_per_execution,
            task_optimizers=(
                {t: keras.optimizers.get(o) for t, o in task_optimizers.items()}
                if task_optimizers
                else None
            ),
        )
    x, y = _data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    history = model.fit(ds, epochs=2, verbose=0).history
    return model, history


def _trainable(model):
    return [v.numpy() for v in model.trainable_weights]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("mode", ["joint", "alternating"])
@pytest.mark.slow
def test_mirrored_training_equals_single_device(mirrored_strategy, mode, optimizer):
    single, single_logs = _train(None, mode, optimizer)
    mirrored, mirrored_logs = _train(mirrored_strategy, mode, optimizer)
    assert_same_arrays(_trainable(mirrored), _trainable(single), exact=False, atol=1e-5)
    for key in single_logs:  # losses are not N times too large or small
        np.testing.assert_allclose(mirrored_logs[key], single_logs[key], rtol=1e-4, err_msg=key)


@pytest.mark.slow
def test_mirrored_alternating_with_task_optimizers_and_steps_per_execution(mirrored_strategy):
    kwargs = dict(steps_per_execution=4, task_optimizers={"a": "adam", "b": "rmsprop"})
    single, single_logs = _train(None, "alternating", **kwargs)
    mirrored, mirrored_logs = _train(mirrored_strategy, "alternating", **kwargs)
    assert_same_arrays(_trainable(mirrored), _trainable(single), exact=False, atol=1e-5)
    assert mirrored_logs["a_updates"] == single_logs["a_updates"]


@pytest.mark.slow
def test_mirrored_alternating_leaves_inactive_heads_untouched_on_every_replica(mirrored_strategy):
    with mirrored_strategy.scope():
        model = keras_mtl.MultiTaskModel([8], {"a": 2, "b": 3})
        model.compile(
            optimizer="adam", loss="mse", mode="alternating", sampler={"a": 1.0, "b": 0.0}, seed=0
        )
    x, y = _data(missing=False)
    y = {"a": y["a"], "b": np.eye(3, dtype="float32")[y["b"]]}
    model.build((None, 6))
    before = {v.path: [c.numpy() for c in v.value.values] for v in model.heads["b"].weights}
    slots_b = [s for s in model.optimizer.variables if "_b_" in s.path]
    assert slots_b
    slots_before = [[c.numpy() for c in s.value.values] for s in slots_b]
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=1, verbose=0)
    for v in model.heads["b"].weights:
        replicas = [c.numpy() for c in v.value.values]
        assert len(replicas) == 2
        for now, then in zip(replicas, before[v.path]):
            np.testing.assert_array_equal(now, then)
    for s, then in zip(slots_b, slots_before):
        for now, old in zip([c.numpy() for c in s.value.values], then):
            np.testing.assert_array_equal(now, old)
    # ... while the trained head changed, identically on both replicas.
    kernel = model.heads["a"].output_layer.kernel.value.values
    np.testing.assert_array_equal(kernel[0].numpy(), kernel[1].numpy())


@pytest.mark.slow
def test_mirrored_interleaved_datasets_train_one_task_per_global_batch(mirrored_strategy):
    rng = np.random.default_rng(1)

    def per_task():
        return {
            "a": tf.data.Dataset.from_tensor_slices(
                (rng.random((48, 6), "float32"), rng.random((48, 2), "float32"))
            ).batch(8),
            "b": tf.data.Dataset.from_tensor_slices(
                (rng.random((16, 6), "float32"), rng.integers(0, 3, 16).astype("int32"))
            ).batch(8),
        }

    datasets = per_task()
    results = []
    for strategy in (None, mirrored_strategy):
        keras.utils.set_random_seed(0)
        scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
        with scope:
            model = keras_mtl.MultiTaskModel(
                [8], {"a": 2, "b": keras_mtl.Head(3, activation="softmax")}
            )
            model.compile(
                optimizer="adam",
                loss={"a": "mse", "b": "sparse_categorical_crossentropy"},
                mode="alternating",
                seed=0,
            )
        data = keras_mtl.data.interleave(datasets, sampler="uniform", seed=6)
        history = model.fit(data, steps_per_epoch=10, epochs=1, verbose=0).history
        results.append((model, history))
    (single, h_single), (mirrored, h_mirrored) = results
    assert h_mirrored["a_updates"] == h_single["a_updates"]
    assert h_mirrored["a_updates"][0] + h_mirrored["b_updates"][0] == 10
    assert_same_arrays(_trainable(mirrored), _trainable(single), exact=False, atol=1e-5)


@pytest.mark.slow
def test_mirrored_evaluate_equals_single_device(mirrored_strategy):
    single, _ = _train(None, "joint")
    with mirrored_strategy.scope():
        twin = keras_mtl.MultiTaskModel(
            [8],
            {"a": 2, "b": keras_mtl.Head(3, activation="softmax", hidden_units=[4])},
            kernel_regularizer=keras.regularizers.L2(0.01),
        )
        twin.compile(
            optimizer="adam",
            loss={"a": "mse", "b": "sparse_categorical_crossentropy"},
            metrics={"b": ["accuracy"]},
        )
    twin.build((None, 6))
    for ours, theirs in zip(twin.trainable_weights, single.trainable_weights):
        ours.assign(theirs.numpy())
    x, y = _data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    expected = single.evaluate(ds, return_dict=True, verbose=0)
    got = twin.evaluate(ds, return_dict=True, verbose=0)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, err_msg=key)


def test_optimizer_created_outside_the_scope_is_rejected(mirrored_strategy):
    adam = keras.optimizers.Adam()  # outside the scope
    with mirrored_strategy.scope():
        model = keras_mtl.MultiTaskModel([4], {"a": 1, "b": 1})
        model.compile(
            optimizer="adam",
            loss="mse",
            mode="alternating",
            task_optimizers={"a": adam, "b": "adam"},
        )
    x = np.ones((16, 3), "float32")
    with pytest.raises(ValueError, match="task 'a'.*outside `strategy.scope\\(\\)`"):
        model.fit(x, {"a": x[:, 0], "b": x[:, 1]}, verbose=0)
