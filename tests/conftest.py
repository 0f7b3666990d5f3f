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
    keras.backend.clear_session()
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


def pytest_configure(config):
    np.set_printoptions(precision=4, suppress=True)
