"""Writes the keras_mtl 0.1.0 file with a weighting method that tests load.

Run it with keras_mtl 0.1.0 (commit b81061f) importable, from the repository
root: `python tests/data/make_legacy_0_1_0_weighting.py`. 0.1.0 saved the
method's state under the private attribute `_weighting`.
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
    model = keras_mtl.MultiTaskModel([4], {"a": 1, "b": 1})
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss="mse",
        weighting=keras_mtl.weighting.Uncertainty(),
    )
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    model.save(os.path.join(here, "legacy_0_1_0_weighting.keras"))
    np.savez(
        os.path.join(here, "legacy_0_1_0_weighting.expected.npz"),
        log_variances=np.array([v.numpy() for v in model._weighting.log_variances]),
        optimizer_iterations=int(model.optimizer.iterations.numpy()),
    )
    print([v.numpy() for v in model._weighting.log_variances])


if __name__ == "__main__":
    main()
