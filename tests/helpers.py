"""Small builders shared by the tests."""

import keras
import numpy as np

import keras_mtl


def regression_data(n=128, features=10, units=(20, 20), seed=0):
    """`x` and `{"y1": ..., "y2": ...}` float regression targets."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, features)).astype("float32")
    ys = {}
    for i, u in enumerate(units):
        w = rng.normal(size=(features, u)).astype("float32")
        ys[f"y{i + 1}"] = (x @ w / features + 0.1 * rng.normal(size=(n, u))).astype("float32")
    return x, ys


def seed_model(**kwargs):
    """The tutorial's network: 10 inputs, shared Dense 20 ReLU, two Dense 20 ReLU heads."""
    return keras_mtl.MultiTaskModel(
        trunk_units=[20], heads={"y1": 20, "y2": 20}, head_activation="relu", **kwargs
    )


def head_weights(model, task):
    return [v.numpy().copy() for v in model.heads[task].weights]


def optimizer_slots(optimizer, variables):
    """The optimizer's slot values (Adam momentum and velocity) for `variables`."""
    out = []
    for v in variables:
        i = optimizer._get_variable_index(v)
        out.append(optimizer._momentums[i].numpy().copy())
        out.append(optimizer._velocities[i].numpy().copy())
    return out


def assert_same_arrays(a, b, exact=True, atol=1e-6):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        if exact:
            np.testing.assert_array_equal(u, v)
        else:
            np.testing.assert_allclose(u, v, atol=atol, rtol=0)


def _layer_pairs(model):
    """(name, layer) for every weighted layer of `model`, trunk first."""
    pairs = [(f"trunk_{i}", layer) for i, layer in enumerate(model.trunk.layers) if layer.weights]
    for task, head in model.heads.items():
        layers = head.hidden_layers + [head.output_layer]
        pairs += [(f"{task}_{i}", layer) for i, layer in enumerate(layers) if layer.weights]
    return pairs


def functional_twin(model):
    """A Keras functional model with the same layers and weights as `model`."""
    inputs = keras.Input((model.trunk.layers[0].kernel.shape[0],))
    copies = {}

    def copy(name, layer, tensor):
        config = dict(layer.get_config(), name=name)
        copies[name] = type(layer).from_config(config)
        return copies[name](tensor)

    z = inputs
    for i, layer in enumerate(model.trunk.layers):
        z = copy(f"trunk_{i}", layer, z)
    outputs = {}
    for task, head in model.heads.items():
        h = z
        for i, layer in enumerate(head.hidden_layers + [head.output_layer]):
            h = copy(f"{task}_{i}", layer, h)
        outputs[task] = keras.layers.Identity(name=task)(h)
    twin = keras.Model(inputs, outputs)
    for name, layer in _layer_pairs(model):
        copies[name].set_weights(layer.get_weights())
    return twin


def twin_weights_match(model, twin, atol=1e-5):
    for name, layer in _layer_pairs(model):
        assert_same_arrays(
            layer.get_weights(), twin.get_layer(name).get_weights(), exact=False, atol=atol
        )
