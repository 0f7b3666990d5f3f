"""steps_per_execution, XLA and eager runs give the same training in both modes."""

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


@pytest.mark.parametrize("mode", ["joint", "alternating"])
@pytest.mark.parametrize(
    "options, atol",
    [
        ({"steps_per_execution": 8}, 1e-6),
        ({"steps_per_execution": 3}, 1e-6),  # does not divide the epoch
        ({"jit_compile": True}, 1e-4),
        ({"jit_compile": True, "steps_per_execution": 8}, 1e-4),
        ({"run_eagerly": True}, 1e-6),
    ],
)
def test_compile_options_train_like_the_default(mode, options, atol):
    reference, ref_logs = _train(mode)
    model, logs = _train(mode, **options)
    assert_same_arrays(
        [v.numpy() for v in model.trainable_weights],
        [v.numpy() for v in reference.trainable_weights],
        exact=False,
        atol=atol,
    )
    assert int(model.step_counter.numpy()) == 20
    if mode == "alternating":
        assert logs["y1_updates"] == ref_logs["y1_updates"]
