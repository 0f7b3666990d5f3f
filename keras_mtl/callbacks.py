"""Callbacks for `MultiTaskModel`: `TaskTensorBoard` groups scalars per task."""

import keras

from keras_mtl import _logs


def _check_multitask_model(model):
    task_names = getattr(model, "task_names", None)
    if not isinstance(task_names, tuple) or not task_names:
        raise TypeError(
            "TaskTensorBoard needs a keras_mtl.MultiTaskModel (a model with a "
            "non-empty `task_names` tuple) to know which log keys belong to "
            f"which task. Received a {type(model).__name__}; use "
            "keras.callbacks.TensorBoard for other models."
        )
    return task_names


def group_logs_by_task(logs, task_names):
    """Renames `MultiTaskModel` log keys so TensorBoard groups them per task.

    `<task>_<name>` becomes `<task>/<name>` and `val_<task>_<name>` becomes
    `val_<task>/<name>`; the task is the longest task name that prefixes the
    key, so tasks `a` and `a_b` are told apart. Keys of no task (`loss`,
    `val_loss`, `learning_rate`...) are kept. When the logs have
    `<task>_updates` (alternating mode), `<task>/update_share` is added:
    the task's updates over the epoch's total (NaN when no step ran).

    Args:
        logs: Dict of log values, as Keras passes to callbacks.
        task_names: The model's task names, e.g. `model.task_names`.

    Returns:
        A new dict; `logs` is not changed.

    Example:

    >>> from keras_mtl.callbacks import group_logs_by_task
    >>> group_logs_by_task(
    ...     {"loss": 1.0, "a_loss": 0.25, "a_b_mae": 0.5, "val_a_b_loss": 0.75,
    ...      "a_updates": 3.0, "a_b_updates": 1.0},
    ...     ("a", "a_b"),
    ... )  # doctest: +NORMALIZE_WHITESPACE
    {'loss': 1.0, 'a/loss': 0.25, 'a_b/mae': 0.5, 'val_a_b/loss': 0.75,
     'a/updates': 3.0, 'a_b/updates': 1.0, 'a/update_share': 0.75,
     'a_b/update_share': 0.25}
    """
    grouped = {}
    for key, value in logs.items():
        prefix, rest = ("val_", key[4:]) if key.startswith("val_") else ("", key)
        split = _logs.split_task_key(rest, task_names)
        grouped[f"{prefix}{split[0]}/{split[1]}" if split else key] = value
    updates = {t: logs[f"{t}_updates"] for t in task_names if f"{t}_updates" in logs}
    if updates:
        for task, share in _logs.update_shares(updates).items():
            grouped[f"{task}/update_share"] = share
    return grouped


class TaskTensorBoard(keras.callbacks.TensorBoard):
    """A TensorBoard callback that groups a `MultiTaskModel`'s scalars per task.

    Keras's `TensorBoard` writes each epoch log `key` as the scalar tag
    `epoch_<key>`, so a multi-task model's scalars (`epoch_y1_loss`,
    `epoch_y1_mae`, `epoch_y2_loss`...) all land in one long list. This
    callback renames the log keys `<task>_<name>` to `<task>/<name>` first
    (see `group_logs_by_task`), so the tags become `epoch_y1/loss`,
    `epoch_y1/mae`, ... and TensorBoard shows one card group per task
    (`epoch_y1`, `epoch_y2`), each with its training curve and, from the
    `validation` run, its validation curve. The totals keep their Keras
    tags (`epoch_loss`, `epoch_learning_rate`). In alternating mode each
    task also gets `epoch_<task>/updates` (steps that trained it in the
    epoch) and `epoch_<task>/update_share` (its fraction of the epoch's
    steps). Batch-level scalars (`update_freq` other than `"epoch"`) are
    renamed the same way (`batch_<task>/<name>`).

    Like Keras's `TensorBoard`, it needs the `tensorboard` package
    (`pip install 'keras_mtl[tensorboard]'`), which also views the logs:

        tensorboard --logdir logs

    With the plain `keras.callbacks.TensorBoard` the same scalars appear as
    `epoch_<task>_<name>`; to see one task, type a regex such as
    `^epoch_y1_` in TensorBoard's tag filter box.

    Args:
        log_dir: Directory of the event files; training scalars go to
            `log_dir/train`, validation scalars to `log_dir/validation`.
            Defaults to `"logs"`.
        **kwargs: The other `keras.callbacks.TensorBoard` arguments
            (`histogram_freq`, `write_graph`, `update_freq`, ...).

    Returns:
        A Keras callback to pass to `MultiTaskModel.fit(callbacks=[...])`.
        Setting it on a model without `task_names` raises a `TypeError`.

    Example:

    >>> import os, tempfile
    >>> import numpy as np, keras_mtl
    >>> model = keras_mtl.MultiTaskModel([8], {"y1": 1, "y2": 1})
    >>> model.compile(optimizer="adam", loss="mse", metrics={"y1": ["mae"]})
    >>> x = np.random.rand(32, 3).astype("float32")
    >>> y = {"y1": x.sum(1), "y2": x[:, 0]}
    >>> log_dir = tempfile.mkdtemp()
    >>> board = keras_mtl.callbacks.TaskTensorBoard(log_dir, write_graph=False)
    >>> history = model.fit(x, y, epochs=1, validation_data=(x, y),
    ...                     callbacks=[board], verbose=0)
    >>> sorted(os.listdir(log_dir))  # tags epoch_y1/loss, epoch_y1/mae, ...
    ['train', 'validation']
    """

    def set_model(self, model):
        self._task_names = _check_multitask_model(model)
        super().set_model(model)

    def _grouped(self, logs):
        if not isinstance(logs, dict):
            return logs
        return group_logs_by_task(logs, self._task_names)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, self._grouped(logs))

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, self._grouped(logs))
