"""One worker of the MultiWorkerMirroredStrategy test (run as a subprocess).

Usage: python multiworker_worker.py OUT.npz ; TF_CONFIG names the cluster.
Trains the model of `distributed_case.py` and writes the final weights.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import distributed_case  # noqa: E402


def main(out_path):
    model = distributed_case.train(tf.distribute.MultiWorkerMirroredStrategy())
    np.savez(out_path, *[v.numpy() for v in model.trainable_variables])


if __name__ == "__main__":
    main(sys.argv[1])
