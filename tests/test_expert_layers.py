"""MMoE, CGC and PLE: per-task feature dicts, the papers' equations, config,
saving, argument errors, and which variables each task's output depends on."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl
from keras_mtl.layers import CGC, PLE, MMoE

TASKS = ["income", "marital", "churn"]


def make(kind, **kwargs):
    """A small layer of `kind` with three tasks and two-layer experts."""
    args = dict(expert_units=[6, 4], task_names=TASKS)
    args.update(kwargs)
    if kind == "mmoe":
        return MMoE(num_experts=3, **args)
    if kind == "cgc":
        return CGC(num_shared_experts=2, num_task_experts=2, **args)
    if kind == "ple":
        return PLE(
            num_levels=args.pop("num_levels", 2), num_shared_experts=2, num_task_experts=1, **args
        )
    raise ValueError(kind)


def features(n=5, d=7, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype("float32")


def randomize(layer, seed=1):
    """Non-zero values in every variable (biases too), so the equations are fully exercised."""
    rng = np.random.default_rng(seed)
    for v in layer.weights:
        v.assign(0.5 * rng.normal(size=v.shape).astype("float32"))


def weights_by_path(layer):
    """`{path below the layer: value}`, e.g. `"expert_0/dense_1/kernel"`."""
    return {v.path.split("/", 1)[1]: v.numpy() for v in layer.weights}


# ------------------------------------------------------------ NumPy reference
def np_expert(w, prefix, x, depth=2):
    for j in range(depth):
        x = np.maximum(x @ w[f"{prefix}/dense_{j}/kernel"] + w[f"{prefix}/dense_{j}/bias"], 0)
    return x


def np_gate(w, prefix, x):
    logits = x @ w[f"{prefix}/kernel"]
    if f"{prefix}/bias" in w:
        logits = logits + w[f"{prefix}/bias"]
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_mix(gate, experts):
    return sum(gate[:, [i]] * e for i, e in enumerate(experts))


def np_cgc_level(w, prefix, task_inputs, shared_input, n_shared, n_task, shared_gate):
    shared = [np_expert(w, f"{prefix}shared_expert_{i}", shared_input) for i in range(n_shared)]
    outputs, every_task_expert = {}, []
    for t in TASKS:
        own = [np_expert(w, f"{prefix}task_expert_{t}_{i}", task_inputs[t]) for i in range(n_task)]
        every_task_expert += own
        outputs[t] = np_mix(np_gate(w, f"{prefix}gate_{t}", task_inputs[t]), own + shared)
    if not shared_gate:
        return outputs, None
    gate = np_gate(w, f"{prefix}shared_gate", shared_input)
    return outputs, np_mix(gate, every_task_expert + shared)


def assert_outputs_close(got, expected):
    assert list(got) == list(expected)
    for t in expected:
        np.testing.assert_allclose(np.asarray(got[t]), expected[t], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ outputs
@pytest.mark.parametrize("kind", ["mmoe", "cgc", "ple"])
def test_output_is_a_dict_of_features_per_task_in_task_order(kind):
    out = make(kind)(features())
    assert list(out) == TASKS
    assert all(tuple(out[t].shape) == (5, 4) for t in TASKS)


def test_integer_features_and_a_single_int_of_expert_units():
    layer = MMoE(2, 4, task_names=["a"])
    assert layer.expert_units == (4,)
    out = layer(np.ones((3, 5), "int32"))["a"]
    assert out.dtype == "float32" and tuple(out.shape) == (3, 4)


@pytest.mark.parametrize("gate_use_bias", [False, True])
def test_mmoe_matches_the_papers_equations_in_numpy(gate_use_bias):
    layer = make("mmoe", gate_use_bias=gate_use_bias)
    x = features()
    layer(x)
    randomize(layer)
    w = weights_by_path(layer)
    assert ("gate_income/bias" in w) == gate_use_bias
    experts = [np_expert(w, f"expert_{i}", x) for i in range(3)]
    expected = {t: np_mix(np_gate(w, f"gate_{t}", x), experts) for t in TASKS}
    assert_outputs_close(layer(x), expected)


def test_cgc_matches_the_papers_equations_in_numpy():
    layer = make("cgc")
    x = features()
    layer(x)
    randomize(layer)
    expected, _ = np_cgc_level(
        weights_by_path(layer),
        "",
        {t: x for t in TASKS},
        x,
        n_shared=2,
        n_task=2,
        shared_gate=False,
    )
    assert_outputs_close(layer(x), expected)


def test_two_level_ple_matches_the_papers_equations_in_numpy():
    layer = make("ple")
    x = features()
    layer(x)
    randomize(layer)
    w = weights_by_path(layer)
    level_1, shared_1 = np_cgc_level(
        w, "level_1/", {t: x for t in TASKS}, x, n_shared=2, n_task=1, shared_gate=True
    )
    expected, none = np_cgc_level(
        w, "level_2/", level_1, shared_1, n_shared=2, n_task=1, shared_gate=False
    )
    assert none is None and "level_2/shared_gate/kernel" not in w
    assert_outputs_close(layer(x), expected)


@pytest.mark.parametrize("kind", ["mmoe", "cgc", "ple"])
def test_gate_weights_sum_to_one_and_match_expert_names(kind):
    layer = make(kind)
    gates = layer.gate_weights(features())
    assert list(gates) == TASKS
    for t in TASKS:
        g = np.asarray(gates[t])
        assert g.shape == (5, len(layer.expert_names(t)))
        np.testing.assert_allclose(g.sum(-1), 1.0, rtol=1e-6)
        assert (g > 0).all()


def test_ple_gate_weights_of_every_level_and_the_shared_gate():
    layer = make("ple", num_levels=3)
    x = features()
    for level in (1, 2, 3):
        g = np.asarray(layer.gate_weights(x, level=level)["marital"])
        assert g.shape == (5, 3)
        np.testing.assert_allclose(g.sum(-1), 1.0, rtol=1e-6)
        names = layer.expert_names("marital", level=level)
        assert names[0] == f"level_{level}/task_expert_marital_0"
    shared = np.asarray(layer.shared_gate_weights(x, level=2))
    assert shared.shape == (5, len(layer.shared_gate_expert_names(level=2))) == (5, 5)
    np.testing.assert_allclose(shared.sum(-1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match=r"level.*\[1, 2\]"):
        layer.shared_gate_weights(x, level=3)
    with pytest.raises(ValueError, match=r"level.*\[1, 3\]"):
        layer.gate_weights(x, level=0)


def test_weight_paths_name_the_level_task_and_expert():
    layer = make("ple", name="ple")
    layer(features())
    paths = {v.path for v in layer.weights}
    assert "ple/level_1/task_expert_income_0/dense_0/kernel" in paths
    assert "ple/level_1/shared_expert_1/dense_1/bias" in paths
    assert "ple/level_1/gate_churn/kernel" in paths
    assert "ple/level_1/shared_gate/kernel" in paths
    assert "ple/level_2/gate_churn/kernel" in paths


@pytest.mark.parametrize("kind", ["mmoe", "cgc", "ple"])
def test_experts_start_with_different_weights(kind):
    for initializer in ["glorot_uniform", keras.initializers.GlorotUniform(seed=3)]:
        layer = make(kind, kernel_initializer=initializer)
        layer(features())
        kernels = [v.numpy() for v in layer.weights if v.path.endswith("dense_0/kernel")]
        first_level = [k for k in kernels if k.shape[0] == 7]
        assert len({k.tobytes() for k in first_level}) == len(first_level)


def test_dropout_acts_in_training_only():
    layer = make("mmoe", expert_dropout=0.5)
    x = features()
    inference = layer(x)["income"].numpy()
    np.testing.assert_array_equal(layer(x, training=False)["income"].numpy(), inference)
    assert not np.allclose(layer(x, training=True)["income"].numpy(), inference)


def test_kernel_regularizer_adds_one_loss_per_kernel():
    layer = make("cgc", kernel_regularizer="l2")
    layer(features())
    kernels = [v for v in layer.weights if v.path.endswith("kernel")]
    assert len(layer.losses) == len(kernels) == 3 * 2 * 2 + 2 * 2 + 3


# ---------------------------------------------------------- config / saving
@pytest.mark.parametrize("kind", ["mmoe", "cgc", "ple"])
def test_config_round_trip_gives_the_same_layer(kind):
    layer = make(kind, expert_dropout=0.1, gate_use_bias=True, kernel_regularizer="l2")
    x = features()
    layer(x)
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone.build(x.shape)
    assert [v.shape for v in clone.weights] == [v.shape for v in layer.weights]
    clone.set_weights(layer.get_weights())
    assert_outputs_close(clone(x), {t: o.numpy() for t, o in layer(x).items()})


def test_config_keeps_unset_task_names_unset():
    config = MMoE(2, [4]).get_config()
    assert config["task_names"] is None
    assert MMoE.from_config(config).task_names is None


@pytest.mark.parametrize("kind", ["mmoe", "cgc", "ple"])
def test_symbolic_call_and_keras_file_round_trip(kind, tmp_path):
    inputs = keras.Input((7,))
    outputs = make(kind)(inputs)
    assert list(outputs) == TASKS
    assert all(isinstance(o, keras.KerasTensor) and o.shape == (None, 4) for o in outputs.values())
    model = keras.Model(inputs, outputs)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects: registered
    x = features()
    assert_outputs_close(loaded(x), {t: o.numpy() for t, o in model(x).items()})


# -------------------------------------------------------------- task names
def test_set_task_names_before_build_then_call():
    layer = MMoE(2, [4])
    assert layer.task_names is None
    assert layer.set_task_names(["a", "b"]) == ["a", "b"]
    assert layer.set_task_names(["b", "c"]) == ["b", "c"]  # unbuilt: replaced
    assert list(layer(features())) == ["b", "c"]


def test_set_task_names_after_build_keeps_its_tasks_and_refuses_others():
    layer = make("cgc")
    layer(features())
    assert layer.set_task_names(list(reversed(TASKS))) == TASKS
    with pytest.raises(ValueError, match="already built for tasks"):
        layer.set_task_names(["income", "marital"])


@pytest.mark.parametrize("kind", ["mmoe", "cgc", "ple"])
def test_calling_without_task_names_says_how_to_set_them(kind):
    layer = make(kind, task_names=None)
    with pytest.raises(ValueError, match=r"pass task_names=\[\.\.\.\].*trunk of a MultiTaskModel"):
        layer(features())
    with pytest.raises(ValueError, match="task_names"):
        layer(keras.Input((7,)))


# ------------------------------------------------------------------- errors
@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3", None])
def test_bad_expert_count_is_refused(bad):
    with pytest.raises(ValueError, match=rf"MMoE\(num_experts\).*positive integer.*{bad!r}"):
        MMoE(bad, [4], task_names=TASKS)
    with pytest.raises(ValueError, match=r"CGC\(num_task_experts\)"):
        CGC(1, bad, [4])
    with pytest.raises(ValueError, match=r"PLE\(num_levels\)"):
        PLE(bad, 1, 1, [4])


@pytest.mark.parametrize("bad", [[], [4, 0], "16", [2.0], None])
def test_bad_expert_units_are_refused(bad):
    with pytest.raises(ValueError, match=r"MMoE\(expert_units\).*list of positive ints"):
        MMoE(2, bad)


def test_duplicate_task_names_are_refused():
    with pytest.raises(ValueError, match=r"CGC\(task_names\).*\['a'\] appear more than once"):
        CGC(1, 1, [4], task_names=["a", "b", "a"])
    with pytest.raises(ValueError, match=r"set_task_names.*\['b'\]"):
        MMoE(2, [4]).set_task_names(["b", "b"])


@pytest.mark.parametrize("bad", ["income", [], ["not valid"], ["loss"], [1]])
def test_invalid_task_names_are_refused(bad):
    with pytest.raises(ValueError, match=r"`PLE\(task_names\)`"):
        PLE(2, 1, 1, [4], task_names=bad)


@pytest.mark.parametrize("kind", ["mmoe", "cgc", "ple"])
def test_input_that_is_not_rank_2_is_refused(kind):
    with pytest.raises(ValueError, match=r"rank-2 tensor.*\(2, 3, 7\)"):
        make(kind)(np.ones((2, 3, 7), "float32"))
    with pytest.raises(ValueError, match="rank-2 tensor"):
        make(kind)(keras.Input((3, 7)))


def test_other_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match=r"MMoE\(expert_dropout\)"):
        MMoE(2, [4], expert_dropout=1.0)
    with pytest.raises(ValueError, match=r"CGC\(gate_use_bias\)"):
        CGC(1, 1, [4], gate_use_bias="yes")
    with pytest.raises(ValueError, match=r"PLE\(expert_activation\)"):
        PLE(2, 1, 1, [4], expert_activation="no_such_activation")
    with pytest.raises(ValueError, match="Unknown task 'nope'"):
        make("cgc").expert_names("nope")


# --------------------------------------------------------------- structure
def unconnected_for(kind, task, num_levels=2):
    """The path fragments of the variables task `task`'s output must not depend on."""
    others = [t for t in TASKS if t != task]
    if kind == "mmoe":
        return [f"/gate_{t}/" for t in others]
    if kind == "cgc":
        return [f"/{part}_{t}" for t in others for part in ("gate", "task_expert")]
    # PLE: the other tasks' last-level experts and gates, and their gates one
    # level down (which feed only those experts); everything earlier reaches
    # the shared gates.
    last, below = f"level_{num_levels}", f"level_{num_levels - 1}"
    return [f"{last}/{part}_{t}" for t in others for part in ("gate", "task_expert")] + [
        f"{below}/gate_{t}/" for t in others
    ]


@pytest.mark.parametrize("kind,num_levels", [("mmoe", 1), ("cgc", 1), ("ple", 2), ("ple", 3)])
def test_each_task_depends_on_exactly_the_shared_and_its_own_variables(kind, num_levels):
    layer = make(kind, num_levels=num_levels) if kind == "ple" else make(kind)
    x = tf.constant(features())
    layer(x)
    variables = layer.trainable_variables
    for task in TASKS:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x)[task])
        grads = tape.gradient(loss, variables)
        unconnected = {v.path for v, g in zip(variables, grads) if g is None}
        expected = {
            v.path
            for v in variables
            if any(part in v.path for part in unconnected_for(kind, task, num_levels))
        }
        assert expected, "the expected set should not be empty"
        assert unconnected == expected, task


def test_layers_module_is_exported():
    assert keras_mtl.layers.MMoE is MMoE
    assert "layers" in keras_mtl.__all__
