"""Handwritten digits: three tasks on one convolutional trunk.

scikit-learn's bundled digits (1,797 grayscale 8x8 images, no download) with
three labels per image:

* digit: which of 0-9 (10-class softmax);
* odd: is the digit odd (1 sigmoid unit);
* ge5: is the digit 5 or more (1 sigmoid unit).

The trunk is any Keras layer; here a small `keras.Sequential` of two
convolutions with max pooling, flattened, shared by three Dense heads. We
train it jointly and by alternating tasks, and compare both with three
single-task models (the same trunk architecture with one head, the same
optimizer, epochs and batch size) on a held-out 20% test split. Every model
gets a freshly built trunk from the same seed, so all start from the same
weights.

In alternating mode each step trains one task (drawn uniformly), so each head
gets about a third of the updates the joint and single-task heads get, while
the trunk gets as many.

Run:  pip install -e ".[cpu,examples]"
      python examples/digits.py [--epochs 10]
"""

import argparse

import keras
import numpy as np
from sklearn.datasets import load_digits

import keras_mtl

TASKS = ("digit", "odd", "ge5")
HEADS = {
    "digit": keras_mtl.Head(10, activation="softmax"),
    "odd": keras_mtl.Head(1, activation="sigmoid"),
    "ge5": keras_mtl.Head(1, activation="sigmoid"),
}
LOSSES = {
    "digit": "sparse_categorical_crossentropy",
    "odd": "binary_crossentropy",
    "ge5": "binary_crossentropy",
}
BATCH_SIZE = 32
LEARNING_RATE = 3e-3


def load_data(n_examples=None, test_fraction=0.2, seed=0):
    """Images and labels, split into train/test with a fixed seed.

    Args:
        n_examples: Use only the first `n_examples` images (all 1,797 if
            `None`), for quick runs.

    Returns:
        `{"train": (x, y), "test": (x, y)}` with `x` of shape `(n, 8, 8, 1)`
        in [0, 1] and `y = {task: labels}`.
    """
    digits = load_digits()
    images, targets = digits.images, digits.target
    if n_examples is not None:
        images, targets = images[:n_examples], targets[:n_examples]
    x = (images / 16.0).astype("float32")[..., None]  # pixel values are 0..16
    labels = {
        "digit": targets.astype("int32"),
        "odd": (targets % 2).astype("float32")[:, None],
        "ge5": (targets >= 5).astype("float32")[:, None],
    }
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = round(test_fraction * len(x))
    rows = {"test": order[:n_test], "train": order[n_test:]}
    return {name: (x[idx], {t: y[idx] for t, y in labels.items()}) for name, idx in rows.items()}


def make_trunk():
    """A fresh convolutional trunk: (batch, 8, 8, 1) -> (batch, 128).

    Each model needs its own: a layer belongs to one model. Flatten rather
    than global pooling keeps where the strokes are, which the digit task
    learns from in a few epochs.
    """
    return keras.Sequential(
        [
            keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
        ],
        name="conv_trunk",
    )


def train(splits, tasks, mode, epochs, verbose=0, seed=0):
    """Trains a model with a head per task in `tasks`; returns the model."""
    keras.utils.set_random_seed(seed)  # same initial trunk for every model
    model = keras_mtl.MultiTaskModel(make_trunk(), {t: HEADS[t] for t in tasks})
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss={t: LOSSES[t] for t in tasks},
        metrics={t: ["accuracy"] for t in tasks},
        mode=mode,
        **({"seed": seed} if mode == "alternating" else {}),
    )
    x, y = splits["train"]
    if verbose:
        print(f"== {mode} training of {', '.join(tasks)}")
    model.fit(x, {t: y[t] for t in tasks}, batch_size=BATCH_SIZE, epochs=epochs, verbose=verbose)
    return model


def evaluate_on_test(model, splits, tasks):
    """`{task: accuracy}` on the test split."""
    x, y = splits["test"]
    logs = model.evaluate(x, {t: y[t] for t in tasks}, return_dict=True, verbose=0)
    return {t: float(logs[f"{t}_accuracy"]) for t in tasks}


def format_table(results):
    """A Markdown table: one row per model, one column per task's test accuracy."""
    lines = ["| model | " + " | ".join(TASKS) + " |", "|---|" + "---:|" * len(TASKS)]
    for row, scores in results.items():
        lines.append(f"| {row} | " + " | ".join(f"{scores[t]:.3f}" for t in TASKS) + " |")
    return "\n".join(lines)


def main(epochs=10, verbose=2, n_examples=None):
    """Trains the five models and prints their test accuracies.

    Returns:
        `{"joint": {task: acc}, "alternating": {...}, "single-task": {...}}`.
    """
    splits = load_data(n_examples)
    results = {}
    for mode in ("joint", "alternating"):
        results[mode] = evaluate_on_test(train(splits, TASKS, mode, epochs, verbose), splits, TASKS)
    results["single-task"] = {}
    for task in TASKS:
        model = train(splits, (task,), "joint", epochs, verbose)
        results["single-task"].update(evaluate_on_test(model, splits, (task,)))

    n_train, n_test = len(splits["train"][0]), len(splits["test"][0])
    print(f"\nTest accuracy ({n_train} training images, {n_test} test images, {epochs} epochs):\n")
    print(format_table(results))
    print(
        "\nChance: digit 0.1, odd 0.5, ge5 0.5. In alternating mode each head gets "
        "about a third of the updates."
    )
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Digits: joint, alternating, single-task.")
    parser.add_argument("--epochs", type=int, default=10)
    main(parser.parse_args().epochs)
