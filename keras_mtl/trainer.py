"""How a `MultiTaskModel` compiles and trains: the `Trainer` it inherits.

`compile()` turns the multi-task arguments into one `_Compiled` object
(tasks, mode, sampler, optimizers, weighting, metrics); `fit`, `evaluate`,
`train_on_batch` and `test_on_batch` check their inputs
(`keras_mtl/_standardize.py`) and hand over to Keras, whose loops call the
functions `keras_mtl/_execution.py` builds around `train_step`/`test_step`
(the steps themselves are in `keras_mtl/training.py`).
"""

import keras
import tensorflow as tf

from keras_mtl import (
    _array_source,
    _checks,
    _execution,
    _optimizer_setup,
    _saving,
    _standardize,
    training,
)
from keras_mtl import optimizers as optimizers_module
from keras_mtl import samplers as samplers_module
from keras_mtl import tasks as tasks_module
from keras_mtl import weighting as weighting_module

_MODES = ("joint", "alternating")


class _Compiled:
    """What `compile()` decided, kept in one plain object.

    Not an attribute Keras tracks: its metrics and weighting layer are not
    the model's layers or weights (the weighting method is saved as
    `model.weighting`), and compile() may run on a built model.

    Attributes:
        mode: `"joint"` or `"alternating"`.
        seed: int, the seed of the alternating task sequence.
        sampler: the bound `Sampler` (alternating mode) or `None`.
        specs: one `TaskSpec` per head; `trained`: those with a loss.
        weighting: the `Weighting` method or `None`.
        optimizers: `keras_mtl.optimizers.OptimizerState`.
        metrics: the `TaskMetrics` logged by fit/evaluate.
        config: the serialized compile arguments (`get_compile_config`).
        frozen: the frozen layers when the optimizers were built, or `None`.
    """

    def __init__(self, mode, seed, sampler, specs, weighting, optimizers, config):
        self.mode = mode
        self.seed = seed
        self.sampler = sampler
        self.specs = specs
        self.trained = [s for s in specs if s.trained]
        self.weighting = weighting
        self.optimizers = optimizers
        self.metrics = tasks_module.TaskMetrics(specs)
        self.config = config
        self.frozen = None


class Trainer:
    """Compiling and training for `MultiTaskModel` (see the module docstring)."""

    # ------------------------------------------------------------------
    # Compile
    # ------------------------------------------------------------------
    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        metrics=None,
        loss_weights=None,
        weighted_metrics=None,
        mode="joint",
        sampler=None,
        task_optimizers=None,
        weighting=None,
        seed=None,
        **kwargs,
    ):
        """Configures the model for multi-task training.

        Args:
            optimizer: Optimizer name or instance; in joint mode it updates
                everything, in alternating mode it serves every task not in
                `task_optimizers`. Defaults to `"rmsprop"` (as Keras).
            loss: Dict `{task: loss}` (a Keras loss name, `keras.losses.Loss`
                or function); map a task to `None` to leave its head
                untrained. One loss (not a dict) applies to every task.
            metrics: Optional dict `{task: metric or list of metrics}`;
                logged as `<task>_<metric>`. They ignore missing labels.
            loss_weights: Optional dict `{task: float >= 0}`; missing tasks
                get 1.0. Joint loss is `sum_t w_t * L_t`; an alternating step
                on task t minimizes `w_t * L_t`.
            weighted_metrics: Like `metrics`, but weighted by `sample_weight`.
            mode: `"joint"` or `"alternating"`.
            sampler: Alternating mode only: `"uniform"` (default),
                `"round_robin"`, a dict of fixed probabilities
                `{task: p}`, or a `keras_mtl.samplers.Sampler`.
            task_optimizers: Alternating mode only: optional dict
                `{task: optimizer}` giving a task its own optimizer state over
                the trunk and its head (the tutorial's one Adam per task).
                Values are names, instances, or learning-rate schedules (a
                copy of `optimizer` with that schedule). A task's
                `iterations` (and so its schedule and Adam's bias correction)
                advance only on that task's updates, whereas one shared
                optimizer advances on every step.
            weighting: Optional `keras_mtl.weighting` method (an instance or
                its name) that balances the tasks dynamically instead of the
                static sum: loss-based (`Uncertainty`, `DWA`, `RLW`, `FAMO`)
                or gradient-based (`PCGrad`, `MGDA`, `CAGrad`, `GradNorm`,
                `UPGrad`). It sees the losses after `loss_weights`; the
                weights it uses are logged as `<task>_weight`. Joint mode;
                in alternating mode only `Uncertainty` applies.
            seed: Optional int in [0, 2**31 - 1): makes the alternating task
                sequence and the order in which `fit()` shuffles in-memory
                arrays reproducible. `None` draws one (from Python's
                `random`, so `keras.utils.set_random_seed` fixes it).
            **kwargs: Other `keras.Model.compile` arguments:
                `steps_per_execution`, `jit_compile`, `run_eagerly`,
                `auto_scale_loss`.

        Returns:
            None.

        Example:

        >>> import keras_mtl
        >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
        >>> model.compile(
        ...     optimizer="adam", loss={"a": "mse", "b": "mae"},
        ...     mode="alternating", sampler={"a": 0.8, "b": 0.2}, seed=0,
        ... )
        >>> model.mode
        'alternating'
        """
        if mode not in _MODES:
            raise ValueError(f"`mode` must be 'joint' or 'alternating'. Received: mode={mode!r}.")
        if isinstance(self.distribute_strategy, tf.distribute.experimental.ParameterServerStrategy):
            raise NotImplementedError(
                "MultiTaskModel does not support ParameterServerStrategy: Keras 3 "
                "does not train with it (keras-team/keras#18624), and alternating "
                "updates need synchronous replicas. Use MirroredStrategy or "
                "MultiWorkerMirroredStrategy."
            )
        alternating = mode == "alternating"
        if not alternating:
            for arg, value in (("sampler", sampler), ("task_optimizers", task_optimizers)):
                if value is not None:
                    raise ValueError(
                        f"`{arg}` only applies to mode='alternating' (a joint "
                        f"step trains every task at once). Received {arg}="
                        f"{value!r} with mode='joint'."
                    )
        method = weighting_module.get(weighting)
        if alternating and method is not None and not method.supports_alternating:
            raise ValueError(
                f"weighting={type(method).__name__}() balances the tasks within a "
                "joint step, but an alternating step trains one task. Use "
                "mode='joint', or weighting=keras_mtl.weighting.Uncertainty(), "
                "which learns each task's loss scale one task at a time."
            )
        if method is not None and method.built:
            raise ValueError(
                "This weighting method already belongs to a compiled model; "
                "pass a new instance (its state is per model)."
            )
        config = dict(
            optimizer=_saving.serialize(optimizer),
            loss=_saving.serialize(loss),
            metrics=_saving.serialize(metrics),
            loss_weights=_saving.serialize(loss_weights),
            weighted_metrics=_saving.serialize(weighted_metrics),
            mode=mode,
            sampler=_saving.serialize(sampler),
            task_optimizers=_saving.serialize(task_optimizers),
            weighting=_saving.serialize(method),
        )
        specs = tasks_module.build_task_specs(
            self.heads, loss, loss_weights, metrics, weighted_metrics, alternating
        )
        trained = [s.name for s in specs if s.trained]
        bound_sampler = None
        if alternating:
            bound_sampler = samplers_module.get(sampler if sampler is not None else "uniform")
            bound_sampler = bound_sampler.bind(trained)
        own_optimizers = _optimizer_setup.resolve_task_optimizers(task_optimizers, optimizer, specs)
        if alternating:
            _optimizer_setup.check_alternating_features(
                keras.optimizers.get(optimizer), own_optimizers, trained
            )
        seed = _checks.resolve_seed(seed)

        super().compile(optimizer=optimizer, **kwargs)
        shared = self.optimizer
        if alternating and all(t in own_optimizers for t in trained):
            shared = None  # every task has its own; nothing is shared
        if kwargs.get("auto_scale_loss", True) and self.dtype_policy.name == "mixed_float16":
            own_optimizers = {
                t: keras.optimizers.LossScaleOptimizer(o) for t, o in own_optimizers.items()
            }
        state = _optimizer_setup.OptimizerState(
            shared, own_optimizers, trained, given_order=list(task_optimizers or {})
        )
        if own_optimizers:
            # What Keras (callbacks, saving, fit's finalize) sees as the optimizer.
            self.optimizer = optimizers_module.TaskOptimizers(shared, own_optimizers)
            self.optimizer.set_builder(
                lambda: _optimizer_setup.build_optimizers(self),
                lambda optimizer: _optimizer_setup.variables_of(self, optimizer),
            )
        if method is not None:
            for spec in specs:
                if spec.trained:
                    spec.weight_tracker = tasks_module.WeightTracker(name=f"{spec.name}_weight")
        config.update(seed=int(seed), **{k: _saving.serialize(v) for k, v in kwargs.items()})
        config["jit_compile"] = self.jit_compile
        self._mtl = _Compiled(mode, int(seed), bound_sampler, specs, method, state, config)
        self._training_ready = False
        if self.built:
            _optimizer_setup.build_optimizers(self)

    def get_compile_config(self):
        if self._mtl is None:
            return {}
        return dict(self._mtl.config)

    def compile_from_config(self, config):
        config = {k: _saving.deserialize(v) for k, v in config.items()}
        self.compile(**config)

    @property
    def mode(self):
        """`"joint"` or `"alternating"`, as compiled (`None` before compile)."""
        return None if self._mtl is None else self._mtl.mode

    @property
    def sampler(self):
        """The bound `Sampler` of alternating mode (`None` in joint mode)."""
        return None if self._mtl is None else self._mtl.sampler

    @property
    def seed(self):
        """The seed of the alternating task sequence (int)."""
        return None if self._mtl is None else self._mtl.seed

    @property
    def weighting(self):
        """The compiled `keras_mtl.weighting` method, or `None`."""
        return None if self._mtl is None else self._mtl.weighting

    @property
    def task_optimizers(self):
        """Read-only dict `{task: optimizer}` of the tasks compiled with their
        own optimizer (`compile(task_optimizers=...)`); empty otherwise."""
        return {} if self._mtl is None else self._mtl.optimizers.own

    def _spec(self, task):
        for spec in self._mtl.specs:
            if spec.name == task:
                return spec
        raise KeyError(task)

    @property
    def metrics(self):
        if self._mtl is None:
            return super().metrics
        # Metrics a subclass tracks itself (Keras's `self._metrics` and the
        # layers' metrics), without Keras's own unused "loss" tracker.
        own = [m for m in super().metrics if m.name != "loss"]
        return [self._mtl.metrics] + own

    def _training_only_metrics(self):
        if self._mtl is None:
            return []
        return [m for s in self._mtl.specs for m in s.training_only_metrics()]

    def reset_metrics(self):
        super().reset_metrics()
        for metric in self._training_only_metrics():
            metric.reset_state()

    def _training_logs(self):
        # `<task>_updates` and `<task>_weight` are training-only logs: they
        # stay out of `self.metrics` so `evaluate()` never reports them.
        logs = self.get_metrics_result()
        logs.update({m.name: m.result() for m in self._training_only_metrics()})
        return logs

    def task_sequence(self, steps, start=0):
        """The tasks alternating mode trains at steps `start .. start+steps-1`.

        Computed with the compiled sampler and seed, assuming every task has
        labels in each batch (a batch that lacks a task's labels
        renormalizes over the others). Useful to check what a seed does.

        Args:
            steps: Number of steps.
            start: First step (the model continues from `step_counter`).

        Returns:
            List of task names.

        Example:

        >>> import keras_mtl
        >>> model = keras_mtl.MultiTaskModel([4], {"a": 1, "b": 1})
        >>> model.compile(loss="mse", mode="alternating", sampler="round_robin")
        >>> model.task_sequence(4)
        ['a', 'b', 'a', 'b']
        """
        if self.sampler is None:
            raise ValueError("task_sequence() needs a model compiled with mode='alternating'.")
        names = self.sampler.task_names
        return [
            names[int(self.sampler.sample(tf.constant(step, tf.int64), self.seed))]
            for step in range(start, start + steps)
        ]

    # ------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------
    def _check_compiled(self, method):
        if self._mtl is None:
            raise ValueError(
                f"You must call `compile()` before `{method}()`: it sets the "
                "tasks' losses and the training mode."
            )

    def _check_trainable_state(self, method):
        """Refuses to train when nothing is trainable, or when layers were
        frozen or unfrozen since the optimizers were built on them."""
        frozen = self._mtl.frozen
        if frozen is not None and frozen != self.frozen_layers():
            changed = sorted(set(frozen) ^ set(self.frozen_layers()))
            raise ValueError(
                f"The trainable state of layer(s) {changed} changed since the model "
                f"was compiled. Call compile() again before {method}() (as Keras "
                "requires) so that training, and the optimizers, use the new set "
                "of trainable weights."
            )
        if not self.trainable_variables:
            raise ValueError(
                f"{method}() would change nothing: the model has no trainable "
                "weights (model.trainable is False, or every layer is frozen). Set "
                "trainable=True on the layers to train, then call compile() again."
            )

    def _prepare_training(self, data_or_spec):
        """Builds the model and every optimizer before the first step."""
        if self._training_ready:
            return
        if not self.built:
            x = data_or_spec[0] if isinstance(data_or_spec, (tuple, list)) else data_or_spec
            self._build_for(x)
        method = self._mtl.weighting
        if self.per_task_trunk and getattr(method, "gradients", None) == "representation":
            raise ValueError(
                f"weighting={type(method).__name__}(gradients='representation') combines "
                "the gradients of the one representation every head shares, but this "
                "model's trunk returns one representation per task. Use "
                f"{type(method).__name__}(gradients='parameters'): it combines the "
                "gradients of the variables several tasks share (e.g. shared experts)."
            )
        if isinstance(method, weighting_module.GradientWeighting) and self.per_task_trunk:
            shared, _ = training.shared_and_own_variables(self)
            if not shared:
                raise ValueError(
                    f"weighting={type(method).__name__}() combines the gradients of the "
                    "variables that several tasks share, but no trainable variable of "
                    "this model is used by two trained tasks (their trunk parts are "
                    "separate). Use a loss weighting method (e.g. "
                    "keras_mtl.weighting.Uncertainty()) or none."
                )
        _optimizer_setup.build_optimizers(self)
        self._training_ready = True

    def make_train_function(self, force=False):
        if self.train_function is not None and not force:
            return self.train_function
        custom = type(self).train_step is not Trainer.train_step
        self.train_function = _execution.make_train_function(self, custom_step=custom)
        return self.train_function

    def make_test_function(self, force=False):
        if self.test_function is not None and not force:
            return self.test_function
        custom = type(self).test_step is not Trainer.test_step
        self.test_function = _execution.make_test_function(self, custom_step=custom)
        return self.test_function

    def train_step(self, data):
        """Runs one training step (joint or alternating) on a batch.

        `fit()`, `train_on_batch()` and every execution of
        `steps_per_execution` steps call this method, so a subclass can
        override it as in Keras's guide "Customizing what happens in fit()":
        call `super().train_step(data)` and post-process its logs, update
        metrics of its own, or write a whole step. Unlike Keras's default, it
        runs in cross-replica context: under a `tf.distribute` strategy it
        chooses the task and calls `strategy.run` itself, so work you add
        per replica goes through `self.distribute_strategy.run` (on one
        device nothing changes). See `keras_mtl/training.py`.

        Args:
            data: A batch `(x, y)` or `(x, y, sample_weight)`, with `y` a
                dict `{task: labels}`.

        Returns:
            Dict of logs: the model's metric results (`loss`,
            `<task>_loss`, `<task>_<metric>`, `<task>_updates`...), which
            `fit()` passes to the callbacks.

        Example:

        >>> import keras, numpy as np, keras_mtl
        >>> class CountingModel(keras_mtl.MultiTaskModel):
        ...     def __init__(self, *args, **kwargs):
        ...         super().__init__(*args, **kwargs)
        ...         self.examples_seen = keras.metrics.Sum(name="examples_seen")
        ...     def train_step(self, data):
        ...         logs = super().train_step(data)
        ...         self.examples_seen.update_state(keras.ops.shape(data[0])[0])
        ...         return {**logs, "examples_seen": self.examples_seen.result()}
        >>> model = CountingModel([8], {"a": 1, "b": 1})
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> x = np.random.rand(32, 3).astype("float32")
        >>> history = model.fit(x, {"a": x.sum(1), "b": x[:, 0]}, batch_size=8, verbose=0)
        >>> history.history["examples_seen"]
        [32.0]
        """
        return training.train_step(self, data)

    def test_step(self, data):
        training.evaluation_step(self, data)
        return self.get_metrics_result()

    def _standardize(self, x, y, sample_weight, method, steps=None, class_weight=None):
        """Checks one call's inputs (see `keras_mtl/_standardize.py`)."""
        return _standardize.standardize(self, x, y, sample_weight, class_weight, method, steps)

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        class_weight=None,
        sample_weight=None,
        initial_epoch=0,
        steps_per_epoch=None,
        validation_steps=None,
        validation_batch_size=None,
        validation_freq=1,
    ):
        """Trains the model, as `keras.Model.fit` does.

        Differences from Keras: `y` is a dict `{task: labels}` or a pandas
        DataFrame with one column per task (a task mapped to `None` has all
        its labels absent), `sample_weight` may be a dict `{task: weights}`
        (0 marks a missing label), `class_weight` is a dict per task, and an
        infinite dataset (such as one from `keras_mtl.data.interleave`)
        needs `steps_per_epoch`. Inputs, label shapes included, are checked
        on every call before the first step.

        Args:
            x: Inputs `(n, features)`: an array, a tensor or a
                `tf.data.Dataset` of `(x, y)` / `(x, y, sample_weight)`.
            y: Dict `{task: labels}` (not with a dataset).
            batch_size, epochs, verbose, callbacks, validation_split, validation_data, initial_epoch, steps_per_epoch, validation_steps, validation_batch_size, validation_freq: As
                in `keras.Model.fit`.
            shuffle: As in `keras.Model.fit`. For in-memory arrays on one
                device the model keeps the arrays and draws each pass's
                order itself, from the compile `seed` and `step_counter`
                (not Keras's random state): the same seed gives the same
                orders, successive fit() calls continue them and a run
                resumed from a checkpoint reshuffles as the uninterrupted
                one (the order differs from a Keras model's with the same
                seed; compare with `shuffle=False`).
            class_weight: Optional dict `{task: {class: weight}}`: each
                example's weight in that task's loss is the weight of its
                class (integer ids, one-hot rows or 0/1 labels; classes not
                named get 1), times any `sample_weight`.
            sample_weight: Per-example weights: one array for every task or
                a dict `{task: weights}`.

        Returns:
            A `keras.callbacks.History`; its logs are `loss`,
            `<task>_loss`, `<task>_<metric>`, their `val_` versions, and
            `<task>_updates` (alternating) / `<task>_weight` (weighting).

        Example:

        >>> import numpy as np, keras_mtl
        >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
        >>> model.compile(optimizer="adam", loss="mse", mode="alternating", seed=0)
        >>> x = np.random.rand(32, 3).astype("float32")
        >>> history = model.fit(x, {"a": x.sum(1), "b": None}, epochs=1, verbose=0)
        >>> history.history["b_updates"]
        [0.0]
        """
        self._check_compiled("fit")
        x, y, sample_weight = self._standardize(
            x, y, sample_weight, "fit", steps_per_epoch, class_weight=class_weight
        )
        if validation_data is not None:
            validation_data = self._standardize(
                *_split_validation(validation_data), "validation_data", validation_steps
            )
        if self.built:
            _optimizer_setup.build_optimizers(self)
            self._check_trainable_state("fit")
        keeper = self._untrained_heads_keeper()
        if keeper is not None:
            callbacks = _with_callback(callbacks, keeper)
        # Arrays stay with the model, which gathers each step's rows itself
        # (keras_mtl/_array_source.py); Keras gets a dataset of batch indices.
        source, batches, held_out = _array_source.for_fit(
            self,
            x,
            y,
            sample_weight,
            batch_size,
            steps_per_epoch,
            shuffle,
            0.0 if validation_data is not None else validation_split,
        )
        if source is not None:
            x, y, sample_weight, batch_size = batches, None, None, None
            shuffle, validation_split = False, 0.0
            validation_data = held_out if validation_data is None else validation_data
        with _array_source.held(self, "_mtl_source", source):
            return super().fit(
                x,
                y,
                batch_size=batch_size,
                epochs=epochs,
                verbose=verbose,
                callbacks=callbacks,
                validation_split=validation_split,
                validation_data=validation_data,
                shuffle=shuffle,
                sample_weight=sample_weight,
                initial_epoch=initial_epoch,
                steps_per_epoch=steps_per_epoch,
                validation_steps=validation_steps,
                validation_batch_size=validation_batch_size,
                validation_freq=validation_freq,
            )

    def _untrained_heads_keeper(self):
        """A callback that puts untrained heads back after an EMA optimizer.

        The shared optimizer is built on every trainable variable (so that
        Keras's `finalize_variable_values`, pairing by position, writes each
        trained variable's own average), which includes heads whose loss is
        None. With `use_ema=True` it replaces them by their moving average
        of a constant (every `ema_overwrite_frequency` steps and at the end
        of fit()), which float rounding makes differ in the last bits;
        untrained heads must not change at all. `None` when not needed.
        """
        shared = self._mtl.optimizers.shared
        untrained = [s.head for s in self._mtl.specs if not s.trained]
        if shared is None or not _optimizer_setup.uses_ema(shared) or not untrained:
            return None
        return _KeepVariables([v for head in untrained for v in head.trainable_variables])

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Predicts every head's output: `{task: array}`.

        As `keras.Model.predict`; in addition, for a trunk with named inputs
        `x` may be a pandas DataFrame whose columns are read by name (text
        columns as strings), and NumPy arrays of text are passed as strings.

        Args:
            x: What the trunk takes (see `fit`), or a dataset / PyDataset.
            batch_size, verbose, steps, callbacks: As in `keras.Model.predict`.

        Returns:
            Dict `{task: np.ndarray}`.

        Example:

        >>> import numpy as np, keras_mtl
        >>> model = keras_mtl.MultiTaskModel([4], {"a": 1, "b": 2})
        >>> {t: p.shape for t, p in model.predict(np.ones((3, 5)), verbose=0).items()}
        {'a': (3, 1), 'b': (3, 2)}
        """
        x = _standardize.predict_inputs(self, x)
        return super().predict(
            x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks
        )

    def evaluate(
        self,
        x=None,
        y=None,
        batch_size=None,
        verbose="auto",
        sample_weight=None,
        steps=None,
        callbacks=None,
        return_dict=False,
        **kwargs,
    ):
        """Computes every task's loss and metrics, as `keras.Model.evaluate`.

        Always evaluates all tasks whose labels are given (missing labels
        are ignored); `loss` is the static `loss_weights` sum of the trained
        tasks' losses plus regularization, as the training `loss` is, so
        labels of an untrained task change only that task's metrics. A task
        without labels logs NaN. Training logs such as `<task>_updates` are
        not reported.

        Args:
            x, y, batch_size, verbose, sample_weight, steps, callbacks, return_dict: As in
                `keras.Model.evaluate`, with `y` and `sample_weight` as in `fit`.
            **kwargs: Keras-internal arguments.

        Returns:
            A scalar list, or a dict of logs with `return_dict=True`.

        Example:

        >>> import numpy as np, keras_mtl
        >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
        >>> model.compile(optimizer="adam", loss="mse", metrics={"a": ["mae"]})
        >>> x = np.random.rand(16, 3).astype("float32")
        >>> sorted(model.evaluate(x, {"a": x.sum(1), "b": x[:, 0]}, return_dict=True, verbose=0))
        ['a_loss', 'a_mae', 'b_loss', 'loss']
        """
        self._check_compiled("evaluate")
        x, y, sample_weight = self._standardize(x, y, sample_weight, "evaluate", steps)
        # As in fit(): in-memory arrays stay with the model, whose test
        # steps gather their rows (no tf.data per batch).
        source, batches, _ = _array_source.for_fit(
            self, x, y, sample_weight, batch_size, steps, False, 0.0
        )
        if source is not None:
            x, y, sample_weight, batch_size = batches, None, None, None
            # fit()'s validation data: not the dataset Keras made of it.
            kwargs.pop("_use_cached_eval_dataset", None)
        with _array_source.held(self, "_mtl_eval_source", source):
            return super().evaluate(
                x,
                y,
                batch_size=batch_size,
                verbose=verbose,
                sample_weight=sample_weight,
                steps=steps,
                callbacks=callbacks,
                return_dict=return_dict,
                **kwargs,
            )

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """Runs one training step on one batch, as `keras.Model.train_on_batch`.

        Takes `y`, `sample_weight` and `class_weight` as `fit` does, with the
        same checks.

        Args:
            x, y, sample_weight, class_weight: As in `fit`.
            return_dict: Whether to return the logs as a dict.

        Returns:
            The logs: a scalar list, or a dict with `return_dict=True`.

        Example:

        >>> import numpy as np, keras_mtl
        >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
        >>> model.compile(optimizer="sgd", loss="mse", mode="alternating", seed=0)
        >>> x = np.random.rand(8, 3).astype("float32")
        >>> logs = model.train_on_batch(x, {"a": x.sum(1), "b": None}, return_dict=True)
        >>> logs["a_updates"], logs["b_updates"]
        (1.0, 0.0)
        """
        self._check_compiled("train_on_batch")
        x, y, sample_weight = self._standardize(
            x, y, sample_weight, "train_on_batch", class_weight=class_weight
        )
        _optimizer_setup.build_optimizers(self)
        self._check_trainable_state("train_on_batch")
        return super().train_on_batch(x, y, sample_weight=sample_weight, return_dict=return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        """Evaluates one batch, as `keras.Model.test_on_batch`.

        Args:
            x, y, sample_weight: As in `evaluate`.
            return_dict: Whether to return the logs as a dict.

        Returns:
            The logs: a scalar list, or a dict with `return_dict=True`.

        Example:

        >>> import numpy as np, keras_mtl
        >>> model = keras_mtl.MultiTaskModel([8], {"a": 1, "b": 1})
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> x = np.random.rand(8, 3).astype("float32")
        >>> sorted(model.test_on_batch(x, {"a": x.sum(1), "b": None}, return_dict=True))
        ['a_loss', 'b_loss', 'loss']
        """
        self._check_compiled("test_on_batch")
        x, y, sample_weight = self._standardize(x, y, sample_weight, "test_on_batch")
        return super().test_on_batch(x, y, sample_weight=sample_weight, return_dict=return_dict)


class _KeepVariables(keras.callbacks.Callback):
    """Restores `variables` at the end of fit() to their values at its start
    (after other callbacks, such as BackupAndRestore, set them)."""

    def __init__(self, variables):
        super().__init__()
        self._variables = variables
        self._values = None

    def on_train_begin(self, logs=None):
        self._values = [v.numpy() for v in self._variables]

    def on_train_end(self, logs=None):
        for variable, value in zip(self._variables, self._values):
            variable.assign(value)


def _with_callback(callbacks, callback):
    if isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks.append(callback)
        return callbacks
    return list(callbacks or []) + [callback]


def _split_validation(validation_data):
    if isinstance(validation_data, (tuple, list)) and len(validation_data) in (2, 3):
        x, y = validation_data[0], validation_data[1]
        sw = validation_data[2] if len(validation_data) == 3 else None
        return x, y, sw
    return validation_data, None, None
