"""keras_mtl: multi-task learning that feels like part of Keras.

One shared trunk, one named head per task, trained jointly or by
alternating tasks, with plain `model.fit()`.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

try:
    import tensorflow  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without TF
    raise ImportError(
        "keras_mtl needs TensorFlow. Install it with "
        "`pip install 'keras_mtl[cpu]'` (CPU) or `pip install 'keras_mtl[gpu]'` "
        "(from a checkout: `pip install -e '.[cpu]'`)."
    ) from e

import keras

if keras.backend.backend() != "tensorflow":  # pragma: no cover
    raise ImportError(
        "keras_mtl runs on Keras's TensorFlow backend, but Keras was loaded "
        f"with the {keras.backend.backend()!r} backend. Set "
        "KERAS_BACKEND=tensorflow before importing keras."
    )

from keras_mtl import callbacks, data, layers, optimizers, samplers, weighting
from keras_mtl.heads import Head
from keras_mtl.model import MultiTaskModel
from keras_mtl.plotting import plot_expert_utilization, plot_history

__version__ = "0.1.0"

__all__ = [
    "MultiTaskModel",
    "Head",
    "samplers",
    "data",
    "layers",
    "optimizers",
    "weighting",
    "callbacks",
    "plot_history",
    "plot_expert_utilization",
    "__version__",
]
