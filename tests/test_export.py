"""model.export() writes a SavedModel that TF Serving can load without keras_mtl."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mtl

SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")


def _trained_model():
    rng = np.random.default_rng(0)
    x = rng.random((64, 10)).astype("float32")
    y = {"y1": rng.random((64, 20)).astype("float32"), "y2": rng.integers(0, 3, 64)}
    model = keras_mtl.MultiTaskModel(
        [16, 8],
        {"y1": 20, "y2": keras_mtl.Head(3, activation="softmax", hidden_units=[8], dropout=0.5)},
        trunk_dropout=0.3,
    )
    model.compile(
        optimizer="adam",
        loss={"y1": "mse", "y2": "sparse_categorical_crossentropy"},
        mode="alternating",
        seed=0,
    )
    model.fit(x, y, epochs=1, verbose=0)
    return model, x


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model, x = _trained_model()
    path = str(tmp_path_factory.mktemp("serving") / "mtl" / "1")
    signatures = model.export(path, verbose=False)
    expected = model.predict(x, verbose=0)
    return path, signatures, x, expected


def test_export_lists_default_and_per_task_signatures(exported):
    _, signatures, _, _ = exported
    assert signatures == ["serving_default", "serve", "y1", "y2"]


@pytest.mark.slow
def test_signatures_serve_in_a_process_that_cannot_import_keras_mtl(exported, tmp_path):
    path, _, x, expected = exported
    np.savez(tmp_path / "io.npz", x=x, **expected)
    script = textwrap.dedent(
        f"""
        import sys, json
        sys.modules["keras_mtl"] = None  # importing keras_mtl now fails
        import numpy as np, tensorflow as tf
        try:
            import keras_mtl
            raise SystemExit("keras_mtl was importable")
        except ImportError:
            pass
        data = np.load({str(tmp_path / "io.npz")!r})
        served = tf.saved_model.load({path!r})
        out = {{}}
        for name in ["serving_default", "y1", "y2"]:
            fn = served.signatures[name]
            result = fn(features=tf.constant(data["x"]))
            out[name] = {{k: float(np.max(np.abs(v.numpy() - data[k]))) for k, v in result.items()}}
            # dynamic batch dimension
            assert fn(features=tf.constant(data["x"][:1]))[list(result)[0]].shape[0] == 1
            assert fn(features=tf.constant(data["x"][:7]))[list(result)[0]].shape[0] == 7
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
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(errors["serving_default"]) == {"y1", "y2"}
    assert set(errors["y1"]) == {"y1"} and set(errors["y2"]) == {"y2"}
    for by_output in errors.values():
        for err in by_output.values():
            assert err < 1e-5


def test_task_signature_computes_only_the_trunk_and_its_head(exported):
    path, _, _, _ = exported
    served = tf.saved_model.load(path)

    def variables_used(name):
        return sum(1 for t, _ in served.signatures[name].graph.captures if t.dtype == tf.resource)

    trunk = 4  # two Dense layers: kernel + bias each
    assert variables_used("y1") == trunk + 2
    assert variables_used("y2") == trunk + 4  # hidden + output Dense
    assert variables_used("serving_default") == trunk + 2 + 4


@pytest.mark.slow
def test_saved_model_cli_shows_and_runs_the_signatures(exported):
    path, _, _, _ = exported
    show = subprocess.run(
        [SAVED_MODEL_CLI, "show", "--dir", path, "--all"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert show.returncode == 0, show.stderr[-2000:]
    for text in (
        "signature_def['serving_default']",
        "signature_def['y1']",
        "signature_def['y2']",
        "inputs['features']",
        "outputs['y2']",
        "shape: (-1, 10)",
        "dtype: DT_FLOAT",
    ):
        assert text in show.stdout
    ops_line = next(
        line for line in show.stdout.splitlines() if "contains the following ops" in line
    )
    assert "Random" not in ops_line and "Dropout" not in ops_line  # inference only

    run = subprocess.run(
        [
            SAVED_MODEL_CLI,
            "run",
            "--dir",
            path,
            "--tag_set",
            "serve",
            "--signature_def",
            "y2",
            "--input_exprs",
            f"features={[[0.5] * 10] * 2}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Result for output key y2" in run.stdout


def test_exported_model_has_dropout_off(exported):
    path, _, x, _ = exported
    fn = tf.saved_model.load(path).signatures["serving_default"]
    first, second = fn(features=tf.constant(x)), fn(features=tf.constant(x))
    np.testing.assert_array_equal(first["y2"].numpy(), second["y2"].numpy())


def test_custom_input_name(tmp_path):
    model = keras_mtl.MultiTaskModel([4], {"a": 1})
    model.build((None, 3))
    path = str(tmp_path / "1")
    model.export(path, input_name="measurements", verbose=False)
    fn = tf.saved_model.load(path).signatures["a"]
    assert list(fn.structured_input_signature[1]) == ["measurements"]


def test_exporting_an_unbuilt_model_explains_what_to_do(tmp_path):
    model = keras_mtl.MultiTaskModel([4], {"a": 1})
    with pytest.raises(ValueError, match="has not been built.*input_signature"):
        model.export(str(tmp_path / "1"), verbose=False)
    model.export(
        str(tmp_path / "2"), input_signature=tf.TensorSpec((None, 5), tf.float32), verbose=False
    )
    assert model.built
