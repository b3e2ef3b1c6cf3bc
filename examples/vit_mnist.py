r"""A small Vision Transformer on MNIST digits: dense against compacted heads and FFN neurons.

    python examples/vit_mnist.py --seed=0 --out_dir=out/vit/seed0

Trains the dense ViT (keras_compact_examples.models.vit: stock Keras layers,
patch 7, dim 64, 4 blocks of 4 heads and 128 FFN neurons) with Adam, and the
same network from the same initial weights with ProxAdam under two group-lasso
penalties: `HeadLasso` on every MultiHeadAttention (a group is one head: its
query/key/value kernel slices and biases and the output-projection rows that
read it) and `GroupLasso` on the FFN's first Dense of each block (a group is
one FFN neuron). `keras_compact.compact` then rebuilds the network without the
dead heads and neurons (and checks that it computes the same outputs; an FFN
whose neurons all died goes whole, its constant folded into the attention's
output bias), the compact network is fine-tuned with the dense one as teacher
(knowledge distillation, --distill; 0 for labels only), and both are exported
to float32 TFLite (`keras_compact.export`, verified) and timed (batch 1, one
thread, XNNPACK).

Writes into --out_dir: results.json (`dense`, `compact`: params, MACs,
accuracy, heads and FFN neurons per block, .tflite size and latency; live
heads and neurons per epoch) and table.md (heads and FFN neurons per block,
then parameters, MACs, accuracy, .tflite size and latency, dense against
compact).

By default a parameter budget (--target_params=0.4, 40% of the dense ViT)
drives both penalties: a BudgetController sets their strengths (the flags
below give only their ratio) so that the projected compact ViT reaches the
budget by 60% of training, zeroes the weakest heads and FFN neurons to land on it, pins
them dead, and the rest of training recovers at strength 0. With
--target_params=0 the strengths stay fixed instead: the prox threshold per step
is learning_rate * strength (times sqrt(group size) with --weighted_groups), so
with the cosine schedule the penalties act mostly in the first half of
training, and where the heads die is left to the run (BENCHMARKS.md: at 0.17
to 0.19, 2 to 7 of 16 heads on the same seed).
"""

import dataclasses
import os
import statistics
import sys
import time

import keras
from absl import app
from absl import flags

import common
import keras_compact
from keras_compact.bench import tflite_latency
from keras_compact.compaction.report import multiply_adds
from keras_compact.files import write_json, write_text
from keras_compact_examples import data as data_lib
from keras_compact_examples import distillation, models, tables

flags.DEFINE_integer("seed", 0, "Random seed (initial weights, data order, augmentation).")
flags.DEFINE_string("out_dir", None, "Folder for results.json, table.md and the .tflite files.", required=True)
flags.DEFINE_integer("epochs", 30, "Training epochs, the same for the dense and the sparse net.", lower_bound=1)
flags.DEFINE_integer("finetune_epochs", 30, "Epochs of Adam on the compact net (0: none).", lower_bound=0)
flags.DEFINE_integer("batch_size", 64, "Batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "Adam's peak learning rate (cosine decay to 0 over --epochs).")
flags.DEFINE_float(
    "finetune_learning_rate", 5e-4, "Fine-tuning learning rate (cosine decay over --finetune_epochs)."
)
flags.DEFINE_float(
    "ffn_strength", 0.7, "GroupLasso strength on the FFN neurons (block*_mlp1).", lower_bound=0
)
flags.DEFINE_float("head_strength", 0.19, "HeadLasso strength on the attention heads.", lower_bound=0)
flags.DEFINE_boolean(
    "weighted_groups", True, "Weight each group's norm by sqrt(its size) (both penalties)."
)
flags.DEFINE_boolean(
    "reset_momentum",
    True,
    "ProxAdam: zero Adam's first moment of a head or neuron the prox zeroed (ProxAdam's default). "
    "BENCHMARKS.md's first 3-seed ViT rows were measured with it off, when the reset also zeroed the "
    "second moment and so revived every dead FFN neuron.",
)
flags.DEFINE_float(
    "target_params",
    0.4,
    "A parameter budget (a fraction of the dense ViT, or a count): a BudgetController drives both "
    "penalties to it, lands by 60% of training, and the rest trains at strength 0. 0: no budget, the "
    "fixed strengths above.",
    lower_bound=0,
)
flags.DEFINE_float(
    "distill",
    0.7,
    "Fine-tune the compact ViT on (1 - distill) * cross-entropy + distill * T^2 * KL(dense || compact) "
    "at temperature --distill_temperature, the dense ViT as teacher (knowledge distillation). 0: labels only.",
    lower_bound=0,
    upper_bound=1,
)
flags.DEFINE_float("distill_temperature", 2.0, "Softmax temperature of the distillation term.", lower_bound=0)
flags.DEFINE_integer("shift", 2, "Training augmentation: random shifts of up to this many pixels (0: none).", lower_bound=0)
flags.DEFINE_integer("patch", 7, "Patch size (28x28 digits: 7 gives 16 tokens).", lower_bound=1)
flags.DEFINE_integer("dim", 64, "Token width.", lower_bound=1)
flags.DEFINE_integer("heads", 4, "Attention heads per block.", lower_bound=1)
flags.DEFINE_integer("blocks", 4, "Encoder blocks.", lower_bound=1)
flags.DEFINE_integer("mlp", 128, "FFN neurons per block.", lower_bound=1)
flags.DEFINE_integer("train_limit", None, "Use only this many training examples.", lower_bound=1)
flags.DEFINE_integer("test_limit", None, "Use only this many test examples.", lower_bound=1)
flags.DEFINE_boolean("export_tflite", True, "Export dense and compact nets to TFLite and time them.")
flags.DEFINE_integer("latency_runs", 200, "invoke() calls per latency measurement.", lower_bound=1)
flags.DEFINE_integer(
    "latency_repeats", 5, "Latency measurements per model, dense and compact interleaved.", lower_bound=1
)
flags.DEFINE_enum("progress", "epoch", ["epoch", "bar", "none"], "Training progress output.")

FLAGS = flags.FLAGS

FFN_LAYERS = r"block\d+_mlp1"
_SAMPLE_IMAGES = 64


def build(**widths):
    return models.vit(
        patch=FLAGS.patch, dim=FLAGS.dim, heads=FLAGS.heads, blocks=FLAGS.blocks, mlp=FLAGS.mlp, **widths
    )


def block_widths(model):
    """[{"heads": int, "ffn": int}] per block of a (dense or compact) ViT."""
    layers = {layer.name: layer for layer in model.layers}

    def width(name, read):
        # A branch that only added a constant is folded away by the compactor: 0 left.
        return int(read(layers[name])) if name in layers else 0

    return [
        {
            "heads": width(f"block{b}_mha", lambda layer: layer.get_config()["num_heads"]),
            "ffn": width(f"block{b}_mlp1", lambda layer: layer.units),
        }
        for b in range(FLAGS.blocks)
    ]


def penalties():
    found = [keras_compact.GroupLasso(FLAGS.ffn_strength, layers=FFN_LAYERS, weighted=FLAGS.weighted_groups)]
    if FLAGS.head_strength > 0:
        if not hasattr(keras_compact, "HeadLasso"):
            raise SystemExit(
                f"--head_strength={FLAGS.head_strength}: this keras_compact has no HeadLasso; "
                "pass --head_strength=0 to penalize the FFN neurons only."
            )
        found.append(keras_compact.HeadLasso(FLAGS.head_strength, weighted=FLAGS.weighted_groups))
    return found


class Run:
    def __init__(self):
        os.makedirs(FLAGS.out_dir, exist_ok=True)
        dataset = data_lib.load("mnist5k", train_limit=FLAGS.train_limit, test_limit=FLAGS.test_limit)
        if FLAGS.shift:
            dataset = dataclasses.replace(dataset, augment=data_lib.random_shift(FLAGS.shift))
        self.dataset = dataset
        self.sample_images = dataset.sample_images(_SAMPLE_IMAGES)
        self.steps_per_epoch = int(dataset.train(FLAGS.batch_size, seed=0).cardinality())

    def new_model(self):
        keras.utils.set_random_seed(FLAGS.seed)
        return build()

    def schedule(self, learning_rate, epochs):
        return keras.optimizers.schedules.CosineDecay(learning_rate, epochs * self.steps_per_epoch)

    def fit(self, model, optimizer, epochs, callbacks=(), seed_offset=0):
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model.fit(
            self.dataset.train(FLAGS.batch_size, seed=FLAGS.seed + seed_offset),
            epochs=epochs,
            callbacks=list(callbacks),
            verbose={"epoch": 2, "bar": 1, "none": 0}[FLAGS.progress],
        )

    def distill(self, student, teacher, optimizer, epochs, seed_offset=0):
        """Train `student` on the labels and on `teacher`'s softened outputs."""
        pair = distillation.teacher_student_pair(student, teacher)
        pair.compile(
            optimizer=optimizer,
            loss=distillation.distillation_loss(FLAGS.distill, FLAGS.distill_temperature),
        )
        return pair.fit(
            self.dataset.train(FLAGS.batch_size, seed=FLAGS.seed + seed_offset),
            epochs=epochs,
            verbose={"epoch": 2, "bar": 1, "none": 0}[FLAGS.progress],
        )

    def accuracy(self, model):
        result = model.evaluate(self.dataset.test(FLAGS.batch_size), verbose=0, return_dict=True)
        return float(result["accuracy"])

    def entry(self, model, **extra):
        return {
            "accuracy": self.accuracy(model),
            "params": int(model.count_params()),
            "macs": int(multiply_adds(model)),
            "blocks": block_widths(model),
            **extra,
        }


def say(message):
    if FLAGS.progress != "none":
        print(message, flush=True)


def live_per_epoch(history):
    return {
        key.split("/", 1)[1]: [int(count) for count in values]
        for key, values in history.history.items()
        if key.startswith(("live_neurons/", "live_heads/"))
    }


def measure_latencies(paths):
    """{name: median microseconds}: each .tflite timed --latency_repeats times, interleaved."""
    times = {name: [] for name in paths}
    for _ in range(FLAGS.latency_repeats):
        for name, path in paths.items():
            times[name].append(1e6 * tflite_latency(path, num_threads=1, runs=FLAGS.latency_runs))
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    run = Run()
    config = {flag.name: flag.value for flag in FLAGS.get_flags_for_module(sys.argv[0])}
    results = {"config": config, "dataset": {"name": "mnist5k", "input_shape": list(run.dataset.input_shape)}}

    start = time.time()
    say(f"== dense ViT: {FLAGS.epochs} epochs of Adam")
    dense = run.new_model()
    run.fit(dense, keras.optimizers.Adam(run.schedule(FLAGS.learning_rate, FLAGS.epochs)), FLAGS.epochs)
    results["dense"] = run.entry(dense, train_seconds=time.time() - start)

    start = time.time()
    say(
        f"== ProxAdam, FFN GroupLasso {FLAGS.ffn_strength:g}, HeadLasso {FLAGS.head_strength:g}: "
        f"{FLAGS.epochs} epochs"
    )
    sparse = run.new_model()
    optimizer = keras_compact.ProxAdam(
        run.schedule(FLAGS.learning_rate, FLAGS.epochs),
        penalties=penalties(),
        reset_momentum=FLAGS.reset_momentum,
    )
    callbacks = [keras_compact.NeuronMonitor(verbose=int(FLAGS.progress != "none"))]
    if FLAGS.target_params:
        callbacks.append(keras_compact.BudgetController(params=FLAGS.target_params, verbose=0))
    history = run.fit(sparse, optimizer, FLAGS.epochs, callbacks=callbacks)
    if FLAGS.target_params:
        results["budget"] = {"params": FLAGS.target_params, "landed_at_end": callbacks[-1].landed_at_end}
    results["live_per_epoch"] = live_per_epoch(history)
    sparse_accuracy = run.accuracy(sparse)
    train_seconds = time.time() - start

    compact_model, compaction = common.compact(sparse, run.sample_images, factorize=False)
    say(f"== compacted: {compaction['params_before']:,} -> {compaction['params_after']:,} parameters")
    compact_model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    before_finetune = run.accuracy(compact_model)
    if FLAGS.finetune_epochs:
        say(f"== fine-tuning the compact ViT: {FLAGS.finetune_epochs} epochs")
        optimizer = keras.optimizers.Adam(run.schedule(FLAGS.finetune_learning_rate, FLAGS.finetune_epochs))
        if FLAGS.distill:
            run.distill(compact_model, dense, optimizer, FLAGS.finetune_epochs, seed_offset=1)
            compact_model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        else:
            run.fit(compact_model, optimizer, FLAGS.finetune_epochs, seed_offset=1)
    results["compact"] = run.entry(
        compact_model,
        accuracy_sparse=sparse_accuracy,
        accuracy_before_finetune=before_finetune,
        compaction_max_abs_diff=compaction.get("max_abs_diff"),
        train_seconds=train_seconds,
    )
    results["compaction"] = {
        key: compaction[key] for key in ("params_before", "params_after", "macs_before", "macs_after", "layers")
    }

    if FLAGS.export_tflite:
        say("== exporting dense and compact to TFLite (float32) and timing them")
        paths = {}
        for name, model in (("dense", dense), ("compact", compact_model)):
            paths[name] = os.path.join(FLAGS.out_dir, f"{name}.tflite")
            exported = common.export_tflite(model, paths[name], run.sample_images)
            results[name]["tflite_bytes"] = exported["size_bytes"]
            results[name]["tflite_max_abs_diff"] = exported.get("max_abs_diff")
        for name, latency in measure_latencies(paths).items():
            results[name]["latency_us"] = latency
        results["latency"] = {
            "threads": 1,
            "batch_size": 1,
            "runs": FLAGS.latency_runs,
            "repeats": FLAGS.latency_repeats,
            "load_average": list(os.getloadavg()),
        }

    write_json(os.path.join(FLAGS.out_dir, "results.json"), results)
    table = "\n".join(
        [
            "## ViT on mnist5k: dense against compact\n",
            tables.blocks_table(results["dense"]["blocks"], results["compact"]["blocks"]),
            tables.cost_table([("dense", results["dense"]), ("compact", results["compact"])]),
            f"Accuracy of the sparse net {100 * sparse_accuracy:.2f}%, of the compact net before "
            f"fine-tuning {100 * before_finetune:.2f}% (the compactor's check: max abs diff "
            f"{compaction.get('max_abs_diff')}).\n",
        ]
    )
    write_text(os.path.join(FLAGS.out_dir, "table.md"), table)
    print(table, flush=True)
    print(f"Wrote {FLAGS.out_dir}/results.json and table.md.", flush=True)


if __name__ == "__main__":
    app.run(main)
