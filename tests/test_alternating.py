"""Alternating mode: one task per step, other heads and their optimizer state untouched."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_same_arrays, head_weights, optimizer_slots, regression_data, seed_model

import keras_mtl


def _batches(x, y, batch_size):
    for i in range(0, len(x), batch_size):
        yield x[i : i + batch_size], {k: v[i : i + batch_size] for k, v in y.items()}


def test_alternating_step_leaves_other_heads_and_slots_untouched():
    x, y = regression_data(n=96)
    model = seed_model()
    model.compile(optimizer="adam", loss="mse", mode="alternating", seed=7)
    model.build((None, 10))
    optimizer = model.optimizer
    sequence = model.task_sequence(12)
    assert set(sequence) == {"y1", "y2"}
    for step, (xb, yb) in enumerate(_batches(x, y, 8)):
        other = "y2" if sequence[step] == "y1" else "y1"
        head_before = head_weights(model, other)
        slots_before = (
            optimizer_slots(optimizer, model.heads[other].trainable_variables) if step else None
        )
        trained_before = head_weights(model, sequence[step])
        model.train_on_batch(xb, yb)
        assert_same_arrays(head_before, head_weights(model, other), exact=True)
        if slots_before is not None:
            after = optimizer_slots(optimizer, model.heads[other].trainable_variables)
            assert_same_arrays(slots_before, after, exact=True)
        # ... while the chosen head did move.
        assert any(
            not np.array_equal(a, b)
            for a, b in zip(trained_before, head_weights(model, sequence[step]))
        )
    assert int(model.step_counter.numpy()) == 12


def test_training_follows_task_sequence_step_by_step():
    x, y = regression_data(n=160)
    model = seed_model()
    model.compile(
        optimizer="adam", loss="mse", mode="alternating", sampler={"y1": 0.6, "y2": 0.4}, seed=11
    )
    model.build((None, 10))
    trained = []
    for xb, yb in _batches(x, y, 8):
        before = {t: head_weights(model, t) for t in model.task_names}
        model.train_on_batch(xb, yb)
        moved = [
            t
            for t in model.task_names
            if any(not np.array_equal(a, b) for a, b in zip(before[t], head_weights(model, t)))
        ]
        assert len(moved) == 1
        trained.append(moved[0])
    assert trained == model.task_sequence(20)


def _hand_written_tutorial_loop(model, x, y, learning_rate, batch_size, steps):
    """The tutorial's alternating loop in TF2: one Adam per task, tasks in turn."""
    trunk, heads = model.trunk, model.heads
    optimizers = {t: keras.optimizers.Adam(learning_rate) for t in heads}

    def step(task, xb, yb):
        variables = trunk.trainable_variables + heads[task].trainable_variables
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.mean_squared_error(yb, heads[task](trunk(xb))))
        optimizers[task].apply(tape.gradient(loss, variables), variables)

    batches = list(_batches(x, y, batch_size))
    tasks = list(heads)
    for i in range(steps):
        xb, yb = batches[i % len(batches)]
        task = tasks[i % len(tasks)]
        step(task, tf.constant(xb), tf.constant(yb[task]))


@pytest.mark.slow
def test_task_optimizers_match_hand_written_tutorial_loop():
    x, y = regression_data(n=64)
    ours = seed_model()
    ours.build((None, 10))
    reference = seed_model()
    reference.build((None, 10))
    reference.set_weights(ours.get_weights())

    ours.compile(
        optimizer="adam",
        loss="mse",
        mode="alternating",
        sampler="round_robin",
        task_optimizers={"y1": keras.optimizers.Adam(0.01), "y2": keras.optimizers.Adam(0.01)},
    )
    ours.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    _hand_written_tutorial_loop(reference, x, y, 0.01, batch_size=8, steps=24)

    assert_same_arrays(
        [v.numpy() for v in ours.trainable_weights],
        [v.numpy() for v in reference.trainable_weights],
        exact=False,
        atol=1e-5,
    )
    # Each task's optimizer counted only its own updates.
    assert int(ours.task_optimizers["y1"].iterations.numpy()) == 12
    assert int(ours.task_optimizers["y2"].iterations.numpy()) == 12


def test_shared_optimizer_counts_every_step():
    x, y = regression_data(n=64)
    model = seed_model()
    model.compile(optimizer="adam", loss="mse", mode="alternating", seed=0)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 8


def _updates_over_run(model, x, y, steps_per_execution=50):
    history = model.fit(x, y, batch_size=1, epochs=1, verbose=0, shuffle=False)
    return {t: history.history[f"{t}_updates"][0] for t in model.task_names}


@pytest.mark.parametrize("probabilities", [{"y1": 0.5, "y2": 0.5}, {"y1": 0.8, "y2": 0.2}])
@pytest.mark.slow
def test_task_frequencies_match_sampler(probabilities):
    n = 2000
    x, y = regression_data(n=n, units=(1, 1))
    model = keras_mtl.MultiTaskModel([4], {"y1": 1, "y2": 1})
    model.compile(
        optimizer="sgd",
        loss="mse",
        mode="alternating",
        sampler=probabilities,
        seed=5,
        steps_per_execution=100,
    )
    updates = _updates_over_run(model, x, y)
    assert updates["y1"] + updates["y2"] == n
    p = probabilities["y1"]
    sigma = np.sqrt(n * p * (1 - p))
    assert abs(updates["y1"] - n * p) < 4 * sigma


@pytest.mark.slow
def test_same_seed_gives_same_sequence_and_weights():
    x, y = regression_data(n=64)

    def run(seed):
        keras.utils.set_random_seed(0)
        model = seed_model()
        model.compile(optimizer="adam", loss="mse", mode="alternating", seed=seed)
        history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
        return model, history.history["y1_updates"]

    a, updates_a = run(3)
    b, updates_b = run(3)
    c, updates_c = run(4)
    assert updates_a == updates_b
    assert_same_arrays(a.get_weights(), b.get_weights(), exact=True)
    assert a.task_sequence(32) == b.task_sequence(32)
    assert a.task_sequence(32) != c.task_sequence(32)


def test_round_robin_alternates_tasks_in_order():
    x, y = regression_data(n=48)
    model = seed_model()
    model.compile(optimizer="adam", loss="mse", mode="alternating", sampler="round_robin")
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert history.history["y1_updates"] == [3.0]
    assert history.history["y2_updates"] == [3.0]
    assert model.task_sequence(4, start=1) == ["y2", "y1", "y2", "y1"]


def test_task_is_chosen_per_step_inside_one_compiled_call():
    # With a trace-time (Python) choice every step of a call would train the
    # same task; here one call of 64 steps must train both.
    x, y = regression_data(n=64)
    model = seed_model()
    model.compile(optimizer="adam", loss="mse", mode="alternating", seed=2, steps_per_execution=64)
    history = model.fit(x, y, batch_size=1, epochs=1, verbose=0)
    assert history.history["y1_updates"][0] > 10
    assert history.history["y2_updates"][0] > 10


@pytest.mark.slow
def test_alternating_loss_weights_scale_the_trained_task_loss():
    x, y = regression_data(n=32)
    logs = {}
    for w in (1.0, 3.0):
        keras.utils.set_random_seed(0)
        model = seed_model()
        model.compile(
            optimizer=keras.optimizers.SGD(0.0),
            loss="mse",
            mode="alternating",
            sampler={"y1": 1.0, "y2": 0.0},
            loss_weights={"y1": w},
        )
        logs[w] = model.fit(x, y, batch_size=32, epochs=1, verbose=0).history
    np.testing.assert_allclose(logs[3.0]["loss"][0], 3 * logs[1.0]["loss"][0], rtol=1e-5)
    np.testing.assert_allclose(logs[3.0]["y1_loss"][0], logs[1.0]["y1_loss"][0], rtol=1e-5)
