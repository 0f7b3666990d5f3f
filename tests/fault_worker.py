"""Trains a small model with checkpoints and can SIGKILL itself mid-save.

Run by test_faults.py:
    python fault_worker.py CALLBACK DIR EPOCHS KILL_AT_SAVE OUT.npz
CALLBACK is "checkpoint" (ModelCheckpoint(save_weights_only=True) every
epoch) or "backup" (BackupAndRestore). KILL_AT_SAVE = n > 0 kills the
process with SIGKILL in the middle of the n-th weights file written, after
its data went to disk but before the file was closed.
"""

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras.src.saving import saving_lib  # noqa: E402

import keras_mtl  # noqa: E402


def data():
    rng = np.random.default_rng(0)
    x = rng.random((48, 5)).astype("float32")
    return x, {"a": x.sum(1).astype("float32"), "b": (x[:, 0] * 2.99).astype("int32")}


def model():
    keras.utils.set_random_seed(0)
    m = keras_mtl.MultiTaskModel(
        [8], {"a": 1, "b": keras_mtl.Head(3, activation="softmax", dropout=0.2, hidden_units=[4])}
    )
    m.compile(
        optimizer="adam",
        loss={"a": "mse", "b": "sparse_categorical_crossentropy"},
        mode="alternating",
        task_optimizers={"a": "adam", "b": "adam"},
        seed=2,
    )
    return m


def kill_at_save(n):
    """Make the n-th H5 weights store die before it is closed."""
    original = saving_lib.H5IOStore.close
    calls = {"n": 0}

    def close(self):
        calls["n"] += 1
        if calls["n"] == n:
            self.h5_file.flush()  # the data reached the file, which is not closed
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self)

    saving_lib.H5IOStore.close = close


def main(callback, directory, epochs, kill, out):
    if kill:
        kill_at_save(kill)
    m = model()
    x, y = data()
    if callback == "checkpoint":
        cb = keras.callbacks.ModelCheckpoint(
            os.path.join(directory, "ckpt.weights.h5"), save_weights_only=True
        )
    else:
        cb = keras.callbacks.BackupAndRestore(os.path.join(directory, "backup"))
    m.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0, callbacks=[cb])
    np.savez(out, *[v.numpy() for v in m.trainable_weights])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
