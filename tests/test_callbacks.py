"""TaskTensorBoard: per-task scalar tags, read back from the event files it writes."""

import collections
import glob
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl
from keras_mtl.callbacks import TaskTensorBoard, group_logs_by_task


def read_scalars(run_dir):
    """{tag: {step: value}} and {tag: plugin names} from the event files in `run_dir`."""
    values = collections.defaultdict(dict)
    plugins = collections.defaultdict(set)
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.HasField("tensor"):
                    values[value.tag][event.step] = float(tf.make_ndarray(value.tensor))
                elif value.HasField("simple_value"):
                    values[value.tag][event.step] = value.simple_value
                if value.metadata.plugin_data.plugin_name:
                    plugins[value.tag].add(value.metadata.plugin_data.plugin_name)
    return dict(values), dict(plugins)


def epoch_tags(values):
    return {tag for tag in values if tag.startswith("epoch_")}


def _data(n=32):
    rng = np.random.default_rng(0)
    x = rng.random((n, 5)).astype("float32")
    return x, {"y1": x.sum(1, keepdims=True), "y2": (x[:, 0] * 2.99).astype("int32")}


def _model():
    return keras_mtl.MultiTaskModel([8], {"y1": 1, "y2": keras_mtl.Head(3, activation="softmax")})


COMPILE = dict(
    optimizer="adam",
    loss={"y1": "mse", "y2": "sparse_categorical_crossentropy"},
    metrics={"y1": ["mae"], "y2": ["accuracy"]},
)


def test_group_logs_renames_task_keys_and_keeps_totals():
    logs = {
        "loss": 1.0,
        "val_loss": 2.0,
        "y1_loss": 0.5,
        "y1_mae": 0.25,
        "val_y1_loss": 0.75,
        "learning_rate": 0.001,
    }
    assert group_logs_by_task(logs, ("y1", "y2")) == {
        "loss": 1.0,
        "val_loss": 2.0,
        "y1/loss": 0.5,
        "y1/mae": 0.25,
        "val_y1/loss": 0.75,
        "learning_rate": 0.001,
    }


def test_group_logs_matches_the_longest_task_name():
    logs = {
        "a_loss": 1.0,
        "a_b_loss": 2.0,
        "a_b_c_mae": 3.0,
        "val_a_b_loss": 4.0,
        "val_a_b_mae": 5.0,
    }
    assert group_logs_by_task(logs, ("a", "a_b")) == {
        "a/loss": 1.0,
        "a_b/loss": 2.0,
        "a_b/c_mae": 3.0,
        "val_a_b/loss": 4.0,
        "val_a_b/mae": 5.0,
    }


def test_group_logs_adds_each_tasks_share_of_the_updates():
    grouped = group_logs_by_task({"y1_updates": 6.0, "y2_updates": 2.0}, ("y1", "y2"))
    assert grouped == {
        "y1/updates": 6.0,
        "y2/updates": 2.0,
        "y1/update_share": 0.75,
        "y2/update_share": 0.25,
    }


def test_group_logs_update_share_is_nan_when_no_step_ran():
    grouped = group_logs_by_task({"y1_updates": 0.0, "y2_updates": 0.0}, ("y1", "y2"))
    assert math.isnan(grouped["y1/update_share"]) and math.isnan(grouped["y2/update_share"])


def test_group_logs_leaves_the_given_logs_unchanged():
    logs = {"loss": 1.0, "y1_loss": 0.5, "y1_updates": 3.0}
    group_logs_by_task(logs, ("y1",))
    assert logs == {"loss": 1.0, "y1_loss": 0.5, "y1_updates": 3.0}


def test_task_tensorboard_writes_epoch_scalars_grouped_per_task(tmp_path):
    x, y = _data()
    model = _model()
    model.compile(**COMPILE)
    board = TaskTensorBoard(log_dir=str(tmp_path))
    history = model.fit(
        x, y, epochs=2, batch_size=16, validation_data=(x, y), callbacks=[board], verbose=0
    ).history

    train, train_plugins = read_scalars(os.path.join(tmp_path, "train"))
    assert epoch_tags(train) == {
        "epoch_loss",
        "epoch_learning_rate",
        "epoch_y1/loss",
        "epoch_y1/mae",
        "epoch_y2/loss",
        "epoch_y2/accuracy",
    }
    assert all(train_plugins[t] == {"scalars"} for t in epoch_tags(train))
    for key, tag in (
        ("loss", "epoch_loss"),
        ("y1_mae", "epoch_y1/mae"),
        ("y2_accuracy", "epoch_y2/accuracy"),
    ):
        np.testing.assert_allclose([train[tag][0], train[tag][1]], history[key], rtol=1e-6)

    validation, _ = read_scalars(os.path.join(tmp_path, "validation"))
    assert epoch_tags(validation) == {
        "epoch_loss",
        "epoch_y1/loss",
        "epoch_y1/mae",
        "epoch_y2/loss",
        "epoch_y2/accuracy",
    }
    np.testing.assert_allclose(
        [validation["epoch_y1/loss"][e] for e in (0, 1)], history["val_y1_loss"], rtol=1e-6
    )


def test_task_tensorboard_logs_updates_and_their_share_in_alternating_mode(tmp_path):
    x, y = _data()
    model = _model()
    model.compile(mode="alternating", seed=3, **COMPILE)
    board = TaskTensorBoard(log_dir=str(tmp_path), write_graph=False)
    history = model.fit(x, y, epochs=2, batch_size=4, callbacks=[board], verbose=0).history

    train, _ = read_scalars(os.path.join(tmp_path, "train"))
    for epoch in (0, 1):
        steps = history["y1_updates"][epoch] + history["y2_updates"][epoch]
        assert steps == 8
        for task in ("y1", "y2"):
            assert train[f"epoch_{task}/updates"][epoch] == history[f"{task}_updates"][epoch]
            assert train[f"epoch_{task}/update_share"][epoch] == pytest.approx(
                history[f"{task}_updates"][epoch] / 8
            )
    assert not any("_updates" in tag for tag in train)


def test_task_tensorboard_tells_a_task_from_a_longer_task_it_prefixes(tmp_path):
    x, _ = _data()
    model = keras_mtl.MultiTaskModel([4], {"a": 1, "a_b": 1})
    model.compile(optimizer="adam", loss="mse", metrics={"a_b": ["mae"]})
    board = TaskTensorBoard(log_dir=str(tmp_path), write_graph=False)
    history = model.fit(
        x, {"a": x[:, :1], "a_b": x[:, 1:2]}, epochs=1, batch_size=32, callbacks=[board], verbose=0
    ).history

    train, _ = read_scalars(os.path.join(tmp_path, "train"))
    assert epoch_tags(train) == {
        "epoch_loss",
        "epoch_learning_rate",
        "epoch_a/loss",
        "epoch_a_b/loss",
        "epoch_a_b/mae",
    }
    assert train["epoch_a_b/loss"][0] == pytest.approx(history["a_b_loss"][0], rel=1e-6)


def test_task_tensorboard_groups_batch_scalars_too(tmp_path):
    x, y = _data()
    model = _model()
    model.compile(**COMPILE)
    board = TaskTensorBoard(log_dir=str(tmp_path), write_graph=False, update_freq="batch")
    model.fit(x, y, epochs=1, batch_size=8, callbacks=[board], verbose=0)

    train, _ = read_scalars(os.path.join(tmp_path, "train"))
    batch_tags = {tag for tag in train if tag.startswith("batch_")}
    assert {"batch_loss", "batch_y1/loss", "batch_y2/accuracy"} <= batch_tags
    assert not any(tag.startswith(("batch_y1_", "batch_y2_")) for tag in batch_tags)
    assert sorted(train["batch_y1/loss"]) == [1, 2, 3, 4]  # one per step


def test_task_tensorboard_does_not_change_the_logs_other_callbacks_see(tmp_path):
    x, y = _data()
    model = _model()
    model.compile(**COMPILE)
    board = TaskTensorBoard(log_dir=str(tmp_path), write_graph=False)
    history = model.fit(x, y, epochs=1, callbacks=[board], verbose=0).history
    assert {"y1_loss", "y1_mae", "y2_accuracy"} <= set(history)
    assert not any("/" in key for key in history)


def test_task_tensorboard_rejects_a_model_without_task_names(tmp_path):
    inputs = keras.Input((5,))
    plain = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    plain.compile(optimizer="adam", loss="mse")
    expected = r"TaskTensorBoard needs a keras_mtl.MultiTaskModel.*Functional"
    with pytest.raises(TypeError, match=expected):
        plain.fit(
            np.ones((4, 5)),
            np.ones((4, 1)),
            epochs=1,
            verbose=0,
            callbacks=[TaskTensorBoard(log_dir=str(tmp_path))],
        )
