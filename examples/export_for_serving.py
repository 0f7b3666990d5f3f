"""Train a MultiTaskModel and export it for TF Serving.

Writes `./serving/<name>/1/` (TF Serving's versioned layout: a model base
path holding one folder per version), prints what `saved_model_cli show`
sees, and the REST requests a TF Serving client would send.

Run:  python examples/export_for_serving.py [--name house] [--base serving]

Then, with TF Serving installed (e.g. its Docker image):
    docker run -p 8501:8501 -v "$PWD/serving/house:/models/house" \\
        -e MODEL_NAME=house tensorflow/serving
"""

import argparse
import json
import os
import subprocess
import sys

import keras
import numpy as np

import keras_mtl


def train(seed=0):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.random((1000, 6)).astype("float32")
    y = {
        "price": (x @ rng.random(6)).astype("float32"),
        "kind": (x[:, 0] * 2.99).astype("int32"),
    }
    model = keras_mtl.MultiTaskModel(
        trunk_units=[32, 16],
        heads={
            "price": 1,
            "kind": keras_mtl.Head(3, activation="softmax", dropout=0.2, hidden_units=[8]),
        },
    )
    model.compile(
        optimizer="adam",
        loss={"price": "mse", "kind": "sparse_categorical_crossentropy"},
        metrics={"kind": ["accuracy"]},
    )
    model.fit(x, y, epochs=3, batch_size=32, verbose=2)
    return model, x


def rest_requests(name, model, example):
    """The requests a TF Serving REST client sends, one per signature."""
    instances = np.round(example.astype(float), 4).tolist()
    url = f"POST http://localhost:8501/v1/models/{name}:predict"
    out = []
    for signature in ("serving_default", *model.task_names):
        body = {"signature_name": signature, "instances": instances}
        out.append(f"{url}\n{json.dumps(body)}")
    return out


def main(name="house", base="serving"):
    model, x = train()
    path = os.path.join(base, name, "1")
    signatures = model.export(path, verbose=False)
    print(f"\nExported to {path} with signatures {signatures}\n")

    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", path, "--all"], capture_output=True, text=True)
    summary = shown.stdout.split("\nConcrete Functions:")[0]
    print("saved_model_cli show --all\n" + summary)

    print("REST requests (TF Serving on port 8501):\n")
    for request in rest_requests(name, model, x[:2]):
        print(request + "\n")
    print("Expected outputs for those two rows (model.predict):")
    print(
        {
            k: np.round(v.astype(float), 4).tolist()
            for k, v in model.predict(x[:2], verbose=0).items()
        }
    )
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="house", help="model name in TF Serving")
    parser.add_argument("--base", default="serving", help="model base path")
    args = parser.parse_args()
    main(args.name, args.base)
