"""Logs carry the same keys as a Keras multi-output model; per-task callbacks work."""

import os

import keras
import numpy as np
import pytest
from helpers import functional_twin, regression_data

import keras_mtl


def _model_and_data():
    rng = np.random.default_rng(0)
    x = rng.random((64, 5)).astype("float32")
    y = {"y1": x.sum(1, keepdims=True).astype("float32"), "y2": (x[:, 0] * 2.99).astype("int32")}
    model = keras_mtl.MultiTaskModel([8], {"y1": 1, "y2": keras_mtl.Head(3, activation="softmax")})
    return model, x, y


COMPILE = dict(
    loss={"y1": "mse", "y2": "sparse_categorical_crossentropy"},
    metrics={"y1": ["mae"], "y2": ["accuracy"]},
)


@pytest.mark.slow
def test_joint_logs_have_the_keys_of_a_functional_model():
    model, x, y = _model_and_data()
    model.build((None, 5))
    twin = functional_twin(model)
    model.compile(optimizer="adam", **COMPILE)
    twin.compile(optimizer="adam", **COMPILE)
    ours = model.fit(x, y, epochs=1, validation_data=(x, y), verbose=0).history
    theirs = twin.fit(x, y, epochs=1, validation_data=(x, y), verbose=0).history
    assert set(ours) == set(theirs)
    assert {"loss", "y1_loss", "y2_loss", "y1_mae", "y2_accuracy", "val_y1_loss"} <= set(ours)


@pytest.mark.slow
def test_alternating_logs_add_update_counts_for_training_only():
    model, x, y = _model_and_data()
    model.compile(optimizer="adam", mode="alternating", seed=0, **COMPILE)
    history = model.fit(x, y, batch_size=8, epochs=2, validation_data=(x, y), verbose=0).history
    assert {"y1_updates", "y2_updates"} <= set(history)
    assert not any(k.startswith("val_") and k.endswith("_updates") for k in history)
    for epoch in range(2):
        assert history["y1_updates"][epoch] + history["y2_updates"][epoch] == 8
    evaluation = model.evaluate(x, y, return_dict=True, verbose=0)
    assert set(evaluation) == {"loss", "y1_loss", "y2_loss", "y1_mae", "y2_accuracy"}


def test_alternating_task_loss_averages_over_steps_that_trained_it():
    model, x, y = _model_and_data()
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        mode="alternating",
        sampler={"y1": 1.0, "y2": 0.0},
        **COMPILE,
    )
    history = model.fit(x, y, batch_size=64, epochs=1, verbose=0).history
    expected = model.evaluate(x, y, return_dict=True, verbose=0)
    np.testing.assert_allclose(history["y1_loss"][0], expected["y1_loss"], rtol=1e-5)
    assert np.isnan(history["y2_loss"][0])  # never trained this epoch: NaN, not a 0 "best"
    assert history["y2_updates"][0] == 0.0


@pytest.mark.parametrize("mode", ["joint", pytest.param("alternating", marks=pytest.mark.slow)])
def test_early_stopping_on_a_task_loss_infers_min_mode(mode):
    model, x, y = _model_and_data()
    model.compile(optimizer=keras.optimizers.SGD(0.0), mode=mode, **COMPILE)
    stop = keras.callbacks.EarlyStopping(monitor="val_y1_loss", patience=1, min_delta=1.0)
    history = model.fit(x, y, epochs=10, validation_data=(x, y), callbacks=[stop], verbose=0)
    assert stop.monitor_op == keras.ops.less
    assert len(history.history["loss"]) == 2  # no improvement of 1.0: stops after patience


@pytest.mark.slow
def test_model_checkpoint_on_a_task_metric_keeps_the_best(tmp_path):
    model, x, y = _model_and_data()
    model.compile(optimizer="adam", mode="alternating", seed=1, **COMPILE)
    path = os.path.join(tmp_path, "best.weights.h5")
    checkpoint = keras.callbacks.ModelCheckpoint(
        path, monitor="val_y2_accuracy", save_best_only=True, save_weights_only=True
    )
    model.fit(x, y, epochs=2, validation_data=(x, y), callbacks=[checkpoint], verbose=0)
    assert checkpoint.monitor_op == keras.ops.greater
    assert os.path.exists(path)
    assert checkpoint.best == pytest.approx(max(model.history.history["val_y2_accuracy"]))


def test_progress_bar_shows_every_task_loss(capsys):
    model, x, y = _model_and_data()
    model.compile(optimizer="adam", mode="alternating", seed=0, **COMPILE)
    model.fit(x, y, epochs=1, verbose=1)
    out = capsys.readouterr().out
    for key in ("y1_loss", "y2_loss", "y1_updates"):
        assert key in out


def test_predict_returns_a_dict_of_arrays():
    x, y = regression_data(n=40)
    model = keras_mtl.MultiTaskModel([8], {"y1": 20, "y2": 20})
    model.compile(optimizer="adam", loss="mse")
    predictions = model.predict(x, batch_size=16, verbose=0)
    assert set(predictions) == {"y1", "y2"}
    assert predictions["y1"].shape == (40, 20)
    assert isinstance(predictions["y2"], np.ndarray)
