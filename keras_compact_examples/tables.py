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
