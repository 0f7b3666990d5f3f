"""Fused training (one XLA program per execution) against fit() and the hardware.

One run, same machine, same data (the models and data of
`bench_training.py`), interleaved rounds, medians of per-round ratios:

* `functional` / `functional_xla`: a Keras functional multi-output model,
  `jit_compile` off / on (its best setting is whichever is faster);
* `mtl_joint` / `mtl_alternating`: keras_mtl unfused (`jit_compile=False`);
* `mtl_joint_fused` / `mtl_alt_fused`: keras_mtl with `jit_compile=True`, so
  each execution's `steps_per_execution` steps are one XLA program;
* `xla_loop` (seed model only): the physical limit the issue names: an epoch
  as ONE XLA `while_loop` over pre-built tensors, one head per step chosen
  by a pre-drawn task index, one Adam per task, no `fit()` and no tf.data;
  `xla_loop_joint`: the same with the joint update (every head's loss
  summed, one Adam), the limit for joint mode and the functional model.

Also reported: compile/trace time (the warm-up epoch's time beyond a
steady epoch) and, in a fresh process per case, peak RSS.

Inputs (`--input`): `arrays` (default) calls every fit() with the NumPy
arrays, `batch_size` and `shuffle=True`, as most users do (keras_mtl then
gathers each step's rows inside the fused program; Keras's functional model
reads them through its array adapter); `dataset` feeds every fit() a
cached, prefetched `tf.data.Dataset` of batches, as bench_training (the
fused path then takes each execution's batches from `tf.data`).

Run from the repository root:

    python benchmarks/bench_fused.py                  # seed (spe 256) + wide (spe 32)
    python benchmarks/bench_fused.py --models seed --rounds 7 --out fused.md
    python benchmarks/bench_fused.py --input dataset     # fit() on a tf.data.Dataset
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from bench_training import (  # noqa: E402
    DATA_SEED,
    MODELS,
    TASK_SEED,
    FitTrainer,
    LoopTrainer,
    _head_layers,
    _losses,
    _mtl_model,
    _num_steps,
    _status_mib,
    _trunk_layers,
    build_functional,
    joint_dataset,
    log,
    machine_description,
    make_data,
)

# model -> (steps per epoch, steps_per_execution)
PLAN = {"seed": (1024, 256), "wide": (64, 32)}
INPUTS = ("arrays", "dataset")
_input = {"kind": "arrays"}  # set by main()


class ArrayFitTrainer(FitTrainer):
    """`fit(x, y, batch_size=..., shuffle=True)` on the NumPy arrays."""

    def __init__(self, model, data, batch_size, steps, spe):
        super().__init__(model, None, steps, spe)
        self.data, self.batch_size = data, batch_size

    def train_epoch(self):
        x, y = self.data
        self.model.fit(
            x,
            y,
            batch_size=self.batch_size,
            epochs=1,
            shuffle=True,
            verbose=0,
            callbacks=[self.timer],
        )


def _fit_trainer(model, spec, data, spe):
    """The trainer of a compiled model for the chosen `--input`."""
    if _input["kind"] == "arrays":
        return ArrayFitTrainer(model, data, spec.batch_size, _num_steps(spec, data), spe)
    return FitTrainer(model, joint_dataset(spec, data), _num_steps(spec, data), spe)


def build_functional_input(spec, data, spe):
    trainer = build_functional(spec, data, spe)
    return _fit_trainer(trainer.model, spec, data, spe)


def build_functional_xla(spec, data, spe):
    trainer = build_functional_input(spec, data, spe)
    model = trainer.model
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss=_losses(spec),
        steps_per_execution=spe,
        jit_compile=True,
    )
    return trainer


def _mtl(spec, data, spe, mode, jit):
    model = _mtl_model(spec)
    model.compile(
        optimizer="adam",
        loss=_losses(spec),
        mode=mode,
        steps_per_execution=spe,
        jit_compile=jit,
        **({"seed": TASK_SEED} if mode == "alternating" else {}),
    )
    return _fit_trainer(model, spec, data, spe)


def build_xla_loop(spec, data, spe=None):
    """One XLA while_loop per epoch over pre-built tensors (no fit, no tf.data)."""
    del spe
    trunk = keras.Sequential(_trunk_layers(spec))
    trunk.build((None,) + spec.input_shape)
    heads, optimizers = [], []
    for task in spec.tasks:
        head = keras.Sequential(_head_layers(spec, task))
        head.build((None, spec.features))
        heads.append(head)
        optimizer = keras.optimizers.Adam()
        optimizer.build(trunk.trainable_variables + head.trainable_variables)
        optimizers.append(optimizer)
    x, y = data
    steps, b = len(x) // spec.batch_size, spec.batch_size
    xs = tf.constant(x[: steps * b].reshape((steps, b) + spec.input_shape))
    ys = tf.constant(np.stack([y[t][: steps * b].reshape(steps, b, -1) for t in spec.tasks], 1))
    tasks = tf.constant(np.random.default_rng(TASK_SEED).integers(len(heads), size=steps), tf.int32)

    def branch(k, xb, yb):
        def update():
            variables = trunk.trainable_variables + heads[k].trainable_variables
            with tf.GradientTape() as tape:
                prediction = heads[k](trunk(xb, training=True), training=True)
                loss = tf.reduce_mean(tf.square(yb[k] - prediction))
            optimizers[k].apply(tape.gradient(loss, variables), variables)
            return loss

        return update

    @tf.function(jit_compile=True)
    def epoch():
        def body(i, total):
            loss = tf.switch_case(tasks[i], [branch(k, xs[i], ys[i]) for k in range(len(heads))])
            return i + 1, total + loss

        return tf.while_loop(lambda i, total: i < steps, body, [0, 0.0])[1]

    return LoopTrainer(lambda: float(epoch()), steps)


def build_xla_loop_joint(spec, data, spe=None):
    """The joint twin of `xla_loop`: each step sums every task's loss and one
    Adam updates the trunk and every head (the functional model's update)."""
    del spe
    trunk = keras.Sequential(_trunk_layers(spec))
    trunk.build((None,) + spec.input_shape)
    heads = []
    for task in spec.tasks:
        head = keras.Sequential(_head_layers(spec, task))
        head.build((None, spec.features))
        heads.append(head)
    variables = trunk.trainable_variables + [v for h in heads for v in h.trainable_variables]
    optimizer = keras.optimizers.Adam()
    optimizer.build(variables)
    x, y = data
    steps, b = len(x) // spec.batch_size, spec.batch_size
    xs = tf.constant(x[: steps * b].reshape((steps, b) + spec.input_shape))
    ys = tf.constant(np.stack([y[t][: steps * b].reshape(steps, b, -1) for t in spec.tasks], 1))

    @tf.function(jit_compile=True)
    def epoch():
        def body(i, total):
            with tf.GradientTape() as tape:
                features = trunk(xs[i], training=True)
                loss = tf.add_n(
                    [
                        tf.reduce_mean(tf.square(ys[i][k] - head(features, training=True)))
                        for k, head in enumerate(heads)
                    ]
                )
            optimizer.apply(tape.gradient(loss, variables), variables)
            return i + 1, total + loss

        return tf.while_loop(lambda i, total: i < steps, body, [0, 0.0])[1]

    return LoopTrainer(lambda: float(epoch()), steps)


ROWS = {
    "functional": build_functional_input,
    "functional_xla": build_functional_xla,
    "mtl_joint": lambda s, d, spe: _mtl(s, d, spe, "joint", False),
    "mtl_alternating": lambda s, d, spe: _mtl(s, d, spe, "alternating", False),
    "mtl_joint_fused": lambda s, d, spe: _mtl(s, d, spe, "joint", True),
    "mtl_alt_fused": lambda s, d, spe: _mtl(s, d, spe, "alternating", True),
    "xla_loop": build_xla_loop,
    "xla_loop_joint": build_xla_loop_joint,
}


def rows_for(model):
    return [r for r in ROWS if not r.startswith("xla_loop") or model == "seed"]


def memory_child(model, row):
    keras.utils.set_random_seed(DATA_SEED)
    steps, spe = PLAN[model]
    start = _status_mib("VmRSS")
    trainer = ROWS[row](MODELS[model], make_data(MODELS[model], 2 * spe), spe)
    for _ in range(2):
        trainer.train_epoch()
    print(json.dumps({"peak_mib": _status_mib("VmHWM"), "start_mib": start}))


def measure_memory(model, row):
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-case", f"{model}/{row}"]
    cmd += ["--input", _input["kind"]]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:120]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(models, rounds):
    results, compile_s, memory = {}, {}, {}
    for model in models:
        spec = MODELS[model]
        steps, spe = PLAN[model]
        keras.utils.set_random_seed(DATA_SEED)
        trainers = {}
        for row in rows_for(model):
            start = time.perf_counter()
            trainers[row] = ROWS[row](spec, make_data(spec, steps), spe)
            first = time.perf_counter()
            trainers[row].run_epoch()
            warm = time.perf_counter() - first
            steady = trainers[row].run_epoch()
            compile_s[(model, row)] = (
                first - start + warm - steady.seconds * steps / max(steady.steps, 1)
            )
            log(f"[{model}] built {row} (trace/compile {compile_s[(model, row)]:.1f}s)")
        times = {row: [] for row in trainers}
        names = list(trainers)
        for r in range(rounds):
            for row in names[r % len(names) :] + names[: r % len(names)]:
                gc.collect()
                times[row].append(trainers[row].run_epoch().steps_per_s)
            log(f"[{model}] round {r + 1}/{rounds}")
        results[model] = times
        del trainers
        gc.collect()
        for row in rows_for(model):
            memory[(model, row)] = measure_memory(model, row)
    return results, compile_s, memory


def ratio(times, a, b):
    if a not in times or b not in times:
        return None
    per_round = [x / y for x, y in zip(times[a], times[b])]
    return statistics.median(per_round), min(per_round), max(per_round)


def best_functional(times):
    """Per round, the faster of functional with and without XLA."""
    return [max(a, b) for a, b in zip(times["functional"], times["functional_xla"])]


def report(models, rounds, results, compile_s, memory):
    lines = ["# keras_mtl fused training benchmark", ""] + machine_description()
    lines += ["", f"Input: {_input['kind']} (see the module docstring)."]
    targets = []
    for model in models:
        steps, spe = PLAN[model]
        times = dict(results[model])
        times["best_functional"] = best_functional(times)
        lines += [
            "",
            f"## {model}: {MODELS[model].describe()}",
            "",
            f"{steps} steps per epoch, steps_per_execution {spe}, {rounds} timed rounds.",
            "",
            "| case | steps/s | spread | vs best functional | vs unfused | compile s "
            "| peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        unfused = {"mtl_joint_fused": "mtl_joint", "mtl_alt_fused": "mtl_alternating"}
        for row in rows_for(model):
            rates = times[row]
            med = statistics.median(rates)
            vs_best = ratio(times, row, "best_functional")
            vs_unfused = ratio(times, row, unfused[row]) if row in unfused else None
            mem = memory.get((model, row), {})
            lines.append(
                f"| {row} | {med:,.0f} | {(max(rates) - min(rates)) / med:.0%} | "
                f"{vs_best[0]:.2f} | {'' if vs_unfused is None else f'{vs_unfused[0]:.2f}'} | "
                f"{compile_s[(model, row)]:.1f} | "
                f"{mem.get('peak_mib', float('nan')):,.0f} |"
            )
        for row in unfused:
            if model == "seed":
                targets.append(
                    (f"seed: {row} / best functional", ratio(times, row, "best_functional"), 8.0)
                )
                targets.append((f"seed: {row} / xla_loop", ratio(times, row, "xla_loop"), 0.3))
                if row == "mtl_joint_fused":  # the same update, as one XLA loop
                    targets.append(
                        (f"seed: {row} / xla_loop_joint", ratio(times, row, "xla_loop_joint"), 0.3)
                    )
            else:
                targets.append(
                    (f"{model}: {row} / {unfused[row]}", ratio(times, row, unfused[row]), 1.0)
                )
    lines += [
        "",
        "steps/s: median over rounds of a steady epoch (fit-based: from its second "
        "execution to its end). Ratios: median of per-round ratios. best functional: per "
        "round, the faster of functional and functional_xla. compile s: the first epoch's "
        "time (building included) beyond a steady epoch's. Peak RSS: a fresh process per "
        "case, 2 epochs of 2 executions.",
        "",
        "## Targets",
        "",
    ]
    for name, r, bound in targets:
        if r is None:
            lines.append(f"- SKIP  {name}: not measured")
            continue
        verdict = "PASS" if r[0] >= bound else "MISS"
        lines.append(
            f"- {verdict}  {name}: {r[0]:.2f}x (per round {r[1]:.2f}-{r[2]:.2f}), "
            f"target >= {bound}x"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="seed,wide", help="comma-separated: seed,wide")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--out", help="also write the report to this file")
    parser.add_argument(
        "--input", default="arrays", choices=INPUTS, help="what fit() gets (default arrays)"
    )
    parser.add_argument("--memory-case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _input["kind"] = args.input
    if args.memory_case:
        memory_child(*args.memory_case.split("/"))
        return
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in PLAN]
    if unknown:
        parser.error(f"--models takes a subset of {','.join(PLAN)}; got {unknown}")
    text = report(models, args.rounds, *run(models, args.rounds))
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
