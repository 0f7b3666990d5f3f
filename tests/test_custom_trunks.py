"""Any Keras layer as trunk or head; inputs of any rank, dtype and structure."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from helpers import assert_same_arrays, optimizer_slots

import keras_mtl


# ----------------------------------------------------------------- builders
def conv_trunk(batch_norm=False, dropout=0.0):
    layers = [keras.layers.Conv2D(4, 3, activation="relu", padding="same", name="conv")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(name="bn"))
    layers.append(keras.layers.GlobalAveragePooling2D(name="pool"))
    if dropout:
        layers.append(keras.layers.Dropout(dropout, name="drop"))
    return keras.Sequential(layers, name="conv_trunk")


def image_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 6, 6, 1)).astype("float32")
    digit = (x.mean((1, 2, 3)) * 30).astype("int32") % 3
    return x, {"digit": digit, "odd": (digit % 2).astype("float32")}


def named_trunk():
    """A functional trunk with named inputs: a float, a string looked up
    inside the model, and an int id embedded."""
    inputs = {
        "length": keras.Input((1,), name="length"),
        "island": keras.Input((1,), dtype="string", name="island"),
        "year": keras.Input((1,), dtype="int32", name="year"),
    }
    island = keras.layers.StringLookup(
        vocabulary=["Biscoe", "Dream", "Torgersen"], output_mode="one_hot", name="island_lookup"
    )(inputs["island"])
    year = keras.layers.Flatten()(
        keras.layers.Embedding(4, 2, name="year_embedding")(inputs["year"])
    )
    features = keras.layers.Concatenate()([inputs["length"], island, year])
    features = keras.layers.Dense(8, activation="relu", name="shared")(features)
    return keras.Model(inputs, features, name="named_trunk")


def named_data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "length": rng.random(n).astype("float32"),
            "island": rng.choice(["Biscoe", "Dream", "Torgersen"], n),
            "year": rng.integers(0, 4, n).astype("int32"),
        }
    )
    frame["species"] = (frame["island"] == "Dream").astype("int32") + (frame["length"] > 0.5)
    frame["mass"] = (frame["length"] * 2 + frame["year"] * 0.1).astype("float32")
    return frame


def named_model():
    return keras_mtl.MultiTaskModel(
        trunk=named_trunk(),
        heads={
            "species": keras_mtl.Head(3, activation="softmax"),
            "mass": keras.Sequential(
                [keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)], name="mass_tower"
            ),
        },
    )


NAMED_LOSS = {"species": "sparse_categorical_crossentropy", "mass": "mse"}


def as_dict(frame):
    return {
        "length": frame["length"].to_numpy().reshape(-1, 1),
        "island": frame["island"].to_numpy().reshape(-1, 1).astype(str),
        "year": frame["year"].to_numpy().reshape(-1, 1),
    }


# ------------------------------------------------------------ construction
def test_the_dense_shortcut_keeps_working_positionally_and_by_keyword():
    a = keras_mtl.MultiTaskModel([8, 4], {"a": 1})
    b = keras_mtl.MultiTaskModel(trunk_units=[8, 4], heads={"a": 1})
    a.build((None, 3)), b.build((None, 3))
    assert a.trunk_units == b.trunk_units == [8, 4]
    assert [w.shape for w in a.weights] == [w.shape for w in b.weights]


def test_dense_only_arguments_with_a_layer_trunk_are_refused():
    with pytest.raises(
        ValueError, match=r"\['trunk_activation', 'trunk_dropout'\] configure the Dense shortcut"
    ):
        keras_mtl.MultiTaskModel(conv_trunk(), {"a": 1}, trunk_activation="tanh", trunk_dropout=0.1)
    with pytest.raises(ValueError, match="not both"):
        keras_mtl.MultiTaskModel(conv_trunk(), {"a": 1}, trunk_units=[4])


def test_a_head_layer_given_to_two_tasks_is_refused():
    tower = keras.layers.Dense(2)
    with pytest.raises(
        ValueError, match="The head of task 'b' is the same layer as the head of task 'a'"
    ):
        keras_mtl.MultiTaskModel(conv_trunk(), {"a": tower, "b": tower})


def test_a_head_sharing_a_layer_with_the_trunk_is_refused():
    shared = keras.layers.Dense(4, name="shared_dense")
    trunk = keras.Sequential([keras.layers.Flatten(), shared])
    with pytest.raises(
        ValueError, match="The head of task 'a' shares the layer 'shared_dense' with the trunk"
    ):
        keras_mtl.MultiTaskModel(
            trunk, {"a": keras.Sequential([shared, keras.layers.Dense(1)]), "b": 1}
        )


def test_a_custom_head_sharing_a_variable_with_the_trunk_is_refused_at_build():
    class Borrow(keras.layers.Layer):  # uses the trunk's variable, holds no layer of it
        def __init__(self, kernel):
            super().__init__()
            self.kernel = kernel

        def call(self, inputs):
            return inputs @ self.kernel

    dense = keras.layers.Dense(4)
    trunk = keras.Sequential([keras.Input((4,)), dense])
    model = keras_mtl.MultiTaskModel(trunk, {"a": Borrow(dense.kernel), "b": 1})
    with pytest.raises(ValueError, match="The trunk and the head of task 'a' share the variable"):
        model.build((None, 4))


def test_a_trunk_returning_several_tensors_is_refused():
    inputs = keras.Input((3,))
    trunk = keras.Model(inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(2)(inputs)])
    model = keras_mtl.MultiTaskModel(trunk, {"a": 1})
    with pytest.raises(ValueError, match="The trunk must return one tensor"):
        model.build((None, 3))


def test_summary_shows_the_trunk_and_every_head():
    model = keras_mtl.MultiTaskModel(
        conv_trunk(), {"digit": 3, "odd": keras.layers.Dense(1, name="odd_out")}
    )
    model.build((None, 6, 6, 1))
    lines = []
    model.summary(print_fn=lambda line, **kwargs: lines.append(line))
    text = "\n".join(lines)
    for name in ("conv_trunk", "Sequential", "digit", "odd_out"):
        assert name in text


def test_plot_model_draws_the_trunk_and_heads_of_the_functional_view():
    model = keras_mtl.MultiTaskModel(named_trunk(), {"species": 3, "mass": 1})
    model.build(None)
    view = model.as_functional()
    assert sorted(view.input) == ["island", "length", "year"]
    own = model.trunk.weights + [v for h in model.heads.values() for v in h.weights]
    assert {id(w) for w in view.weights} == {id(w) for w in own}  # shared, not copied
    dot = keras.utils.model_to_dot(view, show_shapes=True, expand_nested=True).to_string()
    for name in ("island_lookup", "year_embedding", "shared", "species", "mass"):
        assert name in dot
    np.testing.assert_allclose(
        view(as_dict(named_data()))["mass"],
        model.predict(named_data(), verbose=0)["mass"],
        atol=1e-6,
    )


# ------------------------------------------------ joint == Keras functional
def _functional_twin(model, inputs):
    """A Keras functional model with copies of `model`'s layers and weights."""
    trunk = keras.models.clone_model(model.trunk)
    trunk.set_weights(model.trunk.get_weights())
    features = trunk(inputs)
    outputs = {}
    for task, head in model.heads.items():
        copy = keras.layers.deserialize(keras.layers.serialize(head))
        outputs[task] = copy(features)
        copy.set_weights(head.get_weights())
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("optimizer", ["adam"])
@pytest.mark.slow
def test_joint_with_a_conv_trunk_equals_the_functional_model_step_for_step(optimizer):
    x, y = image_data()
    heads = {
        "digit": keras_mtl.Head(3, activation="softmax", hidden_units=[4]),
        "odd": keras.Sequential([keras.layers.Dense(1, activation="sigmoid")], name="odd_tower"),
    }
    model = keras_mtl.MultiTaskModel(conv_trunk(batch_norm=True), heads)
    model.build((None, 6, 6, 1))
    twin = _functional_twin(model, keras.Input((6, 6, 1)))
    loss = {"digit": "sparse_categorical_crossentropy", "odd": "binary_crossentropy"}
    model.compile(optimizer=optimizer, loss=loss, loss_weights={"digit": 1.0, "odd": 0.5})
    twin.compile(optimizer=optimizer, loss=loss, loss_weights={"digit": 1.0, "odd": 0.5})
    for _ in range(3):  # step for step: one batch at a time
        for start in range(0, len(x), 16):
            batch = slice(start, start + 16)
            model.train_on_batch(x[batch], {t: v[batch] for t, v in y.items()})
            twin.train_on_batch(x[batch], {t: v[batch] for t, v in y.items()})
    assert_same_arrays(
        model.trunk.get_weights(), twin.layers[1].get_weights(), exact=False, atol=1e-5
    )
    np.testing.assert_allclose(
        model.predict(x, verbose=0)["digit"], twin.predict(x, verbose=0)["digit"], atol=1e-5
    )


@pytest.mark.slow
def test_joint_with_a_masked_sequence_head_equals_the_functional_model():
    """Embedding(mask_zero=True) trunk and a per-timestep head: padded
    timesteps are left out of the loss exactly as Keras leaves them out."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 9, (32, 6)).astype("int32")
    lengths = rng.integers(2, 7, 32)
    tokens[np.arange(6)[None, :] >= lengths[:, None]] = 0
    tags = (tokens % 3).astype("int32")  # one class per timestep
    topic = (tokens.sum(1) % 2).astype("float32")
    trunk = keras.Sequential(
        [keras.Input((6,), dtype="int32"), keras.layers.Embedding(10, 4, mask_zero=True)],
        name="embed",
    )
    heads = {
        "tags": keras.layers.Dense(3, activation="softmax", name="tagger"),
        "topic": keras.Sequential(
            [keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1, activation="sigmoid")],
            name="topic_tower",
        ),
    }
    model = keras_mtl.MultiTaskModel(trunk, heads)
    model.build((None, 6))
    twin = _functional_twin(model, keras.Input((6,), dtype="int32"))
    loss = {"tags": "sparse_categorical_crossentropy", "topic": "binary_crossentropy"}
    model.compile(optimizer="sgd", loss=loss)
    twin.compile(optimizer="sgd", loss=loss)
    y = {"tags": tags, "topic": topic}
    logs = model.fit(tokens, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
    twin_logs = twin.fit(tokens, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
    np.testing.assert_allclose(
        model.heads["tags"].get_weights()[0], twin.get_layer("tagger").get_weights()[0], atol=1e-5
    )
    np.testing.assert_allclose(logs["tags_loss"], twin_logs["tags_loss"], rtol=1e-4)
    # the mask matters: without it the padded timesteps would change the loss
    unmasked = keras.losses.sparse_categorical_crossentropy(
        tags, twin.predict(tokens, verbose=0)["tags"]
    )
    masked = model.evaluate(tokens, y, verbose=0, return_dict=True)["tags_loss"]
    assert abs(float(np.mean(unmasked)) - masked) > 1e-3


def test_sequence_labels_are_checked_against_the_head_output_shape():
    trunk = keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(10, 4)])
    model = keras_mtl.MultiTaskModel(trunk, {"tags": keras.layers.Dense(3, activation="softmax")})
    model.compile(loss={"tags": "sparse_categorical_crossentropy"})
    tokens = np.ones((8, 5), "int32")
    with pytest.raises(
        ValueError, match=r"Labels for task 'tags' have shape \(batch, 4\).*\(batch, 5\)"
    ):
        model.fit(tokens, {"tags": np.zeros((8, 4), "int32")}, verbose=0)


# -------------------------------------------------------------- named inputs
@pytest.mark.parametrize("mode", ["alternating"])  # joint: the MirroredStrategy test below
@pytest.mark.slow
def test_named_inputs_of_several_dtypes_train_from_a_dataframe_or_a_dict(mode):
    frame = named_data()
    model = named_model()
    model.compile(optimizer="adam", loss=NAMED_LOSS, mode=mode, seed=0)
    labels = frame[["species", "mass"]]
    # Alternating epochs' logged losses depend on which tasks the sampler drew
    # (and on the shuffle order): compare the loss on all the data instead.
    before = model.evaluate(frame, labels, verbose=0, return_dict=True)["loss"]
    history = model.fit(frame, labels, epochs=3, batch_size=8, verbose=0).history
    after = model.evaluate(frame, labels, verbose=0, return_dict=True)["loss"]
    assert np.isfinite(history["loss"]).all() and after < before
    by_frame = model.predict(frame, verbose=0)
    by_dict = model.predict(as_dict(frame), verbose=0)
    for task in ("species", "mass"):
        np.testing.assert_allclose(by_frame[task], by_dict[task], atol=1e-6)
    logs = model.evaluate(
        as_dict(frame),
        {"species": frame["species"].to_numpy(), "mass": frame["mass"].to_numpy()},
        verbose=0,
        return_dict=True,
    )
    assert np.isfinite(logs["species_loss"]) and np.isfinite(logs["mass_loss"])


def test_named_inputs_missing_from_x_are_named():
    frame = named_data()
    model = named_model()
    model.compile(loss=NAMED_LOSS)
    with pytest.raises(ValueError, match=r"no column\(s\) \['year'\]"):
        model.fit(frame.drop(columns="year"), frame[["species", "mass"]], verbose=0)
    x = as_dict(frame)
    x["yaer"] = x.pop("year")
    with pytest.raises(
        ValueError, match=r"missing: \['year'\]; not inputs of the trunk: \['yaer'\]"
    ):
        model.fit(
            x, {"species": frame["species"].to_numpy(), "mass": frame["mass"].to_numpy()}, verbose=0
        )


def test_missing_text_in_a_dataframe_is_refused_clearly():
    frame = named_data()
    frame.loc[3, "island"] = None
    model = named_model()
    model.compile(loss=NAMED_LOSS)
    with pytest.raises(ValueError, match="Column 'island' of `x` has missing values"):
        model.fit(frame, frame[["species", "mass"]], verbose=0)


def test_missing_labels_and_sample_weights_work_with_named_inputs():
    frame = named_data()
    mass = frame["mass"].to_numpy().copy()
    mass[::2] = np.nan
    model = named_model()
    model.compile(optimizer="sgd", loss=NAMED_LOSS, mode="alternating", seed=1)
    before = [w.copy() for w in model.heads["mass"].get_weights()] if model.built else None
    history = model.fit(
        frame,
        {"species": frame["species"].to_numpy(), "mass": mass},
        sample_weight={"species": np.ones(len(frame))},
        epochs=2,
        batch_size=8,
        verbose=0,
    ).history
    assert np.isfinite(history["mass_loss"]).all()
    assert before is None and np.isfinite(model.heads["mass"].get_weights()[0]).all()


@pytest.mark.slow
def test_pydataset_with_dict_inputs_trains():
    frame = named_data()
    x = {k: tf.constant(v) for k, v in as_dict(frame).items()}

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            rows = slice(8 * i, 8 * i + 8)
            return (
                {k: v[rows] for k, v in x.items()},
                {
                    "species": frame["species"].to_numpy()[rows],
                    "mass": frame["mass"].to_numpy()[rows],
                },
            )

    model = named_model()
    model.compile(optimizer="adam", loss=NAMED_LOSS, mode="alternating", seed=0)
    history = model.fit(Batches(), epochs=1, verbose=0).history
    assert history["species_updates"][0] + history["mass_updates"][0] == 5


@pytest.mark.slow
def test_interleave_takes_per_task_datasets_whose_x_is_a_dict():
    frame = named_data(n=48)
    x = as_dict(frame)
    species = tf.data.Dataset.from_tensor_slices((x, frame["species"].to_numpy())).batch(8)
    mass = tf.data.Dataset.from_tensor_slices(
        ({k: v[:16] for k, v in x.items()}, frame["mass"].to_numpy()[:16])
    ).batch(8)
    mixed = keras_mtl.data.interleave(
        {"species": species, "mass": mass}, sampler="proportional", seed=0
    )
    assert set(mixed.element_spec[0]) == {"length", "island", "year"}
    model = named_model()
    model.compile(optimizer="adam", loss=NAMED_LOSS, mode="alternating", seed=0)
    history = model.fit(mixed, steps_per_epoch=24, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    # proportional: 6 species batches for 2 mass batches
    assert history["species_updates"][0] > history["mass_updates"][0] > 0


def test_interleave_refuses_datasets_with_different_named_inputs():
    frame = named_data(n=16)
    x = as_dict(frame)
    a = tf.data.Dataset.from_tensor_slices((x, frame["species"].to_numpy())).batch(8)
    b = tf.data.Dataset.from_tensor_slices(
        ({"length": x["length"]}, frame["mass"].to_numpy())
    ).batch(8)
    with pytest.raises(ValueError, match="do not have the structure of those of task 'species'"):
        keras_mtl.data.interleave({"species": a, "mass": b})


# ----------------------------------------------------------------- export
@pytest.mark.slow
def test_export_takes_the_trunks_inputs_by_name_and_dtype_in_a_fresh_process(tmp_path):
    frame = named_data()
    model = named_model()
    model.compile(optimizer="adam", loss=NAMED_LOSS)
    model.fit(frame, frame[["species", "mass"]], epochs=1, verbose=0)
    path = str(tmp_path / "serving" / "1")
    model.export(path, verbose=False)
    rows = frame.iloc[:3]
    expected = model.predict(rows, verbose=0)
    request = {
        "instances": [
            {"length": float(r.length), "island": r.island, "year": int(r.year)}
            for r in rows.itertuples()
        ]
    }
    (tmp_path / "request.json").write_text(json.dumps(request))
    script = textwrap.dedent(
        f"""
        import sys, json
        sys.modules["keras_mtl"] = None  # importing keras_mtl now fails
        import numpy as np, tensorflow as tf
        request = json.load(open({str(tmp_path / "request.json")!r}))
        served = tf.saved_model.load({path!r})
        signature = served.signatures["serving_default"]
        specs = signature.structured_input_signature[1]
        # what TF Serving's row format does: stack each named value of the instances
        inputs = {{name: tf.constant([inst[name] for inst in request["instances"]], spec.dtype)
                   for name, spec in specs.items()}}
        out = {{k: v.numpy().tolist() for k, v in signature(**inputs).items()}}
        out["mass_only"] = sorted(served.signatures["mass"](**inputs))
        out["specs"] = {{k: [s.dtype.name, s.shape.as_list()] for k, s in specs.items()}}
        print(json.dumps(out))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(tmp_path),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["specs"] == {
        "length": ["float32", [None]],
        "island": ["string", [None]],
        "year": ["int32", [None]],
    }
    assert out["mass_only"] == ["mass"]
    for task in ("species", "mass"):
        np.testing.assert_allclose(np.array(out[task]), expected[task], atol=1e-5)


@pytest.mark.slow
def test_export_of_an_image_trunk_takes_images(tmp_path):
    x, _ = image_data(n=4)
    model = keras_mtl.MultiTaskModel(conv_trunk(), {"digit": 3, "odd": 1})
    expected = model.predict(x, verbose=0)
    path = str(tmp_path / "1")
    model.export(path, verbose=False)
    served = tf.saved_model.load(path).signatures["serving_default"]
    assert served.structured_input_signature[1]["features"].shape.as_list() == [None, 6, 6, 1]
    np.testing.assert_allclose(
        served(features=tf.constant(x))["digit"].numpy(), expected["digit"], atol=1e-5
    )


# --------------------------------------------------------- saving / resume
@keras.saving.register_keras_serializable(package="tests_custom_trunks")
class Scale(keras.layers.Layer):
    """A registered custom layer: a trainable per-feature scale."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, inputs):
        return inputs * self.scale


@pytest.mark.parametrize("mode,custom_layer", [("joint", True), ("alternating", False)])
@pytest.mark.slow
def test_save_load_and_resume_exactly_with_a_custom_trunk(tmp_path, mode, custom_layer):
    x, y = image_data()

    def make():
        trunk = conv_trunk(batch_norm=True, dropout=0.25)
        if custom_layer:
            trunk.add(Scale(name="scale"))
        model = keras_mtl.MultiTaskModel(
            trunk, {"digit": keras_mtl.Head(3, activation="softmax"), "odd": 1}
        )
        model.compile(
            optimizer="adam",
            mode=mode,
            seed=3,
            loss={"digit": "sparse_categorical_crossentropy", "odd": "mse"},
        )
        return model

    keras.utils.set_random_seed(7)
    straight = make()
    straight.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)

    keras.utils.set_random_seed(7)
    first = make()
    first.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    path = str(tmp_path / "model.keras")
    first.save(path)
    resumed = keras.models.load_model(path)  # no custom_objects
    assert type(resumed.trunk) is keras.Sequential
    resumed.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    assert_same_arrays(resumed.get_weights(), straight.get_weights(), exact=False, atol=1e-6)


# ------------------------------------------------- alternating invariants
@pytest.mark.slow
def test_alternating_with_batch_norm_leaves_other_heads_and_their_state_bit_identical():
    """A step of task t updates the trunk (BatchNormalization's moving
    statistics in the trunk included: the trunk saw the batch) and t's head;
    every other head, its moving statistics and optimizer slots stay put."""
    x, y = image_data()
    heads = {
        "digit": keras.Sequential(
            [
                keras.layers.Dense(4),
                keras.layers.BatchNormalization(),
                keras.layers.Dense(3, activation="softmax"),
            ],
            name="digit_tower",
        ),
        "odd": keras.Sequential(
            [keras.layers.Dense(4), keras.layers.BatchNormalization(), keras.layers.Dense(1)],
            name="odd_tower",
        ),
    }
    model = keras_mtl.MultiTaskModel(conv_trunk(batch_norm=True), heads)
    model.compile(
        optimizer="adam",
        mode="alternating",
        sampler="round_robin",
        seed=0,
        loss={"digit": "sparse_categorical_crossentropy", "odd": "mse"},
    )

    def step(rows):
        model.train_on_batch(x[rows], {t: v[rows] for t, v in y.items()})

    step(slice(0, 16))  # step 0: digit (round robin)
    step(slice(16, 32))  # step 1: odd
    odd = model.heads["odd"]
    odd_before = [v.numpy().copy() for v in odd.weights]  # moving statistics included
    odd_slots = optimizer_slots(model.optimizer, odd.trainable_weights)
    trunk_stats = [v.numpy().copy() for v in model.trunk.non_trainable_weights]
    digit_before = [v.numpy().copy() for v in model.heads["digit"].weights]
    step(slice(32, 48))  # step 2: digit
    assert_same_arrays([v.numpy() for v in odd.weights], odd_before)
    assert_same_arrays(optimizer_slots(model.optimizer, odd.trainable_weights), odd_slots)
    assert all(
        np.any(a != b)
        for a, b in zip([v.numpy() for v in model.trunk.non_trainable_weights], trunk_stats)
    )
    assert any(
        np.any(a != b)
        for a, b in zip([v.numpy() for v in model.heads["digit"].weights], digit_before)
    )


# ---------------------------------------------------------- distribution
def _train_named(strategy, mode):
    import contextlib

    keras.utils.set_random_seed(0)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = named_model()
        model.compile(
            optimizer="adam", loss=NAMED_LOSS, mode=mode, seed=2, metrics={"species": ["accuracy"]}
        )
    frame = named_data(n=64)
    mass = frame["mass"].to_numpy().copy()
    mass[np.arange(64) % 8 < 3] = np.nan  # missing on one replica's rows of each batch
    ds = tf.data.Dataset.from_tensor_slices(
        (as_dict(frame), {"species": frame["species"].to_numpy(), "mass": mass})
    ).batch(8)
    history = model.fit(ds, epochs=2, verbose=0).history
    return model, history


@pytest.mark.parametrize("mode", ["joint", "alternating"])
@pytest.mark.slow
def test_mirrored_training_with_a_named_input_trunk_equals_single_device(mirrored_strategy, mode):
    single, single_logs = _train_named(None, mode)
    mirrored, mirrored_logs = _train_named(mirrored_strategy, mode)
    assert_same_arrays(
        [v.numpy() for v in mirrored.trainable_weights],
        [v.numpy() for v in single.trainable_weights],
        exact=False,
        atol=1e-5,
    )
    for key in single_logs:
        np.testing.assert_allclose(mirrored_logs[key], single_logs[key], rtol=1e-4, err_msg=key)


def test_config_round_trips_and_names_the_format_a_layer_trunk_needs():
    model = named_model()
    model.build(None)
    config = model.get_config()
    assert config["format_version"] == 2 and "trunk_units" not in config
    clone = keras_mtl.MultiTaskModel.from_config(config)
    clone.build(None)
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]
    dense = keras_mtl.MultiTaskModel([4], {"a": 1})
    dense.build((None, 3))
    assert dense.get_config()["format_version"] == 1  # still readable by keras_mtl 0.1
    assert dense.get_build_config()["input_shape"] == [None, 3]


# ------------------------------------------- XLA, weighting, task optimizers
@pytest.mark.parametrize("mode", ["joint"])  # alternating + XLA: tests/test_expert_models.py
@pytest.mark.slow
def test_xla_with_a_conv_trunk_trains_like_the_default(mode):
    x, y = image_data()
    runs = []
    for jit in (False, True):
        keras.utils.set_random_seed(5)
        model = keras_mtl.MultiTaskModel(
            conv_trunk(batch_norm=True),
            {"digit": keras_mtl.Head(3, activation="softmax"), "odd": 1},
        )
        model.compile(
            optimizer="adam",
            mode=mode,
            seed=1,
            jit_compile=jit,
            steps_per_execution=2,
            loss={"digit": "sparse_categorical_crossentropy", "odd": "mse"},
        )
        model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
        runs.append([v.numpy() for v in model.weights])
    assert_same_arrays(runs[1], runs[0], exact=False, atol=1e-4)


@pytest.mark.parametrize("method", [keras_mtl.weighting.PCGrad(), keras_mtl.weighting.MGDA()])
@pytest.mark.slow
def test_weighting_methods_train_a_sequence_trunk(method):
    """MGDA's representation gradients with a rank-3 trunk output (a sequence)."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 9, (32, 5)).astype("int32")
    trunk = keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(10, 4)])
    heads = {
        "tags": keras.layers.Dense(3, activation="softmax", name="tagger"),
        "total": keras.Sequential(
            [keras.layers.Flatten(), keras.layers.Dense(1)], name="total_tower"
        ),
    }
    model = keras_mtl.MultiTaskModel(trunk, heads)
    model.compile(
        optimizer="adam",
        weighting=method,
        loss={"tags": "sparse_categorical_crossentropy", "total": "mse"},
    )
    y = {"tags": tokens % 3, "total": tokens.sum(1, keepdims=True).astype("float32") / 40}
    history = model.fit(tokens, y, epochs=3, batch_size=8, verbose=0).history
    assert np.isfinite(history["loss"]).all() and history["tags_loss"][-1] < history["tags_loss"][0]


@pytest.mark.slow
def test_task_optimizers_with_a_named_trunk_leave_the_other_task_untouched():
    frame = named_data()
    model = named_model()
    model.compile(
        loss=NAMED_LOSS,
        mode="alternating",
        sampler="round_robin",
        seed=0,
        task_optimizers={"species": keras.optimizers.Adam(), "mass": keras.optimizers.SGD(0.1)},
    )
    x = as_dict(frame)
    y = {"species": frame["species"].to_numpy(), "mass": frame["mass"].to_numpy()}
    model.train_on_batch(
        {k: v[:8] for k, v in x.items()}, {t: v[:8] for t, v in y.items()}
    )  # species
    mass_before = [v.numpy().copy() for v in model.heads["mass"].weights]
    species_optimizer = [v.numpy().copy() for v in model.task_optimizers["species"].variables]
    mass_optimizer = [v.numpy().copy() for v in model.task_optimizers["mass"].variables]
    model.train_on_batch(
        {k: v[8:16] for k, v in x.items()}, {t: v[8:16] for t, v in y.items()}
    )  # mass
    assert_same_arrays(
        [v.numpy() for v in model.task_optimizers["species"].variables], species_optimizer
    )
    assert any(
        np.any(a != b)
        for a, b in zip([v.numpy() for v in model.heads["mass"].weights], mass_before)
    )
    assert int(model.task_optimizers["mass"].iterations) == int(mass_optimizer[0]) + 1


def test_predict_takes_one_value_per_example_or_a_column_alike():
    """(n,) arrays for (batch, 1) inputs are reshaped, so predict does not
    retrace with unknown shapes when calls mix DataFrames and 1-D arrays."""
    frame = named_data(n=12)
    model = named_model()
    by_frame = model.predict(frame, verbose=0)
    flat = {
        "length": frame["length"].to_numpy(),
        "island": frame["island"].to_numpy(),
        "year": frame["year"].to_numpy(),
    }
    by_flat = model.predict(flat, verbose=0)
    np.testing.assert_allclose(by_flat["mass"], by_frame["mass"], atol=1e-6)
    np.testing.assert_allclose(
        model.predict(as_dict(frame), verbose=0)["mass"], by_frame["mass"], atol=1e-6
    )
