"""One worker of the MultiWorkerMirroredStrategy test (run by test_multiworker.py).

Usage: python multiworker_worker.py CASE OUT.npz   (TF_CONFIG set by the caller)
"""

import contextlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_mtl  # noqa: E402


def data():
    rng = np.random.default_rng(0)
    x = rng.random((64, 6)).astype("float32")
    y = {"a": rng.random((64, 2)).astype("float32"), "b": rng.integers(0, 3, 64).astype("int32")}
    y["a"][5:40:3] = np.nan  # missing labels, unevenly spread over workers
    return x, y


def dataset(case):
    x, y = data()
    if case != "interleave":
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(8), None
    per_task = {
        "a": tf.data.Dataset.from_tensor_slices((x[:48], y["a"][:48])).batch(8),
        "b": tf.data.Dataset.from_tensor_slices((x[48:], y["b"][48:])).batch(8),
    }
    return keras_mtl.data.interleave(per_task, sampler="uniform", seed=2), 8


def train(case, strategy=None):
    """Builds, compiles and trains the case's model; the same code with or without a strategy."""
    keras.utils.set_random_seed(0)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = keras_mtl.MultiTaskModel(
            [8], {"a": 2, "b": keras_mtl.Head(3, activation="softmax")}
        )
        model.compile(
            optimizer=keras.optimizers.Adam(0.01),
            loss={"a": "mse", "b": "sparse_categorical_crossentropy"},
            mode="joint" if case == "joint" else "alternating",
            seed=3,
        )
    ds, steps = dataset(case)
    history = model.fit(ds, epochs=2, steps_per_epoch=steps, verbose=0)
    return model, history.history


def main(case, out):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    model, history = train(case, strategy)
    np.savez(out, *[v.numpy() for v in model.trainable_weights])
    print("HISTORY " + json.dumps({k: [float(v) for v in vs] for k, vs in history.items()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
