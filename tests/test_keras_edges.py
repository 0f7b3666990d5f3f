"""Edges where MultiTaskModel must behave as Keras users expect.

Regression specs for: NaN logs of tasks without labels (6), metric names
on recompile (7), comparable `loss`/`val_loss` (8), evaluate's loss (9),
custom and reduced losses (10), `y={task: None}` everywhere (11), inputs the
trunk cannot take and frozen models (12), freezing through save/load (15),
DataFrame targets, changing label ranks and per-task class weights (17),
and label shapes checked on every call (18).
"""

import math
import os
import warnings

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import keras_mtl


def _data(n=32, features=4, seed=0):
    """`x (n, features)` and 1-unit regression labels for tasks a and b."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, features)).astype("float32")
    y = {
        "a": x.sum(1, keepdims=True).astype("float32"),
        "b": x[:, :1].astype("float32"),
    }
    return x, y


def _model(**kwargs):
    return keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1}, **kwargs)


def _weights(model):
    return [w.copy() for w in model.get_weights()]


def _assert_same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def _twin_models(make, input_dim):
    """Two models from `make()` with the same initial weights."""
    first, second = make(), make()
    first.build((None, input_dim))
    second.build((None, input_dim))
    second.set_weights(first.get_weights())
    return first, second


# ------------------------------------------------------- 6. NaN, never 0.0
def test_unsampled_task_logs_nan_not_zero_in_alternating_training():
    x, y = _data()
    model = _model()
    model.compile(
        optimizer="sgd",
        loss="mse",
        metrics={"a": ["mae"], "b": ["mae"]},
        mode="alternating",
        sampler={"a": 1.0, "b": 0.0},
        seed=0,
    )
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert history["b_updates"] == [0.0]
    assert math.isnan(history["b_loss"][0]), history["b_loss"]
    assert math.isnan(history["b_mae"][0]), history["b_mae"]
    assert math.isfinite(history["a_loss"][0]) and math.isfinite(history["a_mae"][0])
    assert math.isfinite(history["loss"][0])


def test_task_without_labels_logs_nan_not_zero_in_joint_training():
    x, y = _data()
    model = _model()
    model.compile(optimizer="sgd", loss="mse", metrics={"a": ["mae"], "b": ["mae"]})
    history = model.fit(x, {"a": y["a"], "b": None}, batch_size=8, epochs=1, verbose=0).history
    assert math.isnan(history["b_loss"][0]), history["b_loss"]
    assert math.isnan(history["b_mae"][0]), history["b_mae"]
    assert math.isfinite(history["loss"][0])


@pytest.mark.slow
def test_validation_task_with_absent_labels_logs_nan_not_zero():
    x, y = _data()
    model = _model()
    model.compile(optimizer="sgd", loss="mse", metrics={"a": ["mae"], "b": ["mae"]})
    history = model.fit(
        x, y, batch_size=8, epochs=1, verbose=0, validation_data=(x, {"a": y["a"], "b": None})
    ).history
    assert math.isnan(history["val_b_loss"][0]), history["val_b_loss"]
    assert math.isnan(history["val_b_mae"][0]), history["val_b_mae"]
    assert math.isfinite(history["val_a_loss"][0])
    assert math.isfinite(history["val_loss"][0])


def test_validation_task_with_all_nan_labels_logs_nan_not_zero():
    x, y = _data()
    model = _model()
    model.compile(optimizer="sgd", loss="mse", metrics={"a": ["mae"], "b": ["mae"]})
    nan_b = np.full_like(y["b"], np.nan)
    history = model.fit(
        x, y, batch_size=8, epochs=1, verbose=0, validation_data=(x, {"a": y["a"], "b": nan_b})
    ).history
    assert math.isnan(history["val_b_loss"][0]), history["val_b_loss"]
    assert math.isnan(history["val_b_mae"][0]), history["val_b_mae"]
    assert math.isfinite(history["val_loss"][0])


@pytest.mark.slow
def test_model_checkpoint_does_not_save_when_monitored_task_loss_is_nan(tmp_path):
    x, y = _data()
    path = os.path.join(tmp_path, "best.keras")
    # Keras 3 counts the first monitored value as an improvement over
    # `best=None` whatever it is (NaN included), so start from +inf: any
    # finite value improves on it (0.0 today), NaN never does.
    checkpoint = keras.callbacks.ModelCheckpoint(
        path,
        save_best_only=True,
        monitor="val_b_loss",
        mode="min",
        initial_value_threshold=float("inf"),
    )
    model = _model()
    model.compile(optimizer="sgd", loss="mse")
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=1,
        verbose=0,
        callbacks=[checkpoint],
        validation_data=(x, {"a": y["a"], "b": None}),
    )
    assert not os.path.exists(path), "saved a 'best' model for a task that had no labels"
    # The same callback saves as soon as b's validation labels are there.
    model.fit(
        x, y, batch_size=8, epochs=1, verbose=0, callbacks=[checkpoint], validation_data=(x, y)
    )
    assert os.path.exists(path)


@pytest.mark.slow
def test_terminate_on_nan_keeps_training_when_a_task_was_not_sampled():
    x, y = _data()
    model = _model()
    model.compile(
        optimizer="sgd", loss="mse", mode="alternating", sampler={"a": 1.0, "b": 0.0}, seed=0
    )
    history = model.fit(
        x, y, batch_size=8, epochs=2, verbose=0, callbacks=[keras.callbacks.TerminateOnNaN()]
    ).history
    assert all(math.isnan(v) for v in history["b_loss"]), history["b_loss"]
    assert len(history["loss"]) == 2
    assert all(math.isfinite(v) for v in history["loss"])


# ------------------------------------------------ 7. metric instance names
def test_compile_does_not_rename_the_users_metric_instance():
    mae = keras.metrics.MeanAbsoluteError()
    model = _model()
    model.compile(optimizer="sgd", loss="mse", metrics={"a": [mae]})
    assert mae.name == "mean_absolute_error"


@pytest.mark.slow
def test_recompiling_with_the_same_metric_instance_keeps_log_names():
    x, y = _data()
    mae = keras.metrics.MeanAbsoluteError()
    model = _model()
    for _ in range(2):
        model.compile(optimizer="sgd", loss="mse", metrics={"a": [mae]})
        history = model.fit(x, y, batch_size=8, epochs=1, verbose=0, validation_data=(x, y)).history
        assert "a_mean_absolute_error" in history, sorted(history)
        assert "val_a_mean_absolute_error" in history, sorted(history)
        assert not any("a_a_" in k for k in history), sorted(history)


def test_one_metric_instance_given_to_two_tasks_logs_each_task_separately():
    x, y = _data()
    y = {"a": y["a"], "b": y["b"] + 100.0}  # b's error is far larger than a's
    shared = keras.metrics.MeanAbsoluteError()
    model = _model()
    model.compile(
        optimizer=keras.optimizers.SGD(0.0), loss="mse", metrics={"a": [shared], "b": [shared]}
    )
    logs = model.evaluate(x, y, batch_size=8, return_dict=True, verbose=0)
    assert "a_mean_absolute_error" in logs and "b_mean_absolute_error" in logs, sorted(logs)
    pred = model.predict(x, verbose=0)
    for task in ("a", "b"):
        expected = np.mean(np.abs(pred[task] - y[task]))
        np.testing.assert_allclose(logs[f"{task}_mean_absolute_error"], expected, rtol=1e-5)
    assert logs["a_mean_absolute_error"] != pytest.approx(logs["b_mean_absolute_error"], rel=1e-2)


# ------------------------------------------- 8. loss comparable to val_loss
@pytest.mark.slow
def test_alternating_training_loss_is_the_weighted_sum_like_val_loss():
    rng = np.random.default_rng(0)
    batch_x = rng.random((8, 4)).astype("float32")
    batch_y = {"a": batch_x.sum(1, keepdims=True), "b": batch_x[:, :1] - 1.0}
    x = np.tile(batch_x, (4, 1))
    y = {t: np.tile(v, (4, 1)) for t, v in batch_y.items()}
    model = _model()
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss="mse",
        mode="alternating",
        sampler="round_robin",
        loss_weights={"a": 1.0, "b": 3.0},
        seed=0,
    )
    history = model.fit(
        x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, validation_data=(x, y)
    ).history
    assert history["a_updates"] == [2.0] and history["b_updates"] == [2.0]
    weighted_sum = history["a_loss"][0] + 3.0 * history["b_loss"][0]
    assert history["loss"][0] == pytest.approx(weighted_sum, rel=1e-5)
    assert history["loss"][0] == pytest.approx(history["val_loss"][0], rel=1e-5)


# --------------------------------------------- 9. evaluate's loss is stable
def test_evaluate_loss_ignores_labels_of_untrained_tasks():
    x, y = _data(n=16)
    model = keras_mtl.MultiTaskModel(
        [8], {"a": 1, "u": 1}, kernel_regularizer=keras.regularizers.L2(0.1)
    )
    model.compile(optimizer="sgd", loss={"a": "mse", "u": None})
    without_u = model.evaluate(x, {"a": y["a"]}, return_dict=True, verbose=0)
    with_u = model.evaluate(x, {"a": y["a"], "u": y["b"]}, return_dict=True, verbose=0)
    assert with_u["loss"] == pytest.approx(without_u["loss"], rel=1e-6)


# ------------------------------------------------------------- 10. losses
def _classification_data(n=32, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4)).astype("float32")
    labels = (x[:, 0] * (classes - 0.01)).astype("int32")
    return x, labels


def _classifier():
    return keras_mtl.MultiTaskModel([8], {"cls": keras_mtl.Head(3, activation="softmax")})


def test_plain_function_sparse_loss_trains_like_the_builtin_sparse_loss():
    def my_ce(y, p):
        return keras.losses.sparse_categorical_crossentropy(y, p)

    x, labels = _classification_data()
    custom, builtin = _twin_models(_classifier, 4)
    custom.compile(optimizer="sgd", loss={"cls": my_ce})
    builtin.compile(optimizer="sgd", loss={"cls": "sparse_categorical_crossentropy"})
    ours = custom.fit(x, {"cls": labels}, batch_size=8, shuffle=False, verbose=0).history
    theirs = builtin.fit(x, {"cls": labels}, batch_size=8, shuffle=False, verbose=0).history
    assert ours["cls_loss"][0] == pytest.approx(theirs["cls_loss"][0], rel=1e-5)


@pytest.mark.slow
def test_sum_reduction_loss_sums_over_the_batch():
    x, y = _data(n=16)
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    mean_loss = model.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)["a_loss"]
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss={"a": keras.losses.MeanSquaredError(reduction="sum"), "b": "mse"},
    )
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    sum_loss = model.evaluate(x, y, batch_size=16, return_dict=True, verbose=0)["a_loss"]
    assert sum_loss == pytest.approx(16 * mean_loss, rel=1e-5)


def test_mean_with_sample_weight_reduction_divides_by_the_present_weights():
    x, y = _data(n=16)
    weights = np.linspace(0.5, 4.0, 16).astype("float32")
    weights[::4] = 0.0  # four missing labels
    model = _model()
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss={"a": keras.losses.MeanSquaredError(reduction="mean_with_sample_weight"), "b": "mse"},
    )
    logs = model.evaluate(
        x, y, sample_weight={"a": weights}, batch_size=16, return_dict=True, verbose=0
    )
    errors = (model.predict(x, verbose=0)["a"] - y["a"])[:, 0] ** 2
    assert logs["a_loss"] == pytest.approx(
        float((weights * errors).sum() / weights.sum()), rel=1e-5
    )


# Guards for the fixes of 10(a) and 10(b) (they already pass before them):
# accepting reduction="sum" must not let unreduced losses in, and accepting
# function losses with class-id labels must not loosen built-in dense losses.
@pytest.mark.parametrize("reduction", [None, "none"])
def test_unreduced_loss_is_refused_at_compile(reduction):
    model = _model()
    with pytest.raises(ValueError, match=r"(?s)(task 'a'.*reduction|reduction.*task 'a')"):
        model.compile(loss={"a": keras.losses.MeanSquaredError(reduction=reduction), "b": "mse"})


def test_dense_builtin_loss_still_refuses_class_id_labels_for_a_wide_head():
    x, labels = _classification_data(n=16)
    model = _classifier()
    model.compile(optimizer="sgd", loss={"cls": "mse"})
    model.build((None, 4))
    before = _weights(model)
    with pytest.raises(ValueError, match="task 'cls'"):
        model.fit(x, {"cls": labels.astype("float32")}, verbose=0)
    _assert_same(before, _weights(model))


# ------------------------------------------- 11. y={task: None} everywhere
def test_fit_with_dataframe_x_accepts_a_task_marked_absent():
    x, y = _data()
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    model = _model()
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(frame, {"a": y["a"], "b": None}, batch_size=8, verbose=0).history
    assert math.isfinite(history["a_loss"][0])


def test_train_on_batch_accepts_a_task_marked_absent():
    x, y = _data(n=16)
    model = _model()
    model.compile(optimizer="sgd", loss="mse")
    logs = model.train_on_batch(x, {"a": y["a"], "b": None}, return_dict=True)
    assert math.isfinite(logs["a_loss"]) and math.isfinite(logs["loss"])


def test_test_on_batch_accepts_a_task_marked_absent_and_logs_nan():
    x, y = _data(n=16)
    model = _model()
    model.compile(optimizer="sgd", loss="mse")
    logs = model.test_on_batch(x, {"a": y["a"], "b": None}, return_dict=True)
    assert math.isfinite(logs["a_loss"]) and math.isfinite(logs["loss"])
    assert math.isnan(logs["b_loss"])


# ----------------------------------- 12. inputs the trunk cannot take, frozen
def test_dict_x_is_refused_with_a_clear_message():
    x, y = _data()
    model = _model()
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match=r"(?s)x.*\(batch, features\)"):
        model.fit({"f0": x[:, :2], "f1": x[:, 2:]}, y, verbose=0)


def test_fit_with_nothing_trainable_is_refused_before_any_step():
    x, y = _data()
    model = _model()
    model.trainable = False
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="trainable"):
        model.fit(x, y, batch_size=8, verbose=0)
    assert int(model.step_counter.numpy()) == 0


@pytest.mark.slow
def test_freezing_the_trunk_after_fit_needs_compile_again_then_keeps_it_fixed():
    x, y = _data()
    model = _model()
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, batch_size=8, verbose=0)
    model.trunk.trainable = False
    trunk_before = _weights(model.trunk)
    with pytest.raises(ValueError, match=r"compile\(\)"):
        model.fit(x, y, batch_size=8, verbose=0)
    _assert_same(trunk_before, _weights(model.trunk))
    model.compile(optimizer="sgd", loss="mse")
    heads_before = {t: _weights(h) for t, h in model.heads.items()}
    model.fit(x, y, batch_size=8, verbose=0)
    _assert_same(trunk_before, _weights(model.trunk))
    for task, head in model.heads.items():
        assert any(not np.array_equal(u, v) for u, v in zip(heads_before[task], _weights(head))), (
            task
        )


# ----------------------------------------------------- 15. save/load freeze
def _frozen_model_saved(tmp_path):
    x, y = _data()
    model = _model()
    model.trunk.trainable = False
    model.heads["b"].trainable = False
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, batch_size=8, verbose=0)
    path = os.path.join(tmp_path, "frozen.keras")
    model.save(path)
    return path


def test_frozen_trunk_and_head_stay_frozen_after_save_and_load(tmp_path):
    path = _frozen_model_saved(tmp_path)
    loaded = keras.models.load_model(path)
    assert loaded.trunk.trainable is False
    assert loaded.heads["b"].trainable is False
    assert loaded.heads["a"].trainable is True


def test_loading_a_frozen_model_skips_no_variable(tmp_path):
    path = _frozen_model_saved(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keras.models.load_model(path)
    skipped = [str(w.message) for w in caught if "Skipping variable loading" in str(w.message)]
    assert not skipped, skipped


# ------------------------------------------- 17. targets Keras users give
@pytest.mark.slow
def test_dataframe_targets_train_like_the_dict_of_their_columns():
    x, y = _data()
    frame = pd.DataFrame({"a": y["a"][:, 0], "b": y["b"][:, 0]})
    from_frame, from_dict = _twin_models(_model, 4)
    for model in (from_frame, from_dict):
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    from_frame.fit(x, frame, batch_size=8, shuffle=False, verbose=0)
    from_dict.fit(
        x,
        {"a": frame["a"].to_numpy(), "b": frame["b"].to_numpy()},
        batch_size=8,
        shuffle=False,
        verbose=0,
    )
    for u, v in zip(from_frame.get_weights(), from_dict.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_label_rank_may_change_between_fit_calls():
    # Training and validation both see the new rank (validation runs
    # Keras's test function, which relaxes shapes when they change).
    x, y = _data()
    model = _model()
    model.compile(optimizer="sgd", loss="mse")
    rank_one = {"a": y["a"][:, 0], "b": y["b"]}
    model.fit(x, rank_one, batch_size=8, verbose=0, validation_data=(x, rank_one))
    rank_two = {"a": y["a"][:, 0].reshape(-1, 1), "b": y["b"]}
    history = model.fit(x, rank_two, batch_size=8, verbose=0, validation_data=(x, rank_two)).history
    assert math.isfinite(history["a_loss"][0]) and math.isfinite(history["val_a_loss"][0])


def _class_weight_setup():
    x, labels = _classification_data(n=32, classes=2)
    reg = x.sum(1, keepdims=True).astype("float32")

    def make():
        return keras_mtl.MultiTaskModel(
            [8], {"cls": keras_mtl.Head(2, activation="softmax"), "r": 1}
        )

    compile_args = dict(
        optimizer=keras.optimizers.SGD(0.1),
        loss={"cls": "sparse_categorical_crossentropy", "r": "mse"},
    )
    class_weight = {"cls": {0: 1.0, 1: 5.0}}
    # The matching per-task sample weights: class_weight[label] for 'cls', 1 for 'r'.
    w = {
        "cls": np.where(labels == 1, 5.0, 1.0).astype("float32"),
        "r": np.ones(len(labels), "float32"),
    }
    return x, {"cls": labels, "r": reg}, make, compile_args, class_weight, w


@pytest.mark.slow
def test_per_task_class_weight_equals_the_matching_sample_weight():
    x, y, make, compile_args, class_weight, w = _class_weight_setup()
    weighted, reference = _twin_models(make, 4)
    weighted.compile(**compile_args)
    reference.compile(**{**compile_args, "optimizer": keras.optimizers.SGD(0.1)})
    weighted.fit(x, y, batch_size=8, shuffle=False, class_weight=class_weight, verbose=0)
    reference.fit(x, y, batch_size=8, shuffle=False, sample_weight=w, verbose=0)
    for u, v in zip(weighted.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_per_task_class_weight_works_with_a_dataset():
    x, y, make, compile_args, class_weight, w = _class_weight_setup()
    weighted, reference = _twin_models(make, 4)
    weighted.compile(**compile_args)
    reference.compile(**{**compile_args, "optimizer": keras.optimizers.SGD(0.1)})
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    weighted.fit(dataset, class_weight=class_weight, verbose=0)
    reference.fit(x, y, batch_size=8, shuffle=False, sample_weight=w, verbose=0)
    for u, v in zip(weighted.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)


def test_class_weight_not_keyed_by_task_is_refused():
    x, y, make, compile_args, _, _ = _class_weight_setup()
    model = make()
    model.compile(**compile_args)
    with pytest.raises(ValueError, match=r"(?s)class_weight.*cls"):
        model.fit(x, y, class_weight={0: 1.0, 1: 5.0}, verbose=0)


# ------------------------------------- 18. label shapes on every call
# fit() and train_on_batch() already check every call (guards); evaluate()
# and test_on_batch() run Keras's test function, which relaxes a changed
# shape to (None, None) and then let mse broadcast (64, 3) against (64, 1).
def test_label_shape_is_checked_on_every_fit_call():
    x, y = _data(n=64)
    model = _model()
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, batch_size=16, verbose=0)
    before = _weights(model)
    wrong = {"a": np.tile(y["a"], (1, 3)), "b": y["b"]}
    with pytest.raises(ValueError, match="task 'a'"):
        model.fit(x, wrong, batch_size=16, verbose=0)
    _assert_same(before, _weights(model))


def test_label_shape_is_checked_on_every_train_on_batch_call():
    x, y = _data(n=64)
    model = _model()
    model.compile(optimizer="sgd", loss="mse")
    model.train_on_batch(x, y)
    before = _weights(model)
    wrong = {"a": np.tile(y["a"], (1, 3)), "b": y["b"]}
    with pytest.raises(ValueError, match="task 'a'"):
        model.train_on_batch(x, wrong)
    _assert_same(before, _weights(model))


def test_label_shape_is_checked_on_every_evaluate_call():
    x, y = _data(n=64)
    model = _model()
    model.compile(optimizer="sgd", loss="mse")
    model.evaluate(x, y, batch_size=16, verbose=0)
    wrong = {"a": np.tile(y["a"], (1, 3)), "b": y["b"]}
    with pytest.raises(ValueError, match="task 'a'"):
        model.evaluate(x, wrong, batch_size=16, verbose=0)


def test_label_shape_is_checked_on_every_test_on_batch_call():
    x, y = _data(n=64)
    model = _model()
    model.compile(optimizer="sgd", loss="mse")
    model.test_on_batch(x, y)
    wrong = {"a": np.tile(y["a"], (1, 3)), "b": y["b"]}
    with pytest.raises(ValueError, match="task 'a'"):
        model.test_on_batch(x, wrong)
