"""Tables and the plot of the budget comparison: keras-compact's budget runs and
fixed-strength sweep (bench_budget.py) beside Torch-Pruning and TFMOT
(peer_torch_pruning.py, peer_tfmot_budget.py).

    python benchmarks/budget_report.py benchmarks/results/*.json \\
        --plot benchmarks/budget_lenet5.png

Prints markdown: per budget, keras-compact's budget runs (medians of seeds,
each seed's accuracy), (a) the best fixed-strength sweep point of the same
size, (b) Torch-Pruning, (c) TFMOT, and the targets; then the controller's
cost. Only records of the same schedule (--epochs + --finetune_epochs) are
compared; other schedules in the files are skipped and listed.

(a) comes from the sweep of the same penalty (weighted or unweighted groups).
"Of the same size" for the sweep: the strengths whose median compact size
(over the seeds run) is within [0.9, 1.0] x the budget, best median accuracy
among them; if none is, the largest at or under the budget. A strength's
point is the median of its seeds' sizes and accuracies.
"""

import argparse
import json
import statistics

from keras_compact.files import atomic_path

SCHEDULES = {"lenet5": (10, 5), "vgg_small": (4, 2)}
SIZE_FIELD = {"parameters": "parameters", "multiply_adds": "multiply_adds"}
BAND = (0.9, 1.0)
# Targets of the issue: accuracy within this many points of the best fixed strength.
FIXED_SLACK = 0.003
COST_TARGET = 0.02
# 4,000 training digits in batches of 64.
STEPS_PER_EPOCH = 63


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="JSON files of bench_budget.py and the peers")
    parser.add_argument("--plot", default=None, help="PNG: LeNet-5 test accuracy against parameters")
    args = parser.parse_args()
    records, skipped = load(args.results)
    for line in skipped:
        print(f"<!-- skipped: {line} -->")
    for model in ("lenet5", "vgg_small"):
        print(budget_table(model, records))
    print(sweep_table(records))
    print(cost_table(records))
    if args.plot:
        plot(records, args.plot)


def load(paths):
    """Records by source, on the compared schedules: "ours" (BudgetController, the
    examples' weighted groups), "ours_unweighted" (the README's GroupLasso(1e-4)),
    "fixed" and "fixed_unweighted" (the sweeps), "torch_pruning", "tfmot"."""
    records, skipped = {key: [] for key in ("ours", "ours_unweighted", "fixed", "fixed_unweighted",
                                            "torch_pruning", "tfmot")}, []
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        for record in result.get("records", []):
            schedule = (record["epochs"], record["finetune_epochs"])
            if SCHEDULES.get(record["model"]) != schedule:
                skipped.append(f"{path}: {record['model']} {schedule[0]} + {schedule[1]} epochs")
                continue
            if "peer" in record:
                records[record["peer"]].append(record)
            else:
                weighted = record.get("weighted_groups", True)  # the first runs predate the flag
                if record["method"] == "budget":
                    records["ours" if weighted else "ours_unweighted"].append(record)
                else:
                    records["fixed" if weighted else "fixed_unweighted"].append(record)
    return records, sorted(set(skipped))


def median(values):
    return statistics.median(values)


def at_budget(records, model, kind, fraction):
    return sorted((r for r in records if r["model"] == model and r["budget"]["kind"] == kind
                   and r["budget"]["fraction"] == fraction), key=lambda r: r["seed"])


def sweep_points(records, model):
    """One point per strength: medians over its seeds."""
    by_strength = {}
    for record in records:
        if record["model"] == model:
            by_strength.setdefault(record["strength"], []).append(record)
    points = []
    for strength, runs in sorted(by_strength.items()):
        runs.sort(key=lambda r: r["seed"])
        points.append(dict(
            strength=strength, seeds=[r["seed"] for r in runs],
            parameters=median([r["parameters"] for r in runs]),
            multiply_adds=median([r["multiply_adds"] for r in runs]),
            parameters_fraction=median([r["parameters_fraction"] for r in runs]),
            multiply_adds_fraction=median([r["multiply_adds_fraction"] for r in runs]),
            accuracy=median([r["accuracy"] for r in runs]),
            accuracies=[r["accuracy"] for r in runs],
        ))
    return points


def same_size(points, kind, fraction):
    """The best sweep point of the same size (module docstring), and how it was chosen."""
    field = f"{kind}_fraction"
    inside = [p for p in points if BAND[0] * fraction <= p[field] <= BAND[1] * fraction]
    if inside:
        return max(inside, key=lambda p: p["accuracy"]), "in band"
    under = [p for p in points if p[field] <= fraction]
    if under:
        return max(under, key=lambda p: p[field]), "nearest under"
    return None, "none under"


def accuracies(runs):
    return f"{median([r['accuracy'] for r in runs]):.4f} (" + ", ".join(
        f"{r['accuracy']:.4f}" for r in runs) + ")"


def budget_table(model, records):
    ours_model = [r for r in records["ours"] + records["ours_unweighted"] if r["model"] == model]
    if not ours_model:
        return f"\nNo keras-compact budget runs of {model}.\n"
    kind = ours_model[0]["budget"]["kind"]
    short = "params" if kind == "parameters" else "MACs"
    size = SIZE_FIELD[kind]
    lines = [
        f"\n#### {model}: {short} budgets, {SCHEDULES[model][0]} + {SCHEDULES[model][1]} epochs\n",
        f"| budget | keras-compact groups | seeds | {short} reached (median; per seed / budget) "
        "| in [0.9, 1.0] | params | MACs | acc. before fine-tune | **accuracy** median (per seed) "
        "| (a) best fixed strength of the same size | (b) Torch-Pruning | (c) TFMOT (non-zeros) "
        "| acc. >= (a) - 0.3 pt | acc. >= (b) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for fraction in sorted({r["budget"]["fraction"] for r in ours_model}, reverse=True):
        torch = at_budget(records["torch_pruning"], model, kind, fraction)
        tfmot = at_budget(records["tfmot"], model, kind, fraction)
        torch_cell = (f"{median([r[size] for r in torch]):,.0f} {short}, {accuracies(torch)}"
                      if torch else "-")
        tfmot_cell = (f"{median([r['nonzero_' + size] for r in tfmot]):,.0f} non-zero {short}, "
                      f"{accuracies(tfmot)}" if tfmot else "-")
        # (a) is the sweep of the same penalty: a weighted strength means nothing unweighted.
        for source, sweep, groups in (("ours", "fixed", "weighted"),
                                      ("ours_unweighted", "fixed_unweighted", "unweighted")):
            ours = at_budget(records[source], model, kind, fraction)
            if not ours:
                continue
            fixed, how = same_size(sweep_points(records[sweep], model), kind, fraction)
            fixed_cell = "no sweep point" if not fixed else (
                f"s={fixed['strength']:g} ({how}, seeds {','.join(map(str, fixed['seeds']))}): "
                f"{fixed[f'{kind}_fraction']:.2%} {short}, {fixed['accuracy']:.4f}")
            # Accuracies are k / 1,000 test digits stored as float32: compared at 4 decimals,
            # so that a gap of exactly 0.3 points is not decided by float rounding.
            ours_accuracy = round(median([r["accuracy"] for r in ours]), 4)
            fixed_met = "-" if not fixed else (
                "yes" if ours_accuracy >= round(fixed["accuracy"] - FIXED_SLACK, 4) else "**no**")
            torch_met = "-" if not torch else (
                "yes" if ours_accuracy >= round(median([r["accuracy"] for r in torch]), 4)
                else "**no**")
            reached = ", ".join(f"{r['reached_over_budget']:.3f}" for r in ours)
            lines.append(
                f"| {fraction:.0%} | {groups} | {','.join(str(r['seed']) for r in ours)} "
                f"| {median([r[f'{kind}_fraction'] for r in ours]):.2%} ({reached}) "
                f"| {sum(r['in_band'] for r in ours)}/{len(ours)} "
                f"| {median([r['parameters'] for r in ours]):,.0f} "
                f"| {median([r['multiply_adds'] for r in ours]):,.0f} "
                f"| {median([r['accuracy_before_finetune'] for r in ours]):.4f} "
                f"| **{accuracies(ours)}** | {fixed_cell} | {torch_cell} | {tfmot_cell} "
                f"| {fixed_met} | {torch_met} |"
            )
    with_tflite = [r for r in ours_model if "tflite" in r]
    if with_tflite:
        lines += ["", "| budget | groups | seed | widths | float32 .tflite "
                  "| latency (batch 1, 1 thread, median) | landed at step (of) | wall s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in sorted(with_tflite, key=lambda r: (-r["budget"]["fraction"],
                                                    not r.get("weighted_groups", True), r["seed"])):
            lines.append(
                f"| {r['budget']['fraction']:.0%} | {groups_of(r)} | {r['seed']} "
                f"| {'-'.join(map(str, r['widths']))} "
                f"| {r['tflite']['bytes'] / 1024:,.0f} KiB | {r['tflite']['latency_ms_median']:.3f} ms "
                f"| {landing(r)} | {r['wall_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def groups_of(record):
    return "weighted" if record.get("weighted_groups", True) else "unweighted"


def landing(record):
    """The step of the controller's last check (where it landed) and the steps of `fit`."""
    steps = record["epochs"] * STEPS_PER_EPOCH
    if record["landed_at_end"]:
        return f"end ({steps})"
    return f"{record['history'][-1][0]} ({steps})"


def sweep_table(records):
    lines = ["\n#### Fixed-strength sweep (no controller)\n",
             "| model | groups | strength | seeds | params (median) | % of dense | MACs "
             "| accuracy median (per seed) |",
             "|---|---|---|---|---|---|---|---|"]
    for model in SCHEDULES:
        for source, groups in (("fixed", "weighted"), ("fixed_unweighted", "unweighted")):
            for p in sweep_points(records[source], model):
                lines.append(
                    f"| {model} | {groups} | {p['strength']:g} | {','.join(map(str, p['seeds']))} "
                    f"| {p['parameters']:,.0f} | {p['parameters_fraction']:.2%} "
                    f"| {p['multiply_adds']:,.0f} | {p['accuracy']:.4f} ("
                    + ", ".join(f"{a:.4f}" for a in p["accuracies"]) + ") |")
    return "\n".join(lines) + "\n"


def cost_table(records):
    lines = ["\n#### The controller's own cost (seconds in its hooks / seconds of `fit`, same process)\n",
             "| model | groups | runs | all hooks: median share of fit (max) "
             "| checks (batch-end hook less the landing) | epoch-end logs | start s | landing s "
             "| checks per run | projections per run | median ms per projection | median fit s "
             "| target <= 2% |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model in SCHEDULES:
        for source in ("ours", "ours_unweighted"):
            runs = [r for r in records[source] if r["model"] == model]
            if not runs:
                continue
            costs = [r["controller_cost"] for r in runs]
            shares = [c["fraction_of_fit"] for c in costs]
            # Hooks and the landing are timed apart only by the runs made after that was added.
            timed = [c for c in costs if "landing_seconds" in c]

            def share(part):
                return f"{median([part(c) / c['fit_seconds'] for c in timed]):.2%}" if timed else "-"

            def seconds(part):
                return f"{median([part(c) for c in timed]):.2f}" if timed else "-"

            lines.append(
                f"| {model} | {groups_of(runs[0])} | {len(runs)} "
                f"| {median(shares):.2%} ({max(shares):.2%}) "
                f"| {share(lambda c: c['hook_seconds']['on_train_batch_end'] - c['landing_seconds'])} "
                f"| {share(lambda c: c['hook_seconds']['on_epoch_end'])} "
                f"| {seconds(lambda c: c['hook_seconds']['on_train_begin'])} "
                f"| {seconds(lambda c: c['landing_seconds'])} "
                f"| {median([len(r['history']) for r in runs]):.0f} "
                f"| {median([c['projections'] for c in costs]):.0f} "
                f"| {1000 * median([c['projection_seconds_median'] for c in costs]):.0f} "
                f"| {median([c['fit_seconds'] for c in costs]):.0f} "
                f"| {'met' if median(shares) <= COST_TARGET else '**missed**'} |")
    return "\n".join(lines) + "\n"


def plot(records, path):
    """LeNet-5: test accuracy against parameters (log x), every run one point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 4.8))
    series = [
        ("keras-compact, BudgetController (weighted groups)", records["ours"], "parameters", "o",
         "tab:blue"),
        ("keras-compact, BudgetController (unweighted)", records["ours_unweighted"], "parameters", "D",
         "tab:purple"),
        ("keras-compact, fixed strength (weighted)", records["fixed"], "parameters", "x", "tab:cyan"),
        ("keras-compact, fixed strength (unweighted)", records["fixed_unweighted"], "parameters", "+",
         "tab:pink"),
        ("Torch-Pruning 1.6.1 (group_sl)", records["torch_pruning"], "parameters", "s", "tab:red"),
        ("TFMOT 0.8.1 (non-zero parameters)", records["tfmot"], "nonzero_parameters", "^", "tab:green"),
    ]
    for label, runs, field, marker, color in series:
        runs = [r for r in runs if r["model"] == "lenet5"]
        if runs:
            axes.scatter([r[field] for r in runs], [100 * r["accuracy"] for r in runs],
                         label=label, marker=marker, color=color, alpha=0.8)
    dense = 431_080
    for fraction in (0.03, 0.05, 0.10, 0.25):
        axes.axvline(fraction * dense, color="grey", linewidth=0.6, linestyle=":")
    axes.set_xscale("log")
    axes.set_xlabel("parameters of the compact net (TFMOT: non-zeros in dense tensors)")
    axes.set_ylabel("test accuracy after fine-tuning (%)")
    axes.set_title("LeNet-5, mnist5k, 10 + 5 epochs: budgets 3/5/10/25% (dotted)")
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
