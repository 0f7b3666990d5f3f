"""Mistakes get a clear, early error that names the task or argument."""

import numpy as np
import pytest
import tensorflow as tf
from helpers import regression_data

import keras_mtl


def _model(**kwargs):
    return keras_mtl.MultiTaskModel([8], {"y1": 20, "y2": 20}, **kwargs)


# ---------------------------------------------------------------- constructor
@pytest.mark.parametrize("trunk_units", [[], [0], [8, -1], 8, "64", [8.5]])
def test_bad_trunk_units_are_rejected(trunk_units):
    with pytest.raises(ValueError, match="`trunk` must be"):
        keras_mtl.MultiTaskModel(trunk_units, {"y1": 1})
    with pytest.raises(ValueError, match="`trunk_units` must be"):
        keras_mtl.MultiTaskModel(trunk_units=trunk_units, heads={"y1": 1})


def test_no_heads_is_rejected():
    with pytest.raises(ValueError, match="at least one task head"):
        keras_mtl.MultiTaskModel([8], {})


@pytest.mark.parametrize("name", ["my task", "1y", "class", "", "loss", "trunk", "val_y"])
def test_bad_head_names_are_rejected(name):
    with pytest.raises(ValueError, match="name"):
        keras_mtl.MultiTaskModel([8], {name: 1})


def test_duplicate_head_names_are_rejected():
    with pytest.raises(ValueError, match="unique.*'y1'"):
        keras_mtl.MultiTaskModel([8], [("y1", 1), ("y1", 2)])


def test_unknown_activation_is_rejected():
    with pytest.raises(ValueError, match="trunk_activation.*'relux'"):
        keras_mtl.MultiTaskModel([8], {"y1": 1}, trunk_activation="relux")
    with pytest.raises(ValueError, match="Head\\(activation\\)"):
        keras_mtl.Head(3, activation="softmaxx")


@pytest.mark.parametrize("units", [0, -2, 2.5, True])
def test_head_with_bad_units_is_rejected(units):
    with pytest.raises(ValueError, match="units"):
        keras_mtl.Head(units)
    with pytest.raises(ValueError, match="units"):
        keras_mtl.MultiTaskModel([8], {"y1": units})


# -------------------------------------------------------------------- compile
def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="mode.*'alternate'"):
        _model().compile(loss="mse", mode="alternate")


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        (dict(loss={"y1": "mse", "y2": "mse", "y3": "mse"}), "loss"),
        (dict(loss="mse", loss_weights={"y3": 1.0}), "loss_weights"),
        (dict(loss="mse", metrics={"y3": ["mae"]}), "metrics"),
        (dict(loss="mse", mode="alternating", sampler={"y1": 0.5, "y3": 0.5}), "Fixed"),
        (dict(loss="mse", mode="alternating", task_optimizers={"y3": "adam"}), "task_optimizers"),
    ],
)
def test_unknown_head_names_in_compile_are_rejected(kwargs, arg):
    with pytest.raises(ValueError, match=f"{arg}.*'y3'"):
        _model().compile(**kwargs)


def test_missing_loss_for_a_head_is_rejected_with_the_fix():
    with pytest.raises(ValueError, match="no entry for task.*'y2'.*None"):
        _model().compile(loss={"y1": "mse"})


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_bad_loss_weights_are_rejected(weight):
    with pytest.raises(ValueError, match="loss_weights.*'y2'"):
        _model().compile(loss="mse", loss_weights={"y2": weight})


@pytest.mark.parametrize("arg", ["sampler", "task_optimizers"])
def test_alternating_only_arguments_are_rejected_in_joint_mode(arg):
    value = "uniform" if arg == "sampler" else {"y1": "adam"}
    with pytest.raises(ValueError, match=f"{arg}.*only applies to mode='alternating'"):
        _model().compile(loss="mse", mode="joint", **{arg: value})


@pytest.mark.parametrize(
    "sampler, message",
    [
        ({"y1": -0.1, "y2": 1.0}, "'y1'"),
        ({"y1": float("nan"), "y2": 1.0}, "'y1'"),
        ({"y1": 0.0, "y2": 0.0}, "every task weight 0"),
        ({"y1": 1.0}, "missing task.*'y2'"),
        ("biased", "Unknown sampler"),
    ],
)
def test_bad_sampler_is_rejected_at_compile(sampler, message):
    with pytest.raises(ValueError, match=message):
        _model().compile(loss="mse", mode="alternating", sampler=sampler)


def test_shared_task_optimizer_instance_is_rejected():
    import keras

    adam = keras.optimizers.Adam()
    with pytest.raises(ValueError, match="own optimizer instance"):
        _model().compile(loss="mse", mode="alternating", task_optimizers={"y1": adam, "y2": adam})


def test_unknown_loss_name_names_the_task():
    with pytest.raises(ValueError, match="Unknown loss 'msee' for task 'y2'"):
        _model().compile(loss={"y1": "mse", "y2": "msee"})


def test_all_losses_none_is_rejected():
    with pytest.raises(ValueError, match="nothing would be trained"):
        _model().compile(loss={"y1": None, "y2": None})


# ---------------------------------------------------------------- fit / data
def test_targets_as_a_list_explain_the_dict_form():
    x, y = regression_data(n=16)
    model = _model()
    model.compile(loss="mse")
    with pytest.raises(ValueError, match=r"dict keyed by task name.*'y1': y_y1"):
        model.fit(x, [y["y1"], y["y2"]], verbose=0)
    with pytest.raises(ValueError, match="dict keyed by task name"):
        model.fit(x, y["y1"], verbose=0)


def test_targets_with_unknown_task_are_rejected():
    x, y = regression_data(n=16)
    model = _model()
    model.compile(loss="mse")
    with pytest.raises(ValueError, match="unknown task.*'y3'"):
        model.fit(x, {**y, "y3": y["y1"]}, verbose=0)


def test_targets_missing_a_task_are_rejected_unless_marked_absent():
    x, y = regression_data(n=16)
    model = _model()
    model.compile(loss="mse")
    with pytest.raises(ValueError, match="no labels for task.*'y2'.*None"):
        model.fit(x, {"y1": y["y1"]}, verbose=0)
    model.fit(x, {"y1": y["y1"], "y2": None}, verbose=0)  # explicit: absent


def test_dataset_with_list_targets_is_rejected_before_training():
    x, y = regression_data(n=16)
    model = _model()
    model.compile(loss="mse")
    ds = tf.data.Dataset.from_tensor_slices((x, (y["y1"], y["y2"]))).batch(4)
    with pytest.raises(ValueError, match="dict keyed by task name"):
        model.fit(ds, verbose=0)


def test_label_shape_mismatch_names_task_and_shapes():
    x, y = regression_data(n=16)
    model = _model()
    model.compile(loss="mse")
    with pytest.raises(
        ValueError, match=r"task 'y2' have shape \(batch, 3\).*head outputs \(batch, 20\)"
    ):
        model.fit(x, {"y1": y["y1"], "y2": y["y2"][:, :3]}, verbose=0)


def test_rank_one_labels_for_a_wide_head_are_rejected():
    # mse would silently broadcast (batch,) against (batch, 20).
    x, y = regression_data(n=16)
    model = _model()
    model.compile(loss="mse")
    with pytest.raises(ValueError, match="task 'y1'"):
        model.fit(x, {"y1": y["y1"][:, 0], "y2": y["y2"]}, verbose=0)


def test_sparse_labels_must_be_class_ids():
    x, _ = regression_data(n=16)
    model = keras_mtl.MultiTaskModel([8], {"c": keras_mtl.Head(3, activation="softmax")})
    model.compile(loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="task 'c'.*integer class ids"):
        model.fit(x, {"c": np.zeros((16, 3), "int32")}, verbose=0)


def test_label_length_mismatch_names_the_task():
    x, y = regression_data(n=16)
    model = _model()
    model.compile(loss="mse")
    with pytest.raises(ValueError, match="task 'y2' have 10 rows but x has 16"):
        model.fit(x, {"y1": y["y1"], "y2": y["y2"][:10]}, verbose=0)


def test_empty_inputs_are_rejected():
    model = _model()
    model.compile(loss="mse")
    with pytest.raises(ValueError, match="no examples"):
        model.fit(
            np.zeros((0, 10), "float32"),
            {"y1": np.zeros((0, 20)), "y2": np.zeros((0, 20))},
            verbose=0,
        )
    empty = tf.data.Dataset.from_tensor_slices(
        (np.zeros((0, 10), "float32"), {"y1": np.zeros((0, 20)), "y2": np.zeros((0, 20))})
    ).batch(4)
    with pytest.raises(ValueError, match="empty"):
        model.fit(empty, verbose=0)


def test_class_weight_must_be_keyed_by_task():
    x, y = regression_data(n=16)
    model = _model()
    model.compile(loss="mse")
    with pytest.raises(ValueError, match="class_weight` must be a dict keyed by task.*'y1'"):
        model.fit(x, y, class_weight={0: 1.0}, verbose=0)


def test_task_sequence_needs_alternating_mode():
    model = _model()
    model.compile(loss="mse")
    with pytest.raises(ValueError, match="alternating"):
        model.task_sequence(3)
