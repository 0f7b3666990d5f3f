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


def test_penguins_data_keeps_unknown_sex_as_nan_and_drops_unmeasured_rows(penguins):
    splits, mass_std = penguins.load_data()
    sizes = {name: len(x) for name, (x, _) in splits.items()}
    # 344 penguins, 2 without measurements; 11 without sex, 2 of them the unmeasured.
    assert sum(sizes.values()) == 342
    assert sizes == {"train": 206, "val": 68, "test": 68}
    assert sum(int(np.isnan(y["sex"]).sum()) for _, y in splits.values()) == 9
    for x, y in splits.values():
        assert x.shape[1] == 6 and not np.isnan(x).any()
        assert set(np.unique(y["species"])) <= {0, 1, 2}
        assert set(np.unique(y["sex"][~np.isnan(y["sex"])])) <= {0.0, 1.0}
        np.testing.assert_array_equal(x[:, 3:].sum(1), 1.0)  # one island each
    x_train, y_train = splits["train"]
    np.testing.assert_allclose(x_train[:, :3].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y_train["mass"].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(y_train["mass"].std(ddof=1), 1.0, atol=1e-5)
    assert 700 < mass_std < 900  # grams


def test_penguins_split_is_the_same_on_every_call(penguins):
    first, _ = penguins.load_data()
    second, _ = penguins.load_data()
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(first[name][0], second[name][0])
        np.testing.assert_array_equal(first[name][1]["species"], second[name][1]["species"])


def test_penguins_skips_the_plot_with_a_note_without_matplotlib(
    penguins, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    path = tmp_path / "curves.png"
    assert penguins.save_curves({"y1_loss": [1.0]}, path) is False
    assert "matplotlib is not installed: skipping" in capsys.readouterr().out
    assert not path.exists()


@pytest.mark.slow
def test_penguins_main_compares_joint_alternating_and_single_task(penguins, tmp_path, capsys):
    path = tmp_path / "curves.png"
    results = penguins.main(epochs=1, plot_path=str(path))
    out = capsys.readouterr().out

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
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"{name}_example", os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_tutorial_trains_both_ways():
    results = _load("seed_tutorial").main(epochs=1)
    assert set(results) == {"alternating", "joint"}
    for logs in results.values():
        assert set(logs) == {"loss", "Y1_loss", "Y2_loss"}
        assert all(math.isfinite(v) for v in logs.values())


def test_two_datasets_example_compares_samplers():
    results = _load("two_datasets").main(epochs=1)
    assert set(results) == {"proportional", "uniform"}
    for scores in results.values():
        assert set(scores) == {"large", "small"}
        assert all(0 < v < 5 for v in scores.values())


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

    return subprocess.run([sys.executable, os.path.join(EXAMPLES, "distributed.py"), *args],
                          capture_output=True, text=True, timeout=timeout)


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
