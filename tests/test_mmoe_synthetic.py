"""examples/mmoe_synthetic.py: the data of Ma et al. (2018) and a short run."""

import importlib.util
import math
import os
import sys

import numpy as np
import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


@pytest.fixture(scope="module")
def synthetic():
    """examples/mmoe_synthetic.py, loaded as a module from its path."""
    path = os.path.join(EXAMPLES, "mmoe_synthetic.py")
    spec = importlib.util.spec_from_file_location("mmoe_synthetic_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("p", [1.0, 0.9, 0.8, 0.5, 0.0, -0.3])
def test_weights_have_cosine_p_and_norm_c(synthetic, p):
    _, _, (w1, w2) = synthetic.make_data(p, 10, seed=3)
    cosine = w1.dot(w2) / (np.linalg.norm(w1) * np.linalg.norm(w2))
    assert abs(cosine - p) < 1e-6
    np.testing.assert_allclose(np.linalg.norm(w1), synthetic.SCALE, rtol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(w2), synthetic.SCALE, rtol=1e-9)


def test_shapes_and_dtypes(synthetic):
    x, y, (w1, w2) = synthetic.make_data(0.8, 37, seed=0)
    assert x.shape == (37, synthetic.DIM) and x.dtype == np.float32
    assert sorted(y) == ["t1", "t2"]
    for labels in y.values():
        assert labels.shape == (37, 1) and labels.dtype == np.float32
        assert np.isfinite(labels).all()
    assert w1.shape == w2.shape == (synthetic.DIM,)
    x, _, _ = synthetic.make_data(0.8, 5, dim=7, seed=0)
    assert x.shape == (5, 7)


def test_same_seed_same_data_other_seed_other_data(synthetic):
    x1, y1, _ = synthetic.make_data(0.5, 50, seed=11)
    x2, y2, _ = synthetic.make_data(0.5, 50, seed=11)
    np.testing.assert_array_equal(x1, x2)
    for t in y1:
        np.testing.assert_array_equal(y1[t], y2[t])
    x3, y3, _ = synthetic.make_data(0.5, 50, seed=12)
    assert not np.array_equal(x1, x3)
    # Same seed, another p: the same inputs and first task, only task 2 moves.
    x4, y4, _ = synthetic.make_data(0.9, 50, seed=11)
    np.testing.assert_array_equal(x1, x4)
    np.testing.assert_array_equal(y1["t1"], y4["t1"])
    assert not np.array_equal(y1["t2"], y4["t2"])


def test_identical_tasks_differ_by_the_noise_only(synthetic):
    _, y, (w1, w2) = synthetic.make_data(1.0, 20000, seed=0)
    np.testing.assert_allclose(w1, w2)
    diff = y["t1"] - y["t2"]
    # Two independent N(0, 0.1^2) noises: the difference has std 0.1 * sqrt(2).
    assert abs(diff.std() - synthetic.NOISE_STD * math.sqrt(2)) < 0.01


def test_p_outside_minus_one_one_raises(synthetic):
    with pytest.raises(ValueError, match="`p` must be in"):
        synthetic.make_data(1.5, 10)


def test_split_data_is_make_data_cut_in_order(synthetic):
    data = synthetic.split_data(0.8, seed=2, num_train=30, num_val=7, num_test=5)
    x, y, _ = synthetic.make_data(0.8, 42, seed=2)
    for split, (a, b) in {"train": (0, 30), "val": (30, 37), "test": (37, 42)}.items():
        xs, ys = data[split]
        np.testing.assert_array_equal(xs, x[a:b])
        for t in synthetic.TASKS:
            np.testing.assert_array_equal(ys[t], y[t][a:b])


def test_tuning_seed_in_the_evaluation_seeds_raises(synthetic):
    with pytest.raises(ValueError, match="TUNING_SEED"):
        synthetic.main(seeds=(0, synthetic.TUNING_SEED), plot_path=None)


@pytest.mark.slow  # traces 2 small models: ~12 s CPU (23 s wall, loaded cores)
def test_reused_trainer_trains_like_a_new_one(synthetic):
    data = synthetic.split_data(0.5, seed=3, num_train=96, num_val=32, num_test=32)
    kwargs = dict(learning_rate=1e-2, max_epochs=3, batch_size=32)
    trainer = synthetic.Trainer("shared-bottom")
    new = trainer.run(data, seed=3, **kwargs)
    # The weights kept are those of the best validation epoch.
    assert new["epochs"] == 3 and 1 <= new["best_epoch"] <= 3
    val = trainer.model.evaluate(*data["val"], verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(val, new["val_loss"][new["best_epoch"] - 1], rtol=1e-5)
    reused = synthetic.Trainer("shared-bottom")
    other = synthetic.split_data(0.9, seed=5, num_train=64, num_val=32, num_test=32)
    reused.run(other, seed=5, learning_rate=3e-2, max_epochs=2, batch_size=32)
    again = reused.run(data, seed=3, **kwargs)
    assert (again["epochs"], again["best_epoch"]) == (new["epochs"], new["best_epoch"])
    for key in ("test_mse", "val_loss"):
        np.testing.assert_allclose(again[key], new[key], rtol=1e-5)
    np.testing.assert_allclose(again["final_lr"], new["final_lr"])


@pytest.mark.slow  # 1 small model, 2 short runs: ~6 s CPU (11 s wall, loaded)
def test_choose_learning_rates_picks_the_lowest_validation_loss(synthetic):
    data = synthetic.split_data(0.5, seed=1, num_train=96, num_val=32, num_test=32)
    trainers = {"shared-bottom": synthetic.Trainer("shared-bottom")}
    chosen, scores = synthetic.choose_learning_rates(
        trainers, data, (1e-4, 3e-2), max_epochs=2, batch_size=32
    )
    losses = scores["shared-bottom"]
    assert set(losses) == {1e-4, 3e-2} and all(math.isfinite(v) for v in losses.values())
    assert chosen == {"shared-bottom": min(losses, key=losses.get)}


@pytest.mark.slow  # traces the 3 models: ~30 s CPU (63 s wall, loaded cores)
def test_short_run_has_every_row_and_finite_losses(synthetic, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the plot is skipped with a note
    p_values = (1.0, 0.5)
    out = synthetic.main(
        p_values=p_values,
        seeds=(0,),
        num_train=64,
        num_val=32,
        num_test=32,
        batch_size=32,
        max_epochs=2,
        learning_rates=(1e-2,),
        plot_path=str(tmp_path / "plot.png"),
    )
    printed = capsys.readouterr().out
    assert "matplotlib is not installed" in printed
    assert not (tmp_path / "plot.png").exists()
    assert out["learning_rates"] == {m: 1e-2 for m in synthetic.MODELS} and out["tuning"] == {}
    assert set(out["runs"]) == {(p, m) for p in p_values for m in synthetic.MODELS}
    for runs in out["runs"].values():
        assert len(runs) == 1
        (run,) = runs
        assert len(run["test_mse"]) == 2
        assert all(math.isfinite(v) and v > 0 for v in run["test_mse"])
        assert run["epochs"] == 2 and 1 <= run["best_epoch"] <= 2
    rows = out["table"].splitlines()[2:]
    assert len(rows) == len(p_values) * len(synthetic.MODELS)
    for p in p_values:
        for name in synthetic.MODELS:
            assert any(row.startswith(f"| {p:g} |") and f"| {name} |" in row for row in rows)
    assert out["table"] in printed
    # Comparable sizes: within 15% of the MMoE's parameter count.
    params = out["params"]
    assert set(params) == set(synthetic.MODELS)
    for name in synthetic.MODELS:
        assert abs(params[name] - params["MMoE"]) / params["MMoE"] < 0.15
