"""Expert-mixture trunks: MMoE, CGC and PLE, each returning `{task: features}`.

Each layer takes one feature tensor `(batch, d)` and returns one
representation per task, `{task_name: (batch, expert_units[-1])}`, mixed
from a pool of small expert networks by per-task softmax gates. Use one as
the whole trunk of a `MultiTaskModel` (which then sets `task_names` from its
heads) or in a functional model with `task_names=[...]`.

Every task's gates and task-specific experts are their own variables, so a
task's output depends only on the shared experts, its own experts and gates
(and, in `PLE`, the shared gates of earlier levels and what feeds them):
the other tasks' gradients never reach them.
"""

import numbers

import keras
from keras import ops

from keras_mtl import _checks
from keras_mtl.heads import _check_activation


def _check_expert_units(arg_name, units):
    if isinstance(units, numbers.Integral) and not isinstance(units, bool):
        units = [units]
    if (
        not isinstance(units, (list, tuple))
        or not units
        or not all(
            isinstance(u, numbers.Integral) and not isinstance(u, bool) and u > 0
            for u in units
        )
    ):
        raise ValueError(
            f"`{arg_name}` must be a non-empty list of positive ints, the "
            "sizes of each expert's Dense layers, e.g. [32, 16]. "
            f"Received: {units!r}."
        )
    return tuple(int(u) for u in units)


def _check_task_names(arg_name, names):
    """`names` as a tuple of unique task names, or `None`."""
    if names is None:
        return None
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not names:
        raise ValueError(
            f"`{arg_name}` must be a non-empty list of task names, e.g. "
            f"['income', 'marital'], or None. Received: {names!r}."
        )
    for name in names:
        try:
            _checks.check_task_name(name)
        except ValueError as e:
            raise ValueError(f"`{arg_name}`: {e}") from None
    dupes = sorted({n for n in names if list(names).count(n) > 1})
    if dupes:
        raise ValueError(
            f"`{arg_name}` must name each task once; {dupes} appear more "
            f"than once. Received: {list(names)!r}."
        )
    return tuple(names)


def _mix(weights, expert_outputs):
    """sum_i weights[:, i] * expert_outputs[i]: `(batch, n)`, n x `(batch, u)` -> `(batch, u)`."""
    return ops.einsum("bn,bnu->bu", weights, ops.stack(expert_outputs, axis=1))


def _extract(task_names, num_task_experts, task_experts, shared_experts,
             task_gates, shared_gate, task_inputs, shared_input, training):
    """One CGC extraction step (Tang et al., 2020).

    Task k's experts and gate read `task_inputs[k]`; the shared experts and
    the shared gate read `shared_input`. Task k's gate mixes its own experts
    then the shared ones; the shared gate (if any) mixes every task's experts,
    in task order, then the shared ones.

    Returns:
        `(task_outputs, task_gate_weights, shared_output, shared_gate_weights)`,
        the last two `None` without a shared gate.
    """
    shared = [e(shared_input, training=training) for e in shared_experts]
    outputs, weights, every_task_expert = {}, {}, []
    for k, (task, gate) in enumerate(zip(task_names, task_gates)):
        own = [
            e(task_inputs[task], training=training)
            for e in task_experts[k * num_task_experts:(k + 1) * num_task_experts]
        ]
        every_task_expert += own
        weights[task] = ops.softmax(gate(task_inputs[task]), axis=-1)
        outputs[task] = _mix(weights[task], own + shared)
    if shared_gate is None:
        return outputs, weights, None, None
    shared_weights = ops.softmax(shared_gate(shared_input), axis=-1)
    return outputs, weights, _mix(shared_weights, every_task_expert + shared), shared_weights


class _ExpertMLP(keras.layers.Layer):
    """One expert: Dense layers of `units`, each with `activation` and dropout."""

    def __init__(self, units, activation, dropout, kernel_initializers,
                 kernel_regularizer, **kwargs):
        super().__init__(**kwargs)
        self.units = tuple(units)
        self.dense_layers = [
            keras.layers.Dense(
                u, activation=activation, kernel_initializer=init,
                kernel_regularizer=kernel_regularizer, dtype=self.dtype_policy,
                name=f"dense_{i}",
            )
            for i, (u, init) in enumerate(zip(self.units, kernel_initializers))
        ]
        self.dropout_layers = [
            keras.layers.Dropout(dropout, name=f"dropout_{i}")
            for i in range(len(self.units) if dropout else 0)
        ]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.dense_layers:
            layer.build(shape)
            shape = shape[:-1] + (layer.units,)

    def call(self, inputs, training=None):
        x = inputs
        for i, layer in enumerate(self.dense_layers):
            x = layer(x)
            if self.dropout_layers:
                x = self.dropout_layers[i](x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.units[-1],)


class _ExtractionLevel(keras.layers.Layer):
    """Holds one PLE level's experts and gates, so their weights sit under `level_<j>/`."""

    def __init__(self, task_experts, shared_experts, task_gates, shared_gate, **kwargs):
        super().__init__(**kwargs)
        self.task_experts = task_experts
        self.shared_experts = shared_experts
        self.task_gates = task_gates
        self.shared_gate = shared_gate

    def build(self, input_shape):
        sublayers = self.task_experts + self.shared_experts + self.task_gates
        for layer in sublayers + ([self.shared_gate] if self.shared_gate else []):
            layer.build(input_shape)


class _ExpertMixture(keras.layers.Layer):
    """What MMoE, CGC and PLE share: task names, argument and input checks,
    sublayer factories, output shapes and config."""

    def __init__(self, expert_units, task_names, expert_activation, expert_dropout,
                 gate_use_bias, kernel_initializer, kernel_regularizer, **kwargs):
        if kwargs.get("name") is None:
            # "mmoe", "mmoe_1", ... rather than Keras's automatic "m_mo_e".
            prefix = type(self).__name__.lower()
            uid = keras.backend.get_uid(prefix)
            kwargs["name"] = prefix if uid == 1 else f"{prefix}_{uid - 1}"
        super().__init__(**kwargs)
        cls = type(self).__name__
        self.expert_units = _check_expert_units(f"{cls}(expert_units)", expert_units)
        self._task_names = _check_task_names(f"{cls}(task_names)", task_names)
        self.expert_activation = _check_activation(
            f"{cls}(expert_activation)", expert_activation
        )
        self.expert_dropout = _checks.check_rate(f"{cls}(expert_dropout)", expert_dropout)
        if not isinstance(gate_use_bias, bool):
            raise ValueError(
                f"`{cls}(gate_use_bias)` must be True or False. "
                f"Received: {gate_use_bias!r}."
            )
        self.gate_use_bias = gate_use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self._kernels_made = 0

    @property
    def task_names(self):
        """The tasks this layer returns features for, in order, or `None` if not set yet."""
        return None if self._task_names is None else list(self._task_names)

    def set_task_names(self, names):
        """Sets the tasks this layer returns features for.

        A `MultiTaskModel` calls this with its head names before it builds
        the trunk. Before the layer is built, any valid names replace the
        current ones; once built, the layer keeps the tasks (and order) its
        gates and experts were made for, so other names raise.

        Args:
            names: A non-empty list of unique task names, each a valid
                Python identifier, e.g. `["income", "marital"]`.

        Returns:
            The layer's task names (a list), in the order of its outputs.
        """
        cls = type(self).__name__
        names = _check_task_names(f"{cls}.set_task_names(names)", names)
        if self.built and self._task_names is not None:
            if set(names) != set(self._task_names):
                raise ValueError(
                    f"{cls} layer {self.name!r} is already built for tasks "
                    f"{list(self._task_names)}, so it cannot serve tasks "
                    f"{list(names)}. Create a new layer for these tasks."
                )
            return self.task_names
        self._task_names = names
        return self.task_names

    def _require_task_names(self):
        if self._task_names is None:
            cls = type(self).__name__
            raise ValueError(
                f"{cls} layer {self.name!r} does not know its tasks yet: pass "
                f"task_names=[...] (e.g. {cls}(..., task_names=['income', "
                "'marital'])) or use the layer as the whole trunk of a "
                "MultiTaskModel, which sets them from its heads."
            )
        return self._task_names

    def _check_input_shape(self, input_shape):
        cls = type(self).__name__
        try:
            shape = tuple(input_shape)
            ok = (
                len(shape) == 2
                and (shape[0] is None or isinstance(shape[0], int))
                and isinstance(shape[1], int)
            )
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(
                f"{cls} layer {self.name!r} takes one rank-2 tensor of features, "
                "shape (batch, features) with a known number of features. "
                "Received input of shape "
                f"{input_shape}. Flatten or pool the features first (e.g. "
                "keras.layers.Flatten), or concatenate named inputs."
            )
        return shape

    def _inputs(self, inputs):
        x = ops.convert_to_tensor(inputs)
        self._check_input_shape(x.shape)
        if not self.built:
            self.build(tuple(x.shape))
        if not keras.backend.is_float_dtype(x.dtype):
            x = ops.cast(x, self.compute_dtype)
        return x

    def _check_task(self, task):
        tasks = self._require_task_names()
        if task not in tasks:
            raise ValueError(
                f"Unknown task {task!r}: {type(self).__name__} layer "
                f"{self.name!r} serves tasks {list(tasks)}."
            )

    def _new_kernel_initializer(self):
        # One initializer instance per kernel: a Keras initializer draws the
        # same values on every call, so sharing one would start every expert
        # of a shape identical. A seeded initializer gets seed + k for its
        # k-th kernel, which keeps runs reproducible.
        init = self.kernel_initializer
        if not isinstance(init, keras.initializers.Initializer):
            return init
        config = init.get_config()
        if isinstance(config.get("seed"), int):
            config["seed"] += self._kernels_made
        self._kernels_made += 1
        return init.__class__.from_config(config)

    def _make_expert(self, name):
        return _ExpertMLP(
            self.expert_units,
            activation=self.expert_activation,
            dropout=self.expert_dropout,
            kernel_initializers=[self._new_kernel_initializer() for _ in self.expert_units],
            kernel_regularizer=self.kernel_regularizer,
            dtype=self.dtype_policy,
            name=name,
        )

    def _make_gate(self, name, num_experts):
        # Logits only; the softmax is applied in `call`.
        return keras.layers.Dense(
            num_experts,
            use_bias=self.gate_use_bias,
            kernel_initializer=self._new_kernel_initializer(),
            kernel_regularizer=self.kernel_regularizer,
            dtype=self.dtype_policy,
            name=name,
        )

    def call(self, inputs, training=None):
        return self._forward(self._inputs(inputs), training)[0]

    def gate_weights(self, inputs, training=False):
        """Each task's softmax gate weights over its experts, for inputs `inputs`.

        For expert-utilization reports: average them over a batch and label
        the columns with `expert_names(task)`.

        Args:
            inputs: Features of shape `(batch, d)`.
            training: Whether the experts run in training mode (dropout).
                Defaults to `False`.

        Returns:
            `{task: (batch, n_task)}`, `n_task` the number of experts the
            task's gate weighs; rows sum to 1 and columns follow
            `expert_names(task)`.
        """
        return self._forward(self._inputs(inputs), training)[1]

    def compute_output_shape(self, input_shape):
        shape = self._check_input_shape(input_shape)
        return {t: (shape[0], self.expert_units[-1]) for t in self._require_task_names()}

    def get_config(self):
        config = super().get_config()
        config.update(
            expert_units=list(self.expert_units),
            task_names=self.task_names,
            expert_activation=keras.activations.serialize(self.expert_activation),
            expert_dropout=self.expert_dropout,
            gate_use_bias=self.gate_use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
        )
        return config


@keras.saving.register_keras_serializable(package="keras_mtl")
class MMoE(_ExpertMixture):
    """Multi-gate Mixture-of-Experts: shared experts, one softmax gate per task.

    From Ma et al., "Modeling Task Relationships in Multi-task Learning with
    Multi-gate Mixture-of-Experts", KDD 2018
    (https://dl.acm.org/doi/10.1145/3219819.3220007), section 4.2. For
    features `x` of shape `(batch, d)`, `n = num_experts` experts `f_i`
    (each Dense layers of `expert_units`) and one gate per task `k`:

        g^k(x) = softmax(W_k x + b_k)              # (batch, n)
        f^k(x) = sum_{i=1..n} g^k(x)_i f_i(x)      # (batch, expert_units[-1])

    and the layer returns `{k: f^k(x)}`. In the paper `W_k` is an
    `n x d` matrix and there is no `b_k`; DeepCTR's MMOE gates have no
    bias either (drawbridge/keras-mmoe and LibMTL add one), so `b_k` is
    only there with `gate_use_bias=True`. The paper's Census-income
    experiments use 8 experts (keras-mmoe's reproduction: 8 experts of 4
    ReLU units); DeepCTR defaults to 3 experts of `(256, 128)` ReLU
    units. Every expert serves every task; a task's own variables are its
    gate `gate_<task>`.

    Args:
        num_experts: Positive int, the number of shared experts `n`.
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
    >>> mmoe = keras_mtl.layers.MMoE(
    ...     num_experts=4, expert_units=[8], task_names=["income", "marital"])
    >>> out = mmoe(np.ones((2, 5), "float32"))
    >>> {task: tuple(t.shape) for task, t in out.items()}
    {'income': (2, 8), 'marital': (2, 8)}
    >>> mmoe.expert_names("income")
    ['expert_0', 'expert_1', 'expert_2', 'expert_3']
    >>> mmoe.gate_weights(np.ones((2, 5), "float32"))["income"].shape
    TensorShape([2, 4])
    """

    def __init__(self, num_experts, expert_units, task_names=None,
                 expert_activation="relu", expert_dropout=0.0, gate_use_bias=False,
                 kernel_initializer="glorot_uniform", kernel_regularizer=None,
                 **kwargs):
        super().__init__(expert_units, task_names, expert_activation, expert_dropout,
                         gate_use_bias, kernel_initializer, kernel_regularizer, **kwargs)
        self.num_experts = _checks.check_positive_int("MMoE(num_experts)", num_experts)

    def build(self, input_shape):
        shape = self._check_input_shape(input_shape)
        tasks = self._require_task_names()
        self.experts = [self._make_expert(f"expert_{i}") for i in range(self.num_experts)]
        self.gates = [self._make_gate(f"gate_{t}", self.num_experts) for t in tasks]
        for layer in self.experts + self.gates:
            layer.build(shape)

    def _forward(self, x, training):
        experts = [e(x, training=training) for e in self.experts]
        weights = {
            t: ops.softmax(gate(x), axis=-1)
            for t, gate in zip(self._task_names, self.gates)
        }
        return {t: _mix(w, experts) for t, w in weights.items()}, weights

    def expert_names(self, task=None):
        """The names of the experts task `task`'s gate weighs, in gate order.

        Args:
            task: A task name, or `None`: every MMoE task's gate weighs the
                same experts.

        Returns:
            A list of expert layer names, e.g. `['expert_0', 'expert_1']`.
        """
        if task is not None:
            self._check_task(task)
        return [f"expert_{i}" for i in range(self.num_experts)]

    def get_config(self):
        config = super().get_config()
        config.update(num_experts=self.num_experts)
        return config


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

    def __init__(self, num_shared_experts, num_task_experts, expert_units,
                 task_names=None, expert_activation="relu", expert_dropout=0.0,
                 gate_use_bias=False, kernel_initializer="glorot_uniform",
                 kernel_regularizer=None, **kwargs):
        super().__init__(expert_units, task_names, expert_activation, expert_dropout,
                         gate_use_bias, kernel_initializer, kernel_regularizer, **kwargs)
        self.num_shared_experts, self.num_task_experts = _check_cgc_counts(
            "CGC", num_shared_experts, num_task_experts
        )

    def build(self, input_shape):
        shape = self._check_input_shape(input_shape)
        tasks = self._require_task_names()
        self.task_experts = [
            self._make_expert(f"task_expert_{t}_{i}")
            for t in tasks for i in range(self.num_task_experts)
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
            self._task_names, self.num_task_experts, self.task_experts,
            self.shared_experts, self.gates, None,
            {t: x for t in self._task_names}, x, training,
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

    def __init__(self, num_levels, num_shared_experts, num_task_experts, expert_units,
                 task_names=None, expert_activation="relu", expert_dropout=0.0,
                 gate_use_bias=False, kernel_initializer="glorot_uniform",
                 kernel_regularizer=None, **kwargs):
        super().__init__(expert_units, task_names, expert_activation, expert_dropout,
                         gate_use_bias, kernel_initializer, kernel_regularizer, **kwargs)
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
                    self._make_expert(f"task_expert_{t}_{i}")
                    for t in tasks for i in range(n_task)
                ],
                shared_experts=[
                    self._make_expert(f"shared_expert_{i}") for i in range(n_shared)
                ],
                task_gates=[self._make_gate(f"gate_{t}", n_task + n_shared) for t in tasks],
                shared_gate=(
                    self._make_gate("shared_gate", len(tasks) * n_task + n_shared)
                    if j < self.num_levels else None
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
                self._task_names, self.num_task_experts, level.task_experts,
                level.shared_experts, level.task_gates, level.shared_gate,
                task_inputs, shared_input, training,
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
            for t in tasks for i in range(self.num_task_experts)
        ] + [f"level_{level}/shared_expert_{i}" for i in range(self.num_shared_experts)]

    def get_config(self):
        config = super().get_config()
        config.update(
            num_levels=self.num_levels,
            num_shared_experts=self.num_shared_experts,
            num_task_experts=self.num_task_experts,
        )
        return config
