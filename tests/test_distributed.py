"""ProxSGD in a custom training loop under tf.distribute strategies.

(`fit` under MirroredStrategy is tested in test_optimizers.py.)
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import tensorflow as tf

import distributed_case

HERE = os.path.dirname(__file__)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_mirrored_matches_one_device(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
        processes.append(
            subprocess.Popen(
                [sys.executable, os.path.join(HERE, "multiworker_worker.py"), str(tmp_path / f"w{index}.npz")],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for process in processes:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output[-3000:]
    single = distributed_case.train(tf.distribute.get_strategy())
    expected = [v.numpy() for v in single.trainable_variables]
    for index in range(2):
        with np.load(tmp_path / f"w{index}.npz") as saved:
            got = [saved[f"arr_{i}"] for i in range(len(expected))]
        for a, b in zip(expected, got):
            np.testing.assert_allclose(a, b, atol=1e-5)
    conv = expected[0].reshape(-1, expected[0].shape[-1])
    assert np.any(np.all(conv == 0, axis=0)), "the run should kill some conv neurons"


def test_custom_loop_mirrored_matches_one_device():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    mirrored = distributed_case.train(tf.distribute.MirroredStrategy(devices))
    single = distributed_case.train(tf.distribute.get_strategy())
    for a, b in zip(single.trainable_variables, mirrored.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
