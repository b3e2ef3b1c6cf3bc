"""What compaction did: parameters, MACs and units per layer, and why channels stayed."""

import collections
import dataclasses

import numpy as np

from keras_compact import graph as graph_lib
from keras_compact.compaction.expand import expand_model
from keras_compact.registry import has_neurons, spec_for


def call_macs(call, graph, weights=None):
    """Multiply-adds of one layer call for one sample, from its registry entry (None if unknown)."""
    return spec_for(call.layer).macs(call, graph, weights)


def macs_by_layer(graph):
    """id(layer) -> multiply-adds per sample over all its calls (None if a shape is unknown)."""
    totals = {}
    for call in graph.calls:
        macs = call_macs(call, graph)
        previous = totals.get(id(call.layer), 0)
        totals[id(call.layer)] = None if macs is None or previous is None else previous + macs
    return totals


def _total(macs):
    return sum(f for f in macs.values() if f is not None)


def multiply_adds(model, open_dim_size=None):
    """Multiply-adds of one sample through every Dense/conv call of `model`.

    A call whose shapes are not all known (a sequence length left None)
    counts 0, unless `open_dim_size` gives the size every open dimension
    (but the batch) stands for. A block that `compact` expands into stock
    layers (keras-hub's transformers) is counted as expanded, as `compact`
    and `projected_size` count it: whole, it is no Dense or conv call.
    """
    open_dim_size = graph_lib.check_open_dim_size(open_dim_size, "multiply_adds")
    return _total(macs_by_layer(graph_lib.build_graph_at(expand_model(model)[0], open_dim_size)))


def layers_of_unknown_macs(graph, totals=None):
    """Names of the layers of `graph` whose multiply-adds depend on a dimension left open.

    `totals`: `macs_by_layer(graph)`, where the caller has it already.
    """
    totals = macs_by_layer(graph) if totals is None else totals
    return list(dict.fromkeys(call.name for call in graph.calls if totals[id(call.layer)] is None))


@dataclasses.dataclass
class LayerReport:
    name: str
    type: str
    units_before: int
    units_after: int
    params_before: int
    params_after: int
    macs_before: object  # int, or None where a shape is unknown
    macs_after: object
    dead_found: int  # units found inert from the weights (a neuron's constant output, a head's zero path)
    reason_kept: dict  # why the kept units stay: reason -> number of units
    unit: str = "neurons"  # what `units` counts: "neurons" (output channels) or "heads"


@dataclasses.dataclass
class CompactionReport:
    """The outcome of `compact`: totals before/after, verification, and per-layer detail."""

    model_name: str
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    max_abs_diff: object = None  # float; None when not verified
    max_rel_diff: object = None
    layers: list = dataclasses.field(default_factory=list)  # LayerReport
    barriers: dict = dataclasses.field(default_factory=dict)  # layer name -> why
    factorized: list = dataclasses.field(default_factory=list)  # Factorization.to_dict()
    expanded: list = dataclasses.field(default_factory=list)  # expand.Expansion as dicts
    folded_branches: list = dataclasses.field(default_factory=list)  # constant_branches.BranchFold as dicts
    # Layers whose MACs depend on a dimension the model leaves open (counted 0
    # in macs_before/macs_after): compact(open_dim_size=N) counts them.
    macs_uncounted: list = dataclasses.field(default_factory=list)

    def to_dict(self):
        return dataclasses.asdict(self)

    def table(self):
        """A readable text table, one row per neuron layer, then the totals."""
        header = ("layer", "type", "units", "dead", "params", "MMACs", "kept because")
        units = {"neurons": "", "heads": " heads"}
        rows = []
        for entry in self.layers:
            reasons = ", ".join(
                f"{reason} ({count})" for reason, count in sorted(entry.reason_kept.items())
            )
            rows.append(
                (
                    entry.name,
                    entry.type,
                    f"{entry.units_before} -> {entry.units_after}{units[entry.unit]}",
                    str(entry.dead_found),
                    f"{entry.params_before:,} -> {entry.params_after:,}",
                    f"{_mega(entry.macs_before)} -> {_mega(entry.macs_after)}",
                    reasons,
                )
            )
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
        lines = []
        for row in [header, *rows]:
            cells = [cell.ljust(width) for cell, width in zip(row, widths)]
            lines.append("  ".join([*cells, row[-1]]).rstrip())
        lines.insert(1, "-" * len(lines[0]))
        lines.append("")
        lines.append(
            f"parameters {self.params_before:,} -> {self.params_after:,} "
            f"({_ratio(self.params_after, self.params_before)}); "
            f"MMACs {_mega(self.macs_before)} -> {_mega(self.macs_after)} "
            f"({_ratio(self.macs_after, self.macs_before)})"
        )
        if self.macs_uncounted:
            shown = ", ".join(f"'{name}'" for name in self.macs_uncounted[:_NAMES_SHOWN])
            hidden = len(self.macs_uncounted) - _NAMES_SHOWN
            more = f" and {hidden} more" if hidden > 0 else ""
            lines.append(
                f"MACs counted without {shown}{more}, which run once per position of a dimension the "
                "model leaves open: give open_dim_size=N (--open-dim-size N) to count them"
            )
        if self.max_abs_diff is not None:
            lines.append(
                f"verified: max abs diff {self.max_abs_diff:.3g}, max rel diff {self.max_rel_diff:.3g}"
            )
        for e in self.expanded:
            if e["why_not"] is None:
                lines.append(f"expanded '{e['name']}' ({e['type']}) into {e['layers']} stock layers")
            else:
                lines.append(f"not expanded '{e['name']}' ({e['type']}): {e['why_not']}")
            lines.extend(f"  {text}" for text in e["notes"])
        for why, names in _by_reason(self.barriers).items():
            shown = ", ".join(f"'{name}'" for name in names[:_NAMES_SHOWN])
            more = f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else ""
            lines.append(f"{'barrier' if len(names) == 1 else 'barriers'} {shown}{more}: {why}")
        for fold in self.folded_branches:
            into = f"into the bias of '{fold['into']}'" if fold["into"] else "(zero)"
            made_by = ", ".join(f"'{name}'" for name in fold["constant_inputs"])
            lines.append(
                f"folded the constant input of '{fold['add']}' (made by {made_by}, "
                f"max |c| {fold['max_abs_constant']:.3g}) {into}; the layers that made only it are gone"
            )
        for f in self.factorized:
            lines.append(
                f"factorized '{f['name']}' ({f['form']}): rank {f['rank']} of {f['full_rank']}, "
                f"params {f['params_before']:,} -> {f['params_after']:,}"
            )
        return "\n".join(lines)


_NAMES_SHOWN = 6  # barriers named per reason in `table` (`to_dict` keeps all)


def _by_reason(barriers):
    """{why: [layer names]} in first-seen order."""
    grouped = {}
    for name, why in barriers.items():
        grouped.setdefault(why, []).append(name)
    return grouped


def _mega(macs):
    return "?" if macs is None else f"{macs / 1e6:.3f}"


def _ratio(after, before):
    return f"{after / before:.1%}" if before else "n/a"


def _head_entry(call, new_layer, weights, macs_before, macs_after):
    """The report row of an attention layer: its heads, and why the kept ones stay."""
    layer = call.layer
    kept, _, _, reasons = spec_for(layer).kept_heads(layer, call, weights)
    return LayerReport(
        name=layer.name,
        type=type(layer).__name__,
        units_before=len(kept),
        units_after=int(kept.sum()),
        params_before=int(layer.count_params()),
        params_after=int(new_layer.count_params()),
        macs_before=macs_before.get(id(layer)),
        macs_after=macs_after.get(id(new_layer)),
        dead_found=int(len(kept) - sum(r == "alive" for r in reasons)),
        reason_kept=dict(collections.Counter(r for r in reasons if r is not None)),
        unit="heads",
    )


def _folded_away(entry):
    """The row of a layer that only made a constant branch, now gone (`constant_branches`)."""
    return dataclasses.replace(
        entry, units_after=0, params_after=0, macs_after=0, reason_kept={}
    )


def make_report(model, graph, analysis, rebuilt, weights, open_dim_size=None):
    new_graph = graph_lib.build_graph(rebuilt.model)
    if open_dim_size is None:
        counted_graph = graph
        macs_after = macs_by_layer(new_graph)
    else:
        counted_graph = graph_lib.build_graph_at(model, open_dim_size)
        macs_after = macs_by_layer(graph_lib.build_graph_at(rebuilt.model, open_dim_size))
    macs_before = macs_by_layer(counted_graph)
    present = {id(call.layer) for call in new_graph.calls}
    layers, seen = [], set()
    for call in graph.calls:
        layer = call.layer
        if id(layer) in seen or not (has_neurons(layer) or spec_for(layer).heads(layer) is not None):
            continue
        seen.add(id(layer))
        new_layer = rebuilt.layer_map[id(layer)]
        gone = id(new_layer) not in present
        if not has_neurons(layer):
            if id(layer) not in analysis.barrier_layers:
                entry = _head_entry(call, new_layer, weights, macs_before, macs_after)
                layers.append(_folded_away(entry) if gone else entry)
            continue
        out_key = call.outputs[0]
        if analysis.has_channels(out_key):
            kept = analysis.kept(out_key)
            dead = int((~np.isnan(analysis.const(out_key))).sum())
            reasons = collections.Counter(
                r for r, k in zip(analysis.reasons(out_key), kept) if k and r is not None
            )
        else:
            kept, dead, reasons = None, 0, {}
        units = graph.tensors[out_key].shape[-1]
        layers.append(
            LayerReport(
                name=layer.name,
                type=type(layer).__name__,
                units_before=int(units),
                units_after=int(units if kept is None else kept.sum()),
                params_before=int(layer.count_params()),
                params_after=int(new_layer.count_params()),
                macs_before=macs_before.get(id(layer)),
                macs_after=macs_after.get(id(new_layer)),
                dead_found=dead,
                reason_kept=dict(reasons),
            )
        )
        if gone:
            layers[-1] = _folded_away(layers[-1])
    return CompactionReport(
        model_name=model.name,
        params_before=int(model.count_params()),
        params_after=int(rebuilt.model.count_params()),
        macs_before=_total(macs_before),
        macs_after=_total(macs_after),
        macs_uncounted=layers_of_unknown_macs(counted_graph, macs_before),
        layers=layers,
        # A barrier that only fed a folded constant branch is gone with it.
        barriers={
            call.name: analysis.barriers[call.name]
            for call in graph.calls
            if call.name in analysis.barriers and id(rebuilt.layer_map.get(id(call.layer))) in present
        },
    )


def add_factorizations(report, model, factorizations, open_dim_size=None):
    """Fold factorized layers (each now two layers of `model`) into `report`."""
    if not factorizations:
        return
    report.factorized = [f.to_dict() for f in factorizations]
    macs = macs_by_layer(graph_lib.build_graph_at(model, open_dim_size))
    entries = {entry.name: entry for entry in report.layers}
    for f in factorizations:
        pair = [model.get_layer(f.factor_name), model.get_layer(f.name)]
        entry = entries[f.name]
        entry.params_after = f.params_after
        pair_macs = [macs.get(id(layer)) for layer in pair]
        entry.macs_after = None if None in pair_macs else sum(pair_macs)
    report.params_after = int(model.count_params())
    report.macs_after = _total(macs)
