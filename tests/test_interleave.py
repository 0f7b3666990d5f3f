"""Per-task datasets of different sizes and label shapes, interleaved into one."""

import numpy as np
import pytest
import tensorflow as tf

import keras_mtl
from keras_mtl import samplers


def _two_datasets(n_fr=64, n_de=16, batch=8, seed=0):
    """Two related tasks on one 6-feature input space with different label shapes."""
    rng = np.random.default_rng(seed)
    x_fr = rng.random((n_fr, 6)).astype("float32")
    y_fr = np.stack([x_fr.sum(1), x_fr[:, 0] - x_fr[:, 1]], 1).astype("float32")
    x_de = rng.random((n_de, 6)).astype("float32")
    y_de = (x_de[:, 0] > 0.5).astype("int32") + (x_de[:, 1] > 0.5).astype("int32")
    return {
        "fr": tf.data.Dataset.from_tensor_slices((x_fr, y_fr)).batch(batch),
        "de": tf.data.Dataset.from_tensor_slices((x_de, y_de)).batch(batch),
    }


def _model():
    return keras_mtl.MultiTaskModel([16], {"fr": 2, "de": keras_mtl.Head(3, activation="softmax")})


LOSS = {"fr": "mse", "de": "sparse_categorical_crossentropy"}


def _batch_tasks(ds, n):
    """Which task each of the first n batches carries (the one with weights)."""
    out = []
    for _, _, weights in ds.take(n):
        present = [t for t, w in weights.items() if float(tf.reduce_sum(w)) > 0]
        assert len(present) == 1
        out.append(present[0])
    return out


def test_each_batch_carries_one_task_chosen_by_the_sampler():
    ds = keras_mtl.data.interleave(_two_datasets(), sampler="uniform", seed=5)
    bound = samplers.Uniform().bind(["fr", "de"])
    expected = [["fr", "de"][int(bound.sample(tf.constant(i, tf.int64), 5))] for i in range(30)]
    assert _batch_tasks(ds, 30) == expected


def test_absent_tasks_get_placeholder_labels_of_their_shape():
    ds = keras_mtl.data.interleave(_two_datasets(), sampler="round_robin", seed=0)
    x, y, w = next(iter(ds))
    assert x.shape == (8, 6)
    assert y["fr"].shape == (8, 2) and y["de"].shape == (8,)
    assert y["de"].dtype == tf.int32
    np.testing.assert_array_equal(w["de"].numpy(), np.zeros(8))
    np.testing.assert_array_equal(w["fr"].numpy(), np.ones(8))


def test_small_dataset_repeats_so_proportions_hold():
    ds = keras_mtl.data.interleave(_two_datasets(n_fr=16, n_de=8), sampler="round_robin", seed=0)
    assert _batch_tasks(ds, 12) == ["fr", "de"] * 6  # 'de' has 1 batch, reused


@pytest.mark.parametrize("mode", ["joint", "alternating"])
@pytest.mark.slow
def test_interleaved_datasets_train_in_both_modes(mode):
    ds = keras_mtl.data.interleave(_two_datasets(), sampler="proportional", seed=1)
    model = _model()
    model.compile(optimizer="adam", loss=LOSS, metrics={"de": ["accuracy"]}, mode=mode, seed=1)
    history = model.fit(
        ds, steps_per_epoch=10, epochs=3, validation_data=ds, validation_steps=4, verbose=0
    )
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["fr_loss"][-1] < history.history["fr_loss"][0]
    logs = model.evaluate(ds, steps=5, return_dict=True, verbose=0)
    assert set(logs) == {"loss", "fr_loss", "de_loss", "de_accuracy"}


def test_alternating_trains_the_batch_own_task():
    ds = keras_mtl.data.interleave(_two_datasets(), sampler="uniform", seed=9)
    expected = _batch_tasks(ds, 20)
    model = _model()
    model.compile(
        optimizer="adam", loss=LOSS, mode="alternating", sampler={"fr": 0.99, "de": 0.01}, seed=0
    )
    history = model.fit(ds, steps_per_epoch=20, epochs=1, verbose=0).history
    assert history["fr_updates"] == [expected.count("fr")]
    assert history["de_updates"] == [expected.count("de")]


@pytest.mark.slow
def test_proportional_sampling_over_1000_and_100_batches_gives_10_to_1_updates():
    rng = np.random.default_rng(0)
    big = tf.data.Dataset.from_tensor_slices(
        (rng.random((2000, 4)).astype("float32"), rng.random((2000, 1)).astype("float32"))
    ).batch(2)
    small = tf.data.Dataset.from_tensor_slices(
        (rng.random((200, 4)).astype("float32"), rng.random((200, 1)).astype("float32"))
    ).batch(2)
    ds = keras_mtl.data.interleave({"big": big, "small": small}, sampler="proportional", seed=3)
    model = keras_mtl.MultiTaskModel([4], {"big": 1, "small": 1})
    model.compile(optimizer="sgd", loss="mse", mode="alternating", seed=0, steps_per_execution=100)
    history = model.fit(ds, steps_per_epoch=1100, epochs=1, verbose=0).history
    n, p = 1100, 1000 / 1100
    assert history["big_updates"][0] + history["small_updates"][0] == n
    assert abs(history["big_updates"][0] - n * p) < 4 * np.sqrt(n * p * (1 - p))


def test_fit_on_an_interleaved_dataset_needs_steps_per_epoch():
    ds = keras_mtl.data.interleave(_two_datasets(), seed=0)
    model = _model()
    model.compile(optimizer="adam", loss=LOSS)
    with pytest.raises(ValueError, match="infinite.*steps_per_epoch"):
        model.fit(ds, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="infinite.*`steps=...`"):
        model.evaluate(ds, verbose=0)


def test_empty_task_dataset_is_rejected():
    datasets = _two_datasets()
    datasets["de"] = datasets["de"].take(0)
    with pytest.raises(ValueError, match="task 'de' is empty"):
        keras_mtl.data.interleave(datasets)


def test_empty_dataset_of_unknown_size_is_rejected():
    datasets = _two_datasets()
    datasets["de"] = datasets["de"].filter(lambda x, y: tf.reduce_sum(y) < -1)
    with pytest.raises(ValueError, match="task 'de' is empty"):
        keras_mtl.data.interleave(datasets)


def test_inputs_of_different_shape_are_rejected():
    datasets = _two_datasets()
    datasets["de"] = datasets["de"].map(lambda x, y: (x[:, :4], y))
    with pytest.raises(ValueError, match="task 'de' have shape \\(4,\\).*'fr'.*\\(6,\\)"):
        keras_mtl.data.interleave(datasets)


def test_unbatched_dataset_is_rejected():
    datasets = _two_datasets()
    datasets["fr"] = datasets["fr"].unbatch()
    with pytest.raises(ValueError, match="task 'fr'"):
        keras_mtl.data.interleave(datasets)


def test_proportional_needs_known_sizes():
    datasets = _two_datasets()
    datasets["fr"] = datasets["fr"].filter(lambda x, y: True)
    with pytest.raises(ValueError, match="proportional.*unknown for \\['fr'\\]"):
        keras_mtl.data.interleave(datasets, sampler="proportional")


def test_sample_weights_of_a_task_dataset_are_kept():
    rng = np.random.default_rng(0)
    x = rng.random((8, 6)).astype("float32")
    weighted = tf.data.Dataset.from_tensor_slices(
        (x, x[:, :2], np.arange(8, dtype="float32"))
    ).batch(8)
    datasets = _two_datasets()
    datasets["fr"] = weighted
    ds = keras_mtl.data.interleave(datasets, sampler={"fr": 1.0, "de": 0.0}, seed=0)
    _, _, w = next(iter(ds))
    np.testing.assert_array_equal(w["fr"].numpy(), np.arange(8))
