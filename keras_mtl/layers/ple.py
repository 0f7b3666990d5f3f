"""`CGC` and `PLE`: shared and task-specific experts, in one level or
stacked levels (Tang et al., RecSys 2020)."""

import numbers

import keras

from keras_mtl import _checks
from keras_mtl.layers._mixture import _ExpertMixture, _extract, _ExtractionLevel


def _check_cgc_counts(cls, num_shared_experts, num_task_experts):
    return (
        _checks.check_positive_int(f"{cls}(num_shared_experts)", num_shared_experts),
        _checks.check_positive_int(f"{cls}(num_task_experts)", num_task_experts),
    )


@keras.saving.register_keras_serializable(package="keras_mtl")
class CGC(_ExpertMixture):
    """Customized Gate Control: shared experts plus each task's own experts.

    The single-level model of Tang et al., "Progressive Layered Extraction
    (PLE): A Novel Multi-Task Learning (MTL) Model for Personalized
    Recommendations", RecSys 2020
    (https://dl.acm.org/doi/10.1145/3383313.3412236). For features `x` of
    shape `(batch, d)`, `m_s = num_shared_experts` shared experts `E_(s,i)`,
    and for each task `k` its own `m_t = num_task_experts` experts `E_(k,i)`
    and gate (every expert is Dense layers of `expert_units`):

        S^k(x) = [E_(k,1)(x), ..., E_(k,m_t)(x), E_(s,1)(x), ..., E_(s,m_s)(x)]
        w^k(x) = softmax(W_k x + b_k)               # (batch, m_t + m_s)
        g^k(x) = sum_i w^k(x)_i S^k(x)_i            # (batch, expert_units[-1])

    and the layer returns `{k: g^k(x)}`. As in the paper, `S^k` lists the
    task's experts before the shared ones and `W_k` is a
    `(m_t + m_s) x d` matrix without bias (`b_k` only with
    `gate_use_bias=True`). Task `k`'s own variables are its experts
    `task_expert_<k>_<i>` and its gate `gate_<k>`; no other task's
    output depends on them. DeepCTR defaults to 1 shared and 1 task expert.
    `PLE` stacks several such levels.

    Args:
        num_shared_experts: Positive int, `m_s`, experts every task uses.
        num_task_experts: Positive int, `m_t`, experts of each task alone.
        expert_units: List of positive ints (or one int), the sizes of
            each expert's Dense layers; the last is the size of every
            task's output.
        task_names: List of unique task names (valid Python identifiers),
            the keys of the output dict, in order; or `None` (the default)
            to leave them unset until `set_task_names()`, which a
            `MultiTaskModel` calls with its head names.
        expert_activation: Activation of every expert Dense layer, the last
            one included. Defaults to `"relu"`, as in DeepCTR and keras-mmoe.
        expert_dropout: Float in [0, 1), dropout after each expert Dense
            layer, in training only. Defaults to `0.0`.
        gate_use_bias: Whether each gate's linear map has a bias `b`.
            Defaults to `False`, as in the papers' equations and DeepCTR.
        kernel_initializer: Initializer of every expert and gate kernel;
            each kernel gets its own copy (a seeded one gets `seed + k` for
            its k-th kernel), so experts start different. Defaults to
            `"glorot_uniform"`.
        kernel_regularizer: Optional regularizer of every expert and gate
            kernel. Defaults to `None`.
        **kwargs: Base layer arguments such as `name` and `dtype`.

    Returns:
        A Keras layer mapping `(batch, d)` to
        `{task: (batch, expert_units[-1])}`.

    Example:

    >>> import numpy as np
    >>> import keras_mtl
    >>> cgc = keras_mtl.layers.CGC(
    ...     num_shared_experts=2, num_task_experts=1, expert_units=[8],
    ...     task_names=["ctr", "cvr"])
    >>> out = cgc(np.ones((2, 5), "float32"))
    >>> {task: tuple(t.shape) for task, t in out.items()}
    {'ctr': (2, 8), 'cvr': (2, 8)}
    >>> cgc.expert_names("cvr")
    ['task_expert_cvr_0', 'shared_expert_0', 'shared_expert_1']
    """

    def __init__(
        self,
        num_shared_experts,
        num_task_experts,
        expert_units,
        task_names=None,
        expert_activation="relu",
        expert_dropout=0.0,
        gate_use_bias=False,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(
            expert_units,
            task_names,
            expert_activation,
            expert_dropout,
            gate_use_bias,
            kernel_initializer,
            kernel_regularizer,
            **kwargs,
        )
        self.num_shared_experts, self.num_task_experts = _check_cgc_counts(
            "CGC", num_shared_experts, num_task_experts
        )

    def build(self, input_shape):
        shape = self._check_input_shape(input_shape)
        tasks = self._require_task_names()
        self.task_experts = [
            self._make_expert(f"task_expert_{t}_{i}")
            for t in tasks
            for i in range(self.num_task_experts)
        ]
        self.shared_experts = [
            self._make_expert(f"shared_expert_{i}") for i in range(self.num_shared_experts)
        ]
        n = self.num_task_experts + self.num_shared_experts
        self.gates = [self._make_gate(f"gate_{t}", n) for t in tasks]
        for layer in self.task_experts + self.shared_experts + self.gates:
            layer.build(shape)

    def _forward(self, x, training):
        outputs, weights, _, _ = _extract(
            self._task_names,
            self.num_task_experts,
            self.task_experts,
            self.shared_experts,
            self.gates,
            None,
            {t: x for t in self._task_names},
            x,
            training,
        )
        return outputs, weights

    def expert_names(self, task):
        """The names of the experts task `task`'s gate weighs, in gate order.

        Args:
            task: A task name.

        Returns:
            A list of expert layer names: the task's own experts, then the
            shared ones.
        """
        self._check_task(task)
        return [f"task_expert_{task}_{i}" for i in range(self.num_task_experts)] + [
            f"shared_expert_{i}" for i in range(self.num_shared_experts)
        ]

    def get_config(self):
        config = super().get_config()
        config.update(
            num_shared_experts=self.num_shared_experts,
            num_task_experts=self.num_task_experts,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_mtl")
class PLE(_ExpertMixture):
    """Progressive Layered Extraction: stacked CGC levels with a shared path.

    From Tang et al., "Progressive Layered Extraction (PLE): A Novel
    Multi-Task Learning (MTL) Model for Personalized Recommendations",
    RecSys 2020 (https://dl.acm.org/doi/10.1145/3383313.3412236). Level
    `j = 1..L` (`L = num_levels`) has `m_s = num_shared_experts` shared
    experts, `m_t = num_task_experts` experts per task and one gate per
    task, all Dense layers of `expert_units`. Level `j` reads task `k`'s
    representation `g^(k,j-1)` and a shared representation `g^(s,j-1)`,
    both equal to the input `x` at level 1:

        S^(k,j) = [E_(k,1)^j(g^(k,j-1)), ..., E_(k,m_t)^j(g^(k,j-1)),
                   E_(s,1)^j(g^(s,j-1)), ..., E_(s,m_s)^j(g^(s,j-1))]
        g^(k,j) = sum_i softmax(W_k^j g^(k,j-1) + b_k^j)_i S^(k,j)_i

    Every level but the last also has a shared gate over all its experts,
    every task's (in task order) and then the shared ones:

        S^(s,j) = [every task's E_(k,i)^j(g^(k,j-1)), E_(s,i)^j(g^(s,j-1))]
        g^(s,j) = sum_i softmax(W_s^j g^(s,j-1) + b_s^j)_i S^(s,j)_i

    and the layer returns `{k: g^(k,L)}`. This is the paper's
    `g^(k,j)(x) = w^(k,j)(g^(k,j-1)(x)) S^(k,j)(x)` with the shared module
    gating all experts, wired as in DeepCTR's PLE (task experts and gates
    read the task's previous representation, shared experts and the shared
    gate the shared one; gates without bias unless `gate_use_bias=True`).
    With `num_levels=1` it is `CGC`. DeepCTR defaults to 2 levels of 1
    shared and 1 task expert.

    Task `k`'s output depends on its own experts and gates of every level,
    the shared experts of every level, the shared gates of levels `< L`
    and everything those read: at level `L - 1` that includes the other
    tasks' experts. The other tasks' experts and gates at level `L`, and
    their gates at level `L - 1` (which feed only those experts), never
    affect it.

    Weights are named `level_<j>/task_expert_<k>_<i>`,
    `level_<j>/shared_expert_<i>`, `level_<j>/gate_<k>` and
    `level_<j>/shared_gate`.

    Args:
        num_levels: Positive int, the number of extraction levels `L`.
        num_shared_experts: Positive int, `m_s`, shared experts per level.
        num_task_experts: Positive int, `m_t`, each task's experts per level.
        expert_units: List of positive ints (or one int), the sizes of
            each expert's Dense layers (the same at every level); the last
            is the size of every task's output.
        task_names: List of unique task names (valid Python identifiers),
            the keys of the output dict, in order; or `None` (the default)
            to leave them unset until `set_task_names()`, which a
            `MultiTaskModel` calls with its head names.
        expert_activation: Activation of every expert Dense layer, the last
            one included. Defaults to `"relu"`, as in DeepCTR and keras-mmoe.
        expert_dropout: Float in [0, 1), dropout after each expert Dense
            layer, in training only. Defaults to `0.0`.
        gate_use_bias: Whether each gate's linear map has a bias `b`.
            Defaults to `False`, as in the papers' equations and DeepCTR.
        kernel_initializer: Initializer of every expert and gate kernel;
            each kernel gets its own copy (a seeded one gets `seed + k` for
            its k-th kernel), so experts start different. Defaults to
            `"glorot_uniform"`.
        kernel_regularizer: Optional regularizer of every expert and gate
            kernel. Defaults to `None`.
        **kwargs: Base layer arguments such as `name` and `dtype`.

    Returns:
        A Keras layer mapping `(batch, d)` to
        `{task: (batch, expert_units[-1])}`.

    Example:

    >>> import numpy as np
    >>> import keras_mtl
    >>> ple = keras_mtl.layers.PLE(
    ...     num_levels=2, num_shared_experts=1, num_task_experts=1,
    ...     expert_units=[8], task_names=["ctr", "cvr"])
    >>> out = ple(np.ones((2, 5), "float32"))
    >>> {task: tuple(t.shape) for task, t in out.items()}
    {'ctr': (2, 8), 'cvr': (2, 8)}
    >>> ple.expert_names("ctr")
    ['level_2/task_expert_ctr_0', 'level_2/shared_expert_0']
    >>> ple.shared_gate_expert_names(level=1)
    ['level_1/task_expert_ctr_0', 'level_1/task_expert_cvr_0', 'level_1/shared_expert_0']
    """

    def __init__(
        self,
        num_levels,
        num_shared_experts,
        num_task_experts,
        expert_units,
        task_names=None,
        expert_activation="relu",
        expert_dropout=0.0,
        gate_use_bias=False,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(
            expert_units,
            task_names,
            expert_activation,
            expert_dropout,
            gate_use_bias,
            kernel_initializer,
            kernel_regularizer,
            **kwargs,
        )
        self.num_levels = _checks.check_positive_int("PLE(num_levels)", num_levels)
        self.num_shared_experts, self.num_task_experts = _check_cgc_counts(
            "PLE", num_shared_experts, num_task_experts
        )

    def build(self, input_shape):
        shape = self._check_input_shape(input_shape)
        tasks = self._require_task_names()
        n_task, n_shared = self.num_task_experts, self.num_shared_experts
        levels = []
        for j in range(1, self.num_levels + 1):
            level = _ExtractionLevel(
                task_experts=[
                    self._make_expert(f"task_expert_{t}_{i}") for t in tasks for i in range(n_task)
                ],
                shared_experts=[self._make_expert(f"shared_expert_{i}") for i in range(n_shared)],
                task_gates=[self._make_gate(f"gate_{t}", n_task + n_shared) for t in tasks],
                shared_gate=(
                    self._make_gate("shared_gate", len(tasks) * n_task + n_shared)
                    if j < self.num_levels
                    else None
                ),
                dtype=self.dtype_policy,
                name=f"level_{j}",
            )
            level.build(shape)
            levels.append(level)
            shape = (shape[0], self.expert_units[-1])
        self.levels = levels

    def _forward(self, x, training):
        """`(outputs, [(task gate weights, shared gate weights) per level])`."""
        task_inputs = {t: x for t in self._task_names}
        shared_input = x
        gates = []
        for level in self.levels:
            task_inputs, task_weights, shared_input, shared_weights = _extract(
                self._task_names,
                self.num_task_experts,
                level.task_experts,
                level.shared_experts,
                level.task_gates,
                level.shared_gate,
                task_inputs,
                shared_input,
                training,
            )
            gates.append((task_weights, shared_weights))
        return task_inputs, gates

    def _check_level(self, level, shared=False):
        if level is None and not shared:
            return self.num_levels
        last = self.num_levels - 1 if shared else self.num_levels
        if last < 1:
            raise ValueError(
                "This PLE has one level, which has no shared gate; shared gates "
                "exist at levels 1 to num_levels - 1."
            )
        is_int = isinstance(level, numbers.Integral) and not isinstance(level, bool)
        if not is_int or not 1 <= level <= last:
            what = "levels with a shared gate" if shared else "levels"
            raise ValueError(
                f"`level` must be an int in [1, {last}] (this PLE's {what}). "
                f"Received: level={level!r}."
            )
        return int(level)

    def gate_weights(self, inputs, training=False, level=None):
        """Each task's softmax gate weights over its experts at one level.

        Args:
            inputs: Features of shape `(batch, d)`.
            training: Whether the experts run in training mode (dropout).
                Defaults to `False`.
            level: Int in [1, num_levels], the level whose gates to read.
                Defaults to the last level.

        Returns:
            `{task: (batch, num_task_experts + num_shared_experts)}`, rows
            summing to 1, columns in the order of `expert_names(task, level)`.
        """
        level = self._check_level(level)
        return self._forward(self._inputs(inputs), training)[1][level - 1][0]

    def shared_gate_weights(self, inputs, level=1, training=False):
        """The shared gate's softmax weights over all experts of one level.

        Args:
            inputs: Features of shape `(batch, d)`.
            level: Int in [1, num_levels - 1]; the last level has no shared
                gate. Defaults to `1`.
            training: Whether the experts run in training mode (dropout).
                Defaults to `False`.

        Returns:
            A `(batch, num_tasks * num_task_experts + num_shared_experts)`
            tensor, rows summing to 1, columns in the order of
            `shared_gate_expert_names(level)`.
        """
        level = self._check_level(level, shared=True)
        return self._forward(self._inputs(inputs), training)[1][level - 1][1]

    def expert_names(self, task, level=None):
        """The names of the experts task `task`'s gate weighs at one level, in gate order.

        Args:
            task: A task name.
            level: Int in [1, num_levels]. Defaults to the last level.

        Returns:
            A list of names `level_<j>/<expert>`: the task's own experts,
            then the shared ones.
        """
        self._check_task(task)
        level = self._check_level(level)
        return [f"level_{level}/task_expert_{task}_{i}" for i in range(self.num_task_experts)] + [
            f"level_{level}/shared_expert_{i}" for i in range(self.num_shared_experts)
        ]

    def shared_gate_expert_names(self, level=1):
        """The names of the experts the shared gate of one level weighs, in gate order.

        Args:
            level: Int in [1, num_levels - 1]. Defaults to `1`.

        Returns:
            A list of names `level_<j>/<expert>`: every task's experts, in
            task order, then the shared ones.
        """
        level = self._check_level(level, shared=True)
        tasks = self._require_task_names()
        return [
            f"level_{level}/task_expert_{t}_{i}"
            for t in tasks
            for i in range(self.num_task_experts)
        ] + [f"level_{level}/shared_expert_{i}" for i in range(self.num_shared_experts)]

    def get_config(self):
        config = super().get_config()
        config.update(
            num_levels=self.num_levels,
            num_shared_experts=self.num_shared_experts,
            num_task_experts=self.num_task_experts,
        )
        return config
