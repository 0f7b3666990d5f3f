"""`MMoE`: shared experts, one softmax gate per task (Ma et al., KDD 2018)."""

import keras
from keras import ops

from keras_mtl import _checks
from keras_mtl.layers._mixture import _ExpertMixture, _mix


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

    def __init__(
        self,
        num_experts,
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
            t: ops.softmax(gate(x), axis=-1) for t, gate in zip(self._task_names, self.gates)
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
