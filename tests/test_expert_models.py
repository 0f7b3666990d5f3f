"""MultiTaskModel with MMoE, CGC and PLE trunks: both modes, the alternating
invariant checked structurally, equality with a hand-written Keras MMoE,
saving, export, distribution and expert utilization."""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_same_arrays, optimizer_slots

import keras_mtl

LAYERS = {
    "mmoe": lambda: keras_mtl.layers.MMoE(num_experts=3, expert_units=[6]),
    "cgc": lambda: keras_mtl.layers.CGC(num_shared_experts=2, num_task_experts=1, expert_units=[6]),
    "ple": lambda: keras_mtl.layers.PLE(
        num_levels=2, num_shared_experts=1, num_task_experts=1, expert_units=[6]
    ),
}


def HEADS():  # a constant-like factory: fresh heads for each model
    return {
        "income": keras_mtl.Head(1, activation="sigmoid", hidden_units=[4]),
        "married": keras_mtl.Head(1, activation="sigmoid"),
    }


LOSS = {"income": "binary_crossentropy", "married": "binary_crossentropy"}


def data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 5)).astype("float32")
    return x, {
        "income": (x[:, 0] > 0.5).astype("float32"),
        "married": (x[:, 1] + x[:, 0] > 1).astype("float32"),
    }


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("cgc", marks=pytest.mark.slow),
        "mmoe",
        pytest.param("ple", marks=pytest.mark.slow),
    ],
)
@pytest.mark.parametrize("mode", ["joint", pytest.param("alternating", marks=pytest.mark.slow)])
def test_each_expert_layer_trains_in_both_modes(kind, mode):
    x, y = data()
    model = keras_mtl.MultiTaskModel(LAYERS[kind](), HEADS())
    model.compile(
        optimizer=keras.optimizers.Adam(0.02),
        loss=LOSS,
        mode=mode,
        seed=0,
        metrics={"income": ["accuracy"]},
    )
    history = model.fit(x, y, epochs=4, batch_size=16, verbose=0).history
    assert np.isfinite(history["loss"]).all() and history["loss"][-1] < history["loss"][0]
    assert model.per_task_trunk


@pytest.mark.parametrize(
    "kind",
    [
        "cgc",
        pytest.param("mmoe", marks=pytest.mark.slow),
        pytest.param("ple", marks=pytest.mark.slow),
    ],
)
def test_an_alternating_step_touches_only_what_its_task_depends_on(kind):
    """After a step of task t, every variable t's output does not depend on
    (other tasks' gates and own experts, their heads) and its Adam slots are
    bit-identical; for MMoE every expert is shared."""
    x, y = data()
    model = keras_mtl.MultiTaskModel(LAYERS[kind](), HEADS())
    model.compile(optimizer="adam", loss=LOSS, mode="alternating", sampler="round_robin", seed=0)
    model.train_on_batch(x[:16], {t: v[:16] for t, v in y.items()})  # income
    model.train_on_batch(x[16:32], {t: v[16:32] for t, v in y.items()})  # married
    every = model.trunk.trainable_weights + [
        w for h in model.heads.values() for w in h.trainable_weights
    ]
    own = {id(v) for v in model.task_variables("income")}
    outside = [v for v in every if id(v) not in own]
    names = " ".join(v.path for v in outside)
    assert "gate_married" in names and "married/output" in names
    assert ("expert" in names) == (kind != "mmoe")  # CGC/PLE: married's own experts
    before = [v.numpy().copy() for v in outside]
    slots = optimizer_slots(model.optimizer, outside)
    inside = [v.numpy().copy() for v in model.task_variables("income")]
    model.train_on_batch(x[32:], {t: v[32:] for t, v in y.items()})  # income
    assert_same_arrays([v.numpy() for v in outside], before)
    assert_same_arrays(optimizer_slots(model.optimizer, outside), slots)
    assert all(np.any(v.numpy() != b) for v, b in zip(model.task_variables("income"), inside))


def _hand_written_mmoe(layer, heads):
    """A Keras functional MMoE written out with Dense layers, with `layer`'s weights."""
    inputs = keras.Input((5,))
    experts = [keras.layers.Dense(6, activation="relu", name=f"e{i}")(inputs) for i in range(3)]
    stacked = keras.ops.stack(experts, axis=1)  # (batch, experts, units)
    outputs = {}
    for task in ("income", "married"):
        gate = keras.layers.Dense(3, use_bias=False, activation="softmax", name=f"g_{task}")(inputs)
        mixed = keras.ops.sum(keras.ops.expand_dims(gate, -1) * stacked, axis=1)
        head = keras.layers.deserialize(keras.layers.serialize(heads[task]))
        outputs[task] = head(mixed)
        head.set_weights(heads[task].get_weights())
    model = keras.Model(inputs, outputs)
    weights = {v.path.split("mmoe/")[1]: v.numpy() for v in layer.weights}
    for i in range(3):
        model.get_layer(f"e{i}").set_weights(
            [weights[f"expert_{i}/dense_0/kernel"], weights[f"expert_{i}/dense_0/bias"]]
        )
    for task in ("income", "married"):
        model.get_layer(f"g_{task}").set_weights([weights[f"gate_{task}/kernel"]])
    return model


@pytest.mark.slow
def test_joint_mmoe_equals_a_hand_written_functional_mmoe_step_for_step():
    x, y = data()
    model = keras_mtl.MultiTaskModel(LAYERS["mmoe"](), HEADS())
    model.build((None, 5))
    twin = _hand_written_mmoe(model.trunk, model.heads)
    np.testing.assert_allclose(
        model.predict(x, verbose=0)["income"], twin.predict(x, verbose=0)["income"], atol=1e-6
    )
    model.compile(optimizer="adam", loss=LOSS, loss_weights={"income": 1.0, "married": 0.5})
    twin.compile(optimizer="adam", loss=LOSS, loss_weights={"income": 1.0, "married": 0.5})
    for _ in range(2):
        for start in range(0, 48, 16):
            rows = slice(start, start + 16)
            model.train_on_batch(x[rows], {t: v[rows] for t, v in y.items()})
            twin.train_on_batch(x[rows], {t: v[rows] for t, v in y.items()})
    for task in ("income", "married"):
        np.testing.assert_allclose(
            model.predict(x, verbose=0)[task], twin.predict(x, verbose=0)[task], atol=1e-5
        )
    np.testing.assert_allclose(
        model.trunk.weights[0].numpy(), twin.get_layer("e0").kernel.numpy(), atol=1e-5
    )


@pytest.mark.parametrize("kind", ["mmoe", "ple"])
@pytest.mark.slow
def test_save_load_and_resume_exactly_with_an_expert_trunk(tmp_path, kind):
    x, y = data()

    def make():
        model = keras_mtl.MultiTaskModel(LAYERS[kind](), HEADS())
        model.compile(optimizer="adam", loss=LOSS, mode="alternating", seed=4)
        return model

    keras.utils.set_random_seed(2)
    straight = make()
    straight.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    keras.utils.set_random_seed(2)
    first = make()
    first.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    first.save(tmp_path / "m.keras")
    resumed = keras.models.load_model(tmp_path / "m.keras")
    assert type(resumed.trunk) is type(first.trunk) and resumed.trunk.task_names == [
        "income",
        "married",
    ]
    resumed.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    assert_same_arrays(resumed.get_weights(), straight.get_weights(), exact=False, atol=1e-6)


@pytest.mark.slow
def test_export_serves_each_task_of_an_expert_trunk(tmp_path):
    x, _ = data(n=4)
    model = keras_mtl.MultiTaskModel(LAYERS["cgc"](), HEADS())
    expected = model.predict(x, verbose=0)
    model.export(str(tmp_path / "1"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "1"))
    for task in ("income", "married"):
        out = served.signatures[task](features=tf.constant(x))
        assert list(out) == [task]
        np.testing.assert_allclose(out[task].numpy(), expected[task], atol=1e-5)


def _train_mmoe(strategy, mode):
    keras.utils.set_random_seed(0)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = keras_mtl.MultiTaskModel(LAYERS["mmoe"](), HEADS())
        model.compile(optimizer="adam", loss=LOSS, mode=mode, seed=3)
    x, y = data(n=64)
    return model, model.fit(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=2, verbose=0
    ).history


@pytest.mark.parametrize("mode", ["joint", "alternating"])
@pytest.mark.slow
def test_mirrored_mmoe_equals_single_device(mirrored_strategy, mode):
    single, single_logs = _train_mmoe(None, mode)
    mirrored, mirrored_logs = _train_mmoe(mirrored_strategy, mode)
    assert_same_arrays(
        [v.numpy() for v in mirrored.trainable_weights],
        [v.numpy() for v in single.trainable_weights],
        exact=False,
        atol=1e-5,
    )
    for key in single_logs:
        np.testing.assert_allclose(mirrored_logs[key], single_logs[key], rtol=1e-4, err_msg=key)


@pytest.mark.slow
def test_expert_layers_inside_a_functional_trunk_take_task_names():
    inputs = keras.Input((5,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    per_task = keras_mtl.layers.MMoE(3, [4], task_names=["income", "married"], name="experts")(
        hidden
    )
    model = keras_mtl.MultiTaskModel(keras.Model(inputs, per_task), HEADS())
    x, y = data()
    model.compile(optimizer="adam", loss=LOSS, mode="alternating", seed=0)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    use = model.expert_utilization(x)
    assert sorted(use) == ["income", "married"] and sorted(use["income"]) == [
        "expert_0",
        "expert_1",
        "expert_2",
    ]


def test_expert_utilization_is_each_tasks_mean_gate_weight(tmp_path):
    x, _ = data()
    model = keras_mtl.MultiTaskModel(LAYERS["cgc"](), HEADS())
    use = model.expert_utilization(x, batch_size=10)
    gates = model.trunk.gate_weights(x)
    for task in ("income", "married"):
        expected = np.asarray(gates[task]).mean(0)
        np.testing.assert_allclose(list(use[task].values()), expected, atol=1e-6)
        assert list(use[task]) == model.trunk.expert_names(task)
    assert "task_expert_married_0" not in use["income"]
    pytest.importorskip("matplotlib")
    fig = keras_mtl.plot_expert_utilization(use, path=tmp_path / "experts.png")
    assert (tmp_path / "experts.png").stat().st_size > 0 and fig.axes


def test_expert_utilization_without_an_expert_layer_is_explained():
    model = keras_mtl.MultiTaskModel([4], {"a": 1})
    with pytest.raises(ValueError, match="needs one expert-mixture layer"):
        model.expert_utilization(np.ones((2, 3), "float32"))


@pytest.mark.parametrize("mode", ["alternating"])  # joint + XLA: tests/test_custom_trunks.py
@pytest.mark.slow
def test_xla_with_an_expert_trunk_trains_like_the_default(mode):
    x, y = data()
    runs = []
    for jit in (False, True):
        keras.utils.set_random_seed(6)
        model = keras_mtl.MultiTaskModel(LAYERS["ple"](), HEADS())
        model.compile(
            optimizer="adam", loss=LOSS, mode=mode, seed=1, jit_compile=jit, steps_per_execution=3
        )
        model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
        runs.append([v.numpy() for v in model.weights])
    assert_same_arrays(runs[1], runs[0], exact=False, atol=1e-4)


@pytest.mark.parametrize(
    "method", [keras_mtl.weighting.MGDA(gradients="parameters"), keras_mtl.weighting.GradNorm()]
)
@pytest.mark.slow
def test_gradient_methods_combine_the_shared_experts_of_a_cgc(method):
    x, y = data()
    model = keras_mtl.MultiTaskModel(LAYERS["cgc"](), HEADS())
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss=LOSS, weighting=method)
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0).history
    assert np.isfinite(history["loss"]).all() and history["loss"][-1] < history["loss"][0]
