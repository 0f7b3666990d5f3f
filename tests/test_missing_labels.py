"""Missing labels (NaN or sample weight 0) are masked out in both modes."""

import keras
import numpy as np
import pytest
from helpers import assert_same_arrays, head_weights, optimizer_slots

import keras_mtl


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 5)).astype("float32")
    y = {
        "reg": np.stack([x.sum(1), x[:, 0]], 1).astype("float32"),
        "cls": (x[:, 1] * 2.99).astype("int32"),
    }
    return x, y


def _model():
    return keras_mtl.MultiTaskModel([8], {"reg": 2, "cls": keras_mtl.Head(3, activation="softmax")})


COMPILE = dict(
    loss={"reg": "mse", "cls": "sparse_categorical_crossentropy"},
    metrics={"reg": ["mae"], "cls": ["accuracy"]},
)


def _with_nan_rows(y, rows):
    y = dict(y)
    y["reg"] = y["reg"].copy()
    y["reg"][rows] = np.nan
    return y


def test_nan_labels_are_excluded_from_loss_and_metrics():
    x, y = _data()
    rows = np.arange(0, 64, 3)
    keep = np.setdiff1d(np.arange(64), rows)
    model = _model()
    model.compile(optimizer="adam", **COMPILE)
    masked = model.evaluate(x, _with_nan_rows(y, rows), batch_size=16, return_dict=True, verbose=0)
    subset = model.evaluate(
        x[keep], {k: v[keep] for k, v in y.items()}, batch_size=16, return_dict=True, verbose=0
    )
    for key in ("reg_loss", "reg_mae"):
        np.testing.assert_allclose(masked[key], subset[key], rtol=1e-5)
    full = model.evaluate(x, y, return_dict=True, verbose=0)
    np.testing.assert_allclose(masked["cls_accuracy"], full["cls_accuracy"], rtol=1e-6)


def test_zero_sample_weight_marks_labels_missing():
    x, y = _data()
    weights = np.ones(64, "float32")
    weights[:20] = 0
    model = _model()
    model.compile(optimizer="adam", **COMPILE)
    masked = model.evaluate(x, y, sample_weight={"reg": weights}, return_dict=True, verbose=0)
    subset = model.evaluate(x[20:], {k: v[20:] for k, v in y.items()}, return_dict=True, verbose=0)
    np.testing.assert_allclose(masked["reg_loss"], subset["reg_loss"], rtol=1e-5)
    # 'cls' had no sample weight: all its labels count.
    full = model.evaluate(x, y, return_dict=True, verbose=0)
    np.testing.assert_allclose(masked["cls_loss"], full["cls_loss"], rtol=1e-5)


def test_task_loss_is_weighted_sum_over_present_count():
    x, y = _data(n=8)
    y = _with_nan_rows(y, [1, 2])
    w = np.array([1, 2, 3, 0.5, 1, 0, 2, 1], "float32")  # row 5 weight 0: missing
    model = _model()
    model.compile(optimizer="sgd", **COMPILE)
    logs = model.evaluate(x, y, sample_weight={"reg": w}, batch_size=8, return_dict=True, verbose=0)
    pred = model.predict(x, verbose=0)["reg"]
    per_example = np.mean((pred - np.nan_to_num(y["reg"])) ** 2, axis=1)
    present = np.array([1, 0, 0, 1, 1, 0, 1, 1], bool)
    expected = np.sum((w * per_example)[present]) / present.sum()
    np.testing.assert_allclose(logs["reg_loss"], expected, rtol=1e-5)


@pytest.mark.slow
def test_nan_labels_never_leak_into_weights():
    x, y = _data(n=128)
    y = _with_nan_rows(y, np.arange(0, 128, 2))
    for mode in ("joint", "alternating"):
        model = _model()
        model.compile(optimizer="adam", mode=mode, **COMPILE)
        history = model.fit(x, y, batch_size=16, epochs=2, verbose=0).history
        assert all(np.all(np.isfinite(w)) for w in model.get_weights())
        assert np.all(np.isfinite(history["loss"]))


@pytest.mark.slow
def test_alternating_never_trains_a_task_whose_labels_are_all_missing():
    x, y = _data(n=32)
    y = _with_nan_rows(y, np.arange(32))  # no 'reg' label anywhere
    model = _model()
    model.compile(optimizer="adam", mode="alternating", seed=0, **COMPILE)
    model.fit(*_data(n=8), verbose=0)  # builds the optimizer's slots
    before = head_weights(model, "reg")
    slots = optimizer_slots(model.optimizer, model.heads["reg"].trainable_variables)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    assert history["reg_updates"] == [0.0, 0.0]
    assert history["cls_updates"] == [4.0, 4.0]
    assert_same_arrays(before, head_weights(model, "reg"), exact=True)
    assert_same_arrays(
        slots, optimizer_slots(model.optimizer, model.heads["reg"].trainable_variables), exact=True
    )
    assert np.isnan(history["reg_loss"]).all()  # no label seen: NaN, never a 0 "improvement"


def test_joint_gives_zero_gradient_to_a_task_without_labels():
    x, y = _data(n=32)
    y = _with_nan_rows(y, np.arange(32))
    model = _model()
    # SGD has no momentum, so a zero gradient leaves the head exactly as it was.
    model.compile(optimizer=keras.optimizers.SGD(0.1), mode="joint", **COMPILE)
    model.build((None, 5))
    before = head_weights(model, "reg")
    trunk_before = [w.copy() for w in model.trunk.get_weights()]
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert_same_arrays(before, head_weights(model, "reg"), exact=True)
    assert any(not np.array_equal(a, b) for a, b in zip(trunk_before, model.trunk.get_weights()))


@pytest.mark.slow
def test_alternating_batch_without_any_label_makes_no_update():
    x, y = _data(n=8)
    model = _model()
    model.compile(optimizer="adam", mode="alternating", seed=0, **COMPILE)
    model.fit(x, y, verbose=0)
    weights = [w.copy() for w in model.get_weights()]
    step = int(model.step_counter.numpy())
    model.fit(x, {"reg": None, "cls": None}, verbose=0)
    assert_same_arrays(weights[1:], model.get_weights()[1:], exact=True)
    assert int(model.step_counter.numpy()) == step + 1


def test_alternating_chooses_only_among_tasks_present_in_the_batch():
    x, y = _data(n=64)
    model = _model()
    model.compile(
        optimizer="adam", mode="alternating", seed=4, sampler={"reg": 0.9, "cls": 0.1}, **COMPILE
    )
    history = model.fit(
        x, {"reg": None, "cls": y["cls"]}, batch_size=8, epochs=1, verbose=0
    ).history
    assert history["cls_updates"] == [8.0] and history["reg_updates"] == [0.0]


@pytest.mark.parametrize("mode", ["joint", "alternating"])
def test_task_loss_ignores_batches_without_its_labels(mode):
    x, y = _data(n=32)
    y = _with_nan_rows(y, np.arange(16, 32))  # second half of the epoch lacks 'reg'
    model = _model()
    # Alternating: 'reg' whenever it has labels (the first two steps), else 'cls'.
    sampler = {"sampler": {"reg": 1.0, "cls": 0.0}} if mode == "alternating" else {}
    model.compile(optimizer=keras.optimizers.SGD(0.0), mode=mode, seed=0, **sampler, **COMPILE)
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
    first_half = model.evaluate(
        x[:16], {k: v[:16] for k, v in y.items()}, return_dict=True, verbose=0
    )
    np.testing.assert_allclose(history["reg_loss"][0], first_half["reg_loss"], rtol=1e-5)
    if mode == "alternating":
        assert history["reg_updates"] == [2.0] and history["cls_updates"] == [2.0]
