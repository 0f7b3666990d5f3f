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

from keras_mtl import _checks, _random, _solvers

Context = collections.namedtuple(
    "Context", ["step", "seed", "epoch_start", "present"], defaults=[None]
)
Context.__doc__ = """What a weighting method may know about the current step.

A method is only asked for weights on steps where every task has labels
(`present` is all true): on a step where some task has none, the training
step uses the static `loss_weights` sum instead and restores the method's
non-trainable state, so missing labels never skew a method.

Attributes:
    step: scalar int64 tensor, the model's training step counter.
    seed: Python int, the seed of `compile(seed=...)`.
    epoch_start: scalar bool tensor, true on the first step after the
        model's metrics were reset (the start of a `fit()` epoch).
    present: bool tensor `[T]`, which tasks have labels in the (global)
        batch, or `None` (all).

Example:

>>> import tensorflow as tf, keras_mtl
>>> context = keras_mtl.weighting.Context(
...     step=tf.constant(0, tf.int64), seed=0, epoch_start=tf.constant(True))
>>> method = keras_mtl.weighting.DWA()
>>> method.build(2)
>>> method.loss_weights(tf.constant([1.0, 2.0]), context)[0].numpy()
array([1., 1.], dtype=float32)
"""


class Weighting(keras.layers.Layer):
    """Base class of loss-weighting and gradient-combination methods.

    A method's state is created in `build(num_tasks)` with `add_weight`;
    non-trainable state should use `aggregation="only_first_replica"` so
    it can be updated identically on every replica of a strategy.

    Args:
        **kwargs: Base layer arguments (`name`).

    Example:

    >>> import keras_mtl
    >>> isinstance(keras_mtl.weighting.get("uncertainty"), keras_mtl.weighting.Weighting)
    True
    """

    #: Whether `MultiTaskModel.compile(mode="alternating")` accepts it.
    supports_alternating = False

    def build(self, num_tasks):
        self.num_tasks = int(num_tasks)

    def _state(self, name, initializer="zeros", shape=None):
        """A non-trainable state variable (one value per task by default)."""
        return self.add_weight(
            name=name,
            shape=(self.num_tasks,) if shape is None else shape,
            initializer=initializer,
            trainable=False,
            aggregation="only_first_replica",
        )

    def task_variables(self, index):
        """Trainable variables that belong to task `index` alone.

        Alternating steps update only these (besides the trunk and the
        task's head), leaving other tasks' state untouched.

        Args:
            index: int, the task's position.

        Returns:
            A list of variables (empty by default).
        """
        return []


class LossWeighting(Weighting):
    """Base of methods that weight the per-task losses.

    Subclasses implement `loss_weights(losses, context)` (named so that it
    does not hide `keras.layers.Layer.weights`).

    Args:
        **kwargs: Base layer arguments (`name`).

    Example:

    >>> import tensorflow as tf, keras_mtl
    >>> class FirstTaskTwice(keras_mtl.weighting.LossWeighting):
    ...     def loss_weights(self, losses, context):
    ...         return tf.one_hot(0, self.num_tasks) + 1.0, None
    >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
    >>> model.compile(optimizer="adam", loss="mse", weighting=FirstTaskTwice())
    """

    #: Whether `after_update` needs the losses recomputed after the step.
    needs_losses_after_update = False

    def loss_weights(self, losses, context):
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

    def single_task_weight(self, index, loss, context):
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
            losses_before: float32 `[T]`, the losses `loss_weights` saw.
            losses_after: float32 `[T]`, the same batch's losses after the
                update.
            context: a `Context`.

        Returns:
            None.
        """


class GradientWeighting(Weighting):
    """Base of methods that combine the per-task gradients of the trunk.

    Subclasses implement `coefficients(gram, losses, context)`.

    Args:
        **kwargs: Base layer arguments (`name`).

    Example:

    >>> import tensorflow as tf, keras_mtl
    >>> class Mean(keras_mtl.weighting.GradientWeighting):
    ...     def coefficients(self, gram, losses, context):
    ...         return tf.fill([self.num_tasks], 1.0 / self.num_tasks)
    >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
    >>> model.compile(optimizer="sgd", loss="mse", weighting=Mean())
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
                name=f"log_variance_{t}",
                shape=(),
                initializer=keras.initializers.Constant(self.initial_log_variance),
            )
            for t in range(self.num_tasks)
        ]

    def task_variables(self, index):
        return [self.log_variances[index]]

    def loss_weights(self, losses, context):
        s = tf.stack([tf.convert_to_tensor(v) for v in self.log_variances])
        return tf.exp(-s), tf.reduce_sum(s)

    def single_task_weight(self, index, loss, context):
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


@keras.saving.register_keras_serializable(package="keras_mtl")
class DWA(LossWeighting):
    """Dynamic Weight Average (Liu, Johns & Davison, 2019).

    "End-to-End Multi-Task Learning with Attention", CVPR 2019 (MTAN). With
    `Lbar_t(e)` the mean training loss of task t over the steps of epoch e,

        r_t = Lbar_t(e - 1) / Lbar_t(e - 2)
        w_t = T * exp(r_t / temperature) / sum_k exp(r_k / temperature)

    and `w_t = 1` during the first two epochs, as in the official code and
    LibMTL. A task whose loss fell more slowly gets more weight. The running
    epoch sums and the two previous epoch means are state variables, rolled
    on the first step of each `fit()` epoch (O(1) per step); a second
    `fit()` call, or a resumed model, continues counting epochs.

    Args:
        temperature: Positive float, the softmax temperature (the paper's
            `T`); larger values give more uniform weights. Defaults to `2.0`.
        **kwargs: Base layer arguments.

    Example:

    >>> import keras_mtl
    >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
    >>> model.compile(optimizer="adam", loss="mse", weighting=keras_mtl.weighting.DWA())
    """

    def __init__(self, temperature=2.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = _positive("temperature", temperature)

    def build(self, num_tasks):
        super().build(num_tasks)
        self.loss_sums = self._state("loss_sums")
        self.steps_in_epoch = self._state("steps_in_epoch", shape=())
        # Row 0: the mean losses of epoch e - 1; row 1: of epoch e - 2.
        self.epoch_means = self._state("epoch_means", shape=(2, num_tasks))
        self.epochs_seen = self._state("epochs_seen", shape=())

    def loss_weights(self, losses, context):
        sums = tf.convert_to_tensor(self.loss_sums)
        steps = tf.convert_to_tensor(self.steps_in_epoch)
        means = tf.convert_to_tensor(self.epoch_means)
        roll = tf.logical_and(context.epoch_start, steps > 0.0)
        means = tf.where(roll, tf.stack([tf.math.divide_no_nan(sums, steps), means[0]]), means)
        epochs = self.epochs_seen + tf.cast(roll, tf.float32)
        self.epoch_means.assign(means)
        self.epochs_seen.assign(epochs)
        self.loss_sums.assign(tf.where(roll, 0.0, sums) + losses)
        self.steps_in_epoch.assign(tf.where(roll, 0.0, steps) + 1.0)
        ratio = tf.math.divide_no_nan(means[0], means[1])
        dynamic = self.num_tasks * tf.nn.softmax(ratio / self.temperature)
        return tf.where(epochs >= 2.0, dynamic, tf.ones_like(losses)), None

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="keras_mtl")
class RLW(LossWeighting):
    """Random loss weighting (Lin et al., 2022).

    "Reasonable Effectiveness of Random Weighting: A Litmus Test for
    Multi-Task Learning", TMLR 2022. Every step draws `z ~ N(0, I_T)` and
    uses `w = softmax(z)`: the weights are positive and sum to 1 (not T),
    as in the paper and LibMTL, so the loss is on the scale of a task mean
    rather than the sum. The draw is a pure function of
    `(compile(seed=...), step)`: reproducible, the same with or without XLA
    and on every replica.

    Args:
        **kwargs: Base layer arguments.

    Example:

    >>> import keras_mtl
    >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
    >>> model.compile(optimizer="adam", loss="mse", weighting=keras_mtl.weighting.RLW(), seed=0)
    """

    def loss_weights(self, losses, context):
        return tf.nn.softmax(_random.normal(context.seed, context.step, self.num_tasks)), None


@keras.saving.register_keras_serializable(package="keras_mtl")
class FAMO(LossWeighting):
    """Fast Adaptive Multitask Optimization (Liu et al., 2023).

    "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023. Task logits
    `xi` (state, starting at 0) give `z = softmax(xi)`. With
    `D_t = L_t + 1e-8` (the reference's default minimum losses of 0), the
    reference minimizes `sum_t (z_t / c) log D_t` with the constant
    `c = sum_t z_t / D_t`; its gradient is `sum_t z_t / (c D_t) grad L_t`, so
    this class returns the weights `w_t = z_t / (c D_t)` (constants), which
    give exactly the reference's update (and are logged). After the
    optimizer step the same batch's losses are recomputed (one extra
    forward pass, without dropout), and with
    `delta_t = log D_t(before) - log D_t(after)` the logits take one Adam
    step (beta 0.9, 0.999, eps 1e-8, as `torch.optim.Adam`) on the gradient
    `J_softmax(xi)^T delta + gamma * xi` (Adam's L2 `weight_decay=gamma`).

    Unlike the reference, the shared parameters' gradient norm is not
    clipped to `max_norm=1.0`; set `clipnorm` or `global_clipnorm` on the
    optimizer for that.

    Args:
        gamma: Non-negative float, the L2 regularization of the logits.
            Defaults to `0.01`.
        learning_rate: Positive float, Adam's learning rate for the logits.
            Defaults to `0.025`.
        **kwargs: Base layer arguments.

    Example:

    >>> import keras_mtl
    >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
    >>> model.compile(optimizer="adam", loss="mse", weighting=keras_mtl.weighting.FAMO())
    """

    needs_losses_after_update = True

    def __init__(self, gamma=0.01, learning_rate=0.025, **kwargs):
        super().__init__(**kwargs)
        self.gamma = _checks.check_non_negative_finite("gamma", gamma)
        self.learning_rate = _positive("learning_rate", learning_rate)

    def build(self, num_tasks):
        super().build(num_tasks)
        self.logits = self._state("logits")
        self.adam_m = self._state("adam_m")
        self.adam_v = self._state("adam_v")
        self.adam_steps = self._state("adam_steps", shape=())

    def loss_weights(self, losses, context):
        z = tf.nn.softmax(tf.convert_to_tensor(self.logits))
        d = losses + 1e-8
        return z / (tf.reduce_sum(z / d) * d), None

    def after_update(self, losses_before, losses_after, context):
        xi = tf.convert_to_tensor(self.logits)
        z = tf.nn.softmax(xi)
        delta = tf.math.log(losses_before + 1e-8) - tf.math.log(losses_after + 1e-8)
        grad = z * (delta - tf.reduce_sum(z * delta)) + self.gamma * xi
        steps = self.adam_steps + 1.0
        m = 0.9 * self.adam_m + 0.1 * grad
        v = 0.999 * self.adam_v + 0.001 * tf.square(grad)
        m_hat, v_hat = m / (1.0 - 0.9**steps), v / (1.0 - 0.999**steps)
        self.adam_m.assign(m)
        self.adam_v.assign(v)
        self.adam_steps.assign(steps)
        self.logits.assign(xi - self.learning_rate * m_hat / (tf.sqrt(v_hat) + 1e-8))

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "learning_rate": self.learning_rate}


@keras.saving.register_keras_serializable(package="keras_mtl")
class MGDA(GradientWeighting):
    """Multiple-gradient descent (Sener & Koltun, 2018).

    "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018.
    The shared update is the min-norm point of the convex hull of the task
    gradients, `sum_t w_t g_t` with

        w = argmin_{w >= 0, sum_t w_t = 1} |sum_t w_t g_t|^2,

    a common descent direction of every task (zero at a Pareto-stationary
    point). Difference from the paper: `w` is found from the Gram matrix
    exactly (up to float64 rounding), not by the Frank-Wolfe iterations of
    its Algorithm 2, which converge slowly once gradient norms differ by
    10x or more (after 100 iterations they can leave weight on a task that
    should get none, and the update can then conflict with a task). With
    `b_t = (1, g_t)` and `e = (1, 0)`, `u = argmin_{u >= 0}
    |e - sum_t u_t b_t|^2` gives `w = u / sum_t u_t`: a non-negative least
    squares problem, solved in float64 by Lawson & Hanson's (1974)
    active-set method, which ends on the exact support of `w`.

    `gradients="representation"` (the default) is MGDA-UB, the paper's
    cheaper upper bound with the gradients of the trunk's output;
    `"parameters"` uses the gradients of the trunk's variables. No
    gradient normalization is applied (LibMTL's default `mgda_gn="none"`;
    its `"l2"`, `"loss"` and `"loss+"` options are not implemented). As in
    LibMTL, heads get their own task's gradient, unscaled by `w`.

    Args:
        gradients: `"representation"` or `"parameters"`.
        iterations: Positive int, the most active-set iterations (each adds
            a task to the support of `w` or drops one; earlier versions
            bounded Frank-Wolfe iterations with it). The solver typically
            stops after T + 1 to 2 T iterations, so the default `100` is
            ample for up to about 50 tasks; cut short, `w` is the last
            iterate (uniform if `iterations < 2`). Defaults to `100`.
        **kwargs: Base layer arguments.

    Example:

    >>> import numpy as np, tensorflow as tf, keras_mtl
    >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
    >>> model.compile(optimizer="sgd", loss="mse", weighting=keras_mtl.weighting.MGDA())
    >>> mgda = keras_mtl.weighting.MGDA()
    >>> mgda.build(2)
    >>> grads = np.array([[1.0, 0.0], [-1.0, 1.0]])  # the min-norm point is (0.2, 0.4)
    >>> mgda.coefficients(tf.constant(grads @ grads.T), None, None).numpy()
    array([0.6, 0.4], dtype=float32)
    """

    def __init__(self, gradients="representation", iterations=100, **kwargs):
        super().__init__(**kwargs)
        if gradients not in ("representation", "parameters"):
            raise ValueError(
                "`gradients` must be 'representation' (MGDA-UB) or 'parameters'. "
                f"Received: gradients={gradients!r}."
            )
        self.gradients = gradients
        self.iterations = _positive_int("iterations", iterations)

    def coefficients(self, gram, losses, context):
        return tf.cast(_solvers.min_norm_weights(gram, self.num_tasks, self.iterations), tf.float32)

    def get_config(self):
        return {**super().get_config(), "gradients": self.gradients, "iterations": self.iterations}


@keras.saving.register_keras_serializable(package="keras_mtl")
class CAGrad(GradientWeighting):
    """Conflict-averse gradient descent (Liu et al., 2021).

    "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS
    2021. With `g0` the mean gradient and `phi = c^2 |g0|^2`, find

        w = argmin_{w in simplex} g_w . g0 + sqrt(phi) |g_w|,  g_w = sum_t w_t g_t

    and update with `d = (g0 + sqrt(phi) / |g_w| * g_w) / (1 + c^2)`: the
    direction within `c |g0|` of `g0` that maximizes the smallest task
    improvement. The division by `1 + c^2` is the reference's and LibMTL's
    default (`rescale=1`); `rescale=False` drops it. `d` is on the scale of
    the task mean (not the sum). `w` is found from the Gram matrix by
    pairwise Frank-Wolfe with an exact line search, in float64, instead of
    the reference's SciPy SLSQP. Only `gradients="parameters"` (LibMTL
    refuses representation gradients too).

    Args:
        c: Non-negative float, the radius of the ball around `g0` (the
            paper's `c`; 0 gives plain averaging). Defaults to `0.5`.
        rescale: Bool, whether to divide `d` by `1 + c^2`. Defaults to `True`.
        iterations: Positive int, the most Frank-Wolfe iterations.
            Defaults to `100`.
        **kwargs: Base layer arguments.

    Example:

    >>> import keras_mtl
    >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
    >>> model.compile(optimizer="sgd", loss="mse", weighting=keras_mtl.weighting.CAGrad(c=0.4))
    """

    def __init__(self, c=0.5, rescale=True, iterations=100, **kwargs):
        super().__init__(**kwargs)
        self.c = _checks.check_non_negative_finite("c", c)
        self.rescale = bool(rescale)
        self.iterations = _positive_int("iterations", iterations)

    def coefficients(self, gram, losses, context):
        n = self.num_tasks
        dot = _solvers.dot
        g = _solvers.normalized_gram(gram)
        b = tf.reduce_mean(g, axis=1)  # [g_t . g0]_t
        radius = self.c * tf.sqrt(tf.maximum(tf.reduce_mean(g), 0.0))  # sqrt(phi)

        def gradient(w):
            gw = tf.linalg.matvec(g, w)
            return b + radius * tf.math.divide_no_nan(gw, tf.sqrt(tf.maximum(dot(w, g, w), 0.0)))

        def line_search(w, d, max_step):
            # Minimizes B s + k sqrt(P + 2 Q s + S s^2) over [0, max_step]:
            # with u = Q + S s, the root of the derivative solves
            # u / sqrt(m + u^2 / S) = r, m = P - Q^2 / S, r = -B / k.
            slope, p, q, s = tf.reduce_sum(b * d), dot(w, g, w), dot(w, g, d), dot(d, g, d)
            r = tf.math.divide_no_nan(-slope, radius)
            m = tf.maximum(p - tf.math.divide_no_nan(q * q, s), 0.0)
            inside = tf.logical_and(radius > 0.0, r * r < s)
            u = r * tf.sqrt(tf.math.divide_no_nan(m, 1.0 - tf.math.divide_no_nan(r * r, s)))
            root = tf.math.divide_no_nan(u - q, s)
            # No root: the derivative keeps the sign of the slope at infinity.
            end = tf.where(slope + radius * tf.sqrt(tf.maximum(s, 0.0)) < 0.0, max_step, 0.0)
            return tf.clip_by_value(tf.where(inside, root, end), 0.0, max_step)

        w = _solvers.pairwise_frank_wolfe(n, gradient, line_search, self.iterations)
        norm = tf.sqrt(tf.maximum(dot(w, g, w), 0.0))
        d = 1.0 / n + tf.math.divide_no_nan(radius, norm) * w
        if self.rescale:
            d = d / (1.0 + self.c**2)
        return tf.cast(d, tf.float32)

    def get_config(self):
        return {
            **super().get_config(),
            "c": self.c,
            "rescale": self.rescale,
            "iterations": self.iterations,
        }


@keras.saving.register_keras_serializable(package="keras_mtl")
class GradNorm(GradientWeighting):
    """Gradient normalization (Chen et al., 2018).

    "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep
    Multitask Networks", ICML 2018. Task weights `w` (state, starting at 1)
    combine the trunk gradients: the update is `sum_t w_t g_t`. Each step,
    with `G_t = w_t |g_t|`, `Ltilde_t = L_t / L_t(first step)`,
    `r_t = Ltilde_t / mean(Ltilde)` and the constant target
    `G*_t = mean(G) * r_t^alpha`, the weights take one gradient step on
    `sum_t |G_t - G*_t|`:

        w_t <- w_t - learning_rate * sign(G_t - G*_t) * |g_t|,

    are clipped at 0 and renormalized to sum to T. The coefficients used
    are the weights before this update (the paper's order). Norms are
    taken over all trunk parameters (the paper uses the last shared layer;
    LibMTL all shared parameters). The weights are updated by this plain
    gradient step, not by the model's optimizer; heads get their own
    task's gradient, unscaled by `w`. The initial losses are the first
    step's (LibMTL uses the first epoch's mean). The weight step scales
    with the gradient norms: when they are large, a smaller `learning_rate`
    avoids weights that jump between 0 and T.

    Args:
        alpha: Non-negative float, the strength of the pull towards equal
            training rates. Defaults to `1.5`.
        learning_rate: Positive float, the step size of the weights.
            Defaults to `0.025`.
        **kwargs: Base layer arguments.

    Example:

    >>> import keras_mtl
    >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
    >>> model.compile(optimizer="adam", loss="mse", weighting=keras_mtl.weighting.GradNorm())
    """

    def __init__(self, alpha=1.5, learning_rate=0.025, **kwargs):
        super().__init__(**kwargs)
        self.alpha = _checks.check_non_negative_finite("alpha", alpha)
        self.learning_rate = _positive("learning_rate", learning_rate)

    def build(self, num_tasks):
        super().build(num_tasks)
        self.task_weights = self._state("task_weights", "ones")
        self.initial_losses = self._state("initial_losses")
        self.started = self._state("started", shape=())

    def coefficients(self, gram, losses, context):
        w = tf.convert_to_tensor(self.task_weights)
        initial = tf.where(self.started > 0.0, self.initial_losses, losses)
        self.initial_losses.assign(initial)
        self.started.assign(1.0)
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
        g = w * norms
        ratios = tf.math.divide_no_nan(losses, initial)
        rates = tf.math.divide_no_nan(ratios, tf.reduce_mean(ratios))
        target = tf.reduce_mean(g) * rates**self.alpha
        updated = tf.maximum(w - self.learning_rate * tf.sign(g - target) * norms, 0.0)
        total = tf.reduce_sum(updated)
        self.task_weights.assign(
            tf.where(total > 0.0, self.num_tasks * updated / total, tf.ones_like(w))
        )
        return w

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "learning_rate": self.learning_rate}


@keras.saving.register_keras_serializable(package="keras_mtl")
class UPGrad(GradientWeighting):
    """Unconflicting projection of gradients (Quinton & Rey, 2024).

    "Jacobian Descent for Multi-Objective Optimization" (arXiv:2406.16232),
    TorchJD's recommended aggregator. Each task gradient `g_i` is projected
    onto the dual cone of all of them, `{x : g_t . x >= 0 for all t}`, and
    the update is the mean of the projections. By the paper's Proposition
    1 the projection is `sum_t v_t g_t` with

        v = argmin_v v^T G v  subject to  v >= e_i,

    so the coefficients are `mean_i v(i)`. The update never conflicts with
    a task (`g_t . d >= 0`), and is the plain mean when no two gradients
    conflict. As in TorchJD, `G` is divided by its trace first (which does
    not change the solution). Differences from TorchJD: the quadratic
    programs are solved as non-negative least squares problems by Lawson &
    Hanson's active-set method (at most `5 T` iterations), instead of
    `quadprog`, on the gradients scaled to unit norm (the dual cone depends
    only on their directions), so the result is the same whatever the
    ratio of the gradients' norms; and instead of TorchJD's `1e-4 * I`,
    only `1e-12 * I` is added to the scaled Gram matrix (to keep duplicate
    or dependent gradients solvable), which moves `g_t . d` by about 1e-12
    of `|g_t| |g_i|` (TorchJD's shifts it below 0 by up to 1e-4 relative).

    Args:
        **kwargs: Base layer arguments.

    Example:

    >>> import numpy as np, tensorflow as tf, keras_mtl
    >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
    >>> model.compile(optimizer="sgd", loss="mse", weighting=keras_mtl.weighting.UPGrad())
    >>> upgrad = keras_mtl.weighting.UPGrad()
    >>> upgrad.build(2)
    >>> grads = np.array([[1.0, 0.0], [-1.0, 1.0]])  # projections (0.5, 0.5), (0, 1)
    >>> upgrad.coefficients(tf.constant(grads @ grads.T), None, None).numpy()
    array([1.  , 0.75], dtype=float32)
    """

    def coefficients(self, gram, losses, context):
        weights = _solvers.dual_cone_weights(gram, self.num_tasks, 5 * self.num_tasks)
        return tf.cast(tf.reduce_mean(weights, axis=0), tf.float32)


def get(identifier):
    """Returns a `Weighting` from an instance, a class name or a config.

    Args:
        identifier: A `Weighting`, a name such as `"uncertainty"` or
            `"PCGrad"`, a serialized config, or `None`.

    Returns:
        A `Weighting` instance, or `None`.

    Example:

    >>> import keras_mtl
    >>> type(keras_mtl.weighting.get("grad_norm")).__name__
    'GradNorm'
    """
    if identifier is None or isinstance(identifier, Weighting):
        return identifier
    if isinstance(identifier, dict):
        obj = keras.saving.deserialize_keras_object(identifier)
        if isinstance(obj, Weighting):
            return obj
    if isinstance(identifier, str):
        key = identifier.lower().replace("_", "")
        for cls in (
            Weighting.__subclasses__()
            + LossWeighting.__subclasses__()
            + GradientWeighting.__subclasses__()
        ):
            if cls.__name__.lower() == key and cls not in (LossWeighting, GradientWeighting):
                return cls()
    raise ValueError(
        "`weighting` must be a keras_mtl.weighting method such as "
        "keras_mtl.weighting.Uncertainty() or PCGrad(), or its name. "
        f"Received: {identifier!r}."
    )


# ----------------------------------------------------------------------------
# Private argument checks (the solvers live in keras_mtl/_solvers.py).
# ----------------------------------------------------------------------------
def _positive(name, value):
    """`value` as a float, or a ValueError naming the argument."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"`{name}` must be a positive finite number. Received: {name}={value!r}.")
    return value


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}.")
    return value
