"""Tables and plots like the paper's, written atomically.

Tables are markdown: neurons per layer, parameters, memory and error of the
dense and the compact network (the paper's Table 1 layout), and units kept
per layer. Plots are PNG files drawn with matplotlib's Agg backend (no
display needed): neurons kept per layer, live neurons per epoch, accuracy
against parameters over a sweep of strengths, and non-zero parameters
against increase in error for several methods.

Every file is written through `keras_compact.files` (atomic, synced).
"""

from keras_compact.files import atomic_path, write_json, write_text  # noqa: F401 (re-exported for the examples)

BYTES_PER_FLOAT32 = 4


def human_bytes(count):
    """1234567 -> '1.18 MiB'."""
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.2f} {unit}"
        count /= 1024
    return f"{count:.2f} GiB"


def human_count(count):
    """431080 -> '431.1K'."""
    if count >= 1e6:
        return f"{count / 1e6:.2f}M"
    if count >= 1e3:
        return f"{count / 1e3:.1f}K"
    return str(int(count))


def summary_table(rows, layer_names):
    """The paper's comparison table, one row per network.

    Args:
        rows: [(label, entry)], entry a dict with `accuracy` (a fraction),
            `params`, `units` ({layer name: neurons}) and optionally
            `flops` (of one example's forward pass) and `tflite_bytes`.
        layer_names: the layers whose neurons make the "neurons" column.

    Returns:
        Markdown text. Memory is float32 parameters (4 bytes each); the error
        increase is against the first row.
    """
    lines = [
        "| network | neurons ("
        + "-".join(layer_names)
        + ") | parameters | % of first | memory (float32) "
        "| FLOPs | TFLite file | error % | error increase (points) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    reference = rows[0][1]
    for label, entry in rows:
        neurons = "-".join(str(entry["units"][name]) for name in layer_names)
        tflite = human_bytes(entry["tflite_bytes"]) if entry.get("tflite_bytes") else "-"
        flops = human_count(entry["flops"]) if entry.get("flops") else "-"
        error = 100 * (1 - entry["accuracy"])
        increase = 100 * (reference["accuracy"] - entry["accuracy"])
        lines.append(
            f"| {label} | {neurons} | {human_count(entry['params'])} "
            f"| {100 * entry['params'] / reference['params']:.1f}% "
            f"| {human_bytes(entry['params'] * BYTES_PER_FLOAT32)} | {flops} | {tflite} "
            f"| {error:.2f} | {increase:+.2f} |"
        )
    return "\n".join(lines) + "\n"


def layers_table(layers):
    """Units kept per layer: layers is [{name, units_before, units_after}]."""
    lines = ["| layer | neurons before | neurons after | kept |", "|---|---:|---:|---:|"]
    for layer in layers:
        kept = layer["units_after"] / layer["units_before"]
        lines.append(
            f"| {layer['name']} | {layer['units_before']} | {layer['units_after']} | {100 * kept:.1f}% |"
        )
    return "\n".join(lines) + "\n"


def factorized_table(factorized):
    """Low-rank layers split in two: factorized is [Factorization.to_dict()]; '' if empty."""
    if not factorized:
        return ""
    lines = ["| factorized layer | form | rank | parameters before | after |", "|---|---|---:|---:|---:|"]
    for f in factorized:
        lines.append(
            f"| {f['name']} | {f['form']} | {f['rank']} of {f['full_rank']} "
            f"| {f['params_before']:,} | {f['params_after']:,} |"
        )
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path):
    plt = _pyplot()
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    plt.close(figure)


def _finish_log_x(figure, axes, xlabel, ylabel, title, path):
    """Parameter counts span decades: a log x axis, labels, legend, then save."""
    from matplotlib.ticker import NullFormatter

    axes.set_xscale("log")
    # Minor-tick labels (3x10^4, 4x10^4, ...) overlap on a short axis.
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend()
    _save(figure, path)


def plot_neurons_kept(layers, path, title="Neurons kept per layer"):
    """Bars of neurons before and after, per layer."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(max(4, 1.2 * len(layers)), 3.5))
    positions = range(len(layers))
    axes.bar(
        positions, [layer["units_before"] for layer in layers], color="lightgray", label="before"
    )
    axes.bar(positions, [layer["units_after"] for layer in layers], color="tab:blue", label="after")
    for position, layer in zip(positions, layers):
        axes.annotate(
            f"{100 * layer['units_after'] / layer['units_before']:.0f}%",
            (position, layer["units_after"]),
            ha="center",
            va="bottom",
        )
    axes.set_xticks(list(positions), [layer["name"] for layer in layers])
    axes.set_yscale("log")
    axes.set_ylabel("neurons")
    axes.set_title(title)
    axes.legend()
    _save(figure, path)


def plot_live_neurons(live_per_epoch, path, title="Live neurons during training"):
    """One line per layer: live_per_epoch is {layer: [live neurons after each epoch]}."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for name, counts in live_per_epoch.items():
        initial = max(counts[0], 1) if counts else 1
        axes.plot(
            range(1, len(counts) + 1), [100 * c / initial for c in counts], marker=".", label=name
        )
    axes.set_xlabel("epoch")
    axes.set_ylabel("live neurons (% of epoch 1)")
    axes.set_title(title)
    axes.legend()
    _save(figure, path)


def plot_accuracy_vs_params(points, dense, path, title="Accuracy against parameters"):
    """points: [{strength, params, accuracy}] of a sweep; dense: {params, accuracy}."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5, 3.5))
    points = sorted(points, key=lambda point: point["params"])
    axes.plot(
        [p["params"] for p in points],
        [100 * p["accuracy"] for p in points],
        marker="o",
        label="compact (ProxSGD)",
    )
    for point in points:
        axes.annotate(
            f"{point['strength']:g}", (point["params"], 100 * point["accuracy"]), fontsize=7
        )
    axes.scatter(
        [dense["params"]], [100 * dense["accuracy"]], color="black", marker="*", s=80, label="dense"
    )
    _finish_log_x(figure, axes, "parameters", "test accuracy %", title, path)


def plot_error_increase(curves, path, title="Non-zero parameters against increase in error"):
    """curves: {method: [{nonzero_params, error_increase (points)}]}, as the paper's LeNet plot."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for method, points in curves.items():
        points = sorted(points, key=lambda point: point["nonzero_params"])
        axes.plot(
            [p["nonzero_params"] for p in points],
            [p["error_increase"] for p in points],
            marker="o",
            label=method,
        )
    axes.axhline(0, color="gray", linewidth=0.5)
    _finish_log_x(
        figure, axes, "non-zero parameters", "increase in test error (points)", title, path
    )
