"""The examples run as documented (short runs) and report what they claim."""

import importlib.util
import math
import os
import sys

import numpy as np
import pytest

pytest.importorskip("palmerpenguins")
pytest.importorskip("pandas")

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


@pytest.fixture(scope="module")
def penguins():
    """examples/penguins.py, loaded as a module from its path."""
    path = os.path.join(EXAMPLES, "penguins.py")
    spec = importlib.util.spec_from_file_location("penguins_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_penguins_data_keeps_raw_columns_and_unknown_sex_as_nan(penguins):
    splits, (mass_mean, mass_std) = penguins.load_data()
    sizes = {name: len(x) for name, (x, _) in splits.items()}
    # 344 penguins, 2 without measurements; 11 without sex, 2 of them the unmeasured.
    assert sum(sizes.values()) == 342
    assert sizes == {"train": 206, "val": 68, "test": 68}
    assert sum(int(np.isnan(y["sex"]).sum()) for _, y in splits.values()) == 9
    for x, y in splits.values():
        # The raw columns, by name: the island as text, the measurements in mm.
        assert list(x.columns) == ["island", *penguins.MEASUREMENTS]
        assert penguins.MEASUREMENTS == ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]
        assert not x.isna().any().any()
        assert set(x["island"]) <= {"Biscoe", "Dream", "Torgersen"}
        assert x["flipper_length_mm"].between(170, 235).all()
        assert set(np.unique(y["species"])) <= {0, 1, 2}
        assert set(np.unique(y["sex"][~np.isnan(y["sex"])])) <= {0.0, 1.0}
        assert all(len(labels) == len(x) for labels in y.values())
    _, y_train = splits["train"]
    np.testing.assert_allclose(y_train["mass"].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(y_train["mass"].std(ddof=1), 1.0, atol=1e-5)
    assert 3500 < mass_mean < 4700 and 700 < mass_std < 900  # grams


def test_penguins_split_is_the_same_on_every_call(penguins):
    import pandas as pd

    first, _ = penguins.load_data()
    second, _ = penguins.load_data()
    for name in ("train", "val", "test"):
        pd.testing.assert_frame_equal(first[name][0], second[name][0])
        np.testing.assert_array_equal(first[name][1]["species"], second[name][1]["species"])


def test_penguins_trunk_preprocesses_the_raw_columns_inside(penguins):
    splits, _ = penguins.load_data()
    x_train = splits["train"][0]
    trunk = penguins.make_trunk(x_train)
    assert {t.name: t.dtype for t in trunk.inputs} == {
        "island": "string",
        "bill_length_mm": "float32",
        "bill_depth_mm": "float32",
        "flipper_length_mm": "float32",
    }
    # Each Normalization layer holds its column's training mean; the islands are one-hot.
    layers = penguins.keras.layers
    norms = [layer for layer in trunk.layers if isinstance(layer, layers.Normalization)]
    np.testing.assert_allclose(
        sorted(float(n.mean.numpy().squeeze()) for n in norms),
        sorted(x_train[penguins.MEASUREMENTS].mean()),
        rtol=1e-5,
    )
    lookup = next(layer for layer in trunk.layers if isinstance(layer, layers.StringLookup))
    assert lookup.get_vocabulary() == ["[UNK]", "Biscoe", "Dream", "Torgersen"]


def test_penguins_skips_the_plot_with_a_note_without_matplotlib(
    penguins, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    path = tmp_path / "curves.png"
    assert penguins.save_curves({"y1_loss": [1.0]}, path) is False
    assert "matplotlib is not installed: skipping" in capsys.readouterr().out
    assert not path.exists()


# Run by a fresh Python that can import neither keras_mtl nor Keras (as TF
# Serving has neither): it imports TensorFlow, then reads {"path": SavedModel
# directory, "request": TF Serving REST body} from stdin and answers with the
# signature's inputs and the served outputs.
_SERVE_WITHOUT_KERAS_MTL = """
import json, sys
sys.modules["keras_mtl"] = sys.modules["keras"] = None  # importing them now fails
import tensorflow as tf
for name in ("keras_mtl", "keras"):
    try:
        __import__(name)
        raise SystemExit(name + " was importable")
    except ImportError:
        pass
job = json.loads(sys.stdin.readline())
instances = job["request"]["instances"]
serve = tf.saved_model.load(job["path"]).signatures["serving_default"]
# As TF Serving reads the row format: one tensor per name, one value per instance.
inputs = {name: tf.constant([i[name] for i in instances]) for name in instances[0]}
signature = {name: [s.dtype.name, s.shape.as_list()]
             for name, s in serve.structured_input_signature[1].items()}
outputs = {task: v.numpy().tolist() for task, v in serve(**inputs).items()}
print(json.dumps({"signature": signature, "outputs": outputs}))
"""


@pytest.fixture(scope="module")
def penguins_run(penguins, tmp_path_factory):
    """One short `main()` run (1 epoch), its printed output, what its export
    step returned (the request, the served outputs and `model.predict`'s), and
    a fresh Python without keras_mtl waiting to serve the request."""
    import contextlib
    import io
    import subprocess

    tmp = tmp_path_factory.mktemp("penguins")
    # Started first, so that its TensorFlow import overlaps the training.
    fresh = subprocess.Popen(
        [sys.executable, "-c", _SERVE_WITHOUT_KERAS_MTL],
        cwd=str(tmp),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        served, export = {}, penguins.export_and_serve

        def spy(*args, **kwargs):  # keeps what main()'s export step returns
            served.update(export(*args, **kwargs))
            return served

        out = io.StringIO()
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
            patch.setattr(penguins, "export_and_serve", spy)
            results = penguins.main(
                epochs=1,
                plot_path=str(tmp / "curves.png"),
                export_path=str(tmp / "serving" / "penguins" / "1"),
            )
        yield {
            "results": results,
            "out": out.getvalue(),
            "dir": tmp,
            "export": served,
            "fresh_python": fresh,
        }
    finally:
        if fresh.poll() is None:
            fresh.kill()
            fresh.communicate()


@pytest.mark.slow
def test_penguins_main_compares_joint_alternating_and_single_task(penguins_run):
    results, out = penguins_run["results"], penguins_run["out"]

    assert list(results) == ["joint", "alternating", "single-task"]
    for row, scores in results.items():
        assert set(scores) == {"species_accuracy", "sex_accuracy", "mass_mae"}
        assert 0.0 <= scores["species_accuracy"] <= 1.0
        assert 0.0 <= scores["sex_accuracy"] <= 1.0
        assert math.isfinite(scores["mass_mae"]) and 10 < scores["mass_mae"] < 3000  # grams
        line = next(line for line in out.splitlines() if line.startswith(f"{row} "))
        np.testing.assert_allclose(
            [float(v) for v in line.split()[-3:]],
            [scores["species_accuracy"], scores["sex_accuracy"], scores["mass_mae"]],
            atol=1e-3,
        )
    assert "species acc" in out and "mass MAE (g)" in out
    assert "13/13" in out  # the progress bar of verbose=1: 206 rows, batches of 16
    with open(penguins_run["dir"] / "curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_penguins_main_exports_and_serves_a_raw_test_row(penguins, penguins_run):
    import json

    served = penguins_run["export"]
    request = served["request"]
    # The raw values of the first test penguin, by name, as a TF Serving client sends them.
    x_test = penguins.load_data()[0]["test"][0]
    assert request == {
        "instances": [
            {
                "island": x_test["island"].iloc[0],
                **{c: float(x_test[c].iloc[0]) for c in penguins.MEASUREMENTS},
            }
        ]
    }
    lines = penguins_run["out"].splitlines()
    post = lines.index("POST http://localhost:8501/v1/models/penguins:predict")
    assert json.loads(lines[post + 1]) == request
    response = json.loads(next(line for line in lines if line.startswith('{"predictions"')))
    assert set(response["predictions"][0]) == {"species", "sex", "mass"}
    for task in ("species", "sex", "mass"):
        np.testing.assert_allclose(served["served"][task], served["predicted"][task], atol=1e-5)
        np.testing.assert_allclose(
            response["predictions"][0][task], served["predicted"][task][0], atol=1e-4
        )


@pytest.mark.slow
def test_penguins_saved_model_serves_raw_values_without_keras_mtl_or_keras(penguins_run):
    import json

    served = penguins_run["export"]
    job = {
        "path": str(penguins_run["dir"] / "serving" / "penguins" / "1"),
        "request": served["request"],
    }
    fresh = penguins_run["fresh_python"]
    stdout, stderr = fresh.communicate(json.dumps(job) + "\n", timeout=180)
    assert fresh.returncode == 0, stderr[-2000:]
    answer = json.loads(stdout.strip().splitlines()[-1])
    assert answer["signature"] == {
        "island": ["string", [None]],
        "bill_length_mm": ["float32", [None]],
        "bill_depth_mm": ["float32", [None]],
        "flipper_length_mm": ["float32", [None]],
    }
    assert set(answer["outputs"]) == {"species", "sex", "mass"}
    for task, expected in served["predicted"].items():
        assert np.shape(answer["outputs"][task]) == expected.shape  # (1, units)
        np.testing.assert_allclose(answer["outputs"][task], expected, atol=1e-5, rtol=0)


def _load(name):
    spec = importlib.util.spec_from_file_location(
        f"{name}_example", os.path.join(EXAMPLES, f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_seed_tutorial_trains_both_ways():
    results = _load("seed_tutorial").main(epochs=1)
    assert set(results) == {"alternating", "joint"}
    for logs in results.values():
        assert set(logs) == {"loss", "Y1_loss", "Y2_loss"}
        assert all(math.isfinite(v) for v in logs.values())


@pytest.mark.slow
def test_two_datasets_example_compares_samplers():
    results = _load("two_datasets").main(epochs=1)
    assert set(results) == {"proportional", "uniform"}
    for scores in results.values():
        assert set(scores) == {"large", "small"}
        assert all(0 < v < 5 for v in scores.values())


@pytest.mark.slow
def test_export_for_serving_example_writes_a_versioned_saved_model(tmp_path, capsys):
    import tensorflow as tf

    path = _load("export_for_serving").main(name="house", base=str(tmp_path / "serving"))
    assert path == str(tmp_path / "serving" / "house" / "1")
    served = tf.saved_model.load(path)
    assert {"serving_default", "price", "kind"} <= set(served.signatures)
    out = capsys.readouterr().out
    assert "POST http://localhost:8501/v1/models/house:predict" in out
    assert '"signature_name": "kind"' in out and "signature_def['serving_default']" in out


def _run_example(*args, timeout=300):
    import subprocess

    return subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "distributed.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_distributed_example_on_two_logical_cpus():
    done = _run_example("--logical-cpus", "2", "--epochs", "1", "--mode", "alternating")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MirroredStrategy with 2 replica(s)" in done.stdout


@pytest.mark.slow
@pytest.mark.multiprocess
def test_distributed_example_with_two_local_workers():
    done = _run_example("--local-workers", "2", "--epochs", "1", "--mode", "joint")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Strategy with 2 replica(s)" in done.stdout  # MultiWorkerMirroredStrategy
    assert "Epoch" in done.stdout or "32/32" in done.stdout
