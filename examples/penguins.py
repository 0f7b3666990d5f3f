"""Palmer Penguins: species, sex and body mass from one shared trunk, on raw columns.

Three related tasks on the same penguins (Horst, Hill & Gorman, 2020):

* species: Adelie, Chinstrap or Gentoo (3-class softmax);
* sex: female or male (1 sigmoid unit); unknown for 9 penguins;
* body mass: regression on the standardized mass (the MAE is reported in grams).

The model takes the RAW columns, by name: the island as a string and the bill
length, bill depth and flipper length in millimetres. The preprocessing lives
inside the trunk, a functional `keras.Model` with one named input per column:
a `StringLookup` one-hot encodes the island and a `Normalization` layer,
adapted on the training split, standardizes each measurement. So `fit` takes
the DataFrame of raw columns as it is, and the exported SavedModel takes the
raw values a TF Serving client sends:

    {"instances": [{"island": "Biscoe", "bill_length_mm": 39.1, ...}]}

One trunk feeds one head per task. We train it jointly and by alternating
tasks, and compare both with three single-task models of the same size (the
same trunk, each with its own freshly adapted preprocessing layers, one
head) trained the same way, on a held-out test split. The joint model is then
exported and one raw test row is served from the SavedModel.

Penguins whose sex is unknown keep their species and mass: their sex label
is NaN, which keras_mtl treats as a missing label (no loss, no metric).

Run:  python examples/penguins.py
(writes penguins_curves.png and the SavedModel serving/penguins/1, which TF
Serving serves with e.g.
    docker run -p 8501:8501 -v "$PWD/serving/penguins:/models/penguins" \\
        -e MODEL_NAME=penguins tensorflow/serving)
"""

import json

import keras
import numpy as np
import palmerpenguins
import tensorflow as tf

import keras_mtl

MEASUREMENTS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]
INPUTS = ["island", *MEASUREMENTS]  # the raw columns the model takes, by name
ISLANDS = ["Biscoe", "Dream", "Torgersen"]
SPECIES = ["Adelie", "Chinstrap", "Gentoo"]
TASKS = ("species", "sex", "mass")

TRUNK_UNITS = [32, 32]
HEADS = {
    "species": keras_mtl.Head(3, activation="softmax"),
    "sex": keras_mtl.Head(1, activation="sigmoid"),
    "mass": 1,
}
LOSSES = {"species": "sparse_categorical_crossentropy", "sex": "binary_crossentropy", "mass": "mse"}
METRICS = {"species": "accuracy", "sex": "accuracy", "mass": "mae"}
BATCH_SIZE = 16
LEARNING_RATE = 5e-3

COLUMNS = {"species_accuracy": "species acc", "sex_accuracy": "sex acc", "mass_mae": "mass MAE (g)"}


def load_data(seed=0, test_fraction=0.2, val_fraction=0.2):
    """Raw inputs and labels, split into train/val/test with a fixed seed.

    Returns:
        `(splits, (mass_mean, mass_std))`: `splits[name] = (x, {task:
        labels})` for `name` in train/val/test, where `x` is a DataFrame of
        the raw columns `INPUTS` (the island as text, the measurements in
        mm); and the training split's mean and standard deviation (in grams)
        that standardize the mass labels.
    """
    df = palmerpenguins.load_penguins()
    # Inputs cannot be NaN, so the 2 penguins with no measurements at all are
    # dropped. Missing labels are kept as NaN and masked by keras_mtl.
    df = df.dropna(subset=MEASUREMENTS).reset_index(drop=True)

    order = np.random.default_rng(seed).permutation(len(df))
    n_test = round(test_fraction * len(df))
    n_val = round(val_fraction * len(df))
    rows = {
        "test": order[:n_test],
        "val": order[n_test : n_test + n_val],
        "train": order[n_test + n_val :],
    }

    # The mass target is standardized with the training rows only, so the
    # test split stays unseen (the inputs are standardized inside the trunk).
    train = df.iloc[rows["train"]]
    mass_mean, mass_std = float(train["body_mass_g"].mean()), float(train["body_mass_g"].std())
    labels = {
        "species": df["species"].map(SPECIES.index).to_numpy("int32"),
        "sex": df["sex"].map({"female": 0.0, "male": 1.0}).to_numpy("float32")[:, None],
        "mass": ((df["body_mass_g"] - mass_mean) / mass_std).to_numpy("float32")[:, None],
    }
    splits = {
        name: (df.iloc[idx][INPUTS], {t: y[idx] for t, y in labels.items()})
        for name, idx in rows.items()
    }
    return splits, (mass_mean, mass_std)


def make_trunk(x_train):
    """A fresh trunk on the raw columns, its preprocessing adapted on `x_train`.

    One named input per column: the island (a string) one-hot encoded by a
    `StringLookup` (an island it has never seen goes to its out-of-vocabulary
    slot), each measurement standardized by its own `Normalization` layer.
    """
    inputs = {"island": keras.Input((1,), name="island", dtype="string")}
    lookup = keras.layers.StringLookup(vocabulary=ISLANDS, output_mode="one_hot")
    features = [lookup(inputs["island"])]
    for name in MEASUREMENTS:
        inputs[name] = keras.Input((1,), name=name)
        normalize = keras.layers.Normalization()
        normalize.adapt(x_train[name].to_numpy("float32")[:, None])  # mean and variance
        features.append(normalize(inputs[name]))
    h = keras.layers.Concatenate()(features)
    for units in TRUNK_UNITS:
        h = keras.layers.Dense(units, activation="relu")(h)
    return keras.Model(inputs, h, name="trunk")


def train(splits, tasks, mode, epochs, seed=0):
    """Trains a model with a head per task in `tasks`; returns (model, history)."""
    (x, y), (x_val, y_val) = splits["train"], splits["val"]
    keras.utils.set_random_seed(seed)  # same initial trunk for every model
    model = keras_mtl.MultiTaskModel(make_trunk(x), {t: HEADS[t] for t in tasks})
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss={t: LOSSES[t] for t in tasks},
        metrics={t: [METRICS[t]] for t in tasks},
        mode=mode,
        **({"seed": seed} if mode == "alternating" else {}),
    )
    print(f"== {mode} training of {', '.join(tasks)}")
    history = model.fit(
        x,
        {t: y[t] for t in tasks},
        batch_size=BATCH_SIZE,
        epochs=epochs,
        validation_data=(x_val, {t: y_val[t] for t in tasks}),
        verbose=1,
    )
    return model, history


def evaluate_on_test(model, splits, tasks, mass_std):
    """The test-split metrics of `tasks`, with the mass MAE in grams."""
    x_test, y_test = splits["test"]
    logs = model.evaluate(x_test, {t: y_test[t] for t in tasks}, return_dict=True, verbose=0)
    scores = {f"{t}_{METRICS[t]}": float(logs[f"{t}_{METRICS[t]}"]) for t in tasks}
    if "mass_mae" in scores:
        scores["mass_mae"] *= mass_std  # MAE scales with the standardization
    return scores


def save_curves(history, path):
    """Saves the per-task curves of `history` to `path`; False without matplotlib."""
    try:
        import matplotlib  # noqa: F401  (optional: only needed for the plot)
    except ImportError:
        print(f"matplotlib is not installed: skipping {path} (pip install 'keras_mtl[plot]').")
        return False
    fig = keras_mtl.plot_history(history, path=path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    print(f"Saved the alternating run's per-task train/validation curves to {path}")
    return True


def format_table(results):
    """The comparison table, one row per training scheme."""
    lines = [f"{'':<12}" + "".join(f"{c:>14}" for c in COLUMNS.values())]
    for row, scores in results.items():
        lines.append(f"{row:<12}" + "".join(f"{scores[k]:>14.3f}" for k in COLUMNS))
    return "\n".join(lines)


def rest_request(x, row=0):
    """The TF Serving REST request body for row `row` of the raw columns `x`."""
    values = x.iloc[row]
    instance = {c: str(values[c]) if c == "island" else float(values[c]) for c in INPUTS}
    return {"instances": [instance]}


def export_and_serve(model, splits, mass, path, row=0):
    """Exports `model` to `path` and serves one raw test row from the SavedModel.

    The SavedModel is loaded with TensorFlow alone (`tf.saved_model.load`) and
    its `serving_default` signature called with the raw named values, one
    tensor of shape `(1,)` per column, as TF Serving does with the REST
    request it prints.

    Returns:
        Dict with the `request` body, the `served` outputs `{task: array}`
        and the outputs `model.predict` gives for the same row (`predicted`).
    """
    model.export(path, verbose=False)
    x_test, y_test = splits["test"]
    request = rest_request(x_test, row)
    instance = request["instances"][0]
    print(f"\nExported the joint model to {path}. TF Serving REST request, raw values:")
    print("POST http://localhost:8501/v1/models/penguins:predict")
    print(json.dumps(request))

    served_model = tf.saved_model.load(path)
    serve = served_model.signatures["serving_default"]
    served = serve(**{name: tf.constant([value]) for name, value in instance.items()})
    served = {task: served[task].numpy() for task in model.task_names}
    # As TF Serving answers a row-format request: one dict of outputs per instance.
    response = {
        "predictions": [{t: np.round(v[0].astype(float), 4).tolist() for t, v in served.items()}]
    }
    print("Response (serving_default of the SavedModel, loaded with tf.saved_model.load):")
    print(json.dumps(response))

    predicted = model.predict(x_test.iloc[[row]], verbose=0)
    gap = max(float(np.max(np.abs(served[t] - predicted[t]))) for t in served)
    mass_mean, mass_std = mass
    species, p_male = SPECIES[int(np.argmax(served["species"][0]))], float(served["sex"][0, 0])
    grams = mass_mean + mass_std * float(served["mass"][0, 0])
    true_sex = {0.0: "female", 1.0: "male"}.get(float(y_test["sex"][row, 0]), "unknown sex")
    true_grams = mass_mean + mass_std * float(y_test["mass"][row, 0])
    print(
        f"Read: {species}, P(male) = {p_male:.2f}, {grams:.0f} g; this penguin is a "
        f"{SPECIES[int(y_test['species'][row])]}, {true_sex}, {true_grams:.0f} g. "
        f"Largest difference from model.predict: {gap:.1e}"
    )
    return {"request": request, "served": served, "predicted": predicted}


def main(epochs=25, plot_path="penguins_curves.png", export_path="serving/penguins/1"):
    """Trains and compares the models, saves the curves (`plot_path`) and exports
    the joint model (`export_path`; None skips either); returns the test scores."""
    splits, mass = load_data()
    mass_std = mass[1]
    results = {}
    for mode in ("joint", "alternating"):
        model, history = train(splits, TASKS, mode, epochs)
        results[mode] = evaluate_on_test(model, splits, TASKS, mass_std)
        if mode == "joint":
            joint = model
        else:
            curves = history
    # Same trunk and head, same optimizer, epochs and batch size, one task each.
    results["single-task"] = {}
    for task in TASKS:
        model, _ = train(splits, (task,), "joint", epochs)
        results["single-task"].update(evaluate_on_test(model, splits, (task,), mass_std))

    print(f"\nTest split ({len(splits['test'][0])} penguins), {epochs} epochs:")
    print(format_table(results))
    print(
        "(In alternating mode each step trains one task, so each task gets about "
        "a third of the updates.)"
    )
    if plot_path is not None:
        save_curves(curves, plot_path)
    if export_path is not None:
        export_and_serve(joint, splits, mass, export_path)
    return results


if __name__ == "__main__":
    main()
