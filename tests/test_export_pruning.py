"""A task's serving signature computes only what that task needs.

TensorFlow runs a signature's graph pruned to the ops its outputs (and its
control outputs) depend on. So a task's signature computes no part of
another task if, walking the graph back from its outputs and control
outputs, no variable reached belongs only to the other task. TensorFlow's
automatic control dependencies make every variable read a control output;
a bare read computes nothing (it hands over the buffer), so those reads
start no walk: what their values feed is still walked when an output
needs it. These tests walk the same function the exporter writes for each
task."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl
from keras_mtl import export


def _reached_variable_handles(concrete):
    """ids of the captured variable handles that `concrete`'s outputs and
    control outputs depend on (through data or control edges)."""
    graph = concrete.graph
    captured = {id(internal): external for external, internal in graph.captures}
    seen, stack, reached = set(), [t.op for t in concrete.outputs], set()
    # A control output that only reads a variable computes nothing; any
    # other control output (an assignment, a print) runs, so it is walked.
    stack += [op for op in graph.control_outputs if op.type != "ReadVariableOp"]
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        for tensor in op.inputs:
            if id(tensor) in captured:
                reached.add(id(captured[id(tensor)]))
            stack.append(tensor.op)
        # tf.function makes its outputs wait on every variable read; such
        # a control edge runs the read, not what consumes it.
        stack.extend(c for c in op.control_inputs if c.type != "ReadVariableOp")
    assert concrete.outputs and seen, "the walk found no graph: the test would prove nothing"
    return reached


def _handle(variable):
    return id(variable.value.handle)


def _task_signature(model, task):
    signature, to_model = export.serving_signature(model)
    fn = tf.function(export._task_endpoint(model, task, to_model))
    return fn.get_concrete_function(signature)


def _assert_signature_reads_only_its_task(model, task, other):
    only_other = [
        v
        for v in model.task_variables(other)
        if _handle(v) not in {_handle(w) for w in model.task_variables(task)}
    ]
    assert only_other, f"{other!r} has no variables of its own: nothing to check"
    reached = _reached_variable_handles(_task_signature(model, task))
    own = [v.path for v in model.task_variables(task) if _handle(v) in reached]
    leaked = [v.path for v in only_other if _handle(v) in reached]
    # The walk does reach this task's own variables (so it can see variables),
    # and none of the other task's.
    assert len(own) == len(model.task_variables(task)), own
    assert leaked == [], f"signature {task!r} computes parts of {other!r}: {leaked}"


def _cgc_model():
    keras.utils.set_random_seed(0)
    model = keras_mtl.MultiTaskModel(
        keras_mtl.layers.CGC(num_shared_experts=2, num_task_experts=1, expert_units=[6]),
        {"a": 1, "b": keras_mtl.Head(3, activation="softmax", hidden_units=[32, 32])},
    )
    model.build((None, 5))
    return model


def _towers_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,), name="features")
    shared = keras.layers.Dense(8, activation="relu", name="shared")(inputs)
    a = keras.layers.Dense(4, name="a_tower")(shared)
    b = keras.layers.Dense(64, activation="relu", name="b_tower_1")(shared)
    b = keras.layers.BatchNormalization(name="b_bn")(b)
    b = keras.layers.Dense(64, name="b_tower_2")(b)
    trunk = keras.Model(inputs, {"a": a, "b": b}, name="towers")
    model = keras_mtl.MultiTaskModel(trunk, {"a": 1, "b": 2})
    model.build((None, 5))
    return model


@pytest.mark.parametrize("make", [_cgc_model, _towers_model], ids=["cgc", "towers"])
@pytest.mark.parametrize("task,other", [("a", "b"), ("b", "a")])
def test_task_signature_computes_no_part_of_another_task(make, task, other):
    _assert_signature_reads_only_its_task(make(), task, other)


def test_the_walk_sees_other_tasks_when_the_whole_model_is_served():
    # The check can fail: the "serve" endpoint computes every task, and the
    # same walk finds both tasks' own variables in it.
    model = _cgc_model()
    signature, to_model = export.serving_signature(model)
    fn = tf.function(lambda inputs: model(to_model(inputs), training=False))
    reached = _reached_variable_handles(fn.get_concrete_function(signature))
    for task in ("a", "b"):
        assert all(_handle(v) in reached for v in model.task_variables(task))


def test_exported_task_signature_matches_the_model(tmp_path):
    model = _towers_model()
    x = np.random.default_rng(0).random((4, 5)).astype("float32")
    model.export(str(tmp_path / "1"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "1"))
    out = served.signatures["a"](features=tf.constant(x))
    np.testing.assert_allclose(out["a"].numpy(), model.predict(x, verbose=0)["a"], atol=1e-5)
