"""The "Multi-Task Learning in Tensorflow" tutorial, with keras_mtl.

The tutorial's exact network: 10 inputs, one shared 20-unit ReLU layer, two
20-unit ReLU heads (Y1 and Y2), an L2 loss per task. It is trained both ways
the tutorial describes:

* alternating: each step flips a coin for ONE task and runs that task's own
  Adam optimizer over the shared layer and that task's head;
* joint: each step minimizes Y1_loss + Y2_loss with one Adam.

Run:  python examples/seed_tutorial.py [--epochs 20]
"""

import argparse

import keras
import numpy as np

import keras_mtl


def l2_loss(y_true, y_pred):
    """Per-example `tf.nn.l2_loss`: half the sum of squared errors."""
    return 0.5 * keras.ops.sum(keras.ops.square(y_true - y_pred), axis=-1)


def make_data(n, rng, weights):
    """Two related tasks on the same 10 inputs (the tutorial used pure noise)."""
    w_shared, w1, w2 = weights
    x = rng.random((n, 10)).astype("float32") * 10
    shared = np.maximum(x @ w_shared / 10, 0)
    y1 = shared @ w1 / 5
    y2 = shared @ w2 / 5 + 1.0
    return x, {"Y1": y1.astype("float32"), "Y2": y2.astype("float32")}


def tutorial_model():
    return keras_mtl.MultiTaskModel(
        trunk_units=[20], heads={"Y1": 20, "Y2": 20}, head_activation="relu"
    )


def main(epochs=20):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    weights = (rng.normal(size=(10, 20)), rng.random((20, 20)), rng.random((20, 20)))
    x, y = make_data(2000, rng, weights)
    x_val, y_val = make_data(500, rng, weights)

    results = {}
    alternating = tutorial_model()
    alternating.compile(
        loss={"Y1": l2_loss, "Y2": l2_loss},
        mode="alternating",
        sampler="uniform",  # the tutorial's coin flip
        task_optimizers={"Y1": "adam", "Y2": "adam"},  # Y1_op and Y2_op
        seed=0,
    )
    print("== Alternating training (one Adam per task, coin flip per step)")
    alternating.fit(x, y, batch_size=10, epochs=epochs, validation_data=(x_val, y_val), verbose=2)
    results["alternating"] = alternating.evaluate(x_val, y_val, return_dict=True, verbose=0)

    joint = tutorial_model()
    joint.compile(optimizer="adam", loss={"Y1": l2_loss, "Y2": l2_loss}, mode="joint")
    print("== Joint training (Joint_Loss = Y1_Loss + Y2_Loss, one Adam)")
    joint.fit(x, y, batch_size=10, epochs=epochs, validation_data=(x_val, y_val), verbose=2)
    results["joint"] = joint.evaluate(x_val, y_val, return_dict=True, verbose=0)

    print("\nValidation loss per task (L2 loss per example):")
    print(f"{'mode':<12} {'Y1_loss':>10} {'Y2_loss':>10}")
    for mode, logs in results.items():
        print(f"{mode:<12} {logs['Y1_loss']:>10.4f} {logs['Y2_loss']:>10.4f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The tutorial's network, trained both ways.")
    parser.add_argument("--epochs", type=int, default=20)
    main(parser.parse_args().epochs)
