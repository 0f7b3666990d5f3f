"""Argument checks shared by the public API.

Every check raises a `ValueError` (or `TypeError` for a wrong type) that
names the argument, the task when there is one, the value received and what
is accepted, in the style of scikit-learn's parameter validation.
"""

import keyword
import math
import numbers
import random

# Names Keras or keras_mtl already use as log keys or layer names; a task
# with one of these names would make `logs` or `model.summary()` ambiguous.
RESERVED_TASK_NAMES = frozenset({"loss", "trunk", "val", "step", "steps"})


def check_task_name(name):
    """Returns `name` if it can name a task, else raises `ValueError`."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(
            f"Task (head) names must be valid Python identifiers such as "
            f"'y1' or 'species', because they become output names and log "
            f"keys like '<task>_loss'. Received: {name!r}."
        )
    if name in RESERVED_TASK_NAMES or name.startswith("val_"):
        raise ValueError(
            f"Task name {name!r} clashes with a name keras_mtl or Keras "
            f"already uses in logs or layers ({sorted(RESERVED_TASK_NAMES)} "
            f"and names starting with 'val_'). Rename the head."
        )
    return name


def check_task_keys(arg_name, mapping, task_names, require_all=False):
    """Checks that the keys of `mapping` are known task names.

    Args:
        arg_name: name of the argument, for the message.
        mapping: the dict given by the user.
        task_names: the tasks the keys may name.
        require_all: if `True`, every task must appear.

    Returns:
        `mapping` unchanged.
    """
    if not isinstance(mapping, dict):
        raise TypeError(
            f"`{arg_name}` must be a dict keyed by task name, e.g. "
            f"{{{', '.join(repr(t) + ': ...' for t in task_names)}}}. "
            f"Received: {mapping!r} of type {type(mapping).__name__}."
        )
    unknown = [k for k in mapping if k not in task_names]
    if unknown:
        raise ValueError(
            f"`{arg_name}` names unknown task(s) {unknown}. "
            f"The model's tasks are {list(task_names)}."
        )
    if require_all:
        missing = [t for t in task_names if t not in mapping]
        if missing:
            raise ValueError(
                f"`{arg_name}` is missing task(s) {missing}: give a value "
                f"for every task in {list(task_names)}."
            )
    return mapping


def check_non_negative_finite(arg_name, value, task=None):
    """Returns `value` as a float if it is finite and >= 0, else raises."""
    where = f" for task {task!r}" if task is not None else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{arg_name}`{where} must be a number. Received: {value!r}.")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"`{arg_name}`{where} must be finite and >= 0. Received: {value}.")
    return value


def check_task_weights(arg_name, weights, task_names=None):
    """Validates a `{task: weight}` dict of non-negative, finite numbers.

    Args:
        arg_name: name of the argument, for the message.
        weights: the dict given by the user.
        task_names: if given, every task must appear and no other.

    Returns:
        A new dict of floats, in the order of `task_names` when given.
    """
    if task_names is not None:
        check_task_keys(arg_name, weights, task_names, require_all=True)
    elif not isinstance(weights, dict) or not weights:
        raise TypeError(
            f"`{arg_name}` must be a non-empty dict keyed by task name. Received: {weights!r}."
        )
    order = task_names if task_names is not None else list(weights)
    checked = {t: check_non_negative_finite(arg_name, weights[t], t) for t in order}
    if not any(v > 0 for v in checked.values()):
        raise ValueError(
            f"`{arg_name}` gives every task weight 0: at least one task "
            f"needs a positive weight. Received: {weights!r}."
        )
    return checked


def check_positive_int(arg_name, value):
    """Returns `value` if it is an int > 0, else raises."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"`{arg_name}` must be a positive integer. Received: {value!r}.")
    return int(value)


def check_rate(arg_name, value):
    """Returns `value` if it is a dropout rate in [0, 1), else raises."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"`{arg_name}` must be a number in [0, 1). Received: {value!r}.")
    return float(value)


MAX_SEED = 2**31 - 1


def resolve_seed(seed):
    """Returns `seed` checked, or a drawn one if `None`.

    Draws from Python's `random`, so `keras.utils.set_random_seed` makes the
    drawn seed reproducible.
    """
    if seed is None:
        return random.randint(0, MAX_SEED - 1)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < MAX_SEED:
        raise ValueError(f"`seed` must be an int in [0, 2**31 - 1). Received: seed={seed!r}.")
    return int(seed)
