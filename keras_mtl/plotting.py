"""Plots of a `MultiTaskModel`'s training history: one panel per task.

matplotlib is an optional dependency (`pip install 'keras_mtl[plot]'`); it is
imported only when `plot_history` is called.
"""

import math
import os
import sys

from keras_mtl import _logs

_INSTALL_HINT = (
    "`plot_history` needs matplotlib. Install it with `pip install matplotlib` "
    "or `pip install 'keras_mtl[plot]'`."
)


def _history_dict(history):
    """The `{log_key: [value per epoch]}` dict of a History or of a dict."""
    logs = getattr(history, "history", history)
    if not isinstance(logs, dict):
        raise TypeError(
            "`history` must be the keras.callbacks.History returned by "
            "`MultiTaskModel.fit()` or its `.history` dict "
            f"{{log_key: [value per epoch]}}. Received: {history!r} of type "
            f"{type(history).__name__}."
        )
    return logs


def _shares_per_epoch(logs, tasks):
    """`{task: [update share per epoch]}` for the tasks logging `<task>_updates`."""
    counted = [t for t in tasks if f"{t}_updates" in logs]
    if not counted:
        return {}
    epochs = min(len(logs[f"{t}_updates"]) for t in counted)
    per_epoch = [
        _logs.update_shares({t: logs[f"{t}_updates"][e] for t in counted}) for e in range(epochs)
    ]
    return {t: [shares[t] for shares in per_epoch] for t in counted}


def _train_loss(logs, task):
    """`<task>_loss` per epoch, NaN (a gap) where alternating never trained it.

    An alternating epoch with no update of a task logs its loss as 0,
    which would read as a perfect fit.
    """
    values = [float(v) for v in logs[f"{task}_loss"]]
    updates = logs.get(f"{task}_updates")
    if updates is None:
        return values
    return [math.nan if e < len(updates) and updates[e] == 0 else v for e, v in enumerate(values)]


def _has_display():
    if not sys.platform.startswith("linux"):
        return True  # macOS and Windows always have a window system
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _new_figure(rows, cols, saving):
    """A figure and its `(rows, cols)` grid of axes, sharing x per column."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    size = dict(figsize=(4 * cols, 3 * rows), layout="constrained")
    grid = dict(squeeze=False, sharex="col")
    if saving and not _has_display() and "MPLBACKEND" not in os.environ:
        # No window to show it in (a server, CI): draw with the Agg backend
        # directly, without picking a pyplot backend for the whole process.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(**size)
        FigureCanvasAgg(fig)
        return fig, fig.subplots(rows, cols, **grid)
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, **size, **grid)


def plot_history(history, path=None):
    """Plots each task's training (and validation) loss per epoch.

    One panel per task shows `<task>_loss` on the training data and, when
    the history has it, `val_<task>_loss`. In alternating mode (the
    history has `<task>_updates`) a second row shows each task's share of
    the epoch's updates, `updates_t / sum of updates`, with a dotted line at
    the uniform share `1 / T`; an epoch that never trained a task leaves a
    gap in its training curve (its logged loss is 0 there). Validation
    curves assume validation ran every epoch (`fit(validation_freq=1)`).

    matplotlib is imported only here; install it with
    `pip install 'keras_mtl[plot]'`. The figure is a pyplot figure (so
    `plt.show()` shows it), except when saving on a machine without a
    display (no `DISPLAY` on Linux, and no `MPLBACKEND` set): then it is
    drawn with the non-interactive Agg backend and not registered with
    pyplot.

    Args:
        history: The `keras.callbacks.History` returned by
            `MultiTaskModel.fit()`, or its `.history` dict. Tasks are the
            model's task names when the History still holds the model,
            else every `<task>_loss` key (`loss` and `val_loss` are totals,
            not tasks).
        path: Optional file path (str or path-like) to save the figure to;
            the format follows the extension (`.png`, `.pdf`, `.svg`...).
            Defaults to `None` (do not save).

    Returns:
        The `matplotlib.figure.Figure`. Close a pyplot figure with
        `matplotlib.pyplot.close(fig)` when done.

    Example:

    >>> import matplotlib.pyplot as plt
    >>> import numpy as np, keras_mtl
    >>> model = keras_mtl.MultiTaskModel([8], {"y1": 1, "y2": 1})
    >>> model.compile(optimizer="adam", loss="mse", mode="alternating", seed=0)
    >>> x = np.random.rand(32, 3).astype("float32")
    >>> y = {"y1": x.sum(1), "y2": x[:, 0]}
    >>> history = model.fit(x, y, epochs=2, batch_size=8,
    ...                     validation_data=(x, y), verbose=0)
    >>> fig = keras_mtl.plot_history(history)
    >>> [ax.get_title() for ax in fig.axes]
    ['y1', 'y2', 'y1 update share', 'y2 update share']
    >>> plt.close(fig)
    """
    logs = _history_dict(history)
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "`path` must be a file path (str or os.PathLike) such as "
            f"'curves.png', or None to not save. Received: {path!r}."
        )
    model = getattr(history, "model", None)
    tasks = _logs.history_tasks(logs, getattr(model, "task_names", None))
    if not tasks:
        raise ValueError(
            "`history` has no per-task loss (no '<task>_loss' key besides the "
            "totals 'loss' and 'val_loss'), so there is nothing to plot per "
            "task. Pass the History of a keras_mtl.MultiTaskModel's fit(). "
            f"Received keys: {sorted(logs)}."
        )
    empty = [t for t in tasks if len(logs[f"{t}_loss"]) == 0]
    if empty:
        raise ValueError(
            f"`history` has no epoch for task(s) {empty}: '<task>_loss' is an "
            "empty list. Plot the History after at least one epoch of fit()."
        )
    shares = _shares_per_epoch(logs, tasks)

    fig, axes = _new_figure(2 if shares else 1, len(tasks), saving=path is not None)
    for col, task in enumerate(tasks):
        ax = axes[0][col]
        for label, values, style in (
            ("train", _train_loss(logs, task), "-"),
            ("validation", logs.get(f"val_{task}_loss"), "--"),
        ):
            if values:
                ax.plot(
                    range(1, len(values) + 1), values, style, marker="o", markersize=3, label=label
                )
        ax.set_title(task)
        ax.set_ylabel("loss")
        ax.legend()
        if shares:
            share_ax = axes[1][col]
            values = shares.get(task)
            if values:
                share_ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3)
            share_ax.axhline(1 / len(shares), linestyle=":", color="gray")
            share_ax.set_ylim(0, 1)
            share_ax.set_title(f"{task} update share")
            share_ax.set_ylabel("share of updates")
        axes[-1][col].set_xlabel("epoch")
    if path is not None:
        fig.savefig(path)
    return fig


def plot_expert_utilization(utilization, path=None):
    """Draws each task's mean gate weight per expert as a heatmap.

    Args:
        utilization: What `MultiTaskModel.expert_utilization(x)` returns,
            `{task: {expert_name: weight}}`. Experts a task cannot use (e.g.
            another task's own experts in a `CGC`) are left blank.
        path: Optional file path; when given, the figure is saved there.

    Returns:
        The matplotlib `Figure`.

    Example:

    >>> import numpy as np, keras_mtl
    >>> model = keras_mtl.MultiTaskModel(
    ...     keras_mtl.layers.MMoE(num_experts=3, expert_units=[4]), {"a": 1, "b": 1})
    >>> use = model.expert_utilization(np.random.rand(8, 5).astype("float32"))
    >>> fig = keras_mtl.plot_expert_utilization(use)  # doctest: +SKIP
    """
    if not isinstance(utilization, dict) or not all(
        isinstance(v, dict) for v in utilization.values()
    ):
        raise TypeError(
            "`utilization` must be {task: {expert_name: weight}}, as "
            "MultiTaskModel.expert_utilization(x) returns. "
            f"Received: {utilization!r}."
        )
    tasks = list(utilization)
    experts = []
    for weights in utilization.values():
        experts += [e for e in weights if e not in experts]
    grid = [[utilization[t].get(e, float("nan")) for e in experts] for t in tasks]
    fig, axes = _new_figure(1, 1, saving=path is not None)
    ax = axes[0][0]
    image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(experts)), labels=experts, rotation=45, ha="right")
    ax.set_yticks(range(len(tasks)), labels=tasks)
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if value == value:  # not NaN
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    color="white" if value < 0.5 else "black",
                    fontsize=8,
                )
    ax.set_title("mean gate weight per expert")
    fig.colorbar(image, ax=ax)
    if path is not None:
        fig.savefig(path)
    return fig
