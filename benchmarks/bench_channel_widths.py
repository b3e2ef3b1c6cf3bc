"""TFLite latency against multiply-adds for vgg_small at the widths compaction left.

XNNPACK computes channels in SIMD-wide blocks, so a layer with 31 or 20
channels costs about as much as one with 32 or 24: latency falls more slowly
than multiply-adds. This times the dense net, the widths two ProxSGD runs
left (BENCHMARKS_export.md), and the same widths rounded up to multiples of
8. Weights are random: latency does not depend on their values.

    python benchmarks/bench_channel_widths.py --repeats 3
"""

import argparse
import os
import statistics
import tempfile

import keras

import keras_compact
from keras_compact.compaction.report import multiply_adds
from keras_compact.bench import tflite_latency
from keras_compact_examples import models

# Conv widths (two per block) and fc1 units.
WIDTHS = {
    "dense": ((32, 32, 64, 64, 128, 128), 256),
    "compact s=0.006": ((32, 31, 28, 20, 28, 23), 33),
    "compact s=0.006, rounded up to 8": ((32, 32, 32, 24, 32, 24), 40),
    "compact s=0.01": ((7, 2, 8, 7, 9, 10), 15),
    "compact s=0.01, rounded up to 8": ((8, 8, 8, 8, 16, 16), 16),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        macs, paths = {}, {}
        for name, (conv_widths, fc_units) in WIDTHS.items():
            model = models.vgg_small(conv_widths, fc_units)
            macs[name] = multiply_adds(model)
            paths[name] = os.path.join(scratch, f"{len(paths)}.tflite")
            keras_compact.export(model, paths[name], format="tflite")
        latencies = {name: [] for name in WIDTHS}
        for _ in range(args.repeats):  # interleaved: shared-machine load hits all alike
            for name, path in paths.items():
                latencies[name].append(tflite_latency(path, runs=args.runs) * 1e6)
    dense_us = statistics.median(latencies["dense"])
    print("| widths | MACs | MACs reduction | latency 1 thr (us) | speed-up |")
    print("|---|---|---|---|---|")
    for name in WIDTHS:
        us = statistics.median(latencies[name])
        print(
            f"| {name} | {macs[name]:,} | "
            f"{macs['dense'] / macs[name]:.2f}x | {us:.1f} | "
            f"{dense_us / us:.2f}x |"
        )


if __name__ == "__main__":
    main()
