"""Distributed training of a MultiTaskModel with tf.distribute.

Several devices on one machine (MirroredStrategy):

    python examples/distributed.py                      # all local GPUs, or the CPU
    python examples/distributed.py --logical-cpus 2     # try it on a CPU-only machine

Several machines (MultiWorkerMirroredStrategy): start the same script on
every host with TF_CONFIG describing the cluster and this host's index, e.g.
on host 0 of two:

    TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
                "task": {"type": "worker", "index": 0}}' \\
        python examples/distributed.py --multi-worker

(and index 1 on host1). To try it on one machine, let the script start two
local workers on 127.0.0.1 for you:

    python examples/distributed.py --local-workers 2

Everything is created the Keras way: model and compile inside
`strategy.scope()`, then `model.fit(dataset)` with the GLOBAL batch size.
Both modes work; alternating trains the same task on every replica at each
step, and the result equals single-device training on the same batches.
"""

import argparse
import json
import os
import socket
import subprocess
import sys


def make_strategy(args):
    import tensorflow as tf

    if args.multi_worker:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if args.logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus
        )
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(args.logical_cpus)])
    return tf.distribute.MirroredStrategy()


def train(args):
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_mtl

    strategy = make_strategy(args)
    print(f"{type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s)")

    rng = np.random.default_rng(0)
    x = rng.random((4096, 16)).astype("float32")
    y = {
        "price": x @ rng.random((16, 1)).astype("float32"),
        "kind": (x[:, 0] * 2.99).astype("int32"),
    }
    global_batch = 64 * strategy.num_replicas_in_sync
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(4096, seed=0).batch(global_batch)

    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras_mtl.MultiTaskModel(
            trunk_units=[64, 64],
            heads={"price": 1, "kind": keras_mtl.Head(3, activation="softmax")},
        )
        model.compile(
            optimizer="adam",
            loss={"price": "mse", "kind": "sparse_categorical_crossentropy"},
            metrics={"kind": ["accuracy"]},
            mode=args.mode,
            task_optimizers={"price": "adam", "kind": "adam"}
            if args.mode == "alternating"
            else None,
            seed=0,
        )
    model.fit(dataset, epochs=args.epochs, verbose=2)


def launch_local_workers(n, args):
    """Starts n workers of this script on 127.0.0.1 and waits for them."""
    ports = []
    for _ in range(n):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    try:
        for index in range(n):
            env = dict(
                os.environ,
                TF_CONFIG=json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}}
                ),
            )
            cmd = [
                sys.executable,
                __file__,
                "--multi-worker",
                "--mode",
                args.mode,
                "--epochs",
                str(args.epochs),
            ]
            # Only worker 0 (the chief) prints; the others train silently.
            out = None if index == 0 else subprocess.DEVNULL
            procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=out))
        codes = [p.wait() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    if any(codes):
        raise SystemExit(f"a worker failed: exit codes {codes}")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Distributed MultiTaskModel training.")
    parser.add_argument("--mode", choices=["joint", "alternating"], default="alternating")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--logical-cpus",
        type=int,
        default=1,
        help="split the CPU into this many devices (MirroredStrategy)",
    )
    parser.add_argument(
        "--multi-worker",
        action="store_true",
        help="MultiWorkerMirroredStrategy; the cluster comes from TF_CONFIG",
    )
    parser.add_argument(
        "--local-workers",
        type=int,
        default=0,
        help="start this many MultiWorkerMirroredStrategy workers on 127.0.0.1",
    )
    args = parser.parse_args(argv)
    if args.local_workers:
        launch_local_workers(args.local_workers, args)
    else:
        train(args)


if __name__ == "__main__":
    main()
