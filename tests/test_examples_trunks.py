"""The examples with Keras-layer trunks run as documented (short runs) and
report what they claim: a convolutional trunk on digits, an embedding trunk
with a named input on two interleaved token datasets."""

import importlib.util
import os

import numpy as np
import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _load_example(name):
    path = os.path.join(EXAMPLES, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{name}_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def digits():
    """examples/digits.py, loaded as a module from its path."""
    pytest.importorskip("sklearn")
    return _load_example("digits")


@pytest.fixture(scope="module")
def translation():
    """examples/translation_tasks.py, loaded as a module from its path."""
    return _load_example("translation_tasks")


def _table_row(out, name):
    """The numbers of the Markdown table row `| name | ... |` in `out`."""
    rows = [line for line in out.splitlines() if line.startswith(f"| {name} |")]
    assert len(rows) == 1, f"expected one table row for {name!r} in:\n{out}"
    return [float(cell) for cell in rows[0].strip("|").split("|")[1:]]


def test_digits_data_is_images_in_unit_range_with_consistent_labels_and_fixed_split(digits):
    splits = digits.load_data()
    (x_train, _), (x_test, y_test) = splits["train"], splits["test"]
    assert (len(x_train), len(x_test)) == (1438, 359)  # 1,797 images, 20% held out
    for x, y in (splits["train"], splits["test"]):
        assert x.shape[1:] == (8, 8, 1) and x.dtype == np.float32
        assert x.min() == 0.0 and x.max() == 1.0
        np.testing.assert_array_equal(y["odd"][:, 0], y["digit"] % 2)
        np.testing.assert_array_equal(y["ge5"][:, 0], y["digit"] >= 5)
    assert set(np.unique(y_test["digit"])) == set(range(10))
    again = digits.load_data()
    np.testing.assert_array_equal(again["test"][0], x_test)
    np.testing.assert_array_equal(again["test"][1]["digit"], y_test["digit"])
    assert len(digits.load_data(n_examples=100)["test"][0]) == 20


@pytest.mark.slow
def test_digits_main_compares_joint_alternating_and_single_task_above_chance(digits, capsys):
    results = digits.main(epochs=2, verbose=0)
    out = capsys.readouterr().out

    assert list(results) == ["joint", "alternating", "single-task"]
    assert "| model | digit | odd | ge5 |" in out
    for row, scores in results.items():
        assert set(scores) == {"digit", "odd", "ge5"}
        np.testing.assert_allclose(
            _table_row(out, row), [scores[t] for t in ("digit", "odd", "ge5")], atol=6e-4
        )
        # Chance is 0.1 for digit, about 0.5 for odd and ge5. With seed 0 after
        # 2 epochs: digit 0.91 / 0.78 / 0.92, odd and ge5 0.72 to 0.94.
        assert scores["digit"] > 0.5, (row, scores)
        assert scores["odd"] > 0.6 and scores["ge5"] > 0.6, (row, scores)


def test_translation_data_is_two_padded_token_datasets_of_different_sizes(translation):
    data = translation.make_data()
    assert list(data) == ["fr", "de"]
    (x_fr, y_fr), _ = data["fr"]
    (x_de, y_de), _ = data["de"]
    assert (len(y_fr), len(y_de)) == (2400, 480)
    assert y_fr.shape == (2400,) and set(np.unique(y_fr)) == {0, 1, 2, 3}
    assert y_de.shape == (480, 1) and set(np.unique(y_de)) == {0.0, 1.0}
    for task, (train, test) in data.items():
        for x, _ in (train, test):
            ids = x["tokens"]
            assert list(x) == ["tokens"] and ids.dtype == np.int32 and ids.shape[1] == 12
            assert ids.min() == 0 and ids.max() < translation.VOCAB
            # Padding (0) only at the end, after at least the shortest sentence.
            words = ids != 0
            np.testing.assert_array_equal(np.sort(words, axis=1)[:, ::-1], words)
            assert words.sum(1).min() >= translation.DATASETS[task][2]
    again = translation.make_data()
    np.testing.assert_array_equal(again["de"][1][0]["tokens"], data["de"][1][0]["tokens"])


@pytest.mark.slow
def test_translation_main_updates_tasks_in_proportion_and_learns_both(translation, capsys):
    rows = translation.main(epochs=2, verbose=0)
    out = capsys.readouterr().out

    assert list(rows) == ["fr", "de"]
    assert (rows["fr"]["batches"], rows["de"]["batches"]) == (75, 15)
    for task, row in rows.items():
        printed = _table_row(out, task)
        assert printed[:2] == [row["sentences"], row["batches"]]
        assert printed[3] == row["updates"]
        np.testing.assert_allclose(printed[5], row["accuracy"], atol=6e-4)
    # Every step trained one task: 2 epochs of 75 + 15 steps.
    assert rows["fr"]["updates"] + rows["de"]["updates"] == 2 * 90
    # Proportional sampling: about 5 fr updates per de update (seed 0: 153 / 27).
    for row in rows.values():
        assert abs(row["update_share"] - row["batch_share"]) < 0.05, rows
    assert 3.5 < rows["fr"]["updates"] / rows["de"]["updates"] < 7.5
    # Chance is 0.25 for fr (4 topics), 0.5 for de. Seed 0: 0.96 and 0.91.
    assert rows["fr"]["accuracy"] > 0.8, rows
    assert rows["de"]["accuracy"] > 0.75, rows
