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

`keras_mtl/_optimizer_setup.py` resolves `compile`'s optimizer arguments,
refuses the optimizer features that cannot keep alternating updates exact,
and builds every optimizer on the variables it updates.
"""

import collections.abc
import types
import warnings

import keras
import tensorflow as tf

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
        rates = {
            o.name: float(keras.ops.convert_to_numpy(o.learning_rate)) for o in self.optimizers
        }
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
        """Builds every optimizer on the variables it updates.

        Args:
            var_list: Ignored (Keras passes every trainable variable); each
                optimizer is built on its task's variables instead.

        Returns:
            None.
        """
        if self._builder is None:
            raise ValueError(
                "TaskOptimizers is built by the MultiTaskModel that owns it "
                "(compile() sets it as model.optimizer)."
            )
        self._builder()
        self.built = True

    def apply(self, grads, trainable_variables=None):
        """Refuses: gradients go to one task's optimizer, not to all of them.

        Args:
            grads: Gradients.
            trainable_variables: Their variables.

        Returns:
            Never returns; raises `NotImplementedError` naming what to use.
        """
        raise NotImplementedError(
            "model.optimizer holds several optimizers (compile(task_optimizers=...)): "
            "apply a task's gradients with that task's optimizer, "
            "model.task_optimizers[task], or the shared one for the other tasks."
        )

    def finalize_variable_values(self, var_list):
        """Finalizes each optimizer on the variables it updates (see Keras).

        Args:
            var_list: Ignored: paired by position with one optimizer's
                averages, Keras's list would mix the tasks'.

        Returns:
            None.
        """
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
                where = (
                    "the shared optimizer" if owner == _SHARED else f"task {owner!r}'s optimizer"
                )
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
            {
                t: keras.saving.deserialize_keras_object(o)
                for t, o in config["task_optimizers"].items()
            },
            name=config.get("name", "task_optimizers"),
        )


def _key(owner):
    return _SHARED if owner == _SHARED else f"task.{owner}"
