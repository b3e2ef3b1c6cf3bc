"""Markdown table of peer results at a budget (peer_torch_pruning.py, peer_tfmot_budget.py).

One row per (peer, model, epochs, budget): the seeds, the median test accuracy with
each seed's value, and the medians of parameters, multiply-adds and their
non-zeros.

    python benchmarks/peers_table.py benchmarks/results/*.json
"""

import argparse
import json
import statistics


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="JSON files written by the peers")
    args = parser.parse_args()
    rows = {}
    for path in args.results:
        with open(path) as f:
            result = json.load(f)
        for record in result["records"]:
            budget = record["budget"]
            key = (record["peer"], record["model"], record["epochs"], record["finetune_epochs"],
                   budget["kind"], -budget["fraction"])
            rows.setdefault(key, []).append(record)
    header = ["peer", "model", "budget", "target", "seeds", "accuracy median (per seed)",
              "params", "non-zero params", "MACs", "non-zero MACs", "epochs + fine-tune"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for (peer, model, epochs, finetune_epochs, kind, fraction), records in sorted(rows.items()):
        records.sort(key=lambda r: r["seed"])

        def median(field):
            values = [r.get(field) for r in records]
            if None in values:  # torch_pruning keeps no zeros: non-zero MACs not counted
                return "-"
            return f"{statistics.median(values):,.0f}"

        cells = [
            peer, model, f"{-fraction:.0%} of {'params' if kind == 'parameters' else 'MACs'}",
            f"{records[0]['budget']['target']:,}",
            ",".join(str(r["seed"]) for r in records),
            f"{statistics.median(r['accuracy'] for r in records):.4f} ("
            + ", ".join(f"{r['accuracy']:.4f}" for r in records) + ")",
            median("parameters"), median("nonzero_parameters"),
            median("multiply_adds"), median("nonzero_multiply_adds"),
            f"{epochs} + {finetune_epochs}",
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
