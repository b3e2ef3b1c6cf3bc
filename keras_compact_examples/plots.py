"""PNG plots of the experiments, drawn with matplotlib's Agg backend (no display needed).

Neurons kept per layer, live neurons per epoch, accuracy against parameters
over a sweep of strengths, and non-zero parameters against increase in error
for several methods (the paper's LeNet plot). Each file is written through
`keras_compact.files.atomic_path`, so a reader never sees half a PNG.
"""

from keras_compact.files import atomic_path


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
