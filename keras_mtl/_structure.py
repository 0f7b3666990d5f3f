"""Which variables each task's output depends on, read from the model's structure.

With a trunk that returns one tensor, every task uses the whole trunk and its
own head: task t's update set is `trunk + head_t`. A trunk may instead return
one representation per task (a dict keyed by task name: MMoE, CGC, PLE, or any
layer of your own such as two towers with a cross-stitch unit). Then "the
trunk" is no longer one block, and task t's set is exactly the variables its
output is connected to: shared experts, its own experts and gates, its head.

The sets are found by tracing (never running) the model once per build: in a
`tf.function` traced on the model's input specification, a `GradientTape`
watching every float variable of the trunk and heads returns `None` for the
variables a task's output is not connected to. That is a property of the
graph, independent of the layers' names or of the values of the weights (a
dead ReLU still counts as connected). Trainable dependencies are read in
training mode and in inference mode (a variable used in either counts);
non-trainable state (BatchNormalization's moving statistics) in inference
mode, where the output reads it.
"""

import tensorflow as tf


class TaskStructure:
    """The variables each task depends on.

    Attributes:
        state: Dict `{task: set of variable ids}`: every variable (trainable
            or not) task t's output depends on; `MultiTaskModel.task_variables`
            keeps those trainable now.
        trunk_state: The trunk's non-trainable float variables (e.g. moving
            statistics) in order.
    """

    def __init__(self, state, trunk_state):
        self.state = state
        self.trunk_state = trunk_state

    def state_outside(self, task):
        """The trunk's non-trainable variables that `task` does not depend on."""
        used = self.state[task]
        return [v for v in self.trunk_state if id(v) not in used]


def _float_variables(layer):
    return [v for v in layer.weights if tf.as_dtype(v.dtype).is_floating]


def _connected(model, spec, variables, training):
    """`{task: [bool per variable]}`: whether each task's output depends on it."""
    found = {}
    handles = [v.value for v in variables]  # the tf.Variables behind Keras's

    def probe(inputs):
        with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:
            for v in handles:
                tape.watch(v)
            outputs = model.call(inputs, training=training)
            targets = {t: tf.reduce_sum(tf.cast(o, tf.float32)) for t, o in outputs.items()}
        for task, target in targets.items():
            grads = tape.gradient(target, handles)
            found[task] = [g is not None for g in grads]
        del tape
        return tf.constant(0)

    strategy = model.distribute_strategy

    def traced(inputs):
        # Under a strategy, distributed variables are watched in replica context.
        if strategy.num_replicas_in_sync > 1 or tf.distribute.has_strategy():
            strategy.run(probe, args=(inputs,))
            return tf.constant(0)
        return probe(inputs)

    tf.function(traced, input_signature=[spec], autograph=False).get_concrete_function()
    return found


def task_structure(model):
    """Traces `model` (built, trunk returning a dict) and returns its `TaskStructure`."""
    spec = model._mtl_input_spec
    variables = _float_variables(model.trunk)
    for head in model.heads.values():
        variables += _float_variables(head)
    trainable_ids = {id(v) for v in model.trunk.trainable_weights}
    for head in model.heads.values():
        trainable_ids |= {id(v) for v in head.trainable_weights}
    with model.distribute_strategy.scope():
        in_training = _connected(model, spec, variables, True)
        in_inference = _connected(model, spec, variables, False)
    state = {}
    for task in model.task_names:
        used = [a or b for a, b in zip(in_training[task], in_inference[task])]
        state[task] = {id(v) for v, u in zip(variables, used) if u}
    trunk_state = [v for v in _float_variables(model.trunk) if id(v) not in trainable_ids]
    return TaskStructure(state, trunk_state)
