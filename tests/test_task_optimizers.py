"""Per-task optimizers: names, instances or learning-rate schedules."""

import keras
import numpy as np
import pytest
from helpers import regression_data, seed_model

import keras_mtl


def test_schedule_per_task_advances_only_on_that_task_updates():
    x, y = regression_data(n=64)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    model = seed_model()
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss="mse",
        mode="alternating",
        sampler={"y1": 0.75, "y2": 0.25},
        seed=3,
        task_optimizers={"y1": schedule, "y2": "adam"},
    )
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    y1_opt = model.task_optimizers["y1"]
    assert isinstance(y1_opt, keras.optimizers.SGD)  # a copy of `optimizer` with the schedule
    assert y1_opt is not model.optimizer
    assert int(y1_opt.iterations.numpy()) == history["y1_updates"][0]
    assert int(model.task_optimizers["y2"].iterations.numpy()) == history["y2_updates"][0]
    expected_lr = 0.1 * 0.5 ** history["y1_updates"][0]
    np.testing.assert_allclose(float(y1_opt.learning_rate), expected_lr, rtol=1e-5)


def test_tasks_without_own_optimizer_share_the_model_optimizer():
    x, y = regression_data(n=32)
    model = seed_model()
    shared = keras.optimizers.Adam()
    model.compile(
        optimizer=shared,
        loss="mse",
        mode="alternating",
        seed=1,
        task_optimizers={"y1": keras.optimizers.SGD(0.01)},
    )
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    assert list(model.optimizer.optimizers) == [shared, model.task_optimizers["y1"]]
    assert int(shared.iterations.numpy()) == history["y2_updates"][0]
    assert int(model.optimizer.iterations.numpy()) == 8  # both optimizers' updates


def test_every_task_with_its_own_optimizer_leaves_no_shared_one():
    model = seed_model()
    model.compile(loss="mse", mode="alternating", task_optimizers={"y1": "adam", "y2": "sgd"})
    assert isinstance(model.optimizer, keras_mtl.optimizers.TaskOptimizers)
    assert [type(o).__name__ for o in model.optimizer.optimizers] == ["Adam", "SGD"]


def test_task_optimizer_for_an_untrained_task_is_rejected():
    model = seed_model()
    with pytest.raises(ValueError, match="'y2'.*loss is None"):
        model.compile(
            loss={"y1": "mse", "y2": None}, mode="alternating", task_optimizers={"y2": "adam"}
        )


def test_bad_task_optimizer_is_rejected():
    model = seed_model()
    with pytest.raises(ValueError, match="task_optimizers\\['y1'\\]"):
        model.compile(loss="mse", mode="alternating", task_optimizers={"y1": "adamm"})
