"""How a `MultiTaskModel` saves and restores itself beyond what Keras does.

`MultiTaskModel` inherits `SavingMixin`, which adds to Keras's `.keras` and
`.weights.h5` formats:

* atomic writes (a temporary file renamed over the target), so a process
  killed mid-save leaves the previous checkpoint loadable;
* the model's own state: the step counter (which drives the alternating
  task sequence) and the dropout generators' state, which Keras leaves out,
  so a resumed run continues exactly;
* which layers are frozen (`trainable=False`), kept in the config so a
  loaded model trains the same variables (and its optimizer state fits);
* files written by keras_mtl 0.1.0, which stored per-task optimizers and
  the weighting method under private attribute names.

Per-task optimizer states are stored by task name by
`keras_mtl.optimizers.TaskOptimizers` (saved as `optimizer`), and the
weighting method's state under `weighting`.
"""

import os

import keras

from keras_mtl import _io, _keras_internals

# Version of the saved layout (get_config / compile config). Bump it when a
# change makes older keras_mtl unable to read the files newer ones write.
# 1: keras_mtl 0.1 (Dense trunk); 2: a Keras layer as trunk (`trunk` in the
# config). A model with the Dense trunk is still written as 1, which 0.1 reads.
FORMAT_VERSION = 2


def serialize(value):
    """A compile argument as JSON-friendly data (Keras objects serialized)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {k: serialize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [serialize(v) for v in value]
    return keras.saving.serialize_keras_object(value)


def deserialize(value):
    """The inverse of `serialize`."""
    if isinstance(value, dict) and "class_name" in value and "config" in value:
        return keras.saving.deserialize_keras_object(value)
    if isinstance(value, dict):
        return {k: deserialize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [deserialize(v) for v in value]
    return value


def check_format_version(config):
    """Pops `format_version` from a config, refusing files of a newer keras_mtl."""
    version = config.pop("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"This model was saved by a newer keras_mtl (saved format "
            f"{version!r}; this keras_mtl reads format {FORMAT_VERSION} and "
            "older). Upgrade keras_mtl to load it: pip install -U keras_mtl."
        )


def _walk(path, layer):
    """`(path, layer)` for `layer` and, recursively, its sublayers; a path
    names each sublayer (`name`, `name_1`... where names repeat)."""
    yield path, layer
    seen = {}
    for sublayer in _keras_internals.sublayers(layer):
        name = sublayer.name
        seen[name] = seen.get(name, -1) + 1
        yield from _walk(f"{path}/{name}" + (f"_{seen[name]}" if seen[name] else ""), sublayer)


class SavingMixin:
    """Saving and restoring for `MultiTaskModel` (see the module docstring)."""

    def _layers_by_path(self):
        """`(path, layer)` for the trunk, the heads and every layer inside them."""
        roots = [("trunk", self.trunk)] + [(f"heads/{t}", h) for t, h in self.heads.items()]
        for path, layer in roots:
            yield from _walk(path, layer)

    def frozen_layers(self):
        """The paths of the frozen (`trainable=False`) trunk and head layers.

        They are saved in the model's config, so a loaded model trains the
        same weights.

        Returns:
            List of str such as `["trunk", "heads/a/output"]`.

        Example:

        >>> import keras_mtl
        >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
        >>> model.trunk.trainable = False
        >>> model.frozen_layers()
        ['trunk', 'trunk/dense_0']
        """
        return [path for path, layer in self._layers_by_path() if not layer.trainable]

    def _freeze(self, paths):
        layers = dict(self._layers_by_path())
        unknown = [p for p in paths if p not in layers]
        if unknown:
            raise ValueError(f"Unknown frozen layer path(s) {unknown} in the model's config.")
        for path in paths:
            layers[path].trainable = False

    def save(self, filepath, overwrite=True, zipped=None, **kwargs):
        """Saves the model as a `.keras` file, replacing it atomically.

        Same as `keras.Model.save`, except that a local `.keras` file is
        written to a temporary file first and then renamed over `filepath`:
        a process killed mid-save (for example during `ModelCheckpoint`)
        leaves the previous file intact.

        Args:
            filepath: Path ending in `.keras`.
            overwrite: Whether to overwrite an existing file.
            zipped: As in `keras.Model.save`.
            **kwargs: As in `keras.Model.save`.

        Returns:
            None.

        Example:

        >>> import os, tempfile, keras, keras_mtl
        >>> model = keras_mtl.MultiTaskModel([4], {"a": 1})
        >>> model.build((None, 3))
        >>> path = os.path.join(tempfile.mkdtemp(), "model.keras")
        >>> model.save(path)
        >>> keras.models.load_model(path).task_names
        ('a',)
        """
        if zipped is False or (not overwrite and os.path.exists(os.fspath(filepath))):
            return super().save(filepath, overwrite=overwrite, zipped=zipped, **kwargs)
        save = super().save
        return _io.write_atomically(
            filepath, ".keras", lambda path: save(path, overwrite=True, zipped=zipped, **kwargs)
        )

    def save_weights(self, filepath, overwrite=True, max_shard_size=None):
        """Saves every variable (optimizers included), replacing the file atomically.

        Same as `keras.Model.save_weights`, except that a local
        `.weights.h5` file is written to a temporary file first and then
        renamed over `filepath`, so a process killed mid-save (for example
        during `BackupAndRestore` or `ModelCheckpoint(save_weights_only=
        True)`) leaves the previous checkpoint loadable.

        Args:
            filepath: Path ending in `.weights.h5`.
            overwrite: Whether to overwrite an existing file.
            max_shard_size: As in `keras.Model.save_weights` (sharded
                files are written in place).

        Returns:
            None.

        Example:

        >>> import os, tempfile, keras_mtl
        >>> model = keras_mtl.MultiTaskModel([4], {"a": 1})
        >>> model.build((None, 3))
        >>> path = os.path.join(tempfile.mkdtemp(), "ckpt.weights.h5")
        >>> model.save_weights(path)
        >>> model.load_weights(path)
        """
        if max_shard_size is not None or (not overwrite and os.path.exists(os.fspath(filepath))):
            return super().save_weights(
                filepath, overwrite=overwrite, max_shard_size=max_shard_size
            )
        save_weights = super().save_weights
        return _io.write_atomically(
            filepath, ".weights.h5", lambda path: save_weights(path, overwrite=True)
        )

    def save_own_variables(self, store):
        # Besides the step counter, save the dropout generators' state, which
        # Keras leaves out, so a resumed run draws the same dropout masks.
        for name in _LEGACY_ATTRIBUTES:
            vars(self).pop(name, None)  # see load_own_variables
        store["0"] = self.step_counter.numpy()
        for i, state in enumerate(_keras_internals.seed_generator_states(self)):
            store[f"rng_{i}"] = state

    def load_own_variables(self, store):
        keys = set(store.keys())
        if {k for k in keys if not k.startswith("rng_")} != {"0"}:
            raise ValueError(
                "The saved MultiTaskModel state does not hold exactly one "
                f"model-level variable (its step counter); it holds {sorted(keys)}: "
                "the file was written by a different model or keras_mtl version."
            )
        self.step_counter.assign(store["0"])
        for i, state in enumerate(_keras_internals.seed_generator_states(self)):
            if f"rng_{i}" in keys:
                state.assign(store[f"rng_{i}"])
        self._expose_legacy_state(store)

    def _expose_legacy_state(self, store):
        """Lets Keras load what keras_mtl 0.1.0 saved under private names.

        0.1.0 saved the per-task optimizers under `_task_optimizers` (by
        position in compile's `task_optimizers` dict) and the weighting method
        under `_weighting`. Keras loads the model's children after this
        method, by attribute name, so these attributes, set for this load
        only (and dropped at the next save), let it read them.
        """
        has_path = getattr(store, "has_path", None)
        compiled = getattr(self, "_mtl", None)
        if not callable(has_path) or compiled is None:
            return
        if has_path("_task_optimizers") and compiled.optimizers.own:
            own = compiled.optimizers.own
            legacy = {t: own[t] for t in compiled.optimizers.given_order}
            object.__setattr__(self, "_task_optimizers", legacy)
        if has_path("_weighting") and compiled.weighting is not None:
            object.__setattr__(self, "_weighting", compiled.weighting)


_LEGACY_ATTRIBUTES = ("_task_optimizers", "_weighting")
