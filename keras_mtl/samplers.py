"""Task samplers: which task an alternating step trains.

A sampler maps the training step to a probability for each task
(`probabilities(step)`). Drawing the task is then a pure function of
`(seed, step)` (`sample`), so the task sequence is reproducible, identical on
every replica of a `tf.distribute` strategy, and continues where it stopped
when training resumes from a checkpoint. The same samplers drive
`keras_mtl.data.interleave`, which picks which per-task dataset each batch
comes from.

Write your own sampler by subclassing `Sampler` and implementing
`probabilities(step)` with TensorFlow ops (it runs inside the compiled
training step); register it with
`@keras.saving.register_keras_serializable()` so saved models restore it.
"""

import copy

import keras
import numpy as np
import tensorflow as tf

from keras_mtl import _checks, _random


class Sampler:
    """Base class of task samplers.

    Subclasses implement `probabilities(step)` and, when their constructor
    takes arguments, `get_config()`. A sampler is bound to the tasks it
    samples from by `bind(task_names)`, which `MultiTaskModel.compile` and
    `keras_mtl.data.interleave` call for you; inside `probabilities`,
    `self.task_names` and `self.num_tasks` are available. A sampler whose
    arguments name the tasks (`Fixed`, `Proportional`, `Annealed`, or a
    subclass overriding `_named_tasks`) also works unbound, as if bound to
    those tasks in the order its dict lists them.

    Example:

    >>> import keras, tensorflow as tf, keras_mtl
    >>> @keras.saving.register_keras_serializable(package="docs")
    ... class FirstTaskEarly(keras_mtl.samplers.Sampler):
    ...     '''Only the first task for 100 steps, then uniform.'''
    ...     def probabilities(self, step):
    ...         first = tf.one_hot(0, self.num_tasks)
    ...         uniform = tf.ones([self.num_tasks]) / self.num_tasks
    ...         return tf.where(step < 100, first, uniform)
    >>> s = FirstTaskEarly().bind(["a", "b"])
    >>> s.probabilities(tf.constant(5)).numpy()
    array([1., 0.], dtype=float32)
    """

    _task_names = None

    def __init__(self):
        self._task_names = None

    @property
    def task_names(self):
        """The tasks this sampler is bound to, in order (tuple of str).

        Unbound, the tasks its arguments name, if any (`_named_tasks`).
        """
        names = self._task_names if self._task_names is not None else self._named_tasks()
        if names is None:
            raise ValueError(
                f"{type(self).__name__} is not bound to tasks yet: call "
                "`bind(task_names)` (compile() and interleave() do it)."
            )
        return names

    def _named_tasks(self):
        """Hook: the tasks the arguments name, in order, or `None`.

        An unbound sampler acts as bound to these tasks. The dict-based
        samplers return their dict's keys; `None` (the default) means an
        unbound sampler has no tasks and must be bound before use.
        """
        return None

    @property
    def num_tasks(self):
        """Number of tasks this sampler is bound to."""
        return len(self.task_names)

    def bind(self, task_names):
        """Returns a copy of this sampler bound to `task_names`.

        Args:
            task_names: Sequence of task names, in the order that task
                indices refer to.

        Returns:
            A bound copy; the original is left unbound, so one sampler
            object can configure several models or datasets.
        """
        task_names = tuple(task_names)
        if not task_names:
            raise ValueError("A sampler needs at least one task to sample.")
        bound = copy.copy(self)
        bound._task_names = task_names
        bound._validate_tasks(task_names)
        return bound

    def _validate_tasks(self, task_names):
        """Hook for subclasses whose arguments name tasks."""

    def probabilities(self, step):
        """Probability of each task at training step `step`.

        Args:
            step: Scalar integer tensor, the 0-based training step.

        Returns:
            Float tensor of shape `[num_tasks]`, non-negative; it need not
            sum to one (it is normalized when sampling).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement `probabilities(step)`.")

    def sample(self, step, seed, available=None, uniforms=None):
        """Draws the task for `step`, a pure function of `(seed, step)`.

        Probabilities are renormalized over the `available` tasks. If every
        available task has probability 0, the draw is uniform over the
        available tasks; if none is available, the result is `num_tasks`
        (meaning "no task").

        The draw is an exponential race: task t gets the key
        `E_t / p_t` with `E_t ~ Exp(1)` hashed from `(seed, step, t)`, and
        the available task with the smallest key wins, which picks t with
        probability `p_t / sum of the available p` exactly. The keys do not
        depend on the batch, so the training step computes them ahead and
        only the cheap "smallest available key" waits for the labels.

        Args:
            step: Scalar integer tensor, the 0-based training step.
            seed: Python int in [0, 2**31), the run's seed.
            available: Optional bool tensor `[num_tasks]`, which tasks may
                be drawn (for example, the tasks whose labels are present
                in the batch). Defaults to all tasks.
            uniforms: Optional float32 `[num_tasks]`, the draws
                `keras_mtl._random.uniform(seed, step, num_tasks)` if
                already computed (the training loop draws a whole
                execution's at once).

        Returns:
            Scalar int32 tensor in `[0, num_tasks]`.
        """
        keys = self.race_keys(step, seed, uniforms)
        if available is None:
            return tf.cast(tf.argmin(keys), tf.int32)
        available = tf.reshape(tf.cast(available, tf.bool), [self.num_tasks])
        task = tf.cast(tf.argmin(tf.where(available, keys, float("inf"))), tf.int32)
        return tf.where(tf.reduce_any(available), task, self.num_tasks)

    def race_keys(self, step, seed, uniforms=None):
        """The exponential-race keys of `sample` (float32 `[num_tasks]`).

        Tasks with probability 0 get keys above every other task's, in a
        random order, so they win only when no task with probability is
        available.

        Args:
            step: Scalar integer tensor, the 0-based training step.
            seed: Python int, the run's seed.
            uniforms: Optional precomputed `_random.uniform(seed, step, n)`.

        Returns:
            float32 tensor `[num_tasks]`.
        """
        n = self.num_tasks
        p = tf.reshape(tf.cast(self.probabilities(step), tf.float32), [n])
        u = _random.uniform(seed, step, n) if uniforms is None else uniforms
        exponential = -tf.math.log1p(-u)  # u < 1, so finite
        return tf.where(p > 0, exponential / tf.maximum(p, 1e-30), 1e30 * (1.0 + exponential))

    def get_config(self):
        """Returns the constructor arguments as a JSON-serializable dict."""
        return {}

    @classmethod
    def from_config(cls, config):
        """Creates a sampler from `get_config()`'s output."""
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_mtl")
class Uniform(Sampler):
    """Every task with the same probability at every step.

    Example:

    >>> import keras_mtl
    >>> keras_mtl.samplers.Uniform().bind(["a", "b"]).probabilities(0).numpy()
    array([0.5, 0.5], dtype=float32)
    """

    def probabilities(self, step):
        return tf.fill([self.num_tasks], 1.0 / self.num_tasks)


@keras.saving.register_keras_serializable(package="keras_mtl")
class RoundRobin(Sampler):
    """Tasks in order, one per step: task `step % num_tasks`.

    If the scheduled task has no labels in the batch, the step draws
    uniformly among the tasks that do.

    Example:

    >>> import keras_mtl
    >>> s = keras_mtl.samplers.RoundRobin().bind(["a", "b", "c"])
    >>> s.probabilities(4).numpy()
    array([0., 1., 0.], dtype=float32)
    """

    def probabilities(self, step):
        index = tf.math.floormod(tf.cast(step, tf.int64), self.num_tasks)
        return tf.one_hot(index, self.num_tasks)


@keras.saving.register_keras_serializable(package="keras_mtl")
class Fixed(Sampler):
    """Fixed probabilities given per task.

    Unbound, it samples the tasks of `weights` in the dict's order.

    Args:
        weights: Dict `{task: weight}` with a finite, non-negative weight for
            every task; at least one positive. Weights are normalized.

    Example:

    >>> import keras_mtl
    >>> s = keras_mtl.samplers.Fixed({"a": 3, "b": 1})
    >>> s.probabilities(0).numpy()
    array([0.75, 0.25], dtype=float32)
    >>> s.bind(["b", "a"]).probabilities(0).numpy()
    array([0.25, 0.75], dtype=float32)
    """

    def __init__(self, weights):
        super().__init__()
        self.weights = _checks.check_task_weights("Fixed(weights)", weights)

    def _named_tasks(self):
        return tuple(self.weights)

    def _validate_tasks(self, task_names):
        _checks.check_task_weights("Fixed(weights)", self.weights, task_names)

    def probabilities(self, step):
        p = np.array([self.weights[t] for t in self.task_names], np.float64)
        return tf.constant(p / p.sum(), tf.float32)

    def get_config(self):
        return {"weights": dict(self.weights)}


def _check_sizes(arg_name, sizes):
    checked = _checks.check_task_weights(arg_name, sizes)
    zero = [t for t, v in checked.items() if v <= 0]
    if zero:
        raise ValueError(
            f"`{arg_name}` must be > 0 for every task (a dataset size or "
            f"weight); received 0 for {zero}."
        )
    return checked


@keras.saving.register_keras_serializable(package="keras_mtl")
class Proportional(Sampler):
    """Probabilities proportional to `size ** alpha`.

    With `alpha=1` a task is drawn as often as its share of the data;
    `alpha < 1` flattens toward uniform (the temperature sampling of
    T5/mT5 is `alpha = 1 / T`); `alpha=0` is uniform. Unbound, it samples
    the tasks of `sizes` in the dict's order.

    Args:
        sizes: Dict `{task: size}` with a positive size for every task
            (e.g. number of examples or batches).
        alpha: Float >= 0, the exponent. Defaults to `1.0`.

    Example:

    >>> import keras_mtl
    >>> s = keras_mtl.samplers.Proportional({"a": 1, "b": 2, "c": 3}, alpha=2)
    >>> s.probabilities(0).numpy().round(4)
    array([0.0714, 0.2857, 0.6429], dtype=float32)
    >>> s.bind(["c", "b", "a"]).probabilities(0).numpy().round(4)
    array([0.6429, 0.2857, 0.0714], dtype=float32)
    """

    def __init__(self, sizes, alpha=1.0):
        super().__init__()
        self.sizes = _check_sizes("Proportional(sizes)", sizes)
        self.alpha = _checks.check_non_negative_finite("Proportional(alpha)", alpha)

    def _named_tasks(self):
        return tuple(self.sizes)

    def _validate_tasks(self, task_names):
        _checks.check_task_keys("Proportional(sizes)", self.sizes, task_names, require_all=True)

    def probabilities(self, step):
        sizes = np.array([self.sizes[t] for t in self.task_names], np.float64)
        p = sizes**self.alpha
        return tf.constant(p / p.sum(), tf.float32)

    def get_config(self):
        return {"sizes": dict(self.sizes), "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="keras_mtl")
class Annealed(Sampler):
    """Proportional sampling annealed toward uniform over training.

    Stickland & Murray (2019), "BERT and PALs", sample task t with
    probability proportional to `size_t ** alpha` where alpha falls from 1
    (proportional) to 0.2 (close to uniform) over the epochs. This class
    uses

        alpha(step) = 1 - (1 - final_alpha) * progress(step)

    where, with `steps_per_epoch` given, `progress = e / (E - 1)` for the
    0-based epoch `e = floor(step / steps_per_epoch)` and
    `E = total_steps / steps_per_epoch` epochs, and without it
    `progress = step / total_steps`; progress is clipped to [0, 1], so
    sampling stays at `final_alpha` after `total_steps`.

    Difference from the TensorFlow Model Garden's `AnnealingTaskSampler`:
    it uses `alpha = 1 - 0.8 * (e - 1) / (E - 1)` with the same 0-based
    `e`, so its first epoch has `alpha = 1 + 0.8 / (E - 1) > 1` (more
    skewed than proportional) and its last epoch ends at
    `1 - 0.8 * (E - 2) / (E - 1)`, above 0.2, and it keeps falling past
    `total_steps`. Here the first epoch is exactly proportional, the last
    is exactly `final_alpha`, and nothing changes afterwards.

    Unbound, it samples the tasks of `sizes` in the dict's order.

    Args:
        sizes: Dict `{task: size}` with a positive size for every task.
        total_steps: Positive int, the number of training steps over which
            alpha anneals.
        steps_per_epoch: Optional positive int. If given, alpha changes once
            per epoch as in the paper; if `None`, it changes every step.
        final_alpha: Float in [0, 1], alpha at the end. Defaults to `0.2`.

    Example:

    >>> import keras_mtl
    >>> s = keras_mtl.samplers.Annealed({"a": 1, "b": 3}, total_steps=100)
    >>> s.probabilities(0).numpy()
    array([0.25, 0.75], dtype=float32)
    >>> s.bind(["b", "a"]).probabilities(0).numpy()
    array([0.75, 0.25], dtype=float32)
    """

    def __init__(self, sizes, total_steps, steps_per_epoch=None, final_alpha=0.2):
        super().__init__()
        self.sizes = _check_sizes("Annealed(sizes)", sizes)
        self.total_steps = _checks.check_positive_int("Annealed(total_steps)", total_steps)
        if steps_per_epoch is not None:
            steps_per_epoch = _checks.check_positive_int(
                "Annealed(steps_per_epoch)", steps_per_epoch
            )
        self.steps_per_epoch = steps_per_epoch
        final_alpha = _checks.check_non_negative_finite("Annealed(final_alpha)", final_alpha)
        if final_alpha > 1:
            raise ValueError(f"`Annealed(final_alpha)` must be in [0, 1]. Received: {final_alpha}.")
        self.final_alpha = final_alpha

    def _named_tasks(self):
        return tuple(self.sizes)

    def _validate_tasks(self, task_names):
        _checks.check_task_keys("Annealed(sizes)", self.sizes, task_names, require_all=True)

    def alpha(self, step):
        """The exponent of the sizes at training step `step`.

        Args:
            step: Scalar integer (tensor or int), the 0-based step.

        Returns:
            float32 scalar tensor.
        """
        step = tf.cast(step, tf.float32)
        if self.steps_per_epoch is None:
            progress = step / self.total_steps
        else:
            epochs = self.total_steps / self.steps_per_epoch
            epoch = tf.floor(step / self.steps_per_epoch)
            progress = epoch / max(epochs - 1.0, 1.0)
        progress = tf.clip_by_value(progress, 0.0, 1.0)
        return 1.0 - (1.0 - self.final_alpha) * progress

    def probabilities(self, step):
        sizes = tf.constant([self.sizes[t] for t in self.task_names], tf.float32)
        # Scale by the largest size so the power cannot overflow float32.
        p = tf.pow(sizes / tf.reduce_max(sizes), self.alpha(step))
        return p / tf.reduce_sum(p)

    def get_config(self):
        return {
            "sizes": dict(self.sizes),
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "final_alpha": self.final_alpha,
        }


_ALIASES = {"uniform": Uniform, "round_robin": RoundRobin}


def get(identifier):
    """Returns a `Sampler` from a name, a `{task: weight}` dict or a sampler.

    Args:
        identifier: `"uniform"`, `"round_robin"`, a dict of fixed weights
            (becomes `Fixed(weights)`), a `Sampler`, or a serialized sampler
            config (as written by `keras.saving.serialize_keras_object`).

    Returns:
        An unbound `Sampler`.

    Example:

    >>> import keras_mtl
    >>> keras_mtl.samplers.get({"a": 0.7, "b": 0.3})
    Fixed(weights={'a': 0.7, 'b': 0.3})
    """
    if isinstance(identifier, Sampler):
        return identifier
    if isinstance(identifier, str):
        if identifier in _ALIASES:
            return _ALIASES[identifier]()
        raise ValueError(
            f"Unknown sampler {identifier!r}. Use 'uniform', 'round_robin', "
            "a dict of task probabilities such as {'y1': 0.7, 'y2': 0.3}, or "
            "a keras_mtl.samplers.Sampler instance."
        )
    if isinstance(identifier, dict):
        if "class_name" in identifier and "config" in identifier:
            obj = keras.saving.deserialize_keras_object(identifier)
            if isinstance(obj, Sampler):
                return obj
        return Fixed(identifier)
    raise TypeError(
        "`sampler` must be 'uniform', 'round_robin', a dict of task "
        f"probabilities or a keras_mtl.samplers.Sampler. Received: {identifier!r}."
    )
