"""Two datasets, two tasks, one shared trunk: alternating training with interleave.

Two related regression problems share one 8-feature input space but come
from different datasets (the tutorial's English->French / English->German
case): task "large" has 4,000 examples and one target; task "small" has only
300 examples and three targets. Both depend on the same hidden features, so
the small task can borrow what the trunk learns from the large one.

`keras_mtl.data.interleave` feeds one dataset per task; each batch is one
task's, and an alternating step trains exactly that task. We compare two
samplers: proportional to dataset size (the large task dominates the trunk,
the tutorial's first bias) and uniform (both tasks get equal turns).

Run:  python examples/two_datasets.py [--epochs 8]
"""

import argparse

import keras
import numpy as np
import tensorflow as tf

import keras_mtl

FEATURES = 8


def make_tasks(rng):
    hidden = rng.normal(size=(FEATURES, 4))  # what the tasks share
    w_large = rng.normal(size=(4, 1))
    w_small = rng.normal(size=(4, 3))

    def sample(n, w):
        x = rng.normal(size=(n, FEATURES)).astype("float32")
        y = np.tanh(x @ hidden) @ w + 0.1 * rng.normal(size=(n, w.shape[1]))
        return x, y.astype("float32")

    return {
        "large": (sample(4000, w_large), sample(1000, w_large)),
        "small": (sample(300, w_small), sample(1000, w_small)),
    }


def as_dataset(x, y, batch_size=32, shuffle=True):
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=0)
    return ds.batch(batch_size)


def train(tasks, sampler, epochs=8):
    keras.utils.set_random_seed(0)
    train_sets = {t: as_dataset(*train) for t, (train, _) in tasks.items()}
    steps = sum(int(ds.cardinality()) for ds in train_sets.values())
    data = keras_mtl.data.interleave(train_sets, sampler=sampler, seed=0)

    model = keras_mtl.MultiTaskModel(trunk_units=[64, 32], heads={"large": 1, "small": 3})
    model.compile(
        optimizer="adam",
        loss="mse",
        metrics={"large": ["mae"], "small": ["mae"]},
        mode="alternating",
        seed=0,
    )
    print(f"== sampler={sampler!r}: {steps} steps per epoch")
    model.fit(data, steps_per_epoch=steps, epochs=epochs, verbose=2)

    scores = {}
    for task, (_, (x_test, y_test)) in tasks.items():
        # Evaluate each task on its own test set; the other task's labels are absent.
        logs = model.evaluate(
            x_test,
            {task: y_test, **{t: None for t in tasks if t != task}},
            return_dict=True,
            verbose=0,
        )
        scores[task] = logs[f"{task}_mae"]
    return scores


def main(epochs=8):
    tasks = make_tasks(np.random.default_rng(0))
    results = {s: train(tasks, s, epochs) for s in ("proportional", "uniform")}
    print("\nTest MAE per task (lower is better):")
    print(f"{'sampler':<14} {'large':>8} {'small':>8}")
    for sampler, scores in results.items():
        print(f"{sampler:<14} {scores['large']:>8.4f} {scores['small']:>8.4f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Two datasets, alternating training.")
    parser.add_argument("--epochs", type=int, default=8)
    main(parser.parse_args().epochs)
