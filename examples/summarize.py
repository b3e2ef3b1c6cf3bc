r"""Mean over seeds: one markdown table from several runs' results.json.

    for seed in 0 1 2; do python examples/lenet5.py --seed=$seed --out_dir=out/q/seed$seed; done
    python examples/summarize.py --results='out/q/seed*/results.json'

Each run is compared with its own dense baseline; the last row is the mean.
"""

import glob
import json

from absl import app
from absl import flags

from keras_compact.files import write_text
from keras_compact_examples.tables import human_count

flags.DEFINE_list("results", None, "results.json files or glob patterns.", required=True)
flags.DEFINE_string("out", None, "Also write the table to this markdown file.")

FLAGS = flags.FLAGS


def summary(runs):
    """Markdown: per run and mean, dense and compact accuracy, parameters, accuracy change."""
    lines = [
        "| run | seed | dense accuracy | compact accuracy | change (points) | compact neurons | compact params | % of dense |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    changes, shares, params, dense_accuracies, compact_accuracies = [], [], [], [], []
    for path, results in runs:
        dense, compact = results["dense"], results["compact"]
        hidden = list(dense["units"])[:-1]
        change = 100 * (compact["accuracy"] - dense["accuracy"])
        share = 100 * compact["params"] / dense["params"]
        changes.append(change)
        shares.append(share)
        params.append(compact["params"])
        dense_accuracies.append(dense["accuracy"])
        compact_accuracies.append(compact["accuracy"])
        neurons = "-".join(str(compact["units"][name]) for name in hidden)
        lines.append(
            f"| {path} | {results['config'].get('seed')} | {100 * dense['accuracy']:.2f}% "
            f"| {100 * compact['accuracy']:.2f}% | {change:+.2f} | {neurons} "
            f"| {human_count(compact['params'])} | {share:.1f}% |"
        )
    count = len(runs)
    lines.append(
        f"| **mean of {count}** | | {100 * sum(dense_accuracies) / count:.2f}% "
        f"| {100 * sum(compact_accuracies) / count:.2f}% | {sum(changes) / count:+.2f} | "
        f"| {human_count(sum(params) / count)} | {sum(shares) / count:.1f}% |"
    )
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    paths = sorted({path for pattern in FLAGS.results for path in glob.glob(pattern)})
    if not paths:
        raise app.UsageError(f"No results.json matches {FLAGS.results}.")
    runs = []
    for path in paths:
        with open(path) as file:
            runs.append((path, json.load(file)))
    table = summary(runs)
    print(table)
    if FLAGS.out:
        write_text(FLAGS.out, table)


if __name__ == "__main__":
    app.run(main)
