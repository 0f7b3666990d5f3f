"""Samplers: probabilities against hand-computed values, draws against binomial bounds."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl
from keras_mtl import samplers


def _probs(sampler, tasks, step=0):
    return sampler.bind(tasks).probabilities(tf.constant(step, tf.int64)).numpy()


def test_uniform_probabilities():
    np.testing.assert_allclose(_probs(samplers.Uniform(), "abc"), [1 / 3] * 3, rtol=1e-6)


def test_round_robin_probabilities_cycle_in_order():
    for step, expected in [(0, [1, 0, 0]), (1, [0, 1, 0]), (5, [0, 0, 1]), (6, [1, 0, 0])]:
        np.testing.assert_array_equal(_probs(samplers.RoundRobin(), "abc", step), expected)


def test_fixed_probabilities_are_normalized_in_task_order():
    s = samplers.Fixed({"b": 1.0, "a": 3.0})
    np.testing.assert_allclose(_probs(s, ["a", "b"]), [0.75, 0.25], rtol=1e-6)


def test_proportional_matches_model_garden_published_case():
    # TF Model Garden task_sampler_test: weights {A:1, B:2, C:3}, alpha=2 gives
    # cumulative distribution [0.0714, 0.3571, 1.0].
    s = samplers.Proportional({"A": 1, "B": 2, "C": 3}, alpha=2.0)
    cumulative = np.cumsum(_probs(s, ["A", "B", "C"]))
    np.testing.assert_allclose(cumulative, [0.0714, 0.3571, 1.0], atol=1e-4)


@pytest.mark.parametrize(
    "alpha, expected",
    [(1.0, [0.25, 0.75]), (0.0, [0.5, 0.5]), (0.5, [1 / (1 + 3**0.5), 3**0.5 / (1 + 3**0.5)])],
)
def test_proportional_alpha_flattens_toward_uniform(alpha, expected):
    s = samplers.Proportional({"a": 100, "b": 300}, alpha=alpha)
    np.testing.assert_allclose(_probs(s, "ab"), expected, rtol=1e-5)


def test_annealed_goes_from_proportional_to_final_alpha():
    sizes = {"a": 1, "b": 4}
    s = samplers.Annealed(sizes, total_steps=100).bind("ab")
    assert float(s.alpha(0)) == pytest.approx(1.0)
    assert float(s.alpha(50)) == pytest.approx(0.6)
    assert float(s.alpha(100)) == pytest.approx(0.2)
    assert float(s.alpha(1000)) == pytest.approx(0.2)  # clipped after total_steps
    np.testing.assert_allclose(s.probabilities(0).numpy(), [0.2, 0.8], rtol=1e-5)
    end = 4**0.2
    np.testing.assert_allclose(
        s.probabilities(100).numpy(), [1 / (1 + end), end / (1 + end)], rtol=1e-5
    )


def test_annealed_per_epoch_schedule_follows_the_paper():
    # 5 epochs of 10 steps: alpha = 1 - 0.8 * e / 4 for 0-based epoch e.
    s = samplers.Annealed({"a": 1, "b": 2}, total_steps=50, steps_per_epoch=10).bind("ab")
    for step, alpha in [(0, 1.0), (9, 1.0), (10, 0.8), (25, 0.6), (49, 0.2)]:
        assert float(s.alpha(step)) == pytest.approx(alpha)


def _draws(sampler, tasks, steps, seed, available=None):
    bound = sampler.bind(tasks)

    # One graph for all the steps: an eager map_fn calls `sample` once per step from Python.
    @tf.function
    def draw_all():
        return tf.map_fn(
            lambda step: bound.sample(step, seed, available),
            tf.range(steps, dtype=tf.int64),
            fn_output_signature=tf.int32,
        )

    return draw_all().numpy()


@pytest.mark.parametrize(
    "sampler, expected",
    [
        (samplers.Uniform(), [1 / 3, 1 / 3, 1 / 3]),
        (samplers.Fixed({"a": 0.6, "b": 0.3, "c": 0.1}), [0.6, 0.3, 0.1]),
        (samplers.Proportional({"a": 1, "b": 2, "c": 3}, alpha=2), [1 / 14, 4 / 14, 9 / 14]),
    ],
)
def test_empirical_frequencies_within_binomial_bounds(sampler, expected):
    n = 5000
    draws = _draws(sampler, "abc", n, seed=17)
    for task, p in enumerate(expected):
        count = np.sum(draws == task)
        assert abs(count - n * p) < 4 * np.sqrt(n * p * (1 - p)), (task, count, n * p)


def test_draws_are_a_pure_function_of_seed_and_step():
    a = _draws(samplers.Uniform(), "abc", 200, seed=3)
    b = _draws(samplers.Uniform(), "abc", 200, seed=3)
    c = _draws(samplers.Uniform(), "abc", 200, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_draws_are_the_same_under_xla():
    bound = samplers.Uniform().bind("abc")
    plain = tf.function(lambda s: bound.sample(s, 5))
    xla = tf.function(lambda s: bound.sample(s, 5), jit_compile=True)
    for step in range(50):
        s = tf.constant(step, tf.int64)
        assert int(plain(s)) == int(xla(s))


def test_draws_renormalize_over_available_tasks():
    draws = _draws(
        samplers.Fixed({"a": 0.98, "b": 0.01, "c": 0.01}),
        "abc",
        300,
        seed=1,
        available=tf.constant([False, True, True]),
    )
    assert set(np.unique(draws)) == {1, 2}


def test_draw_is_none_when_no_task_is_available():
    draws = _draws(samplers.Uniform(), "ab", 5, seed=1, available=tf.constant([False, False]))
    np.testing.assert_array_equal(draws, [2] * 5)


def test_round_robin_falls_back_to_available_tasks():
    draws = _draws(
        samplers.RoundRobin(), "abc", 30, seed=1, available=tf.constant([True, False, True])
    )
    assert 1 not in draws
    assert draws[0] == 0 and draws[2] == 2  # scheduled tasks that are available


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: samplers.Fixed({"a": -1.0, "b": 1.0}), "'a'"),
        (lambda: samplers.Fixed({"a": float("nan"), "b": 1.0}), "'a'"),
        (lambda: samplers.Fixed({"a": 0, "b": 0}), "every task weight 0"),
        (lambda: samplers.Proportional({"a": 0, "b": 3}), "> 0 for every task.*'a'"),
        (lambda: samplers.Proportional({"a": 1, "b": 3}, alpha=-0.5), "alpha"),
        (lambda: samplers.Annealed({"a": 1, "b": 3}, total_steps=0), "total_steps"),
        (
            lambda: samplers.Annealed({"a": 1, "b": 3}, total_steps=10, final_alpha=2.0),
            "final_alpha",
        ),
    ],
)
def test_bad_sampler_arguments_raise_at_construction(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


@pytest.mark.parametrize(
    "sampler, message",
    [
        (samplers.Fixed({"a": 1.0, "b": 1.0, "z": 1.0}), "unknown task.*'z'"),
        (samplers.Fixed({"a": 1.0}), "missing task.*'b'"),
        (samplers.Proportional({"a": 1, "q": 2}), "unknown task.*'q'"),
        (samplers.Annealed({"a": 1}, total_steps=5), "missing task.*'b'"),
    ],
)
def test_sampler_task_names_are_checked_when_bound(sampler, message):
    with pytest.raises(ValueError, match=message):
        sampler.bind(["a", "b"])


def test_bind_returns_a_copy():
    s = samplers.Uniform()
    a = s.bind(["x", "y"])
    b = s.bind(["p", "q", "r"])
    assert a.task_names == ("x", "y") and b.num_tasks == 3
    with pytest.raises(ValueError, match="not bound"):
        _ = s.task_names


@keras.saving.register_keras_serializable(package="tests")
class OnlyFirstTask(samplers.Sampler):
    def __init__(self, until):
        super().__init__()
        self.until = until

    def probabilities(self, step):
        first = tf.one_hot(0, self.num_tasks)
        return tf.where(tf.cast(step, tf.int64) < self.until, first, tf.ones([self.num_tasks]))

    def get_config(self):
        return {"until": self.until}


def test_user_subclass_drives_alternating_training():
    rng = np.random.default_rng(0)
    x = rng.random((40, 3)).astype("float32")
    y = {"a": x.sum(1), "b": x.prod(1)}
    model = keras_mtl.MultiTaskModel([4], {"a": 1, "b": 1})
    model.compile(
        optimizer="sgd", loss="mse", mode="alternating", sampler=OnlyFirstTask(until=5), seed=0
    )
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    assert model.task_sequence(5) == ["a"] * 5
    assert history["a_updates"][0] >= 5
    assert history["a_updates"][0] + history["b_updates"][0] == 10


def test_samplers_round_trip_through_keras_serialization():
    for s in [
        samplers.Uniform(),
        samplers.RoundRobin(),
        samplers.Fixed({"a": 1, "b": 2}),
        samplers.Proportional({"a": 1, "b": 2}, alpha=0.5),
        samplers.Annealed({"a": 1, "b": 2}, total_steps=10, steps_per_epoch=5),
        OnlyFirstTask(3),
    ]:
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
        assert type(restored) is type(s)
        assert restored.get_config() == s.get_config()
        np.testing.assert_array_equal(_probs(restored, ["a", "b"], 7), _probs(s, ["a", "b"], 7))


# A sampler built from a dict names its tasks: unbound, it acts as bound to
# them in the dict's order.
@pytest.mark.parametrize(
    "sampler, tasks, expected",
    [
        (samplers.Fixed({"B": 1.0, "A": 3.0}), ("B", "A"), [0.25, 0.75]),
        (samplers.Proportional({"A": 1, "B": 2}), ("A", "B"), [1 / 3, 2 / 3]),
        (samplers.Proportional({"B": 2, "A": 1}, alpha=0.0), ("B", "A"), [0.5, 0.5]),
        (samplers.Annealed({"B": 1, "A": 4}, total_steps=10), ("B", "A"), [0.2, 0.8]),
    ],
)
def test_dict_sampler_works_unbound_on_its_dict_tasks(sampler, tasks, expected):
    assert sampler.task_names == tasks and sampler.num_tasks == 2
    np.testing.assert_allclose(sampler.probabilities(0), expected, rtol=1e-6)
    np.testing.assert_allclose(sampler.probabilities(tf.constant(0, tf.int64)), expected, rtol=1e-6)
    unbound = tf.map_fn(
        lambda step: sampler.sample(step, 3),
        tf.range(50, dtype=tf.int64),
        fn_output_signature=tf.int32,
    ).numpy()
    np.testing.assert_array_equal(unbound, _draws(sampler, tasks, 50, seed=3))
    assert set(unbound) == {0, 1}


def test_dict_sampler_bound_to_another_order_follows_the_binding():
    s = samplers.Proportional({"A": 1, "B": 2})
    np.testing.assert_allclose(_probs(s, ["B", "A"]), [2 / 3, 1 / 3], rtol=1e-6)
    assert s.bind(["B", "A"]).task_names == ("B", "A")
    assert s.task_names == ("A", "B")  # bind() returned a copy
    with pytest.raises(ValueError, match="missing task.*'C'"):
        s.bind(["A", "B", "C"])
    with pytest.raises(ValueError, match="unknown task.*'B'"):
        s.bind(["A"])


@pytest.mark.parametrize("make", [samplers.Uniform, samplers.RoundRobin, lambda: OnlyFirstTask(2)])
def test_sampler_without_task_arguments_must_be_bound(make):
    sampler = make()
    for use in [
        lambda: sampler.task_names,
        lambda: sampler.num_tasks,
        lambda: sampler.probabilities(0),
        lambda: sampler.sample(0, 1),
    ]:
        with pytest.raises(ValueError, match="not bound to tasks yet"):
            use()
