"""`MultiTaskModel`: a shared trunk with one named head per task.

The class is the architecture (trunk, heads, config, export);
`keras_mtl/trainer.py` adds how it compiles and trains, as Keras's `Model` is a
`Layer` plus a `Trainer`, and `keras_mtl/_saving.py` how it saves.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_mtl import (
    _checks,
    _inputs,
    _keras_internals,
    _optimizer_setup,
    _saving,
    _standardize,
    _structure,
)
from keras_mtl import export as export_module
from keras_mtl import trainer as trainer_module
from keras_mtl.heads import _check_activation, head_items, make_head


def _check_trunk_units(trunk_units, arg_name="trunk"):
    if (
        isinstance(trunk_units, (int, str))
        or not hasattr(trunk_units, "__len__")
        or len(trunk_units) == 0
        or not all(
            isinstance(u, (int, np.integer)) and not isinstance(u, bool) and u > 0
            for u in trunk_units
        )
    ):
        raise ValueError(
            f"`{arg_name}` must be a keras.layers.Layer (e.g. a keras.Sequential or a "
            "functional keras.Model) or a non-empty list of positive ints, one "
            f"per shared Dense layer, e.g. [64, 64]. Received: {trunk_units!r}."
        )
    return [int(u) for u in trunk_units]


# The arguments of the Dense shortcut (`trunk=[64, 64]`), with their defaults.
_DENSE_ARGS = {
    "trunk_activation": "relu",
    "trunk_dropout": 0.0,
    "kernel_initializer": "glorot_uniform",
    "kernel_regularizer": None,
}


def _resolve_trunk(trunk, trunk_units, dense_args):
    """`(layer or None, units or None)` from the `trunk`/`trunk_units` arguments."""
    if trunk is not None and trunk_units is not None:
        raise ValueError(
            "Pass the trunk once: `trunk=` (a Keras layer or a list of ints) or "
            "`trunk_units=` (a list of ints), not both."
        )
    if trunk is None and trunk_units is None:
        raise ValueError(
            "MultiTaskModel needs a shared trunk: `trunk=[64, 64]` (Dense layers "
            "of those sizes) or `trunk=` any keras.layers.Layer, e.g. a "
            "keras.Sequential or a functional keras.Model."
        )
    if isinstance(trunk, dict) and "class_name" in trunk:
        trunk = keras.saving.deserialize_keras_object(trunk)
    if isinstance(trunk, keras.layers.Layer):
        given = sorted(k for k, v in dense_args.items() if v is not None)
        if given:
            raise ValueError(
                f"{given} configure the Dense shortcut trunk (`trunk=[64, 64]`) "
                "only, but `trunk` is a Keras layer: set activations, dropout, "
                "initializers and regularizers on your own layers (and on "
                "keras_mtl.Head for heads) instead."
            )
        return trunk, None
    if trunk is not None:
        return None, _check_trunk_units(trunk)
    if isinstance(trunk_units, keras.layers.Layer):
        raise ValueError("`trunk_units` takes a list of ints; pass a Keras layer as `trunk=`.")
    return None, _check_trunk_units(trunk_units, "trunk_units")


@keras.saving.register_keras_serializable(package="keras_mtl")
class MultiTaskModel(
    _keras_internals.TrainerHooks, _saving.SavingMixin, trainer_module.Trainer, keras.Model
):
    """A shared trunk with one named output head per task.

    The model maps its inputs to a dict of outputs, one per head, named
    after the head. `compile(mode=...)` picks how `fit()` trains it:

    * `"joint"`: every step computes every task's loss and applies one update
      of `sum_t w_t * L_t` to all weights (as a Keras multi-output model does);
    * `"alternating"`: every step picks ONE task (see `keras_mtl.samplers`),
      computes only its loss and updates only the trunk and that head; every
      other head and its optimizer state stay exactly as they were.

    The trunk is either the Dense shortcut (`trunk=[64, 64]`: Dense layers of
    those sizes on a float matrix `(batch, features)`) or any Keras layer: a
    `keras.Sequential` (e.g. a convolutional backbone), a functional
    `keras.Model` (e.g. dict inputs of several dtypes with preprocessing
    layers inside), a keras-hub backbone or a layer of your own. It must
    return one tensor, which every head takes. The inputs are whatever the
    trunk takes: any rank and dtype, one tensor or a dict of named inputs.

    Args:
        trunk: A list of positive ints (the Dense shortcut: one shared Dense
            layer per entry) or a `keras.layers.Layer` returning one tensor.
        heads: Dict `{task_name: head}` where `head` is an int (a Dense
            output layer with that many units and `head_activation`), a
            `keras_mtl.Head`, or any Keras layer (e.g. a `Sequential` tower,
            or a `Dense` on a sequence for per-timestep outputs). Task names
            must be valid identifiers; they are the output names, the keys
            of `loss`/`metrics`/`y`, and the prefixes of the logs. A head
            layer belongs to one task only.
        trunk_activation: Dense shortcut only: activation of the trunk
            layers. Defaults to `"relu"`.
        head_activation: Activation of int-shorthand heads. Defaults to
            `None` (linear).
        trunk_dropout: Dense shortcut only: float in [0, 1), dropout after
            each trunk layer in training. Defaults to `0.0`.
        kernel_initializer: Dense shortcut only: initializer of the trunk's
            and int-shorthand heads' kernels. Defaults to `"glorot_uniform"`.
        kernel_regularizer: Dense shortcut only: optional regularizer of
            those kernels.
        trunk_units: The Dense shortcut's layer sizes, as a keyword (the
            0.1 name of `trunk=[...]`); give `trunk` or `trunk_units`.
        **kwargs: Base model arguments such as `name`.

    Returns:
        A `keras.Model` whose `predict(x)` returns `{task: array}`.

    Example:

    >>> import numpy as np, keras, keras_mtl
    >>> model = keras_mtl.MultiTaskModel(
    ...     trunk=[16],
    ...     heads={"y1": 1, "y2": keras_mtl.Head(3, activation="softmax")},
    ... )
    >>> model.compile(
    ...     optimizer="adam",
    ...     loss={"y1": "mse", "y2": "sparse_categorical_crossentropy"},
    ...     mode="alternating", seed=1,
    ... )
    >>> x = np.random.rand(64, 4).astype("float32")
    >>> y = {"y1": x.sum(1), "y2": (x[:, 0] * 3).astype("int32")}
    >>> history = model.fit(x, y, epochs=1, verbose=0)
    >>> sorted(model.predict(x, verbose=0))
    ['y1', 'y2']

    Your own trunk, here a small convolutional one on 8x8 images:

    >>> trunk = keras.Sequential([
    ...     keras.layers.Conv2D(4, 3, activation="relu"),
    ...     keras.layers.GlobalAveragePooling2D(),
    ... ])
    >>> model = keras_mtl.MultiTaskModel(
    ...     trunk, {"digit": keras_mtl.Head(10, activation="softmax"), "odd": 1})
    >>> model.predict(np.zeros((2, 8, 8, 1), "float32"), verbose=0)["digit"].shape
    (2, 10)
    """

    def __init__(
        self,
        trunk=None,
        heads=None,
        trunk_activation=None,
        head_activation=None,
        trunk_dropout=None,
        kernel_initializer=None,
        kernel_regularizer=None,
        trunk_units=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # The strategy whose scope created the model (None: one device).
        self._mtl_strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
        dense_args = {
            "trunk_activation": trunk_activation,
            "trunk_dropout": trunk_dropout,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
        }
        layer, units = _resolve_trunk(trunk, trunk_units, dense_args)
        self.trunk_units = units
        self.head_activation = _check_activation("head_activation", head_activation)
        if layer is None:
            dense_args = {k: _DENSE_ARGS[k] if v is None else v for k, v in dense_args.items()}
            self.trunk_activation = _check_activation(
                "trunk_activation", dense_args["trunk_activation"]
            )
            self.trunk_dropout = _checks.check_rate("trunk_dropout", dense_args["trunk_dropout"])
            self.kernel_initializer = keras.initializers.get(dense_args["kernel_initializer"])
            self.kernel_regularizer = keras.regularizers.get(dense_args["kernel_regularizer"])
            self.trunk = self._dense_trunk()
            head_args = dict(
                kernel_initializer=self.kernel_initializer,
                kernel_regularizer=self.kernel_regularizer,
            )
        else:
            self.trunk_activation = self.trunk_dropout = None
            self.kernel_initializer = self.kernel_regularizer = None
            self.trunk = layer
            head_args = {}
        if heads is None:
            raise ValueError(
                "MultiTaskModel needs `heads`: a dict {task_name: head}, e.g. "
                "{'y1': 1, 'y2': keras_mtl.Head(3, activation='softmax')}."
            )
        self.heads = {
            name: make_head(name, spec, activation=self.head_activation, **head_args)
            for name, spec in head_items(heads)
        }
        _check_distinct_layers(self.trunk, self.heads)
        if getattr(self.trunk, "task_names", "absent") is None and hasattr(
            self.trunk, "set_task_names"
        ):
            # An expert-mixture layer used as the whole trunk takes its tasks from `heads`.
            self.trunk.set_task_names(list(self.heads))
        # Counts training steps; the alternating task is a pure function of
        # (seed, step_counter), so saving it lets a restored run continue
        # the same task sequence. Replicated; updated in cross-replica context.
        self.step_counter = self.add_weight(
            name="step_counter",
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )
        self._mtl = None
        self._output_shapes = None
        self._training_ready = False
        # The inputs' specification (see keras_mtl/_inputs.py): set by build;
        # `_data_spec` carries the data's dtypes into build.
        self._mtl_input_spec = None
        self._data_spec = None
        # Per-task variable sets when the trunk returns one tensor per task
        # (keras_mtl/_structure.py); None for a trunk shared by every head.
        self._structure = None

    def _dense_trunk(self):
        trunk_layers = []
        for i, units in enumerate(self.trunk_units):
            trunk_layers.append(
                keras.layers.Dense(
                    units,
                    activation=self.trunk_activation,
                    kernel_initializer=self.kernel_initializer,
                    kernel_regularizer=self.kernel_regularizer,
                    name=f"dense_{i}",
                )
            )
            if self.trunk_dropout:
                trunk_layers.append(keras.layers.Dropout(self.trunk_dropout, name=f"dropout_{i}"))
        return keras.Sequential(trunk_layers, name="trunk")

    # ------------------------------------------------------------------
    # Architecture
    # ------------------------------------------------------------------
    @property
    def task_names(self):
        """The task (head) names, in order (tuple of str)."""
        return tuple(self.heads)

    def build(self, input_shape=None):
        spec = self._spec_for_build(input_shape)
        # In the model's distribution scope, so its variables are replicated
        # even when build() is called outside `strategy.scope()`.
        with self.distribute_strategy.scope():
            features = self.trunk(_inputs.symbolic(spec))
            per_task = isinstance(features, dict)
            if per_task:
                _check_per_task_features(features, self.task_names)
            elif not isinstance(features, keras.KerasTensor):
                raise ValueError(
                    "The trunk must return one tensor, which every head takes, or a "
                    "dict {task: tensor} with one representation per task; it returns "
                    f"{_describe(features)}. Combine its outputs into one tensor "
                    "(e.g. keras.layers.Concatenate) inside the trunk."
                )
            output_shapes = {}
            for task, head in self.heads.items():
                output = head(features[task] if per_task else features)
                if not isinstance(output, keras.KerasTensor):
                    raise ValueError(
                        f"The head of task {task!r} must return one tensor; it "
                        f"returns {_describe(output)}."
                    )
                output_shapes[task] = tuple(output.shape)
        _check_no_shared_variables(self.trunk, self.heads)
        self._output_shapes = output_shapes
        self._mtl_input_spec = spec
        self._structure = _structure.task_structure(self) if per_task else None
        if self._mtl is not None:
            # Optimizer state must exist before anything loads it (e.g.
            # BackupAndRestore at the start of fit(), or load_weights).
            _optimizer_setup.build_optimizers(self)

    def _spec_for_build(self, input_shape):
        """The input specification to build with: the trunk's own, the data's,
        or float inputs of `input_shape`."""
        spec = _inputs.trunk_input_spec(self.trunk)
        if spec is None:
            spec = self._data_spec
        if spec is None:
            if input_shape is None:
                raise ValueError(
                    "MultiTaskModel.build() needs the input shape, e.g. "
                    "model.build((None, n_features)), or call the model on data."
                )
            spec = keras.tree.map_shape_structure(
                lambda s: tf.TensorSpec((None,) + tuple(s)[1:], keras.config.floatx()), input_shape
            )
        if self.trunk_units is not None:
            if not isinstance(spec, tf.TensorSpec) or spec.shape.rank != 2:
                shape = spec.shape if isinstance(spec, tf.TensorSpec) else _describe(spec)
                raise ValueError(
                    "MultiTaskModel's Dense trunk (`trunk=[...]`) takes inputs of shape "
                    f"(batch, features). Received input shape {shape}; flatten or "
                    "preprocess the inputs first, or pass your own Keras layer as "
                    "`trunk` (e.g. a functional keras.Model with named inputs)."
                )
            spec = tf.TensorSpec(spec.shape, keras.config.floatx())
        return spec

    def _build_for(self, x):
        """Builds the model for data (or specs) like `x`, with their dtypes."""
        if self.built:
            return
        self._data_spec = _inputs.spec_of(x)
        try:
            self.build(_inputs.map_inputs(lambda s: tuple(s.shape.as_list()), self._data_spec))
        finally:
            self._data_spec = None

    def __call__(self, *args, **kwargs):
        # Build from the real inputs, with their dtypes (Keras would build
        # from their shapes only, as floats).
        if not self.built and (args or "inputs" in kwargs):
            self._build_for(args[0] if args else kwargs["inputs"])
        return super().__call__(*args, **kwargs)

    def get_build_config(self):
        if self._mtl_input_spec is None:
            return super().get_build_config()
        config = {"input_spec": _inputs.serialize(self._mtl_input_spec)}
        if isinstance(self._mtl_input_spec, tf.TensorSpec):  # what keras_mtl 0.1 reads
            config["input_shape"] = self._mtl_input_spec.shape.as_list()
        return config

    def build_from_config(self, config):
        if "input_spec" in config:
            self._build_for(_inputs.deserialize(config["input_spec"]))
        else:  # files written by keras_mtl 0.1
            super().build_from_config(config)

    def _output_shape(self, task):
        """The output shape of `task`'s head, batch dimension first."""
        return self._output_shapes[task]

    def _in_trunk_order(self, inputs):
        # Keras warns when a functional trunk's dict inputs come in another
        # key order (tf.function and tf.data sort dict keys).
        spec = self._mtl_input_spec
        if isinstance(inputs, dict) and isinstance(spec, dict) and list(inputs) != list(spec):
            order = [k for k in spec if k in inputs] + [k for k in inputs if k not in spec]
            return {k: inputs[k] for k in order}
        return inputs

    def call(self, inputs, training=None):
        features = self.trunk(self._in_trunk_order(inputs), training=training)
        return {
            name: head(_feature(features, name), training=training)
            for name, head in self.heads.items()
        }

    @property
    def per_task_trunk(self):
        """Whether the trunk returns one representation per task (a dict keyed
        by task name, e.g. `keras_mtl.layers.MMoE`) rather than one tensor
        that every head shares (known once the model is built)."""
        return self._structure is not None

    def task_variables(self, task):
        """The trainable variables that `task`'s output depends on.

        An alternating step of `task` updates exactly these (with the
        optimizer state that belongs to them); joint steps and gradient
        weighting methods treat variables in several tasks' sets as shared.
        With a trunk shared by every head they are the trunk's and the
        head's. With a per-task trunk (a dict of representations, e.g.
        MMoE/CGC/PLE or two towers with a cross-stitch unit) they are read
        from the model's structure: the variables the task's output is
        connected to (keras_mtl/_structure.py), whatever their names.

        Args:
            task: The task name.

        Returns:
            List of variables, in the model's variable order.

        Example:

        >>> import keras_mtl
        >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 2}, name="m")
        >>> model.build((None, 4))
        >>> [v.path for v in model.task_variables("b")]
        ['m/trunk/dense_0/kernel', 'm/trunk/dense_0/bias', 'm/b/output/kernel', 'm/b/output/bias']
        """
        if task not in self.heads:
            raise ValueError(f"Unknown task {task!r}; the model's tasks are {list(self.heads)}.")
        if self._mtl_input_spec is None:  # (set at the end of build)
            raise ValueError("task_variables() needs a built model: call it on data first.")
        if self._structure is not None:
            # Filtered by what is trainable now: freezing a layer after
            # build (then compile again) takes it out of every set.
            used = self._structure.state[task]
            candidates = self.trunk.trainable_variables + [
                v for h in self.heads.values() for v in h.trainable_variables
            ]
            return [v for v in candidates if id(v) in used]
        return self.trunk.trainable_variables + self.heads[task].trainable_variables

    def call_task(self, inputs, task, training=None):
        """Computes the trunk and ONE task's head, not the others.

        Args:
            inputs: What the trunk takes, e.g. a tensor `(batch, features)`
                or a dict of named inputs.
            task: The task name.
            training: Whether dropout is active. Defaults to `None` (off).

        Returns:
            The head's output tensor, e.g. `(batch, units)`.

        Example:

        >>> import numpy as np, keras_mtl
        >>> model = keras_mtl.MultiTaskModel([8], {"a": 2, "b": 5})
        >>> model.call_task(np.ones((3, 4), "float32"), "b").shape
        TensorShape([3, 5])
        """
        if task not in self.heads:
            raise ValueError(f"Unknown task {task!r}; the model's tasks are {list(self.heads)}.")
        if not self.built:
            self._build_for(inputs)
        features = self.trunk(self._in_trunk_order(inputs), training=training)
        return self.heads[task](_feature(features, task), training=training)

    def expert_utilization(self, x, batch_size=256, layer=None):
        """How much each task relies on each expert: its mean gate weight.

        For an expert-mixture layer in the trunk (`keras_mtl.layers.MMoE`,
        `CGC`, `PLE`, or any layer with `gate_weights(inputs)` and
        `expert_names(task)`), the softmax weight each task's gate gives each
        of its experts, averaged over the examples of `x` (the last level of
        a `PLE`). A weight near 0 is an expert the task ignores.

        Args:
            x: Inputs as `predict` takes them (arrays, a dict, a DataFrame).
            batch_size: Examples per batch. Defaults to 256.
            layer: The expert layer's name, when the trunk holds several;
                defaults to the only one.

        Returns:
            Dict `{task: {expert_name: mean gate weight}}` (each task's
            weights sum to 1).

        Example:

        >>> import numpy as np, keras_mtl
        >>> model = keras_mtl.MultiTaskModel(
        ...     keras_mtl.layers.MMoE(num_experts=3, expert_units=[4]), {"a": 1, "b": 1})
        >>> use = model.expert_utilization(np.random.rand(16, 5).astype("float32"))
        >>> sorted(use["a"]), round(sum(use["b"].values()), 5)
        (['expert_0', 'expert_1', 'expert_2'], 1.0)
        """
        experts = [
            sub
            for sub in _all_layers(self.trunk)
            if hasattr(sub, "gate_weights") and hasattr(sub, "expert_names")
        ]
        if layer is not None:
            experts = [sub for sub in experts if sub.name == layer]
        if len(experts) != 1:
            names = [sub.name for sub in _all_layers(self.trunk) if hasattr(sub, "gate_weights")]
            raise ValueError(
                "expert_utilization() needs one expert-mixture layer (e.g. "
                f"keras_mtl.layers.MMoE) in the trunk; found {names or 'none'}"
                + (f" named {layer!r}" if layer is not None else "")
                + (": pass layer=<name>." if len(names) > 1 else ".")
            )
        expert = experts[0]
        x = _standardize.predict_inputs(self, x)
        if not self.built:
            self._build_for(x)
        if expert is self.trunk:
            features = x
        elif (
            isinstance(self.trunk, keras.Model) and _inputs.trunk_input_spec(self.trunk) is not None
        ):
            features = keras.Model(self.trunk.input, expert.input).predict(
                x, batch_size=batch_size, verbose=0
            )
        else:
            raise ValueError(
                f"expert_utilization() reads the inputs of {expert.name!r} through the "
                "trunk, which needs a functional trunk (keras.Model with keras.Input) "
                "when the expert layer is not the whole trunk."
            )
        rows = len(tf.nest.flatten(features)[0])
        totals = {}
        for start in range(0, rows, batch_size):
            batch = tf.nest.map_structure(lambda v, s=start: v[s : s + batch_size], features)
            for task, weights in expert.gate_weights(batch).items():
                totals[task] = totals.get(task, 0.0) + np.sum(
                    np.asarray(weights, "float64"), axis=0
                )
        return {
            task: {name: float(w / rows) for name, w in zip(expert.expert_names(task), total)}
            for task, total in totals.items()
        }

    def as_functional(self):
        """A functional `keras.Model` view of this model, for drawing it.

        The view shares this model's layers and weights (nothing is copied):
        its inputs are the trunk's (named as the trunk names them), then the
        trunk, then one output per head. `keras.utils.plot_model(model)`
        draws a subclassed model such as `MultiTaskModel` as one box;
        `keras.utils.plot_model(model.as_functional(), expand_nested=True)`
        draws the trunk, its layers and every head. Train and save the
        `MultiTaskModel` itself, not the view.

        Returns:
            A built `keras.Model` mapping the inputs to `{task: output}`.

        Example:

        >>> import keras_mtl
        >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 3})
        >>> model.build((None, 4))
        >>> view = model.as_functional()
        >>> sorted(view.output), [layer.name for layer in view.layers]
        (['a', 'b'], ['features', 'trunk', 'a', 'b'])
        """
        if not self.built:
            raise ValueError(
                "as_functional() needs a built model: call it on data first "
                "(e.g. model.predict(x)) or model.build(input_shape)."
            )
        spec = self._mtl_input_spec
        if isinstance(spec, tf.TensorSpec):
            spec = tf.TensorSpec(spec.shape, spec.dtype, name=spec.name or "features")
        inputs = _inputs.map_inputs(
            lambda s: keras.Input(
                shape=tuple(s.shape[1:].as_list()), dtype=s.dtype.name, name=s.name
            ),
            spec,
        )
        features = self.trunk(inputs)
        outputs = {task: head(_feature(features, task)) for task, head in self.heads.items()}
        return keras.Model(inputs, outputs, name=self.name)

    def get_config(self):
        config = super().get_config()
        config.update(
            format_version=1 if self.trunk_units is not None else _saving.FORMAT_VERSION,
            heads={name: keras.saving.serialize_keras_object(h) for name, h in self.heads.items()},
            head_activation=keras.activations.serialize(self.head_activation),
            frozen_layers=self.frozen_layers(),
        )
        if self.trunk_units is None:
            config["trunk"] = keras.saving.serialize_keras_object(self.trunk)
        else:
            config.update(
                trunk_units=list(self.trunk_units),
                trunk_activation=keras.activations.serialize(self.trunk_activation),
                trunk_dropout=self.trunk_dropout,
                kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
                kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        _saving.check_format_version(config)
        frozen = config.pop("frozen_layers", [])
        model = cls(**config)
        model._freeze(frozen)
        return model

    def export(
        self,
        filepath,
        format="tf_saved_model",
        verbose=None,
        input_signature=None,
        input_name="features",
        **kwargs,
    ):
        """Exports the model for inference; for TF Serving by default.

        With `format="tf_saved_model"` the SavedModel needs neither
        keras_mtl nor this class to serve. It has a `serving_default`
        signature returning one output per head (named after the head) and
        one signature per task, named after the task, that computes only the
        trunk and that head. The inputs are the trunk's: for one unnamed
        input (e.g. the Dense shortcut's float32 `(batch, features)`) one
        input named `input_name`; for a trunk with named inputs one input per
        name, with its dtype (raw strings where the trunk looks them up), an
        input of shape `(batch, 1)` taking one value per example. Dropout is
        off. Other formats go to `keras.Model.export`.

        Args:
            filepath: Directory to write; for TF Serving use
                `<base>/<model_name>/<version>`, e.g. `"serving/mtl/1"`.
            format: `"tf_saved_model"` (default) or another format that
                `keras.Model.export` supports.
            verbose: Whether to print a summary of what was written.
            input_signature: Optional `tf.TensorSpec((None, n), tf.float32)`
                (or a dict of specs), needed only if the model was never built.
            input_name: Name of a single unnamed input. Defaults to
                `"features"`.
            **kwargs: Passed to `keras.Model.export` for other formats.

        Returns:
            The list of signature names written (for `"tf_saved_model"`).

        Example:

        >>> import tempfile, keras_mtl, tensorflow as tf
        >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 3})
        >>> model.build((None, 4))
        >>> path = tempfile.mkdtemp() + "/1"
        >>> model.export(path, verbose=False)
        ['serving_default', 'serve', 'a', 'b']
        >>> served = tf.saved_model.load(path)
        >>> sorted(served.signatures["b"](features=tf.ones((2, 4))))
        ['b']
        """
        if format != "tf_saved_model":
            return super().export(
                filepath, format=format, verbose=verbose, input_signature=input_signature, **kwargs
            )
        if kwargs:
            raise TypeError(f"Unexpected arguments for format='tf_saved_model': {sorted(kwargs)}.")
        return export_module.export_saved_model(
            self,
            filepath,
            input_name=input_name,
            input_signature=input_signature,
            verbose=True if verbose is None else verbose,
        )


def _feature(features, task):
    """Task `task`'s representation: its entry of a per-task trunk's dict."""
    return features[task] if isinstance(features, dict) else features


def _check_per_task_features(features, task_names):
    missing = [t for t in task_names if t not in features]
    unknown = [k for k in features if k not in task_names]
    if missing or unknown:
        raise ValueError(
            "A trunk that returns a dict gives one representation per task, keyed "
            f"by task name; the tasks are {list(task_names)}, the trunk returns "
            f"keys {list(features)}"
            + (f" (missing: {missing})" if missing else "")
            + (f" (not tasks: {unknown})" if unknown else "")
            + "."
        )
    for task in task_names:
        if not isinstance(features[task], keras.KerasTensor):
            raise ValueError(
                f"The trunk's representation for task {task!r} must be one tensor; "
                f"it is {_describe(features[task])}."
            )


def _describe(value):
    if isinstance(value, dict):
        return f"a dict with keys {sorted(value)}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} values"
    return type(value).__name__


def _all_layers(layer):
    yield layer
    for sublayer in _keras_internals.sublayers(layer):
        yield from _all_layers(sublayer)


def _check_distinct_layers(trunk, heads):
    """Each head's layers are its own: not the trunk's, not another head's."""
    seen = {}
    for owner, root in [("the trunk", trunk)] + [
        (f"the head of task {t!r}", h) for t, h in heads.items()
    ]:
        for layer in _all_layers(root):
            other = seen.setdefault(id(layer), owner)
            if other != owner:
                what = (
                    "is the same layer as"
                    if layer is root
                    else f"shares the layer {layer.name!r} with"
                )
                raise ValueError(
                    f"{owner[0].upper() + owner[1:]} {what} {other}: give every task "
                    "its own head layers, apart from the trunk (alternating training "
                    "updates one task's head at a time)."
                )


def _check_no_shared_variables(trunk, heads):
    """No variable belongs to two of (trunk, each head): alternating updates
    of one task must leave every other head untouched."""
    owners = {}
    for owner, layer in [("the trunk", trunk)] + [
        (f"the head of task {t!r}", h) for t, h in heads.items()
    ]:
        for variable in layer.weights:
            other = owners.setdefault(id(variable), owner)
            if other != owner:
                raise ValueError(
                    f"{other[0].upper() + other[1:]} and {owner} share the variable "
                    f"{variable.path!r}: a head's layers must belong to that head "
                    "only (not to the trunk or another head), so that an update "
                    "of one task leaves the other heads as they were."
                )
