"""`fit()` on in-memory arrays: the model keeps them and gathers each step's
rows (`keras_mtl/_array_source.py`), in the batches Keras's array adapter
would give, shuffled by a seeded permutation per pass that successive and
resumed fits continue."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_same_arrays

import keras_mtl
from keras_mtl import _array_source

ROWS = 16 * 5 + 3  # 5 full batches of 16 and a last one of 3


class Recording(keras_mtl.MultiTaskModel):
    """Keeps every batch its train_step gets (run eagerly)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = []

    def train_step(self, data):
        self.batches.append(tf.nest.map_structure(lambda v: None if v is None else v, data))
        return super().train_step(data)


def rows_data(n=ROWS, seed=0):
    """x whose first column is the row's index, and two tasks' labels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype("float32")
    x[:, 0] = np.arange(n)
    return x, {"a": x[:, 1:2] * 2.0, "b": x[:, 2:3] - x[:, 3:4]}


def recording_model(mode="joint", seed=0, **compile_kwargs):
    keras.utils.set_random_seed(1)
    model = Recording([4], {"a": 1, "b": 1})
    model.compile(
        optimizer="sgd", loss="mse", mode=mode, seed=seed, run_eagerly=True, **compile_kwargs
    )
    return model


def alternating_adam():
    """A fresh seeded alternating model with Adam (for resume tests)."""
    keras.utils.set_random_seed(1)
    model = keras_mtl.MultiTaskModel([4], {"a": 1, "b": 1})
    model.compile(optimizer="adam", loss="mse", mode="alternating", seed=3)
    return model


def seen_rows(model):
    return [b[0][:, 0].numpy().astype(int) for b in model.batches]


def test_the_steps_get_the_batches_keras_array_adapter_gives():
    x, y = rows_data()
    x64 = x.astype("float64")  # Keras casts every other float to floatx
    y["b"] = None
    weights = np.linspace(0.5, 1.5, ROWS)
    model = recording_model()
    model.fit(x64, y, sample_weight=weights, batch_size=16, shuffle=False, verbose=0)
    assert [len(r) for r in seen_rows(model)] == [16] * 5 + [3]
    # What a dataset of the same arrays, batched as Keras's adapter batches
    # them, yields: one weight array repeated for every task (None labels too).
    expected = tf.data.Dataset.from_tensor_slices(
        (x, {"a": y["a"], "b": None}, {"a": weights, "b": weights})
    ).batch(16)
    for got, want in zip(model.batches, expected):
        assert tf.nest.map_structure(lambda v: None if v is None else v.dtype, got) == (
            tf.float32,
            {"a": tf.float32, "b": None},
            {"a": tf.float32, "b": tf.float32},
        )
        for g, w in zip(tf.nest.flatten(got), tf.nest.flatten(want)):
            if w is None:
                assert g is None
            else:
                np.testing.assert_array_equal(g.numpy(), w.numpy().astype(g.dtype.as_numpy_dtype))


def test_each_pass_is_a_seeded_permutation_of_every_row():
    x, y = rows_data()
    orders = []
    for seed in (0, 0, 5):
        model = recording_model(seed=seed)
        model.fit(x, y, batch_size=16, epochs=2, verbose=0)
        rows = seen_rows(model)
        orders.append([np.concatenate(rows[:6]), np.concatenate(rows[6:])])
    for first, second in orders:
        assert sorted(first) == sorted(second) == list(range(ROWS))
        assert list(first) != list(second)  # each pass draws a new order
    assert_same_arrays(orders[0], orders[1])  # the compile seed fixes them
    assert list(orders[2][0]) != list(orders[0][0])


@pytest.mark.parametrize("mode", ["joint", "alternating"])
def test_successive_fits_continue_the_shuffled_passes_of_one_fit(mode):
    x, y = rows_data()
    once = recording_model(mode)
    once.fit(x, y, batch_size=16, epochs=2, verbose=0)
    twice = recording_model(mode)
    twice.fit(x, y, batch_size=16, epochs=1, verbose=0)
    twice.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert_same_arrays(seen_rows(twice), seen_rows(once))
    assert_same_arrays(twice.get_weights(), once.get_weights())


@pytest.mark.slow
def test_a_run_resumed_from_a_saved_model_trains_as_an_uninterrupted_one(tmp_path):
    x, y = rows_data()

    uninterrupted = alternating_adam()
    uninterrupted.fit(x, y, batch_size=16, epochs=2, verbose=0)
    first = alternating_adam()
    first.fit(x, y, batch_size=16, epochs=1, verbose=0)
    first.save(tmp_path / "model.keras")
    resumed = keras.models.load_model(tmp_path / "model.keras")
    resumed.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert_same_arrays(resumed.get_weights(), uninterrupted.get_weights(), exact=False, atol=1e-6)


def test_validation_split_holds_out_the_last_rows_as_keras_does():
    x, y = rows_data()
    model = recording_model()
    logs = model.fit(x, y, batch_size=16, validation_split=0.25, verbose=0).history
    split = int(np.floor(ROWS * 0.75))
    assert sorted(np.concatenate(seen_rows(model))) == list(range(split))
    held_out = model.evaluate(
        x[split:], {t: v[split:] for t, v in y.items()}, return_dict=True, verbose=0
    )
    np.testing.assert_allclose(logs["val_loss"][0], held_out["loss"], rtol=1e-6)
    with pytest.raises(ValueError, match="not sufficient to split"):
        model.fit(x[:1], {t: v[:1] for t, v in y.items()}, validation_split=0.5, verbose=0)


def test_steps_per_epoch_continues_a_pass_across_epochs_as_keras_does():
    x, y = rows_data()
    model = recording_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras: "Your input ran out of data"
        model.fit(x, y, batch_size=16, epochs=3, steps_per_epoch=4, verbose=0)
    sizes = [len(r) for r in seen_rows(model)]
    # Keras's epoch iterator: 4 batches, the pass's last 2, then a new pass.
    assert sizes == [16, 16, 16, 16, 16, 3, 16, 16, 16, 16]
    first_pass = np.concatenate(seen_rows(model)[:6])
    assert sorted(first_pass) == list(range(ROWS))


def test_inputs_keras_adapter_keeps_are_not_held():
    x, y = rows_data()
    model = recording_model()
    model.fit(x, y, batch_size=16, verbose=0)  # builds it
    kept = _array_source.for_fit(model, x, y, None, 16, None, "batch", 0.0)
    assert kept == (None, None, None)
    ragged = tf.ragged.constant([[1.0]] * ROWS)
    assert _array_source.for_fit(model, ragged, y, None, 16, None, True, 0.0)[0] is None
    source, batches, held_out = _array_source.for_fit(model, x, y, None, 16, None, True, 0.0)
    assert source.num_batches == 6 and batches.cardinality().numpy() == 6 and held_out is None


def test_large_arrays_stay_with_keras_when_there_is_an_accelerator(monkeypatch):
    x, y = rows_data()
    model = recording_model()
    model.fit(x, y, batch_size=16, verbose=0)
    monkeypatch.setattr(_array_source, "_placed_on_accelerator", lambda: True)
    monkeypatch.setattr(_array_source, "DEVICE_BYTES_LIMIT", x.nbytes)
    assert _array_source.for_fit(model, x, y, None, 16, None, True, 0.0)[0] is None
    monkeypatch.setattr(_array_source, "DEVICE_BYTES_LIMIT", 10 * x.nbytes)
    assert _array_source.for_fit(model, x, y, None, 16, None, True, 0.0)[0] is not None


def test_under_a_strategy_keras_adapter_feeds_the_replicas(mirrored_strategy):
    x, y = rows_data()
    with mirrored_strategy.scope():
        model = keras_mtl.MultiTaskModel([4], {"a": 1, "b": 1})
        model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, batch_size=16, verbose=0)
    assert _array_source.for_fit(model, x, y, None, 16, None, True, 0.0)[0] is None
    assert int(model.step_counter.numpy()) == 6


class Crash(keras.callbacks.Callback):
    """Raises once, in the middle of the second epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == 1 and batch == 3 and not getattr(self, "crashed", False):
            self.crashed = True
            raise RuntimeError("crash")


@pytest.mark.slow
def test_a_run_restarted_by_backup_and_restore_reshuffles_as_an_uninterrupted_one(tmp_path):
    x, y = rows_data()

    uninterrupted = alternating_adam()
    uninterrupted.fit(x, y, batch_size=16, epochs=3, verbose=0)
    model, crash = alternating_adam(), Crash()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="crash"):
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[backup, crash])
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[backup, crash])
    assert_same_arrays(model.get_weights(), uninterrupted.get_weights(), exact=False, atol=1e-6)


class OnlyRecording(keras_mtl.MultiTaskModel):
    """A train_step of one's own that never advances step_counter."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = []

    def train_step(self, data):
        self.batches.append(data)
        return {"examples": tf.cast(tf.shape(data[0])[0], tf.float32)}


def test_passes_differ_when_a_train_step_does_not_advance_step_counter():
    x, y = rows_data()
    model = OnlyRecording([4], {"a": 1, "b": 1})
    model.compile(optimizer="sgd", loss="mse", seed=0, run_eagerly=True)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert int(model.step_counter.numpy()) == 0
    rows = seen_rows(model)
    first, second = np.concatenate(rows[:6]), np.concatenate(rows[6:])
    assert sorted(first) == sorted(second) == list(range(ROWS))
    assert list(first) != list(second)


def test_evaluate_on_arrays_gathers_the_batches_a_dataset_would_give():
    x, y = rows_data()
    y["b"] = np.where(np.arange(ROWS)[:, None] % 4 == 0, np.nan, y["b"]).astype("float32")
    weights = {"a": np.linspace(0.5, 1.5, ROWS).astype("float32"), "b": np.ones(ROWS, "float32")}
    model = keras_mtl.MultiTaskModel([4], {"a": 1, "b": 1})
    model.compile(optimizer="sgd", loss="mse", metrics={"a": ["mae"]}, steps_per_execution=4)
    model.fit(x, y, batch_size=16, verbose=0)
    on_arrays = model.evaluate(
        x, y, sample_weight=weights, batch_size=16, return_dict=True, verbose=0
    )
    assert model._mtl_eval_source is None  # held only while evaluate() runs
    dataset = tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(16)
    on_dataset = model.evaluate(dataset, return_dict=True, verbose=0)
    assert sorted(on_arrays) == sorted(on_dataset)
    for key in on_arrays:
        np.testing.assert_allclose(on_arrays[key], on_dataset[key], rtol=1e-6)
    # `steps` limits the batches as Keras does (one execution of 4 here).
    four = model.evaluate(x, y, batch_size=16, steps=4, return_dict=True, verbose=0)
    first = model.evaluate(x[:64], {t: v[:64] for t, v in y.items()}, return_dict=True, verbose=0)
    np.testing.assert_allclose(four["a_loss"], first["a_loss"], rtol=1e-6)
    assert four["a_loss"] != on_arrays["a_loss"]
