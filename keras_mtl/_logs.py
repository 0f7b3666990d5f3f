"""Reading `MultiTaskModel` log keys: which task a key belongs to, update shares.

A `MultiTaskModel` logs `loss`, `<task>_loss`, `<task>_<metric>`, their
`val_` versions and, in alternating mode, `<task>_updates`. The plotting
helpers and `TaskTensorBoard` both read these keys through this module.
"""

import math


def split_task_key(key, task_names):
    """Splits `<task>_<name>` into `(task, name)`, or returns `None`.

    The longest matching task name wins, so with tasks `a` and `a_b` the key
    `a_b_loss` is `("a_b", "loss")`, not `("a", "b_loss")`. A `val_` prefix
    is not handled here; strip it first.
    """
    best = None
    for task in task_names:
        prefix = f"{task}_"
        if key.startswith(prefix) and len(key) > len(prefix):
            if best is None or len(task) > len(best):
                best = task
    if best is None:
        return None
    return best, key[len(best) + 1 :]


def history_tasks(logs, task_names=None):
    """The tasks with a `<task>_loss` key in `logs`, in order.

    With `task_names` (the model's), those that log a loss; otherwise every
    `<task>_loss` key except the totals `loss` and `val_loss` and the `val_`
    keys.
    """
    if task_names is not None:
        return [t for t in task_names if f"{t}_loss" in logs]
    return [
        key[: -len("_loss")]
        for key in logs
        if key.endswith("_loss") and key != "loss" and not key.startswith("val_")
    ]


def update_shares(counts):
    """`{task: updates}` to `{task: updates / total}`; NaN when total is 0."""
    total = sum(float(c) for c in counts.values())
    return {t: float(c) / total if total > 0 else math.nan for t, c in counts.items()}
