"""Joint mode is defined as equal to the equivalent Keras functional model."""

import keras
import numpy as np
import pytest
from helpers import functional_twin, regression_data, twin_weights_match

import keras_mtl


def _classification_data(n=128, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 6)).astype("float32")
    y_reg = (x.sum(1, keepdims=True) + 0.05 * rng.normal(size=(n, 1))).astype("float32")
    y_cls = (x[:, 0] * 2.99).astype("int32")
    return x, {"reg": y_reg, "cls": y_cls}


@pytest.mark.parametrize("optimizer", ["adam", pytest.param("sgd", marks=pytest.mark.slow)])
def test_joint_training_matches_functional_model(optimizer):
    x, y = _classification_data()
    model = keras_mtl.MultiTaskModel(
        trunk_units=[16, 8],
        heads={"reg": 1, "cls": keras_mtl.Head(3, activation="softmax", hidden_units=[8])},
    )
    model.build((None, 6))
    twin = functional_twin(model)
    compile_args = dict(
        loss={"reg": "mse", "cls": "sparse_categorical_crossentropy"},
        loss_weights={"reg": 1.0, "cls": 0.5},
    )
    model.compile(optimizer=keras.optimizers.get(optimizer), mode="joint", **compile_args)
    twin.compile(optimizer=keras.optimizers.get(optimizer), **compile_args)

    ours = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    theirs = twin.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)

    twin_weights_match(model, twin, atol=1e-5)
    for key in ("loss", "reg_loss", "cls_loss"):
        np.testing.assert_allclose(ours.history[key], theirs.history[key], rtol=1e-5)


@pytest.mark.slow
def test_joint_training_with_regularizer_matches_functional_model():
    x, y = regression_data(n=64, features=10, units=(4, 3))
    model = keras_mtl.MultiTaskModel(
        trunk_units=[12],
        heads={"y1": 4, "y2": 3},
        kernel_regularizer=keras.regularizers.L2(0.01),
    )
    model.build((None, 10))
    twin = functional_twin(model)
    args = dict(loss={"y1": "mse", "y2": "mae"}, loss_weights={"y1": 2.0, "y2": 1.0})
    model.compile(optimizer=keras.optimizers.Adam(0.01), **args)
    twin.compile(optimizer=keras.optimizers.Adam(0.01), **args)
    ours = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    theirs = twin.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    twin_weights_match(model, twin, atol=1e-5)
    np.testing.assert_allclose(ours.history["loss"], theirs.history["loss"], rtol=1e-5)


def test_joint_evaluate_matches_functional_model():
    x, y = _classification_data()
    model = keras_mtl.MultiTaskModel(
        trunk_units=[8], heads={"reg": 1, "cls": keras_mtl.Head(3, activation="softmax")}
    )
    model.build((None, 6))
    twin = functional_twin(model)
    args = dict(
        loss={"reg": "mse", "cls": "sparse_categorical_crossentropy"},
        metrics={"reg": ["mae"], "cls": ["accuracy"]},
    )
    model.compile(optimizer="adam", **args)
    twin.compile(optimizer="adam", **args)
    ours = model.evaluate(x, y, return_dict=True, verbose=0)
    theirs = twin.evaluate(x, y, return_dict=True, verbose=0)
    assert set(ours) == set(theirs)
    for key in ours:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, err_msg=key)


def test_head_without_loss_is_not_trained_in_joint_mode():
    x, y = regression_data(n=64)
    model = keras_mtl.MultiTaskModel([8], {"y1": 20, "y2": 20})
    model.compile(optimizer="adam", loss={"y1": "mse", "y2": None})
    model.build((None, 10))
    before = [w.copy() for w in model.heads["y2"].get_weights()]
    history = model.fit(x, {"y1": y["y1"], "y2": None}, epochs=1, verbose=0)
    after = model.heads["y2"].get_weights()
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert "y2_loss" not in history.history


def test_rank_one_labels_match_column_labels_for_a_one_unit_head():
    x, y = _classification_data()
    results = []
    for labels in (y["reg"][:, 0], y["reg"]):
        keras.utils.set_random_seed(0)
        model = keras_mtl.MultiTaskModel([8], {"reg": 1})
        model.compile(optimizer="sgd", loss={"reg": "mse"})
        results.append(
            model.fit(x, {"reg": labels}, epochs=1, shuffle=False, verbose=0).history["loss"]
        )
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)
