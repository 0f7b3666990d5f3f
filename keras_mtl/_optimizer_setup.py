"""Setting up a model's optimizers: what `compile()` and the first step need.

* `resolve_task_optimizers`: `compile(task_optimizers=...)` as instances;
* `check_alternating_features`: refuses optimizer features that would break
  alternating updates (EMA, gradient accumulation shared by several tasks);
* `build_optimizers`: builds every optimizer on exactly the variables it
  updates, before the first step is traced;
* `OptimizerState`: which optimizer updates which task.

`keras_mtl.optimizers.TaskOptimizers` is what Keras sees of them.
"""

import types

import keras

from keras_mtl import _checks, _keras_internals, training
from keras_mtl.optimizers import TaskOptimizers


def resolve_task_optimizers(task_optimizers, shared, specs):
    """`compile(task_optimizers=...)` as `{task: optimizer instance}`.

    Names and instances go through `keras.optimizers.get`; a learning-rate
    schedule makes a copy of the shared optimizer with that schedule. Every
    task must have its own instance, distinct from the shared one.

    Args:
        task_optimizers: The `compile` argument, or `None`.
        shared: The `optimizer` argument of `compile`.
        specs: The model's `TaskSpec`s.

    Returns:
        Dict `{task: optimizer}` in the model's task order.
    """
    if task_optimizers is None:
        return {}
    trained = [s.name for s in specs if s.trained]
    _checks.check_task_keys("task_optimizers", task_optimizers, [s.name for s in specs])
    untrained = [t for t in task_optimizers if t not in trained]
    if untrained:
        raise ValueError(
            f"`task_optimizers` names task(s) {untrained} whose loss is None, "
            "so they are never trained. Remove them or give them a loss."
        )
    resolved = {}
    for task in trained:
        if task not in task_optimizers:
            continue
        value = task_optimizers[task]
        if isinstance(value, keras.optimizers.schedules.LearningRateSchedule):
            base = keras.optimizers.get(shared)
            cfg = dict(base.get_config(), learning_rate=value)
            cfg.pop("name", None)
            resolved[task] = type(base).from_config(cfg)
        else:
            try:
                resolved[task] = keras.optimizers.get(value)
            except (ValueError, TypeError):
                raise ValueError(
                    f"`task_optimizers[{task!r}]` must be an optimizer name "
                    "such as 'adam', a keras.optimizers.Optimizer or a "
                    f"learning-rate schedule. Received: {value!r}."
                ) from None
    instances = list(resolved.values())
    if isinstance(shared, keras.optimizers.Optimizer):
        instances.append(shared)
    if len({id(o) for o in instances}) != len(instances):
        raise ValueError(
            "Each task in `task_optimizers` needs its own optimizer instance "
            "(and none may be the shared `optimizer`): a shared instance "
            "would mix the tasks' optimizer states."
        )
    return resolved


def _features(optimizer):
    """`(use_ema, gradient_accumulation_steps)` of an optimizer, looking
    inside a `LossScaleOptimizer`."""
    inner = getattr(optimizer, "inner_optimizer", None)
    if inner is not None:
        return _features(inner)
    return bool(getattr(optimizer, "use_ema", False)), getattr(
        optimizer, "gradient_accumulation_steps", None
    )


def uses_ema(optimizer):
    """Whether `optimizer` (or the one inside a `LossScaleOptimizer`) keeps an EMA."""
    return _features(optimizer)[0]


def check_alternating_features(shared, own, trained):
    """Refuses optimizer features that would break alternating updates.

    * EMA (`use_ema=True`): Keras's optimizer updates the average of every
      variable it holds at every step, and `ema_overwrite_frequency`
      overwrites them all, so a step on one task would move the other
      heads; with one EMA optimizer per task, each would overwrite the trunk
      with its own average.
    * Gradient accumulation on an optimizer that serves several tasks: its
      accumulators are reset together at every real update, so the tasks'
      gradients would be mixed and partly dropped. Each task's own optimizer
      may accumulate (its steps are its task's only).

    Args:
        shared: The shared optimizer (or `None`).
        own: Dict `{task: optimizer}` of per-task optimizers.
        trained: Names of the trained tasks.

    Returns:
        None; raises `ValueError` naming the optimizer and what to do.
    """
    users_of_shared = [t for t in trained if t not in own]
    optimizers = {f"task {t!r}'s optimizer": o for t, o in own.items()}
    if shared is not None and users_of_shared:
        optimizers = {"the shared `optimizer`": shared, **optimizers}
    for which, optimizer in optimizers.items():
        use_ema, accumulation = _features(optimizer)
        if use_ema:
            raise ValueError(
                f"{which} has use_ema=True, which mode='alternating' cannot keep "
                "exact: Keras's optimizer updates (and, with "
                "ema_overwrite_frequency, overwrites) the moving average of every "
                "variable it holds at every step, so a step on one task would "
                "change the other tasks' heads, and per-task EMA optimizers would "
                "each overwrite the shared trunk. Use mode='joint' for EMA, or "
                "an optimizer without use_ema."
            )
        if accumulation and which == "the shared `optimizer`" and len(users_of_shared) > 1:
            raise ValueError(
                f"The shared `optimizer` has gradient_accumulation_steps={accumulation} "
                f"and serves tasks {users_of_shared} in mode='alternating': its "
                "accumulators are reset together at each real update, which would "
                "mix the tasks' gradients and drop some. Give each task its own "
                "accumulating optimizer, e.g. task_optimizers={"
                + ", ".join(
                    f"{t!r}: keras.optimizers.SGD(gradient_accumulation_steps={accumulation})"
                    for t in users_of_shared
                )
                + "}."
            )


def shared_variables(model):
    """The variables the shared optimizer is built on: every trainable
    variable of the model, in Keras's order (so that Keras's
    `finalize_variable_values(model.trainable_weights)`, which pairs by
    position, pairs them right), then the weighting method's."""
    variables = list(model.trainable_variables)
    if model._mtl.weighting is not None:
        variables += model._mtl.weighting.trainable_variables
    return variables


def variables_of(model, optimizer):
    """The variables `optimizer` (one of `model`'s) is built on."""
    for task, own in model._mtl.optimizers.own.items():
        if own is optimizer:
            return training.task_variables(model, model._spec(task))
    return shared_variables(model)


def build_optimizers(model):
    """Builds every optimizer of `model` on the variables it will update.

    Call before the first training step is traced: a Keras optimizer refuses
    variables it was not built with, and creating optimizer variables while
    a distributed step is traced fails (keras-team/keras#23085).

    Args:
        model: A compiled `MultiTaskModel`.

    Returns:
        None.
    """
    strategy = model._mtl_strategy
    state = model._mtl.optimizers
    optimizers = {f"task {t!r}'s optimizer": o for t, o in state.own.items()}
    if state.shared is not None:
        optimizers["the shared `optimizer`"] = state.shared
    for which, optimizer in optimizers.items():
        created_in = _keras_internals.optimizer_strategy(optimizer)
        if strategy is not None and created_in is not None and created_in is not strategy:
            raise ValueError(
                f"{which} was created outside `strategy.scope()`, but the model "
                "lives in a tf.distribute strategy: create the model, call "
                "compile() and create every optimizer instance inside "
                "`with strategy.scope():`."
            )
    with model.distribute_strategy.scope():
        if model._mtl.weighting is not None and not model._mtl.weighting.built:
            model._mtl.weighting.build(len(model._mtl.trained))
        if state.shared is not None and not state.shared.built:
            state.shared.build(shared_variables(model))
        for task, optimizer in state.own.items():
            if not optimizer.built:
                optimizer.build(training.task_variables(model, model._spec(task)))
    if isinstance(model.optimizer, TaskOptimizers):
        model.optimizer.built = True
    if model._mtl.frozen is None:
        # What _check_trainable_state compares with before training.
        model._mtl.frozen = model.frozen_layers()


class OptimizerState:
    """Which optimizer updates what, for one compiled model.

    Attributes:
        shared: The shared optimizer, or `None` when every trained task has
            its own.
        own: Read-only dict `{task: optimizer}` of per-task optimizers, in
            the model's task order.
        by_task: Read-only dict `{task: optimizer}` for every trained task:
            its own optimizer, else the shared one.
    """

    def __init__(self, shared, own, trained, given_order=None):
        self.shared = shared
        self.own = types.MappingProxyType(dict(own))
        # The order of compile's `task_optimizers` dict, in which keras_mtl
        # 0.1.0 saved their states (by position).
        self.given_order = tuple(given_order or own)
        self.by_task = types.MappingProxyType({t: own.get(t, shared) for t in trained})
