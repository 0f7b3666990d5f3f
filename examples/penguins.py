"""Palmer Penguins: species, sex and body mass from one shared trunk.

Three related tasks on the same penguins (Horst, Hill & Gorman, 2020):

* species: Adelie, Chinstrap or Gentoo (3-class softmax);
* sex: female or male (1 sigmoid unit); unknown for 9 penguins;
* body mass: regression on the standardized mass.

The inputs are the bill length, bill depth and flipper length
(standardized) and the island (one-hot). A shared trunk feeds one head per
task. We train it jointly and by alternating tasks, and compare both with
three single-task models of the same size (same trunk, one head) trained the
same way, on a held-out test split.

Penguins whose sex is unknown keep their species and mass: their sex label
is NaN, which keras_mtl treats as a missing label (no loss, no metric).

Run:  python examples/penguins.py
"""

import keras
import numpy as np
import palmerpenguins

import keras_mtl

MEASUREMENTS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]
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
    """Inputs and labels, split into train/val/test with a fixed seed.

    Returns:
        `(splits, mass_std)`: `splits[name] = (x, {task: labels})` for
        `name` in train/val/test, and the standard deviation (in grams) that
        scales the standardized mass.
    """
    df = palmerpenguins.load_penguins()
    # Inputs cannot be NaN, so the 2 penguins with no measurements at all are
    # dropped. Missing labels are kept as NaN and masked by keras_mtl.
    df = df.dropna(subset=MEASUREMENTS).reset_index(drop=True)

    order = np.random.default_rng(seed).permutation(len(df))
    n_test = round(test_fraction * len(df))
    n_val = round(val_fraction * len(df))
    rows = {"test": order[:n_test], "val": order[n_test : n_test + n_val],
            "train": order[n_test + n_val :]}

    # Standardize with the training rows only, so the test split stays unseen.
    train = df.iloc[rows["train"]]
    measurements = (df[MEASUREMENTS] - train[MEASUREMENTS].mean()) / train[MEASUREMENTS].std()
    islands = np.stack([(df["island"] == i).to_numpy() for i in ISLANDS], axis=1)
    x = np.concatenate([measurements.to_numpy(), islands], axis=1).astype("float32")

    mass_mean, mass_std = train["body_mass_g"].mean(), train["body_mass_g"].std()
    labels = {
        "species": df["species"].map(SPECIES.index).to_numpy("int32"),
        "sex": df["sex"].map({"female": 0.0, "male": 1.0}).to_numpy("float32")[:, None],
        "mass": ((df["body_mass_g"] - mass_mean) / mass_std).to_numpy("float32")[:, None],
    }
    splits = {
        name: (x[idx], {t: y[idx] for t, y in labels.items()}) for name, idx in rows.items()
    }
    return splits, float(mass_std)


def train(splits, tasks, mode, epochs, seed=0):
    """Trains a model with a head per task in `tasks`; returns (model, history)."""
    keras.utils.set_random_seed(seed)  # same initial trunk for every model
    model = keras_mtl.MultiTaskModel(TRUNK_UNITS, {t: HEADS[t] for t in tasks})
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss={t: LOSSES[t] for t in tasks},
        metrics={t: [METRICS[t]] for t in tasks},
        mode=mode,
        **({"seed": seed} if mode == "alternating" else {}),
    )
    (x, y), (x_val, y_val) = splits["train"], splits["val"]
    print(f"== {mode} training of {', '.join(tasks)}")
    history = model.fit(
        x, {t: y[t] for t in tasks}, batch_size=BATCH_SIZE, epochs=epochs,
        validation_data=(x_val, {t: y_val[t] for t in tasks}), verbose=1,
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


def main(epochs=25, plot_path="penguins_curves.png"):
    splits, mass_std = load_data()
    results = {}
    for mode in ("joint", "alternating"):
        model, history = train(splits, TASKS, mode, epochs)
        results[mode] = evaluate_on_test(model, splits, TASKS, mass_std)
        if mode == "alternating":
            curves = history
    # Same trunk and head, same optimizer, epochs and batch size, one task each.
    results["single-task"] = {}
    for task in TASKS:
        model, _ = train(splits, (task,), "joint", epochs)
        results["single-task"].update(evaluate_on_test(model, splits, (task,), mass_std))

    print(f"\nTest split ({len(splits['test'][0])} penguins), {epochs} epochs:")
    print(format_table(results))
    print("(In alternating mode each step trains one task, so each task gets about "
          "a third of the updates.)")
    if plot_path is not None:
        save_curves(curves, plot_path)
    return results


if __name__ == "__main__":
    main()
