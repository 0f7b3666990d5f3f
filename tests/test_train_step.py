"""`train_step` is what fit() runs: subclasses override it as Keras's guide shows."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import regression_data

import keras_mtl


class LoggingModel(keras_mtl.MultiTaskModel):
    """Calls super().train_step and post-processes its logs."""

    def train_step(self, data):
        logs = super().train_step(data)
        return {**logs, "twice_loss": 2.0 * logs["loss"]}


class StepCounter(keras_mtl.MultiTaskModel):
    """Adds a metric of its own, updated in every step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = keras.metrics.Sum(name="batches")

    def train_step(self, data):
        logs = super().train_step(data)
        self.batches.update_state(1.0)
        return {**logs, "batches": self.batches.result()}


class FrozenStep(keras_mtl.MultiTaskModel):
    """A whole step of its own that never calls super(): no update at all."""

    def train_step(self, data):
        x = data[0]
        y_pred = self(x, training=False)
        return {"a_mean": tf.reduce_mean(y_pred["y1"])}


def _fit_logs(model_cls, mode, spe, epochs=1, **fit_kwargs):
    x, y = regression_data(n=64, units=(1, 1))
    model = model_cls([8], {"y1": 1, "y2": 1})
    model.compile(optimizer="sgd", loss="mse", mode=mode, steps_per_execution=spe, seed=0)
    history = model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, shuffle=False, **fit_kwargs)
    return model, history.history


@pytest.mark.parametrize("mode", ["joint", "alternating"])
@pytest.mark.parametrize("spe", [1, 4])
def test_fit_returns_the_logs_of_an_overridden_train_step(mode, spe):
    _, history = _fit_logs(LoggingModel, mode, spe)
    assert history["twice_loss"] == pytest.approx([2.0 * history["loss"][0]], rel=1e-6)


@pytest.mark.parametrize("spe", [1, 3])
def test_metric_added_in_train_step_counts_every_step_and_resets_each_epoch(spe):
    # 64 examples in batches of 8: 8 steps per epoch, whatever the execution size.
    _, history = _fit_logs(StepCounter, "alternating", spe, epochs=2)
    assert history["batches"] == [8.0, 8.0]


def test_train_step_that_never_calls_super_replaces_the_update():
    x, y = regression_data(n=32, units=(1, 1))
    model = FrozenStep([8], {"y1": 1, "y2": 1})
    model.compile(optimizer="sgd", loss="mse")
    model.build((None, x.shape[1]))
    before = [w.numpy().copy() for w in model.weights]
    history = model.fit(x, y, batch_size=8, verbose=0)
    assert list(history.history) == ["a_mean"]
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, b.numpy())


def test_train_on_batch_runs_the_overridden_train_step():
    x, y = regression_data(n=16, units=(1, 1))
    model = StepCounter([8], {"y1": 1, "y2": 1})
    model.compile(optimizer="sgd", loss="mse", mode="alternating", seed=0)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["batches"] == 1.0


@pytest.mark.parametrize("mode", ["joint", "alternating"])
@pytest.mark.slow
def test_overridden_train_step_under_mirrored_strategy(mirrored_strategy, mode):
    x, y = regression_data(n=64, units=(1, 1))
    with mirrored_strategy.scope():
        model = LoggingModel([8], {"y1": 1, "y2": 1})
        model.compile(optimizer="sgd", loss="mse", mode=mode, steps_per_execution=2, seed=0)
    history = model.fit(x, y, batch_size=16, verbose=0, shuffle=False).history
    assert history["twice_loss"] == pytest.approx([2.0 * history["loss"][0]], rel=1e-6)


class EvalLogging(keras_mtl.MultiTaskModel):
    """Overrides test_step (in each replica, as in Keras) and adds a log."""

    def test_step(self, data):
        logs = super().test_step(data)
        return {**logs, "half_loss": 0.5 * logs["loss"]}


@pytest.mark.parametrize("spe", [1, 3])
def test_evaluate_returns_the_logs_of_an_overridden_test_step(spe):
    x, y = regression_data(n=48, units=(1, 1))
    model = EvalLogging([8], {"y1": 1, "y2": 1})
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=spe)
    logs = model.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    assert logs["half_loss"] == pytest.approx(0.5 * logs["loss"], rel=1e-6)


@pytest.mark.slow
def test_overridden_test_step_under_mirrored_strategy(mirrored_strategy):
    x, y = regression_data(n=64, units=(1, 1))
    with mirrored_strategy.scope():
        model = EvalLogging([8], {"y1": 1, "y2": 1})
        model.compile(optimizer="sgd", loss="mse", steps_per_execution=2)
    logs = model.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)
    assert logs["half_loss"] == pytest.approx(0.5 * logs["loss"], rel=1e-6)
