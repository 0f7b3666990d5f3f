"""Keras optimizer features that touch every variable: EMA, accumulation, LR callbacks."""

import os

import h5py
import keras
import numpy as np
import pytest
from helpers import functional_twin, regression_data

import keras_mtl


def _xy(n=64):
    x, y = regression_data(n=n, units=(1, 1))
    return x, {"a": y["y1"], "u": y["y2"]}


@pytest.mark.slow
def test_ema_with_an_untrained_head_matches_functional_and_leaves_the_head_exact():
    x, y = _xy()
    model = keras_mtl.MultiTaskModel([8], {"u": 1, "a": 1})
    model.build((None, x.shape[1]))
    twin = functional_twin(model)
    untrained = [v.numpy().copy() for v in model.heads["u"].weights]

    def ema():
        return keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=0.9)

    model.compile(optimizer=ema(), loss={"u": None, "a": "mse"})
    twin.compile(optimizer=ema(), loss={"u": None, "a": "mse"})
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    twin.fit(x, {"a": y["a"]}, batch_size=16, epochs=2, shuffle=False, verbose=0)
    # Trunk and `a` end as their moving averages, exactly as Keras's own model.
    for name in ("trunk_0", "a_0"):
        for ours, theirs in zip(
            dict(_pairs(model))[name].get_weights(), twin.get_layer(name).get_weights()
        ):
            np.testing.assert_allclose(ours, theirs, atol=1e-6)
    for before, after in zip(untrained, model.heads["u"].weights):
        np.testing.assert_array_equal(before, after.numpy())


def _pairs(model):
    from helpers import _layer_pairs

    return _layer_pairs(model)


@pytest.mark.parametrize("where", ["shared", "task"])
def test_ema_is_refused_in_alternating_mode(where):
    model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
    ema = keras.optimizers.Adam(use_ema=True)
    kwargs = {"optimizer": ema} if where == "shared" else {"task_optimizers": {"a": ema}}
    with pytest.raises(ValueError, match="use_ema=True.*mode='joint'"):
        model.compile(loss="mse", mode="alternating", **kwargs)


def test_shared_gradient_accumulation_is_refused_in_alternating_mode():
    model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
    with pytest.raises(ValueError, match="gradient_accumulation_steps=2.*task_optimizers="):
        model.compile(
            optimizer=keras.optimizers.SGD(gradient_accumulation_steps=2),
            loss="mse",
            mode="alternating",
        )


@pytest.mark.slow
def test_per_task_gradient_accumulation_counts_real_updates():
    x, y = _xy(n=64)
    y = {"a": y["a"], "b": y["u"]}
    model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
    model.compile(
        loss="mse",
        mode="alternating",
        sampler="round_robin",
        seed=0,
        task_optimizers={t: keras.optimizers.SGD(0.1, gradient_accumulation_steps=2) for t in "ab"},
    )
    model.build((None, x.shape[1]))
    heads = {t: [v.numpy().copy() for v in model.heads[t].weights] for t in "ab"}
    # 8 steps: 4 per task, so 2 real updates per task, each of 2 accumulated gradients.
    history = model.fit(x, y, batch_size=8, shuffle=False, verbose=0).history
    assert history["a_updates"] == [2.0] and history["b_updates"] == [2.0]
    for t in "ab":
        assert int(model.task_optimizers[t].iterations.numpy()) == 2
        assert any(
            not np.array_equal(b, v.numpy()) for b, v in zip(heads[t], model.heads[t].weights)
        )


def test_shared_gradient_accumulation_with_one_trained_task_is_allowed():
    x, y = _xy(n=32)
    model = keras_mtl.MultiTaskModel([8], {"a": 1, "u": 1})
    model.compile(
        optimizer=keras.optimizers.SGD(gradient_accumulation_steps=2),
        loss={"a": "mse", "u": None},
        mode="alternating",
    )
    history = model.fit(x, y, batch_size=8, verbose=0).history
    assert history["a_updates"] == [2.0]  # 4 steps, every second one applies


def _task_optimizer_model(order, schedule=False):
    model = keras_mtl.MultiTaskModel([6], {"a": 1, "b": 1})
    rates = {"a": 0.01, "b": 0.02}
    model.compile(
        loss="mse",
        mode="alternating",
        sampler={"a": 1.0, "b": 0.0},
        seed=0,
        task_optimizers={t: keras.optimizers.Adam(rates[t]) for t in order},
    )
    return model


@pytest.mark.slow
def test_task_optimizer_states_are_saved_by_task_name(tmp_path):
    x, y = _xy(n=40)
    y = {"a": y["a"], "b": y["u"]}
    model = _task_optimizer_model("ab")
    model.fit(x, y, batch_size=8, verbose=0)  # 5 steps, all on task a
    path = os.path.join(tmp_path, "m.weights.h5")
    model.save_weights(path)

    other = _task_optimizer_model("ba")  # the dict lists the tasks the other way
    other.build((None, x.shape[1]))
    other.load_weights(path)
    assert {t: int(o.iterations.numpy()) for t, o in other.task_optimizers.items()} == {
        "a": 5,
        "b": 0,
    }
    for t in "ab":
        for ours, theirs in zip(
            model.task_optimizers[t].variables, other.task_optimizers[t].variables
        ):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())

    with h5py.File(path) as f:
        keys = []
        f.visit(keys.append)
    assert not any("_task_optimizers" in k for k in keys)
    assert any(k.endswith("vars/task.a.0") for k in keys)


@pytest.mark.parametrize("name", ["legacy_0_1_0_task_optimizers", "legacy_0_1_0_mixed_optimizers"])
@pytest.mark.parametrize("kind", ["keras", "weights"])
def test_files_written_by_0_1_0_load_every_task_optimizer(name, kind):
    data = os.path.join(os.path.dirname(__file__), "data")
    expected = np.load(os.path.join(data, f"{name}.expected.npz"))
    if kind == "keras":
        model = keras.models.load_model(os.path.join(data, f"{name}.keras"))
    else:
        shared = "adam" if name.endswith("task_optimizers") else keras.optimizers.Adam(0.005)
        own = {"a": keras.optimizers.Adam(0.01)} if "mixed" not in name else {}
        model = keras_mtl.MultiTaskModel([4], {"a": 1, "b": 1})
        model.compile(
            optimizer=shared,
            loss="mse",
            mode="alternating",
            sampler="round_robin",
            task_optimizers={**own, "b": keras.optimizers.Adam(0.02)},
            seed=3,
        )
        model.build((None, 3))
        model.load_weights(os.path.join(data, f"{name}.weights.h5"))
    for task, optimizer in model.task_optimizers.items():
        assert int(optimizer.iterations.numpy()) == int(expected[f"{task}_iterations"])
        for i, variable in enumerate(optimizer.variables):
            np.testing.assert_array_equal(variable.numpy(), expected[f"{task}_slot_{i}"])
    if int(expected["shared_iterations"]) >= 0:
        shared = model.optimizer.optimizers[0]
        assert int(shared.iterations.numpy()) == int(expected["shared_iterations"])
    saved_weights = [expected[k] for k in expected.files if k.startswith("multi_task_model")]
    for saved, variable in zip(saved_weights, model.weights):
        np.testing.assert_array_equal(saved, variable.numpy())


def _lr(optimizer):
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


@pytest.mark.parametrize("own", [("a", "b"), ("b",)])
def test_reduce_lr_on_plateau_lowers_every_optimizer_that_trains(own):
    x, y = _xy(n=32)
    y = {"a": y["a"], "b": y["u"]}
    model = keras_mtl.MultiTaskModel([6], {"a": 1, "b": 1})
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="mse",
        mode="alternating",
        task_optimizers={t: keras.optimizers.SGD(0.04) for t in own},
    )
    reduce = keras.callbacks.ReduceLROnPlateau(
        monitor="loss", factor=0.5, patience=0, min_delta=1e9
    )
    model.fit(x, y, epochs=2, verbose=0, callbacks=[reduce])  # reduces once, after epoch 2
    rates = {t: _lr(o) for t, o in model.task_optimizers.items()}
    assert rates == pytest.approx({t: 0.02 for t in own})
    if len(own) == 1:
        assert _lr(model.optimizer.optimizers[0]) == pytest.approx(0.05)


@pytest.mark.slow
def test_learning_rate_scheduler_sets_every_task_optimizer():
    x, y = _xy(n=32)
    y = {"a": y["a"], "b": y["u"]}
    model = keras_mtl.MultiTaskModel([6], {"a": 1, "b": 1})
    model.compile(
        loss="mse",
        mode="alternating",
        task_optimizers={"a": keras.optimizers.Adam(0.01), "b": keras.optimizers.Adam(0.03)},
    )
    schedule = keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr / 10.0)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[schedule])
    assert _lr(model.task_optimizers["a"]) == pytest.approx(1e-4)
    assert _lr(model.task_optimizers["b"]) == pytest.approx(3e-4)


def test_setting_the_model_learning_rate_sets_every_optimizer():
    model = keras_mtl.MultiTaskModel([6], {"a": 1, "b": 1})
    model.compile(loss="mse", mode="alternating", task_optimizers={"a": "adam", "b": "sgd"})
    with pytest.raises(AttributeError, match="different learning rates"):
        _ = model.optimizer.learning_rate
    model.optimizer.learning_rate = 0.003
    assert model.optimizer.learning_rate == pytest.approx(0.003)
    assert [_lr(o) for o in model.optimizer.optimizers] == pytest.approx([0.003, 0.003])
