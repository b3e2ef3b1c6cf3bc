"""What every example script shares: flags, the dense-against-proximal experiment, outputs.

An experiment trains a dense baseline and the same network with `ProxSGD`
under the same budget (same initial weights, epochs, learning rate and
momentum), removes the dead neurons with `keras_compact.compact`, optionally
fine-tunes the compact network, exports it to TFLite, and writes into
`--out_dir`:

- results.json: `config`, `dense` and `compact` (each with `accuracy`, a
  fraction, `params` and `units` per layer), `layers` (units before/after),
  `live_neurons_per_epoch`, and `sweep` (one point per strength of `--sweep`);
- table.md: the paper's table (neurons per layer, parameters, memory, error);
- neurons_kept.png, live_neurons.png, accuracy_vs_params.png.
"""

import os
import sys
import time

import keras
from absl import flags

import keras_compact
from keras_compact.files import write_json, write_text
from keras_compact_examples import data as data_lib
from keras_compact_examples import models, plots, tables

FLAGS = flags.FLAGS

PENALTIES = ("group_lasso", "sparse_group_lasso", "l1", "low_rank", "group_lasso+low_rank")
# Test images passed to the compactor's check and to the TFLite export.
_SAMPLE_IMAGES = 64


def define_flags(
    *,
    datasets,
    dataset,
    epochs,
    batch_size,
    learning_rate,
    lr_schedule,
    strength,
    finetune_epochs,
    finetune_lr_scale,
    weighted_groups,
):
    """Defines the flags every example takes; each script gives its defaults."""
    flags.DEFINE_enum("dataset", dataset, datasets, "Dataset to train and test on.")
    flags.DEFINE_string(
        "data_dir",
        None,
        "tensorflow-datasets data_dir holding prepared data (cifar10, imagenet2012).",
    )
    flags.DEFINE_integer(
        "epochs",
        epochs,
        "Training epochs, the same for the dense and the sparse net.",
        lower_bound=1,
    )
    flags.DEFINE_integer(
        "finetune_epochs",
        finetune_epochs,
        "Epochs of plain SGD on the compact net (0: none).",
        lower_bound=0,
    )
    flags.DEFINE_float(
        "finetune_lr_scale",
        finetune_lr_scale,
        "Fine-tuning learning rate, as a fraction of --learning_rate.",
        lower_bound=0,
    )
    flags.DEFINE_integer("batch_size", batch_size, "Batch size.", lower_bound=1)
    flags.DEFINE_float("learning_rate", learning_rate, "SGD learning rate (the prox step tau).")
    flags.DEFINE_float("momentum", 0.9, "SGD momentum.", lower_bound=0)
    flags.DEFINE_enum(
        "lr_schedule",
        lr_schedule,
        ["constant", "cosine"],
        "Learning rate over the --epochs of dense and sparse training: constant, or cosine decay to 0. "
        "The prox threshold follows it, so with cosine the last epochs barely shrink the surviving weights.",
    )
    flags.DEFINE_enum("penalty", "group_lasso", PENALTIES, "Sparse penalty on neurons.")
    flags.DEFINE_boolean(
        "weighted_groups",
        weighted_groups,
        "Weight each neuron's group norm by sqrt(group size) (Yuan and Lin), so that big neurons "
        "(fc1's 801 weights) and small ones (conv1's 26) shrink alike relative to their size.",
    )
    flags.DEFINE_float(
        "l1_ratio",
        0.5,
        "sparse_group_lasso only: weight of the l1 term.",
        lower_bound=0,
        upper_bound=1,
    )
    flags.DEFINE_float(
        "low_rank_strength",
        None,
        "group_lasso+low_rank only: strength of the low-rank term (default: --strength).",
        lower_bound=0,
    )
    flags.DEFINE_integer(
        "low_rank_every",
        10,
        "low_rank: apply the singular value thresholding every this many steps (SVDs are costly).",
        lower_bound=1,
    )
    flags.DEFINE_string(
        "low_rank_layers",
        None,
        "low_rank: a regex of the layers to penalize (default: every hidden Dense and conv).",
    )
    flags.DEFINE_enum(
        "low_rank_method",
        "output",
        keras_compact.TensorLowRank.methods,
        "low_rank: how a conv kernel is matricized (see keras_compact.TensorLowRank).",
    )
    flags.DEFINE_float(
        "strength",
        strength,
        "Penalty strength lambda; the prox threshold per step is learning_rate * strength.",
        lower_bound=0,
    )
    flags.DEFINE_float(
        "target_params",
        None,
        "A parameter budget (a fraction of the dense net in (0, 1], or a count): "
        "keras_compact.BudgetController drives the strength to it (--strength is then ignored "
        "but for the ratio between penalties).",
    )
    flags.DEFINE_float("target_macs", None, "A multiply-add budget, the same way (with or without --target_params).")
    flags.DEFINE_string(
        "init_from",
        None,
        "A trained model (.keras) or weights (.weights.h5) of the same network: the dense "
        "baseline is it as it is, and the sparse training starts from its weights.",
    )
    flags.DEFINE_list(
        "sweep",
        [],
        "More strengths to train, compact and plot (accuracy against parameters), e.g. 0.01,0.03.",
    )
    flags.DEFINE_enum("activation", "relu", models.ACTIVATIONS, "Hidden-layer activation.")
    flags.DEFINE_float(
        "width", 1.0, "Scales every hidden layer's neurons (quick runs).", lower_bound=0
    )
    flags.DEFINE_integer("seed", 0, "Random seed (weights, data order).")
    flags.DEFINE_string(
        "out_dir", None, "Folder for results.json, table.md and the plots.", required=True
    )
    flags.DEFINE_integer(
        "train_limit", None, "Use only this many training examples.", lower_bound=1
    )
    flags.DEFINE_integer("test_limit", None, "Use only this many test examples.", lower_bound=1)
    flags.DEFINE_boolean("export_tflite", True, "Export the compact net to out_dir/compact.tflite.")
    flags.DEFINE_enum(
        "progress",
        "epoch",
        ["epoch", "bar", "none"],
        "Training progress: a line per epoch, a bar, or nothing.",
    )

    flags.register_validator(
        "learning_rate", lambda value: value > 0, "--learning_rate must be > 0."
    )
    flags.register_validator("width", lambda value: value > 0, "--width must be > 0.")
    flags.register_validator(
        "sweep",
        _is_strength_list,
        "--sweep must be a comma-separated list of numbers >= 0, e.g. 0.01,0.03.",
    )


def _is_strength_list(values):
    try:
        return all(float(value) >= 0 for value in values)
    except ValueError:
        return False


def compact(model, sample_images, factorize):
    """The one call of the compactor: (compact model, report dict).

    `factorize` is explicit: only a low-rank penalty leaves kernels whose
    factorization pays, and the library's default may change.
    """
    compact_model, compaction = keras_compact.compact(
        model, sample_data=sample_images, factorize=factorize
    )
    return compact_model, compaction.to_dict()


def export_tflite(model, path, sample_images):
    """The one call of the exporter: the export report as a dict."""
    return keras_compact.export(
        model, path, format="tflite", representative_data=sample_images
    ).to_dict()


def penalties_from_flags(strength):
    """The penalties named by --penalty, at `strength`."""
    low_rank = keras_compact.TensorLowRank(
        strength if FLAGS.penalty == "low_rank" else FLAGS.low_rank_strength or strength,
        layers=FLAGS.low_rank_layers,
        every=FLAGS.low_rank_every,
        method=FLAGS.low_rank_method,
    )
    group_lasso = keras_compact.GroupLasso(strength, weighted=FLAGS.weighted_groups)
    return {
        "group_lasso": lambda: [group_lasso],
        "sparse_group_lasso": lambda: [
            keras_compact.SparseGroupLasso(
                strength, l1_ratio=FLAGS.l1_ratio, weighted=FLAGS.weighted_groups
            )
        ],
        "l1": lambda: [keras_compact.L1(strength)],
        "low_rank": lambda: [low_rank],
        "group_lasso+low_rank": lambda: [group_lasso, low_rank],
    }[FLAGS.penalty]()


def budget_asked():
    return FLAGS.target_params is not None or FLAGS.target_macs is not None


def load_trained_weights(model, path):
    """Copy the weights of a trained .keras model or .weights.h5 file into `model` (same network)."""
    if not os.path.exists(path):
        raise SystemExit(f"--init_from={path}: no such file.")
    if path.endswith(".weights.h5"):
        model.load_weights(path)
        return
    trained = keras.models.load_model(path, compile=False)
    try:
        model.set_weights(trained.get_weights())
    except ValueError as error:
        raise SystemExit(
            f"--init_from={path} is not this network ({model.name}: {model.count_params():,} "
            f"parameters; the file's: {trained.count_params():,}): {error}"
        ) from None


def units_by_layer(model):
    """{layer name: neurons} for every Dense/Conv layer of `model`, in order."""
    units = {}
    for layer in model.layers:
        count = getattr(layer, "units", None) or getattr(layer, "filters", None)
        if count:
            units[layer.name] = int(count)
    return units


def _fit_verbosity():
    return {"epoch": 2, "bar": 1, "none": 0}[FLAGS.progress]


def say(message):
    """Prints a progress line unless --progress=none."""
    if FLAGS.progress != "none":
        print(message, flush=True)


class Experiment:
    """Dense baseline, proximal training, compaction, fine-tuning and export, from the flags.

    Args:
        build_model: function (input_shape, num_classes, activation, width) -> an uncompiled model.
        image_size: passed to `keras_compact_examples.data.load` (None: native size).
    """

    def __init__(self, build_model, image_size=None):
        os.makedirs(FLAGS.out_dir, exist_ok=True)
        self.build_model = build_model
        self.dataset = data_lib.load(
            FLAGS.dataset,
            data_dir=FLAGS.data_dir,
            image_size=image_size,
            train_limit=FLAGS.train_limit,
            test_limit=FLAGS.test_limit,
        )
        self.sample_images = self.dataset.sample_images(_SAMPLE_IMAGES)
        self.dense_model = None
        self.budget = None  # the BudgetController of the last sparse run, if a budget was asked

    def new_model(self, activation=None):
        """A fresh model, always from the same initial weights (seeded, or --init_from's)."""
        keras.utils.set_random_seed(FLAGS.seed)
        model = self.build_model(
            input_shape=self.dataset.input_shape,
            num_classes=self.dataset.num_classes,
            activation=activation or FLAGS.activation,
            width=FLAGS.width,
        )
        if FLAGS.init_from:
            load_trained_weights(model, FLAGS.init_from)
        return model

    def fit(self, model, optimizer, epochs, callbacks=(), seed_offset=0):
        """Compiles and trains `model`; returns its History."""
        model.compile(
            optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        return model.fit(
            self.dataset.train(FLAGS.batch_size, seed=FLAGS.seed + seed_offset),
            epochs=epochs,
            callbacks=list(callbacks),
            verbose=_fit_verbosity(),
        )

    def accuracy(self, model):
        """Test accuracy (a fraction) of a compiled model."""
        return float(
            model.evaluate(self.dataset.test(FLAGS.batch_size), verbose=0, return_dict=True)[
                "accuracy"
            ]
        )

    def learning_rate(self):
        """--learning_rate, or its cosine decay over the --epochs of training."""
        if FLAGS.lr_schedule == "constant":
            return FLAGS.learning_rate
        steps_per_epoch = int(self.dataset.train(FLAGS.batch_size, seed=0).cardinality())
        if steps_per_epoch < 1:  # A streamed dataset of unknown length.
            raise SystemExit(
                "--lr_schedule=cosine needs a dataset of known length; use --lr_schedule=constant."
            )
        return keras.optimizers.schedules.CosineDecay(
            FLAGS.learning_rate, decay_steps=FLAGS.epochs * steps_per_epoch
        )

    def train_dense(self):
        """The dense baseline: SGD with momentum, no penalty (--init_from: the given net as it is)."""
        start = time.time()
        self.dense_model = self.new_model()
        optimizer = keras.optimizers.SGD(self.learning_rate(), momentum=FLAGS.momentum)
        if FLAGS.init_from:
            say(f"== dense baseline: {FLAGS.init_from}, as trained")
            self.dense_model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
        else:
            say(f"== dense baseline: {FLAGS.epochs} epochs of SGD")
            self.fit(self.dense_model, optimizer, FLAGS.epochs)
        return {
            "accuracy": self.accuracy(self.dense_model),
            "params": int(self.dense_model.count_params()),
            "units": units_by_layer(self.dense_model),
            "train_seconds": time.time() - start,
        }

    def train_sparse(self, strength, activation=None):
        """The same net, same budget, with ProxSGD: returns (model, History)."""
        activation = activation or FLAGS.activation
        say(f"== ProxSGD, {FLAGS.penalty} {strength:g}, {activation}: {FLAGS.epochs} epochs")
        model = self.new_model(activation)
        optimizer = keras_compact.ProxSGD(
            self.learning_rate(), momentum=FLAGS.momentum, penalties=penalties_from_flags(strength)
        )
        callbacks = [keras_compact.NeuronMonitor(verbose=int(FLAGS.progress != "none"))]
        if budget_asked():
            self.budget = keras_compact.BudgetController(
                params=FLAGS.target_params, macs=FLAGS.target_macs, verbose=int(FLAGS.progress != "none")
            )
            callbacks.append(self.budget)
        history = self.fit(model, optimizer, FLAGS.epochs, callbacks=callbacks)
        return model, history

    def compact_and_finetune(self, sparse_model, strength):
        """Compacts a trained sparse model, fine-tunes it.

        Returns:
            (compact model, results entry, the compaction report as a dict).
        """
        start = time.time()
        sparse_accuracy = self.accuracy(sparse_model)
        compact_model, compaction = compact(
            sparse_model, self.sample_images, factorize="low_rank" in FLAGS.penalty
        )
        say(
            f"== compacted: {compaction['params_before']:,} -> {compaction['params_after']:,} parameters"
        )
        compact_model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        accuracy_before_finetune = self.accuracy(compact_model)
        if FLAGS.finetune_epochs:
            say(f"== fine-tuning the compact net: {FLAGS.finetune_epochs} epochs")
            optimizer = keras.optimizers.SGD(
                FLAGS.learning_rate * FLAGS.finetune_lr_scale, momentum=FLAGS.momentum
            )
            self.fit(compact_model, optimizer, FLAGS.finetune_epochs, seed_offset=1)
        entry = {
            "strength": strength,
            "accuracy": self.accuracy(compact_model),
            "accuracy_sparse": sparse_accuracy,
            "accuracy_before_finetune": accuracy_before_finetune,
            "params": int(compaction["params_after"]),
            "units": units_by_layer(compact_model),
            "macs": compaction["macs_after"],
            "compaction_max_abs_diff": compaction.get("max_abs_diff"),
            "factorized": compaction.get("factorized", []),
            "compact_seconds": time.time() - start,
        }
        return compact_model, entry, compaction

    def run(self):
        """The whole experiment; returns the results dict (not yet written)."""
        # The flags defined here and in the script: absl's own are not configuration.
        defined = FLAGS.get_flags_for_module(__name__) + FLAGS.get_flags_for_module(sys.argv[0])
        config = {flag.name: flag.value for flag in defined}
        results = {
            "config": config,
            "dataset": {"name": self.dataset.name, "input_shape": list(self.dataset.input_shape)},
        }
        results["dense"] = self.train_dense()

        sparse_model, history = self.train_sparse(FLAGS.strength)
        compact_model, results["compact"], compaction = self.compact_and_finetune(
            sparse_model, FLAGS.strength
        )
        results["layers"] = compaction["layers"]
        results["dense"]["macs"] = compaction["macs_before"]
        if budget_asked():
            results["budget"] = {
                "asked": {"params": FLAGS.target_params, "macs": FLAGS.target_macs},
                "reached": {
                    "params": compaction["params_after"] / compaction["params_before"],
                    "macs": compaction["macs_after"] / max(1, compaction["macs_before"]),
                },
                "landed_at_end": self.budget.landed_at_end,
            }
        results["live_neurons_per_epoch"] = {
            key.split("/", 1)[1]: [int(count) for count in values]
            for key, values in history.history.items()
            if key.startswith("live_neurons/")
        }
        if FLAGS.export_tflite:
            say("== exporting the compact net to TFLite")
            exported = export_tflite(
                compact_model, os.path.join(FLAGS.out_dir, "compact.tflite"), self.sample_images
            )
            results["compact"]["tflite_bytes"] = exported["size_bytes"]
            results["compact"]["tflite_max_abs_diff"] = exported.get("max_abs_diff")

        sweep = []
        for strength in sorted({float(value) for value in FLAGS.sweep} - {FLAGS.strength}):
            model, _ = self.train_sparse(strength)
            _, entry, _ = self.compact_and_finetune(model, strength)
            sweep.append(entry)
        results["sweep"] = sorted(sweep + [results["compact"]], key=lambda entry: entry["strength"])
        return results

    def write(self, results, extra_tables=()):
        """Writes results.json, table.md and the plots; prints the table."""
        out_dir = FLAGS.out_dir
        # Every neuron layer but the classifier, whose neurons are the classes.
        hidden_layers = list(results["dense"]["units"])[:-1]
        write_json(os.path.join(out_dir, "results.json"), results)
        rows = [
            ("dense", results["dense"]),
            (f"compact (strength {FLAGS.strength:g})", results["compact"]),
        ]
        rows += [
            (f"sweep, strength {entry['strength']:g}", entry)
            for entry in results["sweep"]
            if entry["strength"] != FLAGS.strength
        ]
        budget = results.get("budget")
        table = "\n".join(
            [
                f"## {results['config'].get('dataset')}: dense against compact\n",
                *([tables.budget_line(budget)] if budget else []),
                tables.summary_table(rows, hidden_layers),
                tables.layers_table(results["layers"]),
                tables.factorized_table(results["compact"]["factorized"]),
                *extra_tables,
            ]
        )
        write_text(os.path.join(out_dir, "table.md"), table)
        plots.plot_neurons_kept(results["layers"], os.path.join(out_dir, "neurons_kept.png"))
        plots.plot_live_neurons(
            results["live_neurons_per_epoch"], os.path.join(out_dir, "live_neurons.png")
        )
        plots.plot_accuracy_vs_params(
            results["sweep"], results["dense"], os.path.join(out_dir, "accuracy_vs_params.png")
        )
        print(table, flush=True)
        print(f"Wrote {out_dir}/results.json, table.md and plots.", flush=True)
