"""Optimizers of a `MultiTaskModel`: per-task optimizers and what Keras sees of them.

In alternating mode a task may have its own optimizer
(`compile(task_optimizers=...)`), as the tutorial keeps one Adam per task.
`model.optimizer` is then a `TaskOptimizers`: one Keras optimizer object that
holds the shared optimizer (if any task still uses it) and the per-task ones,
so that everything Keras does with `model.optimizer` keeps working:

* learning-rate callbacks (`ReduceLROnPlateau`, `LearningRateScheduler`)
  and `TensorBoard` act on each of `model.optimizer.optimizers`, as they do
  for Keras's own `MultiOptimizer`;
* `fit()` ends with `model.optimizer.finalize_variable_values(...)`, which
  finalizes each optimizer on the variables it updates;
* saving stores each optimizer's state under its task's name, so a model
  whose `task_optimizers` dict lists the tasks in another order restores
  every state to its own task.

This module also checks, before the first step, the optimizer features that
cannot keep alternating updates exact (EMA, shared gradient accumulation),
and builds every optimizer on the variables it updates.
"""

import collections.abc
import types
import warnings

import keras
import tensorflow as tf

from keras_mtl import _checks
from keras_mtl import _keras_internals
from keras_mtl import training

_SHARED = "shared"


class _OptimizerList(collections.abc.Sequence):
    """A read-only list of optimizers.

    Not a `list`: Keras's saving walks list attributes and would store the
    optimizers a second time, by position.
    """

    def __init__(self, optimizers):
        self._optimizers = tuple(optimizers)

    def __getitem__(self, index):
        return self._optimizers[index]

    def __len__(self):
        return len(self._optimizers)

    def __repr__(self):
        return repr(list(self._optimizers))


@keras.saving.register_keras_serializable(package="keras_mtl")
class TaskOptimizers(keras.optimizers.Optimizer):
    """The shared and per-task optimizers of an alternating model, as one optimizer.

    `MultiTaskModel.compile(mode="alternating", task_optimizers=...)` makes
    one and sets it as `model.optimizer`; you do not create it yourself. An
    alternating step on task t applies its gradients with t's own optimizer,
    or with the shared one if t has none, never with this object.

    It follows the protocol of Keras's `MultiOptimizer`: `optimizers` lists
    every optimizer (the shared one first, then one per task in the model's
    task order), which Keras's `ReduceLROnPlateau`, `LearningRateScheduler`
    and `TensorBoard` use to adjust or log each learning rate on its own.
    Reading `learning_rate` gives the rate when every optimizer has the
    same one; setting it sets every optimizer's rate.

    Args:
        shared: The shared optimizer, or `None` if every trained task has
            its own.
        task_optimizers: Dict `{task: optimizer}` of the tasks with their
            own optimizer, in the model's task order.
        name: Optional name. Defaults to `"task_optimizers"`.

    Returns:
        A `keras.optimizers.Optimizer` whose `apply` refuses gradients (use
        the task's optimizer).

    Example:

    >>> import keras_mtl
    >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
    >>> model.compile(optimizer="sgd", loss="mse", mode="alternating",
    ...               task_optimizers={"b": "adam"})
    >>> [type(o).__name__ for o in model.optimizer.optimizers]
    ['SGD', 'Adam']
    >>> model.optimizer.learning_rate = 0.005   # sets both rates
    >>> sorted(model.task_optimizers)
    ['b']
    """

    def __init__(self, shared, task_optimizers, name="task_optimizers"):
        super().__init__(learning_rate=0.0, name=name)
        for owner, optimizer in [(_SHARED, shared), *task_optimizers.items()]:
            if optimizer is not None and not isinstance(optimizer, keras.optimizers.Optimizer):
                raise TypeError(
                    f"TaskOptimizers needs keras.optimizers.Optimizer instances; "
                    f"received {optimizer!r} for {owner!r}."
                )
        self._by_owner = types.MappingProxyType(
            {**({_SHARED: shared} if shared is not None else {}), **task_optimizers}
        )
        self._builder = None
        self._variables_of = None

    @property
    def optimizers(self):
        """Every optimizer: the shared one (if any) first, then the tasks' own."""
        return _OptimizerList(self._by_owner.values())

    @property
    def task_optimizers(self):
        """Read-only dict `{task: optimizer}` of the tasks with their own optimizer."""
        return types.MappingProxyType({k: v for k, v in self._by_owner.items() if k != _SHARED})

    @property
    def learning_rate(self):
        rates = {o.name: float(keras.ops.convert_to_numpy(o.learning_rate)) for o in self.optimizers}
        if len(set(rates.values())) != 1:
            raise AttributeError(
                "The optimizers of this model have different learning rates "
                f"({rates}): read them on model.optimizer.optimizers (or "
                "model.task_optimizers[task])."
            )
        return next(iter(rates.values()))

    @learning_rate.setter
    def learning_rate(self, value):
        if not hasattr(self, "_by_owner"):
            return  # Optimizer.__init__ sets it before the optimizers exist.
        for optimizer in self.optimizers:
            optimizer.learning_rate = value

    @property
    def iterations(self):
        """The number of updates applied by all the optimizers together."""
        return tf.add_n([tf.cast(o.iterations, tf.int64) for o in self.optimizers])

    @property
    def variables(self):
        return [v for o in self.optimizers for v in o.variables]

    def set_builder(self, builder, variables_of):
        """Connects this object to the model that owns it.

        Args:
            builder: Function that builds every optimizer on the variables it
                updates; `build()` (which Keras calls, e.g. from
                `BackupAndRestore`) runs it instead of using Keras's list.
            variables_of: Function `optimizer -> list of variables` it
                updates, for `finalize_variable_values`.

        Returns:
            None.
        """
        self._builder = builder
        self._variables_of = variables_of

    def build(self, var_list):
        if self._builder is None:
            raise ValueError(
                "TaskOptimizers is built by the MultiTaskModel that owns it "
                "(compile() sets it as model.optimizer)."
            )
        self._builder()
        self.built = True

    def apply(self, grads, trainable_variables=None):
        raise NotImplementedError(
            "model.optimizer holds several optimizers (compile(task_optimizers=...)): "
            "apply a task's gradients with that task's optimizer, "
            "model.task_optimizers[task], or the shared one for the other tasks."
        )

    def finalize_variable_values(self, var_list):
        # Each optimizer on the variables it was built with, not on Keras's
        # list (paired by position, it would mix the tasks' averages).
        for optimizer in self.optimizers:
            if optimizer.built and self._variables_of is not None:
                optimizer.finalize_variable_values(self._variables_of(optimizer))

    def save_own_variables(self, store):
        # Keyed by owner ("shared", "task.<name>"), never by position.
        for owner, optimizer in self._by_owner.items():
            for i, variable in enumerate(optimizer.variables):
                store[f"{_key(owner)}.{i}"] = variable.numpy()

    def load_own_variables(self, store):
        keys = list(store.keys())
        if keys and not any(k.startswith((_SHARED + ".", "task.")) for k in keys):
            # A file of keras_mtl 0.1.0: the shared optimizer saved alone here;
            # the model loads the tasks' own (see MultiTaskModel.load_own_variables).
            if _SHARED in self._by_owner:
                self._by_owner[_SHARED].load_own_variables(store)
            return
        for owner, optimizer in self._by_owner.items():
            prefix = f"{_key(owner)}."
            saved = [k for k in keys if k.startswith(prefix)]
            if not keys:
                return  # nothing saved here (a 0.1.0 file without a shared optimizer)
            if len(saved) != len(optimizer.variables):
                # As Keras's own optimizers do: warn and leave this state as is.
                where = "the shared optimizer" if owner == _SHARED else f"task {owner!r}'s optimizer"
                warnings.warn(
                    f"Skipping the state of {where}: it has {len(optimizer.variables)} "
                    f"variables, but the saved one has {len(saved)}. The file was "
                    "written by a model compiled with other optimizers, tasks or "
                    "trainable layers.",
                    stacklevel=2,
                )
                continue
            for i, variable in enumerate(optimizer.variables):
                variable.assign(store[f"{prefix}{i}"])

    def get_config(self):
        return {
            "name": self.name,
            "shared": keras.saving.serialize_keras_object(self._by_owner.get(_SHARED)),
            "task_optimizers": {
                t: keras.saving.serialize_keras_object(o) for t, o in self.task_optimizers.items()
            },
        }

    @classmethod
    def from_config(cls, config):
        return cls(
            keras.saving.deserialize_keras_object(config["shared"]),
            {t: keras.saving.deserialize_keras_object(o) for t, o in config["task_optimizers"].items()},
            name=config.get("name", "task_optimizers"),
        )


def _key(owner):
    return _SHARED if owner == _SHARED else f"task.{owner}"


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
                + ", ".join(f"{t!r}: keras.optimizers.SGD(gradient_accumulation_steps="
                            f"{accumulation})" for t in users_of_shared)
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
