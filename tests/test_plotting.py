"""plot_history: one panel per task, update shares in alternating mode, clear errors."""

import math
import sys

import keras
import numpy as np
import pytest

import keras_mtl

plt = pytest.importorskip("matplotlib.pyplot")

JOINT_LOGS = {
    "loss": [5.0, 4.0, 3.0],
    "val_loss": [6.0, 5.0, 4.0],
    "y1_loss": [3.0, 2.0, 1.0],
    "y1_mae": [1.5, 1.2, 0.9],
    "val_y1_loss": [4.0, 3.0, 2.0],
    "y2_loss": [2.0, 2.0, 2.0],
    "val_y2_loss": [2.5, 2.4, 2.3],
}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _curves(ax):
    """{legend label: (x, y)} of the lines in `ax`."""
    return {
        line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
        for line in ax.get_lines()
        if not line.get_label().startswith("_")
    }


def test_plot_history_draws_train_and_validation_loss_per_task():
    fig = keras_mtl.plot_history(JOINT_LOGS)
    assert [ax.get_title() for ax in fig.axes] == ["y1", "y2"]
    y1, y2 = fig.axes
    assert _curves(y1) == {
        "train": ([1, 2, 3], [3.0, 2.0, 1.0]),
        "validation": ([1, 2, 3], [4.0, 3.0, 2.0]),
    }
    assert _curves(y2)["validation"] == ([1, 2, 3], [2.5, 2.4, 2.3])


def test_plot_history_draws_only_train_loss_without_validation():
    logs = {"loss": [1.0, 0.5], "a_loss": [0.6, 0.3], "b_loss": [0.4, 0.2]}
    fig = keras_mtl.plot_history(logs)
    assert [sorted(_curves(ax)) for ax in fig.axes] == [["train"], ["train"]]


def test_plot_history_adds_a_row_of_update_shares_in_alternating_mode():
    logs = dict(JOINT_LOGS, y1_updates=[3.0, 2.0, 0.0], y2_updates=[1.0, 2.0, 4.0])
    fig = keras_mtl.plot_history(logs)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["y1", "y2", "y1 update share", "y2 update share"]
    y1_share, y2_share = fig.axes[2].get_lines()[0], fig.axes[3].get_lines()[0]
    np.testing.assert_allclose(y1_share.get_ydata(), [0.75, 0.5, 0.0])
    np.testing.assert_allclose(y2_share.get_ydata(), [0.25, 0.5, 1.0])


def test_plot_history_leaves_a_gap_where_alternating_never_trained_the_task():
    # y1 had no update in epoch 3, so its logged loss 0.0 is not a measurement.
    logs = {
        "loss": [1.0, 1.0, 1.0],
        "y1_loss": [3.0, 2.0, 0.0],
        "y2_loss": [1.0, 1.0, 1.0],
        "y1_updates": [2.0, 1.0, 0.0],
        "y2_updates": [2.0, 3.0, 4.0],
    }
    fig = keras_mtl.plot_history(logs)
    train = _curves(fig.axes[0])["train"][1]
    assert train[:2] == [3.0, 2.0] and math.isnan(train[2])


def test_plot_history_uses_the_models_tasks_from_a_fit_history():
    x = np.random.default_rng(0).random((32, 3)).astype("float32")
    y = {"y1": x.sum(1), "y2": x[:, 0]}
    model = keras_mtl.MultiTaskModel([4], {"y1": 1, "y2": 1})
    # A metric whose name ends in "_loss" logs "y1_sq_loss", which is not a task.
    model.compile(
        optimizer="adam",
        loss="mse",
        metrics={"y1": [keras.metrics.MeanSquaredError(name="sq_loss")]},
    )
    history = model.fit(x, y, epochs=2, batch_size=16, validation_data=(x, y), verbose=0)
    assert "y1_sq_loss" in history.history
    fig = keras_mtl.plot_history(history)
    assert [ax.get_title() for ax in fig.axes] == ["y1", "y2"]
    y2_validation = _curves(fig.axes[1])["validation"][1]
    np.testing.assert_allclose(y2_validation, history.history["val_y2_loss"])


def test_plot_history_saves_a_png_to_path(tmp_path):
    path = tmp_path / "curves.png"
    fig = keras_mtl.plot_history(JOINT_LOGS, path=path)
    assert fig is not None
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_history_saves_with_agg_and_leaves_pyplot_alone_without_a_display(
    tmp_path, monkeypatch
):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    monkeypatch.setattr(keras_mtl.plotting, "_has_display", lambda: False)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    before = plt.get_fignums()
    fig = keras_mtl.plot_history(JOINT_LOGS, path=tmp_path / "curves.png")
    assert isinstance(fig.canvas, FigureCanvasAgg)
    assert plt.get_fignums() == before  # no pyplot figure to leak
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_plot_history_makes_a_pyplot_figure_when_there_is_a_display(monkeypatch):
    monkeypatch.setattr(keras_mtl.plotting, "_has_display", lambda: True)
    fig = keras_mtl.plot_history(JOINT_LOGS)
    assert fig.number in plt.get_fignums()


def test_plot_history_without_task_losses_says_what_it_needs():
    expected = r"no per-task loss.*'<task>_loss'.*Received keys: \['loss', 'val_loss'\]"
    with pytest.raises(ValueError, match=expected):
        keras_mtl.plot_history({"loss": [1.0], "val_loss": [1.0]})


def test_plot_history_with_no_epoch_raises():
    with pytest.raises(ValueError, match=r"no epoch for task\(s\) \['y1'\]"):
        keras_mtl.plot_history({"loss": [], "y1_loss": []})


def test_plot_history_rejects_something_that_is_not_a_history():
    with pytest.raises(TypeError, match=r"`history` must be the keras.callbacks.History.*list"):
        keras_mtl.plot_history([1.0, 2.0])


def test_plot_history_rejects_a_path_that_is_not_a_path():
    with pytest.raises(TypeError, match=r"`path` must be a file path.*Received: 3"):
        keras_mtl.plot_history(JOINT_LOGS, path=3)


def test_plot_history_without_matplotlib_says_how_to_install_it(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    expected = r"pip install matplotlib.*pip install 'keras_mtl\[plot\]'"
    with pytest.raises(ImportError, match=expected):
        keras_mtl.plot_history(JOINT_LOGS)
