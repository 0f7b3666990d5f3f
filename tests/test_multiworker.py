"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 train as one."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import multiworker_worker  # noqa: E402

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_workers(case, tmp_path, timeout=240):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    try:
        for index in range(2):
            env = dict(
                os.environ,
                TF_CONFIG=json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}}
                ),
            )
            env["PYTHONPATH"] = os.pathsep.join([HERE, env.get("PYTHONPATH", "")])
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        os.path.join(HERE, "multiworker_worker.py"),
                        case,
                        str(tmp_path / f"worker{index}.npz"),
                    ],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:  # never leave a worker behind, whatever happened
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    histories = [
        json.loads(next(line for line in out.splitlines() if line.startswith("HISTORY "))[8:])
        for out in outputs
    ]
    weights = [np.load(tmp_path / f"worker{i}.npz") for i in range(2)]
    return [[w[f"arr_{i}"] for i in range(len(w.files))] for w in weights], histories


@pytest.mark.parametrize("case", ["joint", "alternating", "interleave"])
def test_two_workers_match_a_single_process_run(case, tmp_path):
    (w0, w1), (h0, h1) = _run_workers(case, tmp_path)
    for a, b in zip(w0, w1):  # every worker ends with the same weights
        np.testing.assert_array_equal(a, b)
    assert h0 == h1

    model, history = multiworker_worker.train(case)  # one process, same global batches
    for ours, theirs in zip(w0, [v.numpy() for v in model.trainable_weights]):
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    if case != "joint":
        assert h0["a_updates"] == history["a_updates"]
