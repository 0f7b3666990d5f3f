"""The common machinery of the expert-mixture layers: checks, expert
networks, gated mixing and the `_ExpertMixture` base class."""

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
            isinstance(u, numbers.Integral) and not isinstance(u, bool) and u > 0 for u in units
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
    # Multiply and sum rather than einsum: about half the CPU time of the
    # einsum's batched matmul for these small shapes (benchmarks/RESULTS.md).
    return ops.sum(ops.expand_dims(weights, -1) * ops.stack(expert_outputs, axis=1), axis=1)


def _extract(
    task_names,
    num_task_experts,
    task_experts,
    shared_experts,
    task_gates,
    shared_gate,
    task_inputs,
    shared_input,
    training,
):
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
            for e in task_experts[k * num_task_experts : (k + 1) * num_task_experts]
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

    def __init__(
        self, units, activation, dropout, kernel_initializers, kernel_regularizer, **kwargs
    ):
        super().__init__(**kwargs)
        self.units = tuple(units)
        self.dense_layers = [
            keras.layers.Dense(
                u,
                activation=activation,
                kernel_initializer=init,
                kernel_regularizer=kernel_regularizer,
                dtype=self.dtype_policy,
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

    def __init__(
        self,
        expert_units,
        task_names,
        expert_activation,
        expert_dropout,
        gate_use_bias,
        kernel_initializer,
        kernel_regularizer,
        **kwargs,
    ):
        if kwargs.get("name") is None:
            # "mmoe", "mmoe_1", ... rather than Keras's automatic "m_mo_e".
            prefix = type(self).__name__.lower()
            uid = keras.backend.get_uid(prefix)
            kwargs["name"] = prefix if uid == 1 else f"{prefix}_{uid - 1}"
        super().__init__(**kwargs)
        cls = type(self).__name__
        self.expert_units = _check_expert_units(f"{cls}(expert_units)", expert_units)
        self._task_names = _check_task_names(f"{cls}(task_names)", task_names)
        self.expert_activation = _check_activation(f"{cls}(expert_activation)", expert_activation)
        self.expert_dropout = _checks.check_rate(f"{cls}(expert_dropout)", expert_dropout)
        if not isinstance(gate_use_bias, bool):
            raise ValueError(
                f"`{cls}(gate_use_bias)` must be True or False. Received: {gate_use_bias!r}."
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
