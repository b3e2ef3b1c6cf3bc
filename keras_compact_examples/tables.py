"""Markdown tables like the paper's: the dense and the compact network, layer by layer.

`summary_table` is the paper's Table 1 layout (neurons per layer, parameters,
memory, multiply-adds, error); `layers_table` gives the units kept per layer,
`factorized_table` the low-rank layers split in two. They return text; the
examples write it with `keras_compact.files.write_text`.
"""

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
            `macs` (multiply-adds of one example's forward pass) and
            `tflite_bytes`.
        layer_names: the layers whose neurons make the "neurons" column.

    Returns:
        Markdown text. Memory is float32 parameters (4 bytes each); the error
        increase is against the first row.
    """
    lines = [
        "| network | neurons ("
        + "-".join(layer_names)
        + ") | parameters | % of first | memory (float32) "
        "| MACs | TFLite file | error % | error increase (points) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    reference = rows[0][1]
    for label, entry in rows:
        neurons = "-".join(str(entry["units"][name]) for name in layer_names)
        tflite = human_bytes(entry["tflite_bytes"]) if entry.get("tflite_bytes") else "-"
        macs = human_count(entry["macs"]) if entry.get("macs") else "-"
        error = 100 * (1 - entry["accuracy"])
        increase = 100 * (reference["accuracy"] - entry["accuracy"])
        lines.append(
            f"| {label} | {neurons} | {human_count(entry['params'])} "
            f"| {100 * entry['params'] / reference['params']:.1f}% "
            f"| {human_bytes(entry['params'] * BYTES_PER_FLOAT32)} | {macs} | {tflite} "
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


def budget_line(budget):
    """One line: the budget asked for and what the compact network reached (fractions of dense)."""
    parts = []
    for key in ("params", "macs"):
        asked = budget["asked"][key]
        if asked is not None:
            asked_text = f"{asked:.1%}" if asked <= 1 else f"{asked:,.0f}"
            parts.append(f"{key} asked {asked_text}, reached {budget['reached'][key]:.1%}")
    landed = " (landed at the end of training: fine-tune)" if budget["landed_at_end"] else ""
    return "Budget: " + "; ".join(parts) + landed + "\n"


def blocks_table(dense_blocks, compact_blocks):
    """A transformer's heads and FFN neurons per block, kept of total.

    Args:
        dense_blocks, compact_blocks: [{"heads": int, "ffn": int}], one per block.
    """
    lines = [
        "| block | heads kept | FFN neurons kept |",
        "|---|---:|---:|",
    ]
    totals = {"heads": [0, 0], "ffn": [0, 0]}
    for index, (dense, compact) in enumerate(zip(dense_blocks, compact_blocks)):
        cells = []
        for key in ("heads", "ffn"):
            totals[key][0] += compact[key]
            totals[key][1] += dense[key]
            cells.append(f"{compact[key]} / {dense[key]}")
        lines.append(f"| {index} | " + " | ".join(cells) + " |")
    cells = [
        f"{kept} / {total} ({100 * (1 - kept / total):.0f}% removed)"
        for kept, total in (totals["heads"], totals["ffn"])
    ]
    lines.append("| **all** | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cost_table(rows):
    """Parameters, multiply-adds, accuracy, .tflite size and latency, one row per network.

    Args:
        rows: [(label, entry)], entry a dict with `params`, `macs`, `accuracy`
            (a fraction), and optionally `tflite_bytes` and `latency_us`
            (median batch-1 float32 TFLite latency on one thread). Ratios are
            against the first row.
    """
    lines = [
        "| network | parameters | MACs | accuracy | float32 .tflite | latency, 1 thread | "
        "params reduction | MACs reduction | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    reference = rows[0][1]
    for label, entry in rows:
        tflite = human_bytes(entry["tflite_bytes"]) if entry.get("tflite_bytes") else "-"
        latency = f"{entry['latency_us']:.1f} us" if entry.get("latency_us") else "-"
        speedup = (
            f"{reference['latency_us'] / entry['latency_us']:.2f}x"
            if entry.get("latency_us") and reference.get("latency_us")
            else "-"
        )
        lines.append(
            f"| {label} | {entry['params']:,} | {entry['macs']:,} | {100 * entry['accuracy']:.2f}% "
            f"| {tflite} | {latency} | {reference['params'] / entry['params']:.2f}x "
            f"| {reference['macs'] / entry['macs']:.2f}x | {speedup} |"
        )
    return "\n".join(lines) + "\n"
