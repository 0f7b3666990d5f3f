"""Dynamic loss weighting and gradient combination for joint training.

`compile(weighting=...)` replaces the static `loss_weights` sum by one of
these methods. Each is one short class with one rule; its state lives in
Keras variables that save and restore with the model, and it knows nothing
about the training loop (`keras_mtl/training.py` calls it).

Two kinds:

* `LossWeighting` (`Uncertainty`, `DWA`, `RLW`, `FAMO`): maps the per-task
  losses of a step to one weight per task; one backward pass.
* `GradientWeighting` (`PCGrad`, `MGDA`, `CAGrad`, `GradNorm`, `UPGrad`):
  maps the Gram matrix of the per-task gradients (`G G^T`, `G` holding one
  task's gradient per row) to combination coefficients `c`; the shared
  trunk is then updated with `sum_t c_t g_t`. Every method here produces
  a linear combination of the task gradients, so the Gram matrix is all it
  needs, and under a distribution strategy only that small matrix (or the
  per-task gradients) must be summed over replicas. Heads always get their
  own task's gradient.

The losses a method sees are already multiplied by the static
`loss_weights`. The weights or coefficients actually used are logged as
`<task>_weight` (training logs only).
"""

import collections

import keras
import tensorflow as tf

from keras_mtl import _random

Context = collections.namedtuple("Context", ["step", "seed", "epoch_start"])
Context.__doc__ = """What a weighting method may know about the current step.

Attributes:
    step: scalar int64 tensor, the model's training step counter.
    seed: Python int, the seed of `compile(seed=...)`.
    epoch_start: scalar bool tensor, true on the first step after the
        model's metrics were reset (the start of a `fit()` epoch).
"""


class Weighting(keras.layers.Layer):
    """Base class of loss-weighting and gradient-combination methods.

    A method's state is created in `build(num_tasks)` with `add_weight`;
    non-trainable state should use `aggregation="only_first_replica"` so
    it can be updated identically on every replica of a strategy.

    Args:
        **kwargs: Base layer arguments (`name`).
    """

    #: Whether `MultiTaskModel.compile(mode="alternating")` accepts it.
    supports_alternating = False

    def build(self, num_tasks):
        self.num_tasks = int(num_tasks)

    def _state(self, name, initializer="zeros", shape=None):
        """A non-trainable state variable (one value per task by default)."""
        return self.add_weight(
            name=name, shape=(self.num_tasks,) if shape is None else shape,
            initializer=initializer, trainable=False, aggregation="only_first_replica",
        )

    def task_variables(self, index):
        """Trainable variables that belong to task `index` alone (used by
        alternating steps, which must leave other tasks' state untouched)."""
        return []


class LossWeighting(Weighting):
    """Base of methods that weight the per-task losses.

    Subclasses implement `weights(losses, context)`.
    """

    #: Whether `after_update` needs the losses recomputed after the step.
    needs_losses_after_update = False

    def weights(self, losses, context):
        """Per-task weights for this step.

        Args:
            losses: float32 tensor `[T]`, each task's loss on the batch
                (summed over replicas, static loss weights applied, no
                gradient).
            context: a `Context`.

        Returns:
            `(weights, extra_loss)`: a float32 tensor `[T]` (it may depend on
            the method's own trainable variables) and a scalar added to the
            objective, or `None`. The step minimizes
            `sum_t weights_t * L_t + extra_loss`.
        """
        raise NotImplementedError

    def task_weight(self, index, loss, context):
        """Weight of ONE task's loss, for alternating steps.

        Only methods with `supports_alternating = True` implement it.

        Args:
            index: int, the task's position.
            loss: float32 scalar, the task's loss on the batch.
            context: a `Context`.

        Returns:
            `(weight, extra_loss)`, scalars; the step minimizes
            `weight * L + extra_loss`.
        """
        raise NotImplementedError(
            f"{type(self).__name__} balances tasks within a joint step; it has "
            "no meaning for one task at a time."
        )

    def after_update(self, losses_before, losses_after, context):
        """Updates the state from the losses before and after the step.

        Called only when `needs_losses_after_update` is true.

        Args:
            losses_before: float32 `[T]`, the losses `weights` saw.
            losses_after: float32 `[T]`, the same batch's losses after the
                update.
            context: a `Context`.
        """


class GradientWeighting(Weighting):
    """Base of methods that combine the per-task gradients of the trunk.

    Subclasses implement `coefficients(gram, losses, context)`.
    """

    #: `"parameters"`: gradients of the trunk's variables; `"representation"`:
    #: gradients of the trunk's output (cheaper; MGDA-UB).
    gradients = "parameters"

    def coefficients(self, gram, losses, context):
        """Combination coefficients of the task gradients.

        Args:
            gram: float32 `[T, T]`, `G G^T` for the per-task gradient matrix
                `G` (summed over replicas).
            losses: float32 `[T]`, each task's loss (as in `LossWeighting`).
            context: a `Context`.

        Returns:
            float32 `[T]`: the shared update is `sum_t c_t g_t`.
        """
        raise NotImplementedError


@keras.saving.register_keras_serializable(package="keras_mtl")
class Uncertainty(LossWeighting):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, 2018).

    "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
    Geometry and Semantics", CVPR 2018. Each task has a learnable
    log-variance `s_t` and the objective is

        sum_t exp(-s_t) * L_t + s_t

    (the paper's form for a regression loss, up to constant factors,
    applied to every task as in most implementations). `s_t` starts at
    `initial_log_variance` (0.0: weight 1) and is trained by the model's
    optimizer. LibMTL uses `L_t / (2 exp(s_t)) + s_t / 2` with `s_t = -0.5`
    at the start: the same minimizer `s_t = log L_t`, at half the scale.
    The weight logged is `exp(-s_t)`.

    Works in both modes: in alternating mode a step on task t minimizes
    `exp(-s_t) * L_t + s_t`, learning each task's loss scale.

    Args:
        initial_log_variance: Float, the starting `s_t`. Defaults to `0.0`.
        **kwargs: Base layer arguments.

    Example:

    >>> import keras_mtl
    >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
    >>> model.compile(optimizer="adam", loss="mse",
    ...               weighting=keras_mtl.weighting.Uncertainty())
    """

    supports_alternating = True

    def __init__(self, initial_log_variance=0.0, **kwargs):
        super().__init__(**kwargs)
        self.initial_log_variance = float(initial_log_variance)

    def build(self, num_tasks):
        super().build(num_tasks)
        # One scalar per task, so an alternating step updates only its own.
        self.log_variances = [
            self.add_weight(
                name=f"log_variance_{t}", shape=(),
                initializer=keras.initializers.Constant(self.initial_log_variance),
            )
            for t in range(self.num_tasks)
        ]

    def task_variables(self, index):
        return [self.log_variances[index]]

    def weights(self, losses, context):
        s = tf.stack([tf.convert_to_tensor(v) for v in self.log_variances])
        return tf.exp(-s), tf.reduce_sum(s)

    def task_weight(self, index, loss, context):
        s = tf.convert_to_tensor(self.log_variances[index])
        return tf.exp(-s), s

    def get_config(self):
        return {**super().get_config(), "initial_log_variance": self.initial_log_variance}


@keras.saving.register_keras_serializable(package="keras_mtl")
class PCGrad(GradientWeighting):
    """Projecting conflicting gradients (Yu et al., 2020).

    "Gradient Surgery for Multi-Task Learning", NeurIPS 2020. For each task
    i, in a random order of the other tasks j: if `g_i . g_j < 0`, remove
    from `g_i` its component along `g_j`:
    `g_i <- g_i - (g_i . g_j / |g_j|^2) g_j`. The update is the sum of the
    projected gradients. The order is drawn per task from `(seed, step)`,
    so it is reproducible and the same on every replica.

    Every projected gradient stays a linear combination of the original
    ones; this class tracks those coefficients from the Gram matrix alone
    and returns their sum per task.

    Example:

    >>> import keras_mtl
    >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
    >>> model.compile(optimizer="adam", loss="mse", weighting=keras_mtl.weighting.PCGrad())
    """

    def coefficients(self, gram, losses, context):
        n = self.num_tasks
        eye = tf.eye(n)
        rows = []
        for i in range(n):
            # The order of the other tasks for task i: argsort of uniforms.
            keys = _random.uniform(context.seed, context.step * n + i, n)
            order = tf.argsort(keys)
            coef = eye[i]  # projected g_i = sum_k coef[k] g_k
            for position in range(n):
                j = order[position]
                g_j = tf.gather(gram, j)  # [g_k . g_j]_k
                dot = tf.reduce_sum(coef * g_j)
                norm2 = tf.gather(g_j, j)
                conflict = tf.logical_and(tf.not_equal(j, i), dot < 0.0)
                shift = tf.math.divide_no_nan(dot, norm2) * tf.one_hot(j, n)
                coef = tf.where(conflict, coef - shift, coef)
            rows.append(coef)
        return tf.reduce_sum(tf.stack(rows), axis=0)


def get(identifier):
    """Returns a `Weighting` from an instance, a class name or a config.

    Args:
        identifier: A `Weighting`, a name such as `"uncertainty"` or
            `"PCGrad"`, a serialized config, or `None`.

    Returns:
        A `Weighting` instance, or `None`.
    """
    if identifier is None or isinstance(identifier, Weighting):
        return identifier
    if isinstance(identifier, dict):
        obj = keras.saving.deserialize_keras_object(identifier)
        if isinstance(obj, Weighting):
            return obj
    if isinstance(identifier, str):
        key = identifier.lower().replace("_", "")
        for cls in Weighting.__subclasses__() + LossWeighting.__subclasses__() + GradientWeighting.__subclasses__():
            if cls.__name__.lower() == key and cls not in (LossWeighting, GradientWeighting):
                return cls()
    raise ValueError(
        "`weighting` must be a keras_mtl.weighting method such as "
        "keras_mtl.weighting.Uncertainty() or PCGrad(), or its name. "
        f"Received: {identifier!r}."
    )
