"""The peer: TFMOT's prune_low_magnitude at 80% unstructured sparsity, to TFLite.

Runs in its own process: importing tensorflow_model_optimization sets
TF_USE_LEGACY_KERAS=1 process-wide, and it prunes tf_keras models only.
Trains the architecture dense, prunes it to 80% sparsity while fine-tuning,
strips the pruning wrappers and converts to float32 and int8 TFLite. Writes a
JSON row and the tf_keras model's test outputs: bench_tflite.py checks the
.tflite against them, and times it with everything else.

    python benchmarks/peer_tfmot.py --model lenet5 --out_dir out/bench_tflite \
        --result out/bench_tflite/lenet5_tfmot80.json
"""

import argparse
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras  # noqa: E402

from _common import ARCHITECTURES  # noqa: E402
from _common import gzip_bytes  # noqa: E402
from _common import mnist5k  # noqa: E402
from keras_compact.files import atomic_path, write_bytes, write_json  # noqa: E402

SPARSITY = 0.8
DENSE_EPOCHS = {"lenet5": 8, "vgg_small": 10}
PRUNE_EPOCHS = 4


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=list(ARCHITECTURES), required=True)
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--result", required=True, help="JSON row to write")
    args = parser.parse_args()
    build, shape = ARCHITECTURES[args.model]
    (x_train, y_train), (x_test, y_test) = mnist5k(**shape)

    tf_keras.utils.set_random_seed(0)
    model = build(keras_module=tf_keras)
    compile_sgd(model)
    model.fit(x_train, y_train, epochs=DENSE_EPOCHS[args.model], batch_size=64, verbose=2)

    schedule = tfmot.sparsity.keras.ConstantSparsity(SPARSITY, begin_step=0, frequency=50)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    compile_sgd(pruned)
    pruned.fit(
        x_train, y_train, epochs=PRUNE_EPOCHS, batch_size=64, verbose=2,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
    )
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    kernels = [w for layer in stripped.layers for w in layer.get_weights()[:1]]
    zeros = sum(int(np.sum(k == 0)) for k in kernels)

    reference = stripped.predict(x_test, verbose=0)
    row = dict(
        model=args.model,
        variant=f"tfmot{int(SPARSITY * 100)}",
        parameters=stripped.count_params(),
        nonzero_parameters=stripped.count_params() - zeros,
        multiply_adds=None,  # unstructured zeros are still multiplied
        accuracy=float(np.mean(np.argmax(reference, -1) == y_test)),
        reference_outputs_path=os.path.join(args.out_dir, f"{args.model}_tfmot_reference.npy"),
    )
    with atomic_path(row["reference_outputs_path"]) as temporary:
        np.save(temporary, reference)
    for kind in ("float32", "int8"):
        converter = tf.lite.TFLiteConverter.from_keras_model(stripped)
        if kind == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([x[None]] for x in x_train[:200])
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        path = os.path.join(args.out_dir, f"{args.model}_tfmot80_{kind}.tflite")
        write_bytes(path, converter.convert())
        row[f"{kind}_path"] = path
        row[f"{kind}_bytes"] = os.path.getsize(path)
        row[f"{kind}_gzip_bytes"] = gzip_bytes(path)
    write_json(args.result, row)


def compile_sgd(model):
    model.compile(
        optimizer=tf_keras.optimizers.SGD(0.01, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


if __name__ == "__main__":
    main()
