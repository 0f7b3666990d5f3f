"""Fused training (`jit_compile=True`, `steps_per_execution > 1`): the steps
of an execution run as one XLA program and train exactly as the unfused
path does; what cannot be fused falls back with a warning that says why."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_same_arrays

import keras_mtl
from keras_mtl import _fused

TASKS = ("y1", "y2")
# 20 full batches of 16 and a last batch of 5: with steps_per_execution=6,
# executions of 6, 6, 6 and a last one of 2 full batches + the small batch.
ROWS = 16 * 20 + 5


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((ROWS, 6)).astype("float32")
    y = {
        "y1": (x[:, :2] @ np.array([[1.0, -1.0], [0.5, 2.0]])).astype("float32"),
        "y2": (x[:, 2:3] ** 2).astype("float32"),
    }
    return x, y


def make(jit, mode="joint", spe=6, dropout=0.2, **compile_kwargs):
    keras.utils.set_random_seed(7)
    model = keras_mtl.MultiTaskModel(
        [8],
        {"y1": keras_mtl.Head(2, hidden_units=[4], dropout=dropout), "y2": 1},
    )
    compile_kwargs.setdefault("optimizer", "adam")
    model.compile(
        loss="mse",
        metrics={"y1": ["mae"]},
        mode=mode,
        steps_per_execution=spe,
        jit_compile=jit,
        **({"seed": 3} if mode == "alternating" else {}),
        **compile_kwargs,
    )
    return model


def fit_both(mode="joint", fit_kwargs=None, reference=(True, 1), **compile_kwargs):
    """The same fit, unfused then fused: (models, histories, warnings).

    The unfused reference is `(jit_compile, steps_per_execution)`: by default
    one XLA program per step. Dropout masks match only between XLA programs
    (XLA may pick another random-number algorithm than TensorFlow's kernels),
    so a reference without XLA needs `dropout=0`."""
    fit_kwargs = {"batch_size": 16, "epochs": 2, "verbose": 0, **(fit_kwargs or {})}
    results = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for jit, spe in (reference, (True, 6)):
            model = make(jit, mode, spe=spe, **compile_kwargs)
            x, y = data()
            fit_x = fit_kwargs.pop("x", x)
            fit_y = fit_kwargs.pop("y", y)
            history = model.fit(fit_x, fit_y, **fit_kwargs).history
            fit_kwargs.update(x=fit_x, y=fit_y)
            results.append((model, history))
    unfused_warnings = [str(w.message) for w in caught if "run unfused" in str(w.message)]
    return results, unfused_warnings


def assert_same_training(results, atol=1e-5):
    (plain, plain_logs), (fused, fused_logs) = results
    assert fused.train_function.__class__ is _fused.FusedTrainFunction
    assert plain.train_function.__class__ is not _fused.FusedTrainFunction
    assert sorted(fused_logs) == sorted(plain_logs)
    for key in plain_logs:
        np.testing.assert_allclose(fused_logs[key], plain_logs[key], rtol=1e-5, atol=atol)
    assert_same_arrays(fused.get_weights(), plain.get_weights(), exact=False, atol=atol)
    assert int(fused.step_counter.numpy()) == int(plain.step_counter.numpy())


@pytest.mark.parametrize("mode", ["joint", pytest.param("alternating", marks=pytest.mark.slow)])
def test_fused_training_equals_unfused_with_shuffling_dropout_and_a_partial_execution(mode):
    results, unfused = fit_both(mode, {"shuffle": True})
    assert unfused == []
    assert_same_training(results)


@pytest.mark.slow
def test_fused_training_equals_the_loop_without_xla():
    results, _ = fit_both("alternating", {"shuffle": True}, reference=(False, 6), dropout=0.0)
    assert_same_training(results)


@pytest.mark.slow
def test_fused_alternating_with_missing_labels_sample_weights_and_task_optimizers():
    x, y = data()
    y = dict(y)
    y["y2"] = y["y2"].copy()
    weights = {
        "y1": np.where(np.arange(ROWS) % 3 == 0, 0.0, 1.0).astype("float32"),
        "y2": np.linspace(0.5, 1.5, ROWS).astype("float32"),
    }
    results, unfused = fit_both(
        "alternating",
        {"x": x, "y": y, "sample_weight": weights, "shuffle": True},
        task_optimizers={"y1": "sgd", "y2": "rmsprop"},  # names: new optimizers per model
    )
    assert unfused == []
    assert_same_training(results)
    assert results[1][1]["y1_updates"] == results[0][1]["y1_updates"]


@pytest.mark.slow
def test_fused_joint_with_a_weighting_method_and_a_task_without_labels():
    x, y = data()
    results, unfused = fit_both(
        "joint",
        {"x": x, "y": {"y1": y["y1"], "y2": None}},
        weighting="uncertainty",  # a name: each compile gets its own instance
    )
    assert unfused == []
    assert_same_training(results)
    assert np.isnan(results[1][1]["y2_loss"]).all()


class CountingModel(keras_mtl.MultiTaskModel):
    """An overridden train_step (with super) that adds a log."""

    def train_step(self, data):
        logs = super().train_step(data)
        return {**logs, "twice_loss": 2.0 * logs["loss"]}


@pytest.mark.slow
def test_an_overridden_train_step_runs_inside_the_fused_program():
    histories = []
    for jit in (False, True):
        keras.utils.set_random_seed(7)
        model = CountingModel([8], {"y1": 2, "y2": 1})
        model.compile(optimizer="adam", loss="mse", steps_per_execution=6, jit_compile=jit)
        histories.append(model.fit(*data(), batch_size=16, epochs=1, verbose=0).history)
    assert isinstance(model.train_function, _fused.FusedTrainFunction)
    np.testing.assert_allclose(histories[1]["twice_loss"], histories[0]["twice_loss"], rtol=1e-5)
    np.testing.assert_allclose(histories[1]["twice_loss"], 2 * np.array(histories[1]["loss"]))


class BatchEnds(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append((batch, round(float(logs["loss"]), 4)))


def count_programs(model, programs, which="train"):
    """Counts the fused programs `model`'s train (or test) function runs:
    `_rows` for arrays (rows gathered in the program), `_block` for batches
    taken from `tf.data`."""
    if which == "train":
        model.make_train_function()
        function = model.train_function
    else:
        model.make_test_function()
        function = model.test_function
    assert isinstance(function, _fused.FusedTrainFunction)
    for name in ("_rows", "_block"):
        program = getattr(function, name)

        def counted(*args, run=program, name=name):
            programs.append(name)
            return run(*args)

        counted.get_concrete_function = program.get_concrete_function
        setattr(function, name, counted)


def as_dataset(x, y):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


@pytest.mark.slow
@pytest.mark.parametrize("inputs", ["arrays", "dataset"])
def test_callbacks_run_once_per_execution_as_unfused_and_one_program_per_execution(inputs):
    seen, programs = [], []
    for jit in (False, True):
        model = make(jit, "alternating", dropout=0.0)
        ends = BatchEnds()
        if jit:
            count_programs(model, programs)
        if inputs == "arrays":
            model.fit(*data(), batch_size=16, epochs=1, verbose=0, callbacks=[ends])
        else:
            model.fit(as_dataset(*data()), epochs=1, verbose=0, callbacks=[ends])
        seen.append(ends.batches)
    assert seen[1] == seen[0]
    # Executions: 6, 6, 6 and 3 batches (2 full + the small one); Keras
    # numbers an execution's end begin + steps_per_execution - 1.
    assert [b for b, _ in seen[0]] == [5, 11, 17, 23]
    # One XLA program per execution, one more for the small last batch.
    assert programs == ["_rows" if inputs == "arrays" else "_block"] * 5


@pytest.mark.slow
@pytest.mark.parametrize("inputs", ["arrays", "dataset"])
def test_a_program_xla_cannot_compile_falls_back_and_trains_every_batch(inputs):
    def fit(model):
        if inputs == "arrays":
            return model.fit(*data(), batch_size=16, epochs=1, verbose=0)
        return model.fit(as_dataset(*data()), epochs=1, verbose=0)

    reference = make(True, "alternating")
    fit(reference)
    model = make(True, "alternating")
    model.make_train_function()

    def refuse(*args):
        raise tf.errors.InvalidArgumentError(None, None, "Detected unsupported operations (XLA)")

    refuse.get_concrete_function = lambda *args: None
    model.train_function._block = model.train_function._rows = refuse
    with pytest.warns(UserWarning, match="XLA could not compile the steps as one loop"):
        fit(model)
    assert int(model.step_counter.numpy()) == 21
    assert_same_arrays(model.get_weights(), reference.get_weights(), exact=False, atol=1e-5)


def test_batches_that_are_not_plain_tensors_are_refused_with_the_reason():
    model = make(True)
    strings = tf.data.Dataset.from_tensors({"text": tf.constant(["a"])}).element_spec
    assert (
        _fused._unfusable_reason(model, strings) == "a batch holds strings, which XLA cannot take."
    )
    ragged = tf.data.Dataset.from_tensors(tf.ragged.constant([[1.0], [2.0, 3.0]])).element_spec
    assert "RaggedTensorSpec" in _fused._unfusable_reason(model, ragged)


@pytest.mark.slow
def test_a_dataset_with_none_labels_and_weights_trains_fused_as_unfused():
    x, y = data()
    rows = (x, {"y1": y["y1"], "y2": None}, {"y1": np.linspace(0, 1, ROWS, dtype="float32")})
    models = []
    for jit in (False, True):
        model = make(jit, dropout=0.0)
        model.fit(tf.data.Dataset.from_tensor_slices(rows).batch(16), epochs=1, verbose=0)
        models.append(model)
    assert isinstance(models[1].train_function, _fused.FusedTrainFunction)
    assert_same_arrays(models[1].get_weights(), models[0].get_weights(), exact=False, atol=1e-5)


@pytest.mark.slow
def test_under_a_strategy_training_runs_unfused_with_a_warning(mirrored_strategy):
    with mirrored_strategy.scope():
        model = make(True, dropout=0.0)
    with pytest.warns(UserWarning, match="tf.distribute strategy; fused executions run on one"):
        model.fit(*data(), batch_size=16, epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 21


def test_fusion_needs_jit_compile_and_several_steps_per_execution():
    assert _fused.wanted(make(True, spe=6))
    assert not _fused.wanted(make(False, spe=6))
    assert not _fused.wanted(make(True, spe=1))


@pytest.mark.parametrize("inputs", ["arrays", "dataset"])
def test_evaluate_runs_each_execution_as_one_program_with_the_unfused_results(inputs):
    x, y = data()
    y["y2"][::5] = np.nan  # missing labels
    weights = {"y1": np.linspace(0.5, 1.5, ROWS).astype("float32"), "y2": np.ones(ROWS, "float32")}
    plain, fused = make(False, dropout=0.0), make(True, dropout=0.0)
    for model in (plain, fused):
        model.build((None, 6))
    fused.set_weights(plain.get_weights())
    programs = []
    count_programs(fused, programs, which="test")
    logs = []
    for model in (plain, fused):
        if inputs == "arrays":
            kwargs = {"sample_weight": weights, "batch_size": 16}
            logs.append(model.evaluate(x, y, verbose=0, return_dict=True, **kwargs))
        else:
            dataset = tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(16)
            logs.append(model.evaluate(dataset, verbose=0, return_dict=True))
    assert not isinstance(plain.test_function, _fused.FusedTrainFunction)
    assert sorted(logs[1]) == sorted(logs[0])
    for key in logs[0]:
        np.testing.assert_allclose(logs[1][key], logs[0][key], rtol=1e-5)
    # 21 batches at 6 per execution: 3 full executions, then 2 full batches
    # and the small one (a program of its own).
    assert programs == ["_rows" if inputs == "arrays" else "_block"] * 5
