r"""LeNet-5 (Caffe) on MNIST digits: dense against ProxSGD-compacted, as in the paper.

    python examples/lenet5.py --dataset=mnist5k --out_dir=out/lenet5

Trains the dense baseline and the same net with ProxSGD under the same
budget, compacts it, fine-tunes it, exports it to TFLite, and writes
results.json, table.md and plots into --out_dir (see common.py). On top:

- the paper's ReLU experiment (--activation_experiment=relu,tanh,sigmoid): the
  same sparse training with each activation, and the neurons it removes from
  each hidden layer (conv2 and fc1 in the paper);
- the paper's baseline, Srinivas and Babu's data-free pruning of fc1
  (--srinivas_babu): non-zero parameters against increase in error, beside the
  compact nets of the sweep, in error_increase.png.

The defaults are the settings of the quality target in BENCHMARKS.md.
"""

import os

from absl import app
from absl import flags

import common
from keras_compact_examples import models, plots, srinivas_babu, tables

common.define_flags(
    datasets=["mnist5k", "digits"],
    dataset="mnist5k",
    epochs=40,
    batch_size=64,
    learning_rate=0.01,
    lr_schedule="constant",
    strength=0.0035,
    finetune_epochs=10,
    finetune_lr_scale=0.3,
    weighted_groups=True,
)
flags.DEFINE_list(
    "activation_experiment",
    [],
    "Activations to compare under the same sparse training (the paper's ReLU experiment), "
    "e.g. relu,tanh,sigmoid.",
)
flags.DEFINE_boolean(
    "srinivas_babu",
    True,
    "Compare with Srinivas and Babu's data-free pruning of fc1 (no training, seconds).",
)
flags.register_validator(
    "activation_experiment",
    lambda values: set(values) <= set(models.ACTIVATIONS),
    f"--activation_experiment takes activations among {list(models.ACTIVATIONS)}.",
)

FLAGS = flags.FLAGS

HIDDEN_LAYERS = ("conv1", "conv2", "fc1")
# Shares of fc1's neurons that data-free pruning removes, one point each.
_PRUNED_FRACTIONS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99)


def build_lenet5(input_shape, num_classes, activation, width):
    return models.lenet5(input_shape, num_classes, activation=activation, width=width)


def activation_experiment(experiment, results):
    """Sparse training with each activation: live and removed neurons per hidden layer."""
    outcome = {}
    for activation in FLAGS.activation_experiment:
        if activation == FLAGS.activation:
            live = {name: counts[-1] for name, counts in results["live_neurons_per_epoch"].items()}
            accuracy = results["compact"]["accuracy_sparse"]
        else:
            model, history = experiment.train_sparse(FLAGS.strength, activation)
            live = {
                name: int(history.history[f"live_neurons/{name}"][-1]) for name in HIDDEN_LAYERS
            }
            accuracy = experiment.accuracy(model)
        units = results["dense"]["units"]
        outcome[activation] = {
            "accuracy_sparse": accuracy,
            "live": live,
            "removed": {name: units[name] - live[name] for name in HIDDEN_LAYERS},
        }
    return outcome


def activation_table(outcome):
    lines = [
        "### Neurons removed by the same sparse training, per activation\n",
        "| activation | "
        + " | ".join(f"{name} removed" for name in HIDDEN_LAYERS)
        + " | test accuracy (sparse, before compaction) |",
        "|---|" + "---:|" * (len(HIDDEN_LAYERS) + 1),
    ]
    for activation, entry in outcome.items():
        removed = " | ".join(str(entry["removed"][name]) for name in HIDDEN_LAYERS)
        lines.append(f"| {activation} | {removed} | {100 * entry['accuracy_sparse']:.2f}% |")
    return "\n".join(lines) + "\n"


def srinivas_babu_comparison(experiment, results):
    """Data-free pruning of the dense baseline's fc1, and the plot against our sweep."""
    common.say("== Srinivas and Babu data-free pruning of fc1")
    points = srinivas_babu.prune_curve(
        experiment.dense_model, "fc1", "fc2", _PRUNED_FRACTIONS, experiment.accuracy
    )
    dense_accuracy = results["dense"]["accuracy"]
    for point in points:
        point["error_increase"] = 100 * (dense_accuracy - point["accuracy"])
    ours = [
        {
            "nonzero_params": entry["params"],
            "error_increase": 100 * (dense_accuracy - entry["accuracy"]),
        }
        for entry in results["sweep"]
    ]
    plots.plot_error_increase(
        {"compact, ProxSGD (ours)": ours, "Srinivas & Babu 2015 (data-free)": points},
        os.path.join(FLAGS.out_dir, "error_increase.png"),
    )
    return points


def srinivas_babu_table(points):
    lines = [
        "### Srinivas and Babu's data-free pruning of fc1 (dense baseline)\n",
        "| fc1 neurons | non-zero parameters | test accuracy | error increase (points) |",
        "|---:|---:|---:|---:|",
    ]
    for point in points:
        lines.append(
            f"| {point['units']} | {tables.human_count(point['nonzero_params'])} "
            f"| {100 * point['accuracy']:.2f}% | {point['error_increase']:+.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # LeNet-5 reads 28x28 digits: scikit-learn's 8x8 ones are scaled up.
    experiment = common.Experiment(
        build_lenet5, image_size=28 if FLAGS.dataset == "digits" else None
    )
    results = experiment.run()
    extra_tables = []
    if FLAGS.activation_experiment:
        results["activation_experiment"] = activation_experiment(experiment, results)
        extra_tables.append(activation_table(results["activation_experiment"]))
    if FLAGS.srinivas_babu:
        results["srinivas_babu"] = srinivas_babu_comparison(experiment, results)
        extra_tables.append(srinivas_babu_table(results["srinivas_babu"]))
    experiment.write(results, extra_tables)


if __name__ == "__main__":
    app.run(main)
