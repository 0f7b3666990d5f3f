"""Property-based tests over random valid configurations (hypothesis)."""

import os
import tempfile

import keras
import numpy as np
import pytest
from helpers import assert_same_arrays, head_weights
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras_mtl


@st.composite
def configurations(draw):
    n_tasks = draw(st.integers(1, 6))
    mode = draw(st.sampled_from(["joint", "alternating"]))
    sampler = None
    if mode == "alternating":
        kind = draw(st.sampled_from(["uniform", "round_robin", "fixed"]))
        sampler = (
            kind
            if kind != "fixed"
            else {f"t{i}": draw(st.floats(0.05, 1.0)) for i in range(n_tasks)}
        )
    return dict(
        trunk_units=draw(st.lists(st.integers(1, 8), min_size=1, max_size=2)),
        units=[draw(st.integers(1, 4)) for _ in range(n_tasks)],
        classification=[draw(st.booleans()) for _ in range(n_tasks)],
        mode=mode,
        sampler=sampler,
        steps_per_execution=draw(st.sampled_from([1, 2, 5])),
        n=draw(st.integers(4, 40)),
        batch_size=draw(st.sampled_from([3, 8])),
        seed=draw(st.integers(0, 2**31 - 2)),
    )


def _build(config):
    heads, losses, targets = {}, {}, {}
    rng = np.random.default_rng(config["seed"] % 1000)
    x = rng.normal(size=(config["n"], 3)).astype("float32")
    for i, (units, classify) in enumerate(zip(config["units"], config["classification"])):
        name = f"t{i}"
        if classify and units > 1:
            heads[name] = keras_mtl.Head(units, activation="softmax")
            losses[name] = "sparse_categorical_crossentropy"
            targets[name] = rng.integers(0, units, config["n"]).astype("int32")
        else:
            heads[name] = units
            losses[name] = "mse"
            targets[name] = rng.normal(size=(config["n"], units)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras_mtl.MultiTaskModel(config["trunk_units"], heads)
    model.compile(
        optimizer="adam",
        loss=losses,
        mode=config["mode"],
        sampler=config["sampler"],
        steps_per_execution=config["steps_per_execution"],
        seed=config["seed"],
    )
    return model, x, targets


@pytest.mark.slow
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(configurations())
def test_random_configurations_keep_the_invariants(config):
    model, x, y = _build(config)
    history = model.fit(x, y, batch_size=config["batch_size"], epochs=1, verbose=0).history
    # Finite data, finite logs; only a task that never trained logs NaN.
    never = {t for t in model.task_names if history.get(f"{t}_updates", [1])[0] == 0}
    for key, values in history.items():
        if key.split("_")[0] in never and key.endswith("_loss"):
            assert np.isnan(values[0]), key
        else:
            assert np.all(np.isfinite(values)), key

    logs = model.evaluate(x, y, return_dict=True, verbose=0)
    assert set(logs) == {"loss"} | {f"{t}_loss" for t in model.task_names}
    assert all(np.isfinite(v) for v in logs.values())

    predictions = model.predict(x, verbose=0)
    assert set(predictions) == set(model.task_names)
    for task, units in zip(model.task_names, config["units"]):
        assert predictions[task].shape == (config["n"], units)

    if config["mode"] == "alternating":
        # One more step: exactly the sequence's task moves; the others do not.
        task = model.task_sequence(1, start=int(model.step_counter.numpy()))[0]
        before = {t: head_weights(model, t) for t in model.task_names}
        model.train_on_batch(x[:3], {t: v[:3] for t, v in y.items()})
        for other in model.task_names:
            if other != task:
                assert_same_arrays(before[other], head_weights(model, other), exact=True)

    expected = model.predict(x, verbose=0)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "m.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
    restored = loaded.predict(x, verbose=0)
    for task in model.task_names:
        np.testing.assert_allclose(restored[task], expected[task], atol=1e-6)
