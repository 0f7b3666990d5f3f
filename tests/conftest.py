"""Shared test set-up: quiet TensorFlow, two logical CPUs, fresh seeds per test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices, as Keras's own distribution tests use, so
# MirroredStrategy can run on this machine. Must happen before TF starts.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


# Scripts that wrote the files in tests/data with an older keras_mtl.
collect_ignore_glob = ["data/*.py"]


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    # Without Python's full garbage collection (free_memory=True): it took ~0.4 s
    # of CPU per test here, a quarter of the suite; Python still collects on its own.
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One MirroredStrategy over 2 logical CPUs for the whole session.

    All MirroredStrategy objects in a process start their collective keys at
    the same base, so two strategies that both run all-reduces would collide
    on collective instance keys; tests share this one.
    """
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """With pytest-xdist installed, run on one worker per CPU unless told otherwise.

    Most of a test's time is TensorFlow tracing, which runs in one Python
    thread, so a second process nearly halves the suite on 2 cores. Kept out
    of `addopts` so that the suite still runs where xdist is not installed, and
    so that `-n 0` or `-p no:xdist` give one ordinary process for debugging
    (so do `--pdb` and naming only single tests, `file.py::test_name`). Whole
    files go to one worker (`--dist loadfile`), so a module-scoped fixture (a
    trained or exported model) is built once.
    """
    if os.environ.get("PYTEST_XDIST_WORKER") or not config.pluginmanager.hasplugin("xdist"):
        return
    if config.option.numprocesses is None and not config.option.collectonly:
        if len(os.sched_getaffinity(0)) < 2 or (
            config.args and all("::" in arg for arg in config.args)
        ):
            return  # one CPU, or only named tests: starting workers costs more
        config.option.numprocesses = "logical"  # xdist turns it off under --pdb
    if config.option.numprocesses and config.option.dist == "no":
        config.option.dist = "loadfile"


def pytest_configure(config):
    np.set_printoptions(precision=4, suppress=True)
