"""Numerical trouble and killed processes: nothing good is lost."""

import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import assert_same_arrays, head_weights

import keras_mtl

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fault_worker  # noqa: E402


def _run_worker(callback, directory, epochs, kill, out):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(HERE, "fault_worker.py"),
            callback,
            str(directory),
            str(epochs),
            str(kill),
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    return done


def _npz_arrays(path):
    data = np.load(path)
    return [data[f"arr_{i}"] for i in range(len(data.files))]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_kill_during_model_checkpoint_keeps_previous_checkpoint(tmp_path):
    # Uninterrupted reference: 3 epochs.
    reference = _run_worker("checkpoint", tmp_path / "ref", 3, 0, tmp_path / "ref.npz")
    assert reference.returncode == 0, reference.stderr[-2000:]

    os.makedirs(tmp_path / "run")
    killed = _run_worker("checkpoint", tmp_path / "run", 3, 2, tmp_path / "unused.npz")
    assert killed.returncode == -signal.SIGKILL  # died while writing epoch 2's checkpoint

    # The epoch-1 checkpoint is intact and loads; resuming from it for the
    # remaining epochs ends where the uninterrupted run ended.
    model = fault_worker.model()
    model.build((None, 5))
    model.load_weights(tmp_path / "run" / "ckpt.weights.h5")
    assert int(model.step_counter.numpy()) == 6
    x, y = fault_worker.data()
    model.fit(x, y, batch_size=8, epochs=3, initial_epoch=1, shuffle=False, verbose=0)
    assert_same_arrays(
        [v.numpy() for v in model.trainable_weights],
        _npz_arrays(tmp_path / "ref.npz"),
        exact=False,
        atol=1e-5,
    )


@pytest.mark.slow
@pytest.mark.multiprocess
def test_kill_during_backup_then_restart_resumes_exactly(tmp_path):
    reference = _run_worker("backup", tmp_path / "ref", 4, 0, tmp_path / "ref.npz")
    assert reference.returncode == 0, reference.stderr[-2000:]

    killed = _run_worker("backup", tmp_path / "run", 4, 3, tmp_path / "unused.npz")
    assert killed.returncode == -signal.SIGKILL  # died while backing up epoch 3

    resumed = _run_worker("backup", tmp_path / "run", 4, 0, tmp_path / "resumed.npz")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_arrays(
        _npz_arrays(tmp_path / "resumed.npz"),
        _npz_arrays(tmp_path / "ref.npz"),
        exact=False,
        atol=1e-5,
    )


def _nan_data():
    rng = np.random.default_rng(0)
    x = rng.random((64, 5)).astype("float32")
    y = {"a": x.sum(1).astype("float32"), "b": (x[:, 0] - x[:, 1]).astype("float32")}
    y["b"][40] = np.inf  # not a missing label (NaN is): a batch whose 'b' loss is inf
    return x, y


def test_terminate_on_nan_stops_and_the_best_checkpoint_stays_good(tmp_path):
    x, y = _nan_data()
    model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
    model.compile(optimizer="adam", loss="mse")
    path = str(tmp_path / "best.weights.h5")
    checkpoint = keras.callbacks.ModelCheckpoint(
        path, monitor="loss", save_best_only=True, save_weights_only=True
    )
    # Epoch 1 uses rows 0-31 only (finite); epoch 2 reaches row 40.
    history = model.fit(
        x[:32],
        {k: v[:32] for k, v in y.items()},
        batch_size=8,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[checkpoint],
    )
    good = [w.copy() for w in model.get_weights()]
    history = model.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[checkpoint, keras.callbacks.TerminateOnNaN()],
    )
    assert len(history.history["loss"]) == 1  # stopped in its first epoch
    assert not np.isfinite(history.history["loss"][0])
    restored = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
    restored.compile(optimizer="adam", loss="mse")
    restored.build((None, 5))
    restored.load_weights(path)
    assert all(np.all(np.isfinite(w)) for w in restored.get_weights())
    assert_same_arrays(restored.get_weights(), good, exact=True)


def test_alternating_inf_loss_in_one_task_does_not_touch_other_heads():
    x, y = _nan_data()
    model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
    model.compile(optimizer="adam", loss="mse", mode="alternating", sampler="round_robin")
    model.fit(x[:8], {k: v[:8] for k, v in y.items()}, batch_size=8, verbose=0)  # builds slots
    a_before = head_weights(model, "a")
    # Only the batch holding row 40 (steps 5 and 6 of the epoch) is bad; with
    # round robin starting at 'b' (step 1), 'b' trains on it.
    model.fit(x[40:48], {k: v[40:48] for k, v in y.items()}, batch_size=8, verbose=0)
    assert not all(np.all(np.isfinite(w)) for w in head_weights(model, "b"))
    assert_same_arrays(a_before, head_weights(model, "a"), exact=True)
