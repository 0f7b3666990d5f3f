"""Writes the keras_mtl 0.1.0 files that tests/test_saving.py loads.

Run it with keras_mtl 0.1.0 (commit b81061f) installed, from the repository
root: `python tests/data/make_legacy_0_1_0.py`. It is kept to show how the
files were made; the tests only read them.

0.1.0 stored per-task optimizer states by position (`_task_optimizers/adam`,
`_task_optimizers/adam_1`, in the order of the `task_optimizers` dict), so the
two tasks here get the same optimizer class and different step counts: a
loader that mixes them up restores the wrong counts.
"""

import os

import keras
import numpy as np

import keras_mtl


def main():
    assert keras_mtl.__version__ == "0.1.0", keras_mtl.__version__
    here = os.path.dirname(os.path.abspath(__file__))
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((24, 3)).astype("float32")
    y = {"a": x.sum(1, keepdims=True), "b": x[:, :1] * 2.0}

    for name, task_optimizers, shared in (
        (
            "legacy_0_1_0_task_optimizers",
            {"a": keras.optimizers.Adam(0.01), "b": keras.optimizers.Adam(0.02)},
            "adam",
        ),
        (
            "legacy_0_1_0_mixed_optimizers",
            {"b": keras.optimizers.Adam(0.02)},
            keras.optimizers.Adam(0.005),
        ),
    ):
        model = keras_mtl.MultiTaskModel([4], {"a": 1, "b": 1})
        model.compile(
            optimizer=shared,
            loss="mse",
            mode="alternating",
            sampler="round_robin",
            task_optimizers=task_optimizers,
            seed=3,
        )
        # Steps 0..2 train a, b, a: task a's optimizer ends at 2 iterations, b's at 1.
        for i in range(3):
            model.train_on_batch(
                x[8 * i : 8 * (i + 1)], {k: v[8 * i : 8 * (i + 1)] for k, v in y.items()}
            )
        model.save(os.path.join(here, f"{name}.keras"))
        model.save_weights(os.path.join(here, f"{name}.weights.h5"))
        np.savez(
            os.path.join(here, f"{name}.expected.npz"),
            **{
                f"{t}_iterations": int(o.iterations.numpy())
                for t, o in model._task_optimizers.items()
            },
            **{v.path.replace("/", "__"): v.numpy() for v in model.weights},
            **{
                f"{t}_slot_{i}": v.numpy()
                for t, o in model._task_optimizers.items()
                for i, v in enumerate(o.variables)
            },
            shared_iterations=-1
            if model.optimizer is None
            else int(model.optimizer.iterations.numpy()),
        )
        print(name, {t: int(o.iterations.numpy()) for t, o in model._task_optimizers.items()})


if __name__ == "__main__":
    main()
