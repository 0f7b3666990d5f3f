"""Training speed and memory of keras_mtl against plain Keras and the tutorial's loop.

One run measures, on the same machine and the same synthetic data, how fast
each way of training the same network goes (steps/s, examples/s), how much
memory it takes (peak RSS), and prints a Markdown table with ratio columns
and PASS/MISS lines for the speed targets of the issue.

Cases (each at `steps_per_execution` 1 and 32, on each model):

* `functional`: a Keras functional model with one output per task, compiled
  with `loss=dict, loss_weights=dict`; the reference for joint training.
* `tutorial_loop`: the tutorial's alternating loop written in TF2 the obvious
  way: one `tf.function` per task (GradientTape + its own Adam), a numpy coin
  flip choosing which one to call each step, fed from a Python list of
  tensors built before timing (its best case). It has no
  `steps_per_execution`: it is timed once and shown in both blocks.
* `mtl_joint`: `keras_mtl.MultiTaskModel`, `mode="joint"`.
* `mtl_alternating`: `mode="alternating"`, one shared Adam.
* `mtl_alt_task_opts`: `mode="alternating"`, one Adam per task.
* `mtl_alt_interleave`: `mode="alternating"` fed by `keras_mtl.data.interleave`
  (one dataset per task, `fit(steps_per_epoch=...)`).
* `mtl_alt_interleave_1thread`: the same pipeline on one private tf.data
  thread with autotune off (not a target row: it shows how much of the
  interleave row's cost on few cores is tf.data threads competing).
* `mtl_weighting=<method>`: one joint row per weighting method named in
  `--weighting` (`compile(mode="joint", weighting=<method>)`); by default
  every method on the seed model in a full run. See the EXTENSION POINT
  below.

Models: `seed` is the tutorial's network (10 inputs, a shared Dense 20 ReLU,
two heads Dense 20 ReLU, batch 32); `wide` has 256 inputs, a shared Dense 1024
ReLU -> Dense 1024 ReLU trunk and 8 heads Dense 256 ReLU -> Dense 10 (batch
256). Both use the Dense shortcut `MultiTaskModel(trunk_units=[...])`. `conv`
is a small convolutional network on synthetic 16x16x3 float32 images: a
shared Conv2D 16 3x3 ReLU (same padding) -> MaxPool 2x2 -> Conv2D 32 3x3
ReLU -> GlobalAveragePooling2D trunk and 3 linear heads Dense 10 (batch 64);
keras_mtl gets the trunk as a layer, `MultiTaskModel(keras.Sequential([...]),
heads)`, and `functional` lays the same layers out inline. It runs only when
named (`--models conv`, or `all`), and only `functional`, `mtl_joint` and (full
run) `mtl_alternating`: its one target is joint vs functional. `mmoe` has
64 inputs, a Multi-gate Mixture-of-Experts trunk (8 experts Dense 64 ReLU, one
softmax gate Dense 8 without bias per task) and 4 heads Dense 256 ReLU ->
Dense 256 ReLU -> Dense 1 (batch 256), heads large next to the experts;
keras_mtl gets `keras_mtl.layers.MMoE(8, expert_units=[64])` as its trunk,
and `functional` is a hand-written functional MMoE (Dense experts, per-task
Dense(8, use_bias=False, softmax) gates, mixture = sum over experts of
gate-weighted expert outputs, the same heads) with one output per task. It
runs only when named (`--models mmoe`, or `all`), rows `functional`,
`mtl_joint` and `mtl_alternating` in every plan; its targets are joint vs
functional and alternating > joint (an alternating step of task t updates
every expert but only t's gate and head). Every loss is MSE, every optimizer
Adam, XLA is off everywhere (Keras's default on CPU). The
fit-based cases read a cached, prefetched `tf.data.Dataset` built before
timing, with `verbose=0`. Each case draws its own initial weights (the
global seed is set once per model, not per case).

Method (these machines are noisy, about +-15% between runs):

1. Build and warm up: every case is built and trained for one epoch, so
   tracing and filling the dataset caches stay out of the measurement. An
   epoch is a fixed number of steps, the same for every case of a model.
2. Interleaved rounds: each round trains one epoch of every case (one
   `fit(epochs=1)` call per fit-based case; the order rotates by one case
   per round), so a slow spell of the machine hits every case alike.
3. What is timed (`time.perf_counter`): for a fit-based case, the epoch from
   the start of its SECOND execution (`on_train_batch_begin` of step `spe`)
   to `on_epoch_end`: the steady state of a multi-epoch `fit()`. The part
   before it (fit's iterator start plus the first execution) is reported
   separately as "start ms", the time it took beyond its steps' steady-state
   cost: one-off per `fit()` call for the interleaved (infinite) dataset,
   per epoch for a finite dataset. The tutorial loop is timed around its
   whole Python loop (it has no start-up).
4. steps/s and examples/s are the median over rounds; every ratio is the
   median over rounds of the ratio of steps/s within the round.
5. Peak memory is measured per case in a fresh process (this script with a
   hidden `--memory-case`) that builds the case, trains 2 epochs of 16 steps
   and reads its peak RSS (`VmHWM` in /proc/self/status).

Run from the repository root:

    python benchmarks/bench_training.py                   # full run (< 15 min on 2 cores)
    python benchmarks/bench_training.py --quick           # < 2 min on 2 cores
    python benchmarks/bench_training.py --models seed --rounds 9 --out results.md
    python benchmarks/bench_training.py --models conv     # the conv model (< 8 min on 2 cores)
    python benchmarks/bench_training.py --quick --models conv   # about 2 min on 2 cores
    python benchmarks/bench_training.py --models mmoe     # MMoE model (< 11 min on 2 busy cores)
    python benchmarks/bench_training.py --quick --models mmoe   # 2-3.5 min on 2 cores

See benchmarks/README.md for what every column means.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import argparse  # noqa: E402
import concurrent.futures  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_mtl  # noqa: E402

DATA_SEED = 0
TASK_SEED = 0
TUTORIAL_SEED = 0
MEMORY_STEPS = 16  # per epoch, in every case and plan
MEMORY_EPOCHS = 2
MEMORY_PROCESSES = 2  # memory cases measured side by side
SPES = (1, 32)


# ----------------------------------------------------------------------
# Models and run plans
# ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The network every case of a model trains."""

    name: str
    inputs: int | tuple  # features (dense trunk), or an image shape (H, W, C) (conv trunk)
    trunk_units: tuple  # Dense units (dense trunk), or Conv2D filters (conv trunk)
    tasks: tuple
    head_hidden: tuple
    head_units: int
    head_activation: str | None
    batch_size: int
    trunk: str = "dense"  # "dense": Dense ReLU layers; "conv": see `_trunk_layers`; "mmoe"
    num_experts: int = 0  # mmoe: experts, each Dense `trunk_units` ReLU; one gate per task

    @property
    def input_shape(self):
        """One example's shape."""
        return (self.inputs,) if isinstance(self.inputs, int) else tuple(self.inputs)

    @property
    def features(self):
        """The width of the trunk's output (Dense units, or filters after pooling)."""
        return self.trunk_units[-1]

    def describe(self):
        head = " -> ".join(f"Dense {u}" for u in self.head_hidden + (self.head_units,))
        if self.trunk == "conv":
            inputs = "x".join(map(str, self.input_shape)) + " float32 images"
            convs = [f"Conv2D {f} 3x3 same ReLU" for f in self.trunk_units]
            trunk = " -> MaxPool 2x2 -> ".join(convs) + " -> GlobalAveragePooling2D"
        elif self.trunk == "mmoe":
            inputs = f"{self.inputs} inputs"
            expert = " -> ".join(f"Dense {u} ReLU" for u in self.trunk_units)
            trunk = (
                f"MMoE ({self.num_experts} experts {expert}, {len(self.tasks)} softmax "
                f"gates Dense {self.num_experts} without bias)"
            )
        else:
            inputs = f"{self.inputs} inputs"
            trunk = " -> ".join(f"Dense {u} ReLU" for u in self.trunk_units)
        return (
            f"{inputs} -> shared {trunk} -> {len(self.tasks)} heads ({head}, "
            f"output {self.head_activation or 'linear'}), batch {self.batch_size}, MSE, Adam"
        )


MODELS = {
    "seed": ModelSpec("seed", 10, (20,), ("Y1", "Y2"), (), 20, "relu", 32),
    "wide": ModelSpec(
        "wide", 256, (1024, 1024), tuple(f"t{i}" for i in range(8)), (256,), 10, None, 256
    ),
    "conv": ModelSpec(
        "conv", (16, 16, 3), (16, 32), ("t0", "t1", "t2"), (), 10, None, 64, trunk="conv"
    ),
    "mmoe": ModelSpec(
        "mmoe",
        64,
        (64,),
        tuple(f"t{i}" for i in range(4)),
        (256, 256),
        1,
        None,
        256,
        trunk="mmoe",
        num_experts=8,
    ),
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much to run."""

    label: str
    steps: dict  # model -> steps per epoch (at least 2 * the largest spe)
    rounds: dict  # model -> timed rounds
    spes: dict  # model -> steps_per_execution values
    memory: str  # "all": every case; "targets": functional and mtl_joint at the largest spe
    skip_rows: dict = dataclasses.field(default_factory=dict)  # model -> rows not run


# The conv model has one target (joint vs functional): it runs functional,
# mtl_joint and, in a full run, mtl_alternating (for information).
CONV_SKIP = (
    "tutorial_loop",
    "mtl_alt_task_opts",
    "mtl_alt_interleave",
    "mtl_alt_interleave_1thread",
)
# The mmoe model has two targets (joint vs functional, alternating vs joint):
# it runs functional, mtl_joint and mtl_alternating, in every plan.
MMOE_SKIP = CONV_SKIP

PLANS = {
    "full": Plan(
        "full",
        {"seed": 1024, "wide": 64, "conv": 256, "mmoe": 256},
        {"seed": 5, "wide": 5, "conv": 5, "mmoe": 5},
        {"seed": SPES, "wide": SPES, "conv": SPES, "mmoe": SPES},
        "all",
        skip_rows={"conv": CONV_SKIP, "mmoe": MMOE_SKIP},
    ),
    # Under 2 minutes for seed + wide: only the rows the targets need, and the
    # wide model (seconds per epoch, several more to trace) only at spe=32, 2
    # rounds. conv (about 15 ms a step on 2 cores): spe=32 only, its two
    # target rows, 5 short rounds (about 2 min alone, memory included).
    # mmoe: spe=32 only, its three rows (both targets need them), 5 rounds.
    "quick": Plan(
        "quick",
        {"seed": 128, "wide": 64, "conv": 128, "mmoe": 128},
        {"seed": 3, "wide": 2, "conv": 5, "mmoe": 5},
        {"seed": SPES, "wide": (32,), "conv": (32,), "mmoe": (32,)},
        "targets",
        skip_rows={
            "seed": ("mtl_alt_task_opts", "mtl_alt_interleave_1thread"),
            "wide": ("tutorial_loop", "mtl_alt_task_opts", "mtl_alt_interleave_1thread"),
            "conv": CONV_SKIP + ("mtl_alternating",),
            "mmoe": MMOE_SKIP,
        },
    ),
    "smoke": Plan(
        "smoke",
        {"seed": 64, "wide": 64, "conv": 64, "mmoe": 64},
        {"seed": 1, "wide": 1, "conv": 1, "mmoe": 1},
        {"seed": SPES, "wide": SPES, "conv": SPES, "mmoe": SPES},
        "targets",
        skip_rows={"conv": CONV_SKIP, "mmoe": MMOE_SKIP},
    ),
}
DEFAULT_MODELS = ("seed", "wide")  # conv, mmoe: ask for them with --models


# ----------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------
def make_data(spec, steps):
    """Synthetic inputs and one label array per task: `steps` full batches."""
    rng = np.random.default_rng(DATA_SEED)
    n = steps * spec.batch_size
    x = rng.standard_normal((n,) + spec.input_shape, dtype=np.float32)
    y = {t: rng.standard_normal((n, spec.head_units), dtype=np.float32) for t in spec.tasks}
    return x, y


def joint_dataset(spec, data):
    """All tasks' labels in every batch; cached and prefetched."""
    x, y = data
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    return ds.batch(spec.batch_size, drop_remainder=True).cache().prefetch(tf.data.AUTOTUNE)


def task_datasets(spec, data):
    """One cached dataset per task (`interleave` prefetches the mix)."""
    x, y = data
    return {
        t: tf.data.Dataset.from_tensor_slices((x, y[t]))
        .batch(spec.batch_size, drop_remainder=True)
        .cache()
        for t in spec.tasks
    }


# ----------------------------------------------------------------------
# Trainers: one epoch per `run_epoch()`
# ----------------------------------------------------------------------
@dataclasses.dataclass
class EpochTime:
    """One timed epoch: `steps` steady-state steps took `seconds`."""

    seconds: float
    steps: int
    start_seconds: float | None = None  # fit: epoch begin -> end of the first execution
    start_steps: int = 0  # the steps inside `start_seconds`

    @property
    def steps_per_s(self):
        return self.steps / self.seconds

    @property
    def start_overhead_ms(self):
        """The start's time beyond what its steps cost in the steady state."""
        if self.start_seconds is None:
            return None
        return 1000 * (self.start_seconds - self.start_steps / self.steps_per_s)


class _EpochTimer(keras.callbacks.Callback):
    """Marks the epoch's begin, the begin of its second execution, and its end.

    Only epoch hooks and `on_train_batch_begin` (always called synchronously)
    are overridden, so Keras keeps dispatching batch-end callbacks
    asynchronously exactly as it does without this callback.
    """

    def __init__(self, spe):
        super().__init__()
        self.spe = spe

    def on_epoch_begin(self, epoch, logs=None):
        self.begin = time.perf_counter()
        self.steady = None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.spe:
            self.steady = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.end = time.perf_counter()


class FitTrainer:
    """Trains a compiled Keras model one `fit(epochs=1)` call at a time."""

    def __init__(self, model, dataset, steps, spe, steps_per_epoch=None):
        self.model, self.dataset, self.steps, self.spe = model, dataset, steps, spe
        self.steps_per_epoch = steps_per_epoch
        self.timer = _EpochTimer(spe)

    def train_epoch(self):
        self.model.fit(
            self.dataset,
            epochs=1,
            steps_per_epoch=self.steps_per_epoch,
            shuffle=False,
            verbose=0,
            callbacks=[self.timer],
        )

    def run_epoch(self):
        self.train_epoch()
        t = self.timer
        if t.steady is None:
            raise RuntimeError(f"the epoch ran fewer than 2 executions of {self.spe} steps")
        return EpochTime(t.end - t.steady, self.steps - self.spe, t.steady - t.begin, self.spe)


class LoopTrainer:
    """A hand-written loop: `epoch_fn()` trains `steps` steps."""

    def __init__(self, epoch_fn, steps):
        self.epoch_fn, self.steps = epoch_fn, steps

    def train_epoch(self):
        self.epoch_fn()

    def run_epoch(self):
        start = time.perf_counter()
        self.train_epoch()
        return EpochTime(time.perf_counter() - start, self.steps)


# ----------------------------------------------------------------------
# Case builders: (spec, data, spe) -> trainer
# ----------------------------------------------------------------------
def _losses(spec):
    return {t: "mse" for t in spec.tasks}


def _loss_weights(spec):
    return {t: 1.0 for t in spec.tasks}


def _num_steps(spec, data):
    return len(data[0]) // spec.batch_size


def _trunk_layers(spec):
    if spec.trunk == "conv":  # Conv2D -> MaxPool -> Conv2D -> ... -> GlobalAveragePooling2D
        layers = []
        for i, filters in enumerate(spec.trunk_units):
            if i:
                layers.append(keras.layers.MaxPooling2D(2, name=f"shared_pool_{i}"))
            layers.append(
                keras.layers.Conv2D(
                    filters, 3, padding="same", activation="relu", name=f"shared_{i}"
                )
            )
        return layers + [keras.layers.GlobalAveragePooling2D(name="shared_gap")]
    return [
        keras.layers.Dense(u, activation="relu", name=f"shared_{i}")
        for i, u in enumerate(spec.trunk_units)
    ]


def _head_layers(spec, task):
    hidden = [
        keras.layers.Dense(u, activation="relu", name=f"{task}_hidden_{i}")
        for i, u in enumerate(spec.head_hidden)
    ]
    return hidden + [
        keras.layers.Dense(spec.head_units, activation=spec.head_activation, name=task)
    ]


def _functional_mmoe(spec, inputs):
    """A hand-written MMoE: {task: sum_i gate_task(x)_i * expert_i(x)}.

    Experts are Dense ReLU layers, each task's gate a Dense(num_experts,
    use_bias=False, softmax) on the inputs, as in `keras_mtl.layers.MMoE`
    (whose default has no gate bias).
    """
    experts = []
    for i in range(spec.num_experts):
        h = inputs
        for j, units in enumerate(spec.trunk_units):
            h = keras.layers.Dense(units, activation="relu", name=f"expert_{i}_{j}")(h)
        experts.append(h)
    stacked = keras.ops.stack(experts, axis=1)  # (batch, experts, units)
    features = {}
    for task in spec.tasks:
        gate = keras.layers.Dense(
            spec.num_experts, use_bias=False, activation="softmax", name=f"gate_{task}"
        )(inputs)
        features[task] = keras.ops.sum(keras.ops.expand_dims(gate, -1) * stacked, axis=1)
    return features


def build_functional(spec, data, spe):
    """Keras functional multi-output model, `compile(loss=dict, loss_weights=dict)`."""
    features = inputs = keras.Input(spec.input_shape)
    if spec.trunk == "mmoe":  # one representation per task
        features = _functional_mmoe(spec, inputs)
    else:
        for layer in _trunk_layers(spec):
            features = layer(features)
    outputs = {}
    for task in spec.tasks:
        h = features[task] if spec.trunk == "mmoe" else features
        for layer in _head_layers(spec, task):
            h = layer(h)
        outputs[task] = h
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss=_losses(spec),
        loss_weights=_loss_weights(spec),
        steps_per_execution=spe,
        jit_compile=False,
    )
    return FitTrainer(model, joint_dataset(spec, data), _num_steps(spec, data), spe)


def _tutorial_task_step(trunk, head, optimizer):
    """The tutorial's `Y_op` for one task, as a TF2 `tf.function`."""
    variables = trunk.trainable_variables + head.trainable_variables
    optimizer.build(variables)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            prediction = head(trunk(x, training=True), training=True)
            loss = tf.reduce_mean(tf.square(y - prediction))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    return step


def build_tutorial_loop(spec, data, spe=None):
    """One tf.function + Adam per task, a numpy coin flip per step, pre-built tensors."""
    del spe  # a Python loop, one step per call, in every block
    trunk = keras.Sequential(_trunk_layers(spec))
    trunk.build((None,) + spec.input_shape)
    step_fns, optimizers = [], []
    for task in spec.tasks:
        head = keras.Sequential(_head_layers(spec, task))
        head.build((None, spec.features))
        optimizers.append(keras.optimizers.Adam())
        step_fns.append(_tutorial_task_step(trunk, head, optimizers[-1]))

    x, y = data
    b = spec.batch_size
    batches = [
        (tf.constant(x[i : i + b]), [tf.constant(y[t][i : i + b]) for t in spec.tasks])
        for i in range(0, len(x), b)
    ]
    for fn, labels in zip(step_fns, batches[0][1]):  # trace every task, whatever the coin says
        fn(batches[0][0], labels)
    rng = np.random.default_rng(TUTORIAL_SEED)
    n_tasks = len(spec.tasks)

    def epoch():
        for inputs, labels in batches:
            task = rng.integers(n_tasks)
            step_fns[task](inputs, labels[task])
        optimizers[0].iterations.numpy()  # make sure the last step is done

    return LoopTrainer(epoch, len(batches))


def _mtl_model(spec):
    """The Dense shortcut `trunk=[units...]`, (conv) the trunk's layers as a Sequential,
    or (mmoe) `keras_mtl.layers.MMoE` (task names from the heads)."""
    head = keras_mtl.Head(
        spec.head_units, activation=spec.head_activation, hidden_units=list(spec.head_hidden)
    )
    heads = {t: head for t in spec.tasks}
    if spec.trunk == "conv":
        return keras_mtl.MultiTaskModel(keras.Sequential(_trunk_layers(spec), name="trunk"), heads)
    if spec.trunk == "mmoe":
        trunk = keras_mtl.layers.MMoE(spec.num_experts, expert_units=list(spec.trunk_units))
        return keras_mtl.MultiTaskModel(trunk, heads)
    return keras_mtl.MultiTaskModel(trunk_units=list(spec.trunk_units), heads=heads)


def _compile_mtl(model, spec, spe, **kwargs):
    model.compile(
        optimizer="adam",
        loss=_losses(spec),
        loss_weights=_loss_weights(spec),
        steps_per_execution=spe,
        jit_compile=False,
        **kwargs,
    )


def build_mtl_joint(spec, data, spe):
    """keras_mtl, mode="joint"."""
    model = _mtl_model(spec)
    _compile_mtl(model, spec, spe, mode="joint")
    return FitTrainer(model, joint_dataset(spec, data), _num_steps(spec, data), spe)


def build_mtl_alternating(spec, data, spe):
    """keras_mtl, mode="alternating", one shared Adam."""
    model = _mtl_model(spec)
    _compile_mtl(model, spec, spe, mode="alternating", seed=TASK_SEED)
    return FitTrainer(model, joint_dataset(spec, data), _num_steps(spec, data), spe)


def build_mtl_alt_task_opts(spec, data, spe):
    """keras_mtl, mode="alternating", one Adam per task (`task_optimizers`)."""
    model = _mtl_model(spec)
    _compile_mtl(
        model,
        spec,
        spe,
        mode="alternating",
        seed=TASK_SEED,
        task_optimizers={t: "adam" for t in spec.tasks},
    )
    return FitTrainer(model, joint_dataset(spec, data), _num_steps(spec, data), spe)


def build_mtl_alt_interleave(spec, data, spe):
    """keras_mtl, mode="alternating", fed by `keras_mtl.data.interleave`."""
    model = _mtl_model(spec)
    _compile_mtl(model, spec, spe, mode="alternating", seed=TASK_SEED)
    dataset = keras_mtl.data.interleave(
        task_datasets(spec, data), sampler="uniform", seed=TASK_SEED
    )
    steps = _num_steps(spec, data)
    return FitTrainer(model, dataset, steps, spe, steps_per_epoch=steps)


def build_mtl_alt_interleave_1thread(spec, data, spe):
    """Row 6 with the tf.data pipeline on one private thread, autotune off.

    Not a target row: it shows how much of row 6's cost on a machine with
    few cores is tf.data's threads competing with the training step (the
    setting suits cheap per-task pipelines only; see benchmarks/RESULTS.md).
    """
    trainer = build_mtl_alt_interleave(spec, data, spe)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.autotune.enabled = False
    trainer.dataset = trainer.dataset.with_options(options)
    return trainer


# ---- One row per weighting method -------------------------------------
# `--weighting uncertainty,pcgrad` (or `all`) adds a row
# `mtl_weighting=<method>` per method: a joint MultiTaskModel compiled with
# `weighting=<method>` (any name `keras_mtl.weighting.get` accepts). By
# default a full run has every method on the seed model. A method that
# fails to build or train is reported as FAILED in its row while the other
# rows still run. To give a method a speed target, add it to
# `evaluate_targets`.
def build_mtl_weighting(spec, data, spe, method):
    """keras_mtl, mode="joint", `compile(weighting=method)`."""
    model = _mtl_model(spec)
    try:
        _compile_mtl(model, spec, spe, mode="joint", weighting=method)
    except TypeError as e:
        if "weighting" not in str(e):
            raise
        raise NotImplementedError(
            f"this keras_mtl's MultiTaskModel.compile() has no `weighting` argument "
            f"(weighting={method!r})"
        ) from e
    return FitTrainer(model, joint_dataset(spec, data), _num_steps(spec, data), spe)


WEIGHTING_PREFIX = "mtl_weighting="
ALL_WEIGHTING = (
    "uncertainty",
    "dwa",
    "rlw",
    "famo",
    "pcgrad",
    "mgda",
    "cagrad",
    "gradnorm",
    "upgrad",
)


def row_builders(weighting_methods=()):
    """Row name -> builder(spec, data, spe), in table order."""
    rows = {
        "functional": build_functional,
        "tutorial_loop": build_tutorial_loop,
        "mtl_joint": build_mtl_joint,
        "mtl_alternating": build_mtl_alternating,
        "mtl_alt_task_opts": build_mtl_alt_task_opts,
        "mtl_alt_interleave": build_mtl_alt_interleave,
        "mtl_alt_interleave_1thread": build_mtl_alt_interleave_1thread,
    }
    for method in weighting_methods:
        rows[WEIGHTING_PREFIX + method] = lambda spec, data, spe, m=method: build_mtl_weighting(
            spec, data, spe, m
        )
    return rows


@dataclasses.dataclass
class Case:
    """A built case of one model: a row at one steps_per_execution."""

    model: str
    row: str
    spe: int | None  # None: no steps_per_execution (the tutorial loop)
    trainer: object

    @property
    def key(self):
        return (self.model, self.row, self.spe)


def case_keys(model, spes, rows):
    """(model, row, spe) of every case; the tutorial loop once, with spe None."""
    keys = [(model, "tutorial_loop", None)] if "tutorial_loop" in rows else []
    for spe in spes:
        keys += [(model, row, spe) for row in rows if row != "tutorial_loop"]
    return keys


def build_case(key, rows, steps):
    model, row, spe = key
    spec = MODELS[model]
    return Case(model, row, spe, rows[row](spec, make_data(spec, steps), spe))


# ----------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------
_T0 = time.perf_counter()


def log(message):
    print(f"[{time.perf_counter() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def _error_text(error):
    return f"{type(error).__name__}: {error}".splitlines()[0][:200]


def build_and_warm_up(keys, rows, steps, failures):
    """Builds every case and trains it one epoch; failed cases go to `failures`."""
    cases = []
    for key in keys:
        start = time.perf_counter()
        try:
            case = build_case(key, rows, steps)
            case.trainer.run_epoch()
        except Exception as e:  # reported in the table; the other cases go on
            failures[key] = _error_text(e)
            log(f"  FAILED {key}: {failures[key]}")
            if not isinstance(e, NotImplementedError):
                traceback.print_exc(file=sys.stderr)
            continue
        cases.append(case)
        log(f"  built + warmed up {key[1]} spe={key[2]} in {time.perf_counter() - start:.1f}s")
    return cases


def time_rounds(cases, rounds, failures):
    """`EpochTime`s of every case, one epoch per case per round.

    The order rotates by one case per round. A case that fails mid-way is
    dropped and reported in `failures`.
    """
    times = {c.key: [] for c in cases}
    for r in range(rounds):
        live = [c for c in cases if c.key not in failures]
        shift = r % len(live) if live else 0
        for case in live[shift:] + live[:shift]:
            gc.collect()
            try:
                times[case.key].append(case.trainer.run_epoch())
            except Exception as e:
                failures[case.key] = _error_text(e)
                log(f"  FAILED {case.key} in round {r + 1}: {failures[case.key]}")
        log(f"  round {r + 1}/{rounds} done")
    return {k: v for k, v in times.items() if k not in failures}


# ----------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------
def _status_mib(field):
    """`VmRSS` / `VmHWM` of this process in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    if field == "VmHWM":  # no /proc: ru_maxrss is KiB on Linux, bytes on macOS
        scale = 1024 * 1024 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
    return float("nan")


def memory_child(case_arg, steps, weighting_methods):
    """In the fresh process: build one case, train it, print peak RSS as JSON."""
    model, row, spe = case_arg.split("/")
    key = (model, row, None if spe == "none" else int(spe))
    keras.utils.set_random_seed(DATA_SEED)
    start_mib = _status_mib("VmRSS")
    case = build_case(key, row_builders(weighting_methods), steps)
    for _ in range(MEMORY_EPOCHS):
        case.trainer.train_epoch()
    print(json.dumps({"peak_mib": _status_mib("VmHWM"), "start_mib": start_mib}))


def memory_keys(keys, plan):
    """The cases whose memory this plan measures (weighting rows: speed only)."""
    keys = [k for k in keys if not k[1].startswith(WEIGHTING_PREFIX)]
    if plan.memory == "all":
        return list(keys)
    top = {}
    for model, _, spe in keys:
        if spe is not None:
            top[model] = max(spe, top.get(model, spe))
    return [k for k in keys if k[1] in ("functional", "mtl_joint") and k[2] == top[k[0]]]


def measure_memory(key, steps, weighting_methods):
    """Peak RSS of one case, from a fresh Python process running this script."""
    model, row, spe = key
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--memory-case",
        f"{model}/{row}/{'none' if spe is None else spe}",
        "--memory-steps",
        str(steps),
        "--weighting",
        ",".join(weighting_methods),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------
def _ratio(results, model, a, b):
    """Median over rounds of steps/s(a) / steps/s(b), with min and max; None if missing.

    `a` and `b` are `(row, spe)`.
    """
    ta, tb = results.get((model,) + a), results.get((model,) + b)
    if not ta or not tb:
        return None
    ratios = [ea.steps_per_s / eb.steps_per_s for ea, eb in zip(ta, tb)]
    return statistics.median(ratios), min(ratios), max(ratios)


def _fmt_rate(value):
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _fmt_ratio(ratio):
    return "" if ratio is None else f"{ratio[0]:.2f}"


ALTERNATING_ROWS = (
    "mtl_alternating",
    "mtl_alt_task_opts",
    "mtl_alt_interleave",
    "mtl_alt_interleave_1thread",
)


def _ratio_cells(results, model, row, spe):
    """vs functional | vs mtl_joint | vs tutorial_loop | interleave / alt."""
    case = (row, None if row == "tutorial_loop" else spe)
    alternating = row in ALTERNATING_ROWS

    def cell(reference, show=True):
        return _fmt_ratio(_ratio(results, model, case, reference)) if show else ""

    return [
        cell(("functional", spe)),
        cell(("mtl_joint", spe), alternating or row.startswith(WEIGHTING_PREFIX)),
        cell(("tutorial_loop", None), alternating),
        cell(("mtl_alternating", spe), row.startswith("mtl_alt_interleave")),
    ]


def speed_table(model, spes, rows, results, failures):
    spec = MODELS[model]
    lines = [
        "| spe | case | steps/s | examples/s | spread | start ms | vs functional | vs mtl_joint "
        "| vs tutorial_loop | interleave / alt |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for spe in spes:
        for row in rows:
            key = (model, row, None if row == "tutorial_loop" else spe)
            name = row + (" †" if row == "tutorial_loop" else "")
            if key in failures:
                lines.append(f"| {spe} | {name} | FAILED: {failures[key]} |" + " |" * 7)
                continue
            if key not in results:
                continue
            rates = [e.steps_per_s for e in results[key]]
            median = statistics.median(rates)
            starts = [e.start_overhead_ms for e in results[key] if e.start_seconds is not None]
            cells = [
                str(spe),
                name,
                _fmt_rate(median),
                _fmt_rate(median * spec.batch_size),
                f"{(max(rates) - min(rates)) / median:.0%}",
                f"{max(statistics.median(starts), 0):.0f}" if starts else "—",
            ] + _ratio_cells(results, model, row, spe)
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def memory_table(model, memory):
    entries = {k: v for k, v in memory.items() if k[0] == model}
    if not entries:
        return []
    lines = [
        "| case | spe | peak RSS MiB | above start MiB | peak / functional |",
        "|---|---:|---:|---:|---:|",
    ]
    top_spe = max((s for _, _, s in entries if s is not None), default=None)
    for (_, row, spe), result in entries.items():
        shown_spe = "—" if spe is None else spe
        if "error" in result:
            lines.append(f"| {row} | {shown_spe} | FAILED: {result['error']} | | |")
            continue
        ref = memory.get((model, "functional", top_spe if spe is None else spe), {})
        ratio = f"{result['peak_mib'] / ref['peak_mib']:.2f}" if "peak_mib" in ref else ""
        lines.append(
            f"| {row} | {shown_spe} | {result['peak_mib']:,.0f} | "
            f"{result['peak_mib'] - result['start_mib']:,.0f} | {ratio} |"
        )
    return lines


def _target_line(name, ratio, bound, why_missing="", strict=False):
    """PASS when ratio >= bound (or ratio > bound with `strict`)."""
    if ratio is None:
        return f"- SKIP  {name}: not measured{why_missing}"
    passed = ratio[0] > bound if strict else ratio[0] >= bound
    return (
        f"- {'PASS' if passed else 'MISS'}  {name}: {ratio[0]:.2f}x (per round "
        f"{ratio[1]:.2f}–{ratio[2]:.2f}), target {'>' if strict else '>='} {bound}x"
    )


ALTERNATING_OVER_JOINT = {"seed": 1.0, "wide": 1.8}


def speed_checks(model):
    """(row, reference, bound, strict) of the model's speed targets at every spe.

    Every model: joint >= 0.97x functional. The alternating and interleave
    targets are the seed and wide models' (conv has the joint one only);
    mmoe has alternating > joint (strictly: its alternating step skips
    three of the four large heads and gates, so it must be faster).
    """
    checks = [("mtl_joint", "functional", 0.97, False)]
    if model in ALTERNATING_OVER_JOINT:
        checks += [
            ("mtl_alternating", "mtl_joint", ALTERNATING_OVER_JOINT[model], False),
            ("mtl_alt_interleave", "mtl_alternating", 0.9, False),
        ]
    if model == "mmoe":
        checks.append(("mtl_alternating", "mtl_joint", 1.0, True))
    return checks


def evaluate_targets(models, spes, results, memory):
    """The issue's targets, as PASS / MISS / SKIP lines (medians over rounds)."""
    lines = []
    for model in models:
        for spe in SPES:
            why = "" if spe in spes[model] else f" (spe={spe} not run for {model} in this plan)"
            checks = speed_checks(model)
            for row, reference, bound, strict in checks:
                r = _ratio(results, model, (row, spe), (reference, spe))
                lines.append(
                    _target_line(
                        f"{model} spe={spe}: {row} / {reference} steps/s", r, bound, why, strict
                    )
                )
        if model == "seed":
            r = _ratio(results, model, ("mtl_alternating", 32), ("tutorial_loop", None))
            lines.append(
                _target_line("seed spe=32: mtl_alternating / tutorial_loop steps/s", r, 0.9)
            )
    for (model, row, spe), joint in memory.items():
        if row != "mtl_joint":
            continue
        ref = memory.get((model, "functional", spe), {})
        name = f"{model} spe={spe}: peak RSS mtl_joint / functional"
        if "peak_mib" not in joint or "peak_mib" not in ref:
            lines.append(f"- SKIP  {name}: a memory case failed")
            continue
        ratio = joint["peak_mib"] / ref["peak_mib"]
        verdict = "PASS" if ratio <= 1.1 else "MISS"
        lines.append(f"- {verdict}  {name}: {ratio:.2f}x, target <= 1.1x")
    return lines


# ----------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------
def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _git_revision():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + (" + uncommitted changes" if dirty else "")


def machine_description():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return [
        f"- command: `{shlex.join([sys.executable] + sys.argv)}`",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {_cpu_model()}, {cores} cores usable ({os.cpu_count()} online), "
        f"{platform.system()} {platform.release()}; load average at start: {load}",
        f"- Python {platform.python_version()}, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}, keras_mtl {keras_mtl.__version__} "
        f"(git {_git_revision()}), NumPy {np.__version__}",
    ]


FOOTNOTES = [
    "† `tutorial_loop` has no steps_per_execution (a Python loop, one step per call): it is "
    "timed once per round and shown in every spe block.",
    "",
    "steps/s, examples/s: median over rounds of the steady state (a fit-based epoch is timed "
    "from the start of its second execution to its end). spread: (max - min) / median of "
    "steps/s over rounds. start ms: median time of the iterator start plus the first "
    "execution, beyond what those steps cost in the steady state (paid once per fit() call "
    "for the interleaved, infinite dataset; once per epoch for a finite one). Ratios: median "
    "over rounds of the ratio of steps/s within a round; 'vs functional', 'vs mtl_joint' "
    "(alternating and weighting rows) and 'interleave / alt' (over mtl_alternating) compare "
    "the same spe.",
]


def report(header, plan, models, spes, rows, results, failures, memory, memory_note):
    lines = ["# keras_mtl training benchmark", ""] + header
    lines += [f"- plan: {plan.label}; one warm-up epoch per case, then timed rounds", ""]
    for model in models:
        lines += [
            f"## {model}: {MODELS[model].describe()}",
            "",
            f"{plan.steps[model]} steps per epoch, {plan.rounds[model]} timed round(s), "
            f"steps_per_execution {', '.join(map(str, spes[model]))}.",
            "",
        ]
        lines += speed_table(model, spes[model], rows, results, failures) + [""]
        mem = memory_table(model, memory)
        if mem:
            lines += [f"Peak memory ({memory_note}):", ""] + mem + [""]
    lines += FOOTNOTES + [""]
    for model in models:
        skipped = [f"spe={s}" for s in SPES if s not in spes[model]]
        skipped += plan.skip_rows.get(model, ())
        if skipped:
            lines.append(f"Note: the {plan.label} plan skips, for {model}: {', '.join(skipped)}.")
    lines += ["", "## Targets", ""] + evaluate_targets(models, spes, results, memory)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Training speed and peak memory of keras_mtl vs Keras and the tutorial's loop.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short run (< 2 min on 2 cores for seed,wide; about 2 min for conv, 2-3.5 for "
        "mmoe): fewer steps and rounds, only the rows the targets use (no "
        "mtl_alt_task_opts, no mtl_alt_interleave_1thread; on wide no tutorial_loop "
        "either; on conv functional and mtl_joint only; on mmoe functional, mtl_joint "
        "and mtl_alternating), the wide, conv and mmoe models at spe=32 only; memory of "
        "functional and mtl_joint only",
    )
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help=f"comma-separated subset of: {','.join(MODELS)}, or 'all' (default: "
        f"{','.join(DEFAULT_MODELS)}; the conv and mmoe models run only when named)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="timed rounds for every model (default 5; with --quick 3 for seed, 2 for wide, "
        "5 for conv and mmoe)",
    )
    parser.add_argument("--out", help="also write the report (Markdown) to this file")
    parser.add_argument(
        "--weighting",
        default="auto",
        help="comma-separated weighting methods (names keras_mtl.weighting.get accepts, e.g. "
        "uncertainty,pcgrad, or 'all'), one joint row each on every model; 'auto' (the "
        "default): every method on the seed model in a full run, none with --quick; "
        "'' for none",
    )
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-case", help=argparse.SUPPRESS)
    parser.add_argument("--memory-steps", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.models == ["all"]:
        args.models = list(MODELS)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or not args.models:
        parser.error(
            f"--models takes a comma-separated subset of {','.join(MODELS)}; got {args.models}"
        )
    args.weighting_auto = args.weighting == "auto"
    if args.weighting_auto:
        args.weighting = "" if (args.quick or args.smoke) else "all"
    if args.weighting == "all":
        args.weighting = ",".join(ALL_WEIGHTING)
    args.weighting = [w.strip() for w in args.weighting.split(",") if w.strip()]
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be >= 1; got {args.rounds}")
    return args


def run_benchmark(args):
    plan = PLANS["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.weighting_auto and args.weighting:
        # Gradient methods on the wide model take T = 8 backward passes of a
        # 2.4M-parameter trunk per step: minutes per round. By default the
        # full run measures every method on the seed model only; ask for
        # the wide (or conv) model with --weighting all --models wide.
        skipped = {m: tuple(plan.skip_rows.get(m, ())) for m in MODELS}
        for model in MODELS:
            if model != "seed":
                skipped[model] += tuple(WEIGHTING_PREFIX + w for w in args.weighting)
        plan = dataclasses.replace(plan, skip_rows=skipped)
    if args.rounds:
        plan = dataclasses.replace(plan, rounds={m: args.rounds for m in MODELS})
    header = machine_description()
    log("\n".join(header))
    rows = row_builders(args.weighting)
    spes = {m: plan.spes[m] for m in args.models}
    results, failures, memory, all_keys = {}, {}, {}, []
    for model in args.models:
        keras.utils.set_random_seed(DATA_SEED)
        model_rows = {r: b for r, b in rows.items() if r not in plan.skip_rows.get(model, ())}
        keys = case_keys(model, spes[model], model_rows)
        all_keys += keys
        log(
            f"[{model}] building and warming up {len(keys)} cases, "
            f"{plan.steps[model]} steps per epoch"
        )
        cases = build_and_warm_up(keys, rows, plan.steps[model], failures)
        log(f"[{model}] timing {plan.rounds[model]} round(s)")
        results.update(time_rounds(cases, plan.rounds[model], failures) if cases else {})
        del cases
        gc.collect()

    mem_keys = [k for k in memory_keys(all_keys, plan) if k not in failures]
    memory_note = f"a fresh process per case, {MEMORY_EPOCHS} epochs of {MEMORY_STEPS} steps; " + (
        "every case" if plan.memory == "all" else "functional and mtl_joint only"
    )
    log(
        f"measuring peak memory of {len(mem_keys)} case(s), one process each, "
        f"{MEMORY_PROCESSES} at a time"
    )
    # After all timing, so running them side by side disturbs no timing;
    # peak RSS does not depend on CPU contention.
    with concurrent.futures.ThreadPoolExecutor(MEMORY_PROCESSES) as pool:
        futures = {
            k: pool.submit(measure_memory, k, MEMORY_STEPS, args.weighting) for k in mem_keys
        }
        for key, future in futures.items():
            memory[key] = future.result()
            log(f"  {key}: {memory[key]}")

    text = report(header, plan, args.models, spes, rows, results, failures, memory, memory_note)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        log(f"report written to {args.out}")


def main(argv=None):
    args = parse_args(argv)
    if args.memory_case:
        memory_child(args.memory_case, args.memory_steps, args.weighting)
    else:
        run_benchmark(args)


if __name__ == "__main__":
    main()
