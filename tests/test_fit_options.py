"""steps_per_execution, XLA and eager runs give the same training in both modes."""

import functools

import keras
import pytest
from helpers import assert_same_arrays, regression_data, seed_model


def _train(mode, **compile_kwargs):
    keras.utils.set_random_seed(0)
    x, y = regression_data(n=80)
    model = seed_model()
    model.compile(optimizer="adam", loss="mse", mode=mode, seed=9, **compile_kwargs)
    history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    return model, history.history


@functools.cache
def _default_run(mode):
    """The default training's weights and logs, computed once per mode (a pure
    function of the fixed seeds: every option below is compared with it)."""
    model, logs = _train(mode)
    return [v.numpy() for v in model.trainable_weights], logs


@pytest.mark.parametrize("mode", ["joint", "alternating"])
@pytest.mark.parametrize(
    "options, atol",
    [
        ({"steps_per_execution": 8}, 1e-6),
        pytest.param({"steps_per_execution": 3}, 1e-6, marks=pytest.mark.slow),  # 20 % 3 != 0
        pytest.param({"jit_compile": True}, 1e-4, marks=pytest.mark.slow),
        pytest.param({"jit_compile": True, "steps_per_execution": 8}, 1e-4, marks=pytest.mark.slow),
        ({"run_eagerly": True}, 1e-6),
    ],
)
def test_compile_options_train_like_the_default(mode, options, atol):
    reference, ref_logs = _default_run(mode)
    model, logs = _train(mode, **options)
    assert_same_arrays(
        [v.numpy() for v in model.trainable_weights], reference, exact=False, atol=atol
    )
    assert int(model.step_counter.numpy()) == 20
    if mode == "alternating":
        assert logs["y1_updates"] == ref_logs["y1_updates"]
