"""Saving, loading and exact resume restore everything, training included."""

import io
import json
import os
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_same_arrays

import keras_mtl


@keras.saving.register_keras_serializable(package="tests_saving")
class EveryThird(keras_mtl.samplers.Sampler):
    """Task 0 on every third step, otherwise the others uniformly."""

    def probabilities(self, step):
        third = tf.equal(tf.math.floormod(tf.cast(step, tf.int64), 3), 0)
        first = tf.one_hot(0, self.num_tasks)
        return tf.where(third, first, 1.0 - first)


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 6)).astype("float32")
    y = {
        "a": np.stack([x.sum(1), x[:, 0]], 1).astype("float32"),
        "b": (x[:, 1] * 2.99).astype("int32"),
    }
    return x, y


def _model():
    return keras_mtl.MultiTaskModel(
        [12, 8],
        {"a": 2, "b": keras_mtl.Head(3, activation="softmax", hidden_units=[6], dropout=0.1)},
        trunk_activation="tanh",
    )


CONFIGS = {
    "joint": dict(mode="joint", loss_weights={"a": 0.5, "b": 2.0}),
    "alternating": dict(mode="alternating", sampler={"a": 0.3, "b": 0.7}, seed=5),
    "task_optimizers": dict(
        mode="alternating",
        sampler=EveryThird(),
        seed=6,
        task_optimizers={"a": keras.optimizers.Adam(0.01), "b": "rmsprop"},
    ),
}


def _compile(model, name):
    config = dict(CONFIGS[name])
    if "task_optimizers" in config:  # fresh optimizer instances per model
        config["task_optimizers"] = {"a": keras.optimizers.Adam(0.01), "b": "rmsprop"}
    model.compile(
        optimizer=keras.optimizers.Adam(0.005),
        loss={"a": "mse", "b": "sparse_categorical_crossentropy"},
        metrics={"b": ["accuracy"]},
        **config,
    )


def _trainable(model):
    return [v.numpy() for v in model.trainable_weights]


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("joint", marks=pytest.mark.slow),
        "alternating",
        pytest.param("task_optimizers", marks=pytest.mark.slow),
    ],
)
def test_fit_save_load_fit_equals_uninterrupted_fit(name, tmp_path):
    x, y = _data()
    keras.utils.set_random_seed(0)
    reference = _model()
    _compile(reference, name)
    ref_history = reference.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history

    keras.utils.set_random_seed(0)
    first = _model()
    _compile(first, name)
    first.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    path = os.path.join(tmp_path, "m.keras")
    first.save(path)
    loaded = keras.models.load_model(path)
    history = loaded.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history

    assert_same_arrays(_trainable(loaded), _trainable(reference), exact=False, atol=1e-5)
    assert int(loaded.step_counter.numpy()) == int(reference.step_counter.numpy()) == 12
    if CONFIGS[name]["mode"] == "alternating":
        assert history["a_updates"] == ref_history["a_updates"][1:]
        assert loaded.task_sequence(12) == reference.task_sequence(12)


def test_loaded_model_keeps_architecture_and_compile_state(tmp_path):
    x, y = _data()
    model = _model()
    _compile(model, "task_optimizers")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects needed

    assert isinstance(loaded, keras_mtl.MultiTaskModel)
    assert loaded.trunk_units == [12, 8] and loaded.task_names == ("a", "b")
    assert loaded.heads["b"].hidden_units == (6,) and loaded.heads["b"].dropout == 0.1
    assert keras.activations.serialize(loaded.trunk_activation) == "tanh"
    assert loaded.mode == "alternating" and loaded.seed == 6
    assert isinstance(loaded.sampler, EveryThird)
    assert int(loaded.step_counter.numpy()) == 6
    for task in ("a", "b"):
        ours, theirs = model.task_optimizers[task], loaded.task_optimizers[task]
        assert type(ours) is type(theirs)
        assert_same_arrays(
            [v.numpy() for v in ours.variables], [v.numpy() for v in theirs.variables]
        )
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0)["b"], model.predict(x, verbose=0)["b"], atol=1e-6
    )


def test_loss_weights_survive_saving(tmp_path):
    model = _model()
    _compile(model, "joint")
    model.build((None, 6))
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_compile_config()["loss_weights"] == {"a": 0.5, "b": 2.0}


def test_summary_shows_trunk_and_heads(capsys):
    model = _model()
    model.build((None, 6))
    model.summary()
    out = capsys.readouterr().out
    for text in ("trunk (Sequential)", "a (Head)", "b (Head)"):
        assert text in out


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise RuntimeError("simulated crash")


@pytest.mark.parametrize("name", ["joint", "alternating", "task_optimizers"])
@pytest.mark.slow
def test_backup_and_restore_resumes_exactly(name, tmp_path):
    x, y = _data()
    keras.utils.set_random_seed(0)
    reference = _model()
    _compile(reference, name)
    reference.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0)

    backup = keras.callbacks.BackupAndRestore(os.path.join(tmp_path, "backup"))
    keras.utils.set_random_seed(0)
    crashed = _model()
    _compile(crashed, name)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit(
            x,
            y,
            batch_size=8,
            epochs=4,
            shuffle=False,
            verbose=0,
            callbacks=[backup, _Interrupt(epoch=2, batch=3)],
        )

    keras.utils.set_random_seed(99)  # a new process: different initial weights
    resumed = _model()
    _compile(resumed, name)
    history = resumed.fit(
        x,
        y,
        batch_size=8,
        epochs=4,
        shuffle=False,
        verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(os.path.join(tmp_path, "backup"))],
    )
    assert len(history.history["loss"]) == 2  # epochs 3 and 4 only
    assert_same_arrays(_trainable(resumed), _trainable(reference), exact=False, atol=1e-5)
    assert int(resumed.step_counter.numpy()) == 24


@pytest.mark.slow
def test_weights_checkpoint_restores_optimizers_and_step(tmp_path):
    x, y = _data()
    keras.utils.set_random_seed(0)
    reference = _model()
    _compile(reference, "task_optimizers")
    reference.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)

    path = os.path.join(tmp_path, "ckpt.weights.h5")
    keras.utils.set_random_seed(0)
    first = _model()
    _compile(first, "task_optimizers")
    first.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[keras.callbacks.ModelCheckpoint(path, save_weights_only=True)],
    )

    restored = _model()
    _compile(restored, "task_optimizers")
    restored.build((None, 6))
    restored.load_weights(path)
    assert int(restored.step_counter.numpy()) == 12
    restored.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert_same_arrays(_trainable(restored), _trainable(reference), exact=False, atol=1e-5)


def test_file_from_a_newer_layout_gives_a_clear_error(tmp_path):
    model = _model()
    model.compile(optimizer="adam", loss="mse")
    model.build((None, 6))
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    newer = os.path.join(tmp_path, "newer.keras")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(newer, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                config["config"]["format_version"] = 99
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    with pytest.raises(ValueError, match="newer keras_mtl.*format 99.*Upgrade keras_mtl"):
        keras.models.load_model(newer)


def test_weighting_state_of_a_0_1_0_file_loads_and_saves_under_a_public_name(tmp_path):
    data = os.path.join(os.path.dirname(__file__), "data")
    expected = np.load(os.path.join(data, "legacy_0_1_0_weighting.expected.npz"))
    model = keras.models.load_model(os.path.join(data, "legacy_0_1_0_weighting.keras"))
    state = [v.numpy() for v in model.weighting.log_variances]
    np.testing.assert_array_equal(state, expected["log_variances"])
    assert int(model.optimizer.iterations.numpy()) == int(expected["optimizer_iterations"])

    path = os.path.join(tmp_path, "again.keras")
    model.save(path)
    with (
        zipfile.ZipFile(path) as archive,
        h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as f,
    ):
        groups = []
        f.visit(groups.append)
    assert "weighting" in groups and not any(g.startswith("_") for g in groups)
    again = keras.models.load_model(path)
    np.testing.assert_array_equal([v.numpy() for v in again.weighting.log_variances], state)
