"""Compaction: rebuild a model without its dead neurons, exactly.

    compact_model, report = keras_compact.compact(model)

Which channels go is decided from weights only (`channels`), what each layer
does is its entry in the layer registry (`keras_compact.registry`), the
rebuild slices weights and folds constants into biases (`rebuild`), and the
result is checked against the original on a random batch (`verify`). Layers
trained to low rank are then split into two thin layers (`factorize`). An
Add input that is a constant vector (a feed-forward block whose neurons all
died) is folded into a bias and the layers that made it left out
(`constant_branches`).
"""

import dataclasses

import keras
import numpy as np

from keras_compact import graph as graph_lib
from keras_compact.compaction.channels import CallMasks, WeightCache, analyze
from keras_compact.compaction.constant_branches import fold_constant_branches, fold_plan
from keras_compact.compaction.expand import diagnose_expansions, expand_model
from keras_compact.compaction.factorize import factorize as factorize_model
from keras_compact.compaction.rebuild import diagnose_clones, rebuild
from keras_compact.compaction.report import CompactionReport, LayerReport, add_factorizations, make_report
from keras_compact.compaction.verify import CompactionError, check_finite_weights, random_batch
from keras_compact.compaction.verify import verification_tolerances
from keras_compact.compaction.verify import verify as verify_models
from keras_compact.registry import spec_for


def _check_channel_multiple(channel_multiple):
    if isinstance(channel_multiple, bool) or int(channel_multiple) != channel_multiple or channel_multiple < 1:
        raise ValueError(f"channel_multiple must be an integer >= 1, got {channel_multiple!r}.")
    return int(channel_multiple)


def _low_rank_layers(model):
    """Names of the layers a TensorLowRank penalty of the model's optimizer trains."""
    from keras_compact.optimizers.proximal import proximal_optimizer_of
    from keras_compact.penalties import TensorLowRank

    optimizer = proximal_optimizer_of(model)
    if optimizer is None:
        return []
    return sorted(
        {
            target.layer_name
            for penalty in optimizer.penalties
            if isinstance(penalty, TensorLowRank)
            for target in penalty.resolve(model)
        }
    )


def _layers_to_factorize(model, factorize):
    if factorize == "auto":
        return _low_rank_layers(model)
    if factorize is True:
        return None  # every layer
    if factorize is False or factorize is None:
        return []
    if isinstance(factorize, (list, tuple)) and all(isinstance(n, str) for n in factorize):
        return list(factorize)
    raise ValueError(
        f"factorize must be 'auto', True, False or a list of layer names, got {factorize!r}."
    )


def compact(
    model,
    *,
    sample_data=None,
    atol=None,
    rtol=None,
    verify=True,
    seed=0,
    factorize="auto",
    rank_rtol=1e-5,
    channel_multiple=1,
    open_dim_size=None,
):
    """A copy of `model` without its dead neurons, and a `CompactionReport`.

    A channel goes when, from the weights alone, it is a structural constant
    that is zero where it is cut or folds exactly into every consumer's bias,
    or when nothing reads it (all outgoing weights zero). Channels coupled by
    Add, Multiply, ... go together. Model outputs keep all their channels.
    Removing channels is exact; factorization (below) cuts singular values
    up to `rank_rtol` and is verified like the rest. A layer whose registry
    entry can expand it (keras-hub's transformer blocks, `keras_compact.hub`)
    is first replaced by stock Keras layers computing the same (`expand.py`),
    and with `verify` that expanded model is compared with `model` before
    anything is removed.

    Args:
        model: a built Sequential or Functional model (nested models, shared
            layers, several inputs and outputs are fine). It is not modified.
        sample_data: optional inputs (as `model(...)` takes them) on which the
            two models are compared too, beside a random batch.
        atol, rtol: tolerance of the comparison: for each output,
            max |a - b| <= atol + rtol * max(1, max |a|). By default 1e-5 and
            1e-4, or for a model that computes in half precision 4 machine
            epsilons of it (`mixed_float16`: 3.9e-3; `mixed_bfloat16`:
            3.1e-2), the size of its own rounding.
        verify: compare the two models (raise `CompactionError` if they differ).
        seed: seed of the random batch.
        factorize: split layers whose kernels have low rank into two thin
            layers where that is smaller (see `factorize.py`). "auto" (the
            default): only the layers a `TensorLowRank` penalty of the model's
            optimizer trained; True: every Dense/Conv layer (one SVD each:
            slow on big models); False: none; or a list of layer names.
        rank_rtol: singular values at or below `rank_rtol` times a kernel's
            largest count as zero when factorizing.
        channel_multiple: keep some removable channels so that each layer's
            width is a multiple of this (8 suits XNNPACK's SIMD blocks on
            CPUs); exact, since a kept channel needs no folding.
        open_dim_size: the report counts MACs with every dimension the model
            leaves open (None in a shape, but the batch: a sequence length)
            at this size; None: such a layer's MACs are unknown ("?").

    Returns:
        (compact_model, report): a plain Functional Keras model of standard
        layers (nested models expanded) and a `CompactionReport`.
    """
    channel_multiple = _check_channel_multiple(channel_multiple)
    open_dim_size = graph_lib.check_open_dim_size(open_dim_size, "compact")
    factorize_layers = _layers_to_factorize(model, factorize)
    for name, value in (("atol", atol), ("rtol", rtol), ("rank_rtol", rank_rtol)):
        if value is None and name != "rank_rtol":
            continue
        if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    atol, rtol = verification_tolerances(model, atol, rtol)
    check_finite_weights(model)
    source, expansions = _expanded(model, sample_data, atol, rtol, seed, verify)
    graph = graph_lib.build_graph(source)
    weights = WeightCache()
    analysis = analyze(graph, weights, channel_multiple)
    rebuilt = rebuild(source, graph, analysis, weights)
    rebuilt.model, branch_folds = fold_constant_branches(rebuilt.model)
    report = make_report(source, graph, analysis, rebuilt, weights, open_dim_size)
    report.folded_branches = [fold.to_dict() for fold in branch_folds]
    if expansions:
        report.params_before = int(model.count_params())
        report.expanded = [dataclasses.asdict(e) for e in expansions]
    compact_model = rebuilt.model
    if factorize_layers is None or factorize_layers:
        compact_model, factorizations = factorize_model(compact_model, rtol=rank_rtol, layers=factorize_layers)
        add_factorizations(report, compact_model, factorizations, open_dim_size)
    if verify:
        try:
            report.max_abs_diff, report.max_rel_diff = verify_models(
                model,
                compact_model,
                sample_data=sample_data,
                atol=atol,
                rtol=rtol,
                seed=seed,
                diagnose=lambda data: diagnose_clones(graph, rebuilt, seed),
            )
        except CompactionError as error:
            if not report.factorized:
                raise
            raise CompactionError(
                f"{error} Layers {[f['name'] for f in report.factorized]} were factorized, "
                f"cutting singular values up to rank_rtol={rank_rtol} of the largest: pass a "
                "smaller rank_rtol, or factorize=False."
            ) from None
    return compact_model, report


# -- expansion (keras-hub blocks and other layers whose entry can `expand` them) --


def _expanded(model, sample_data, atol, rtol, seed, verify):
    """(the model to compact, [Expansion]): `model` with its expandable calls expanded.

    With `verify`, the expanded model is checked against `model` before
    anything is removed, so that a difference is blamed on the block that
    was expanded, not on the compactor.
    """
    expanded, expansions = expand_model(model)
    if not verify or not any(e.why_not is None for e in expansions):
        return expanded, expansions
    try:
        verify_models(
            model,
            expanded,
            sample_data=sample_data,
            atol=atol,
            rtol=rtol,
            seed=seed,
            diagnose=lambda data: diagnose_expansions(model, seed),
        )
    except CompactionError as error:
        raise CompactionError(
            f"Expanding the blocks of model '{model.name}' into stock Keras layers: {error}"
        ) from None
    return expanded, expansions


def projected_size(model, channel_multiple=1, open_dim_size=None):
    """(parameters, MACs per sample) of `compact(model, factorize=False)`, without building it.

    The same channel analysis as `compact` (coupled channels, barriers,
    constants, `channel_multiple`), and each changed layer's weights as its
    registry entry would rebuild them; no Keras layer is made, so it is cheap
    enough to run during training (the budget controller does). A model with
    expandable blocks (keras-hub's transformers) is counted as `compact` sees
    it, expanded into stock layers (which does make layers, with copies of
    their weights). The constant branches `compact` folds away (a dead
    feed-forward block's normalization and Dense layers) are not counted:
    the plan of those folds is made on this analysis, as `compact` makes it
    on the model it rebuilt. A call whose shapes are not all known (a
    sequence length left None) counts 0 MACs, unless `open_dim_size` gives
    the size each open dimension (but the batch) stands for.
    """
    channel_multiple = _check_channel_multiple(channel_multiple)
    open_dim_size = graph_lib.check_open_dim_size(open_dim_size, "projected_size")
    expanded = expand_model(model)[0]
    graph = graph_lib.build_graph(expanded)
    weights = WeightCache()
    analysis = analyze(graph, weights, channel_multiple)
    live = fold_plan(graph, analysis).live
    macs_graph, sized = graph, {}
    if open_dim_size is not None:
        # The same calls, in the same order, traced at the size asked for.
        macs_graph = graph_lib.build_graph_at(expanded, open_dim_size)
        sized = dict(zip(graph.calls, macs_graph.calls))
        same_calls = len(macs_graph.calls) == len(graph.calls) and all(
            type(a.layer) is type(b.layer) for a, b in sized.items()
        )
        if not same_calls:
            raise RuntimeError(
                f"projected_size: model '{model.name}' traced at open_dim_size={open_dim_size} has "
                "other calls than the model itself; please report this model."
            )
    params, macs, counted = 0, 0, set()
    for call in graph.calls:
        if call not in live:
            continue
        layer = call.layer
        shapes = None
        if isinstance(layer, keras.layers.Layer) and id(layer) not in analysis.barrier_layers:
            masks = CallMasks(analysis, call)
            if spec_for(layer).changes(layer, masks, weights):
                new = spec_for(layer).rebuild(layer, masks, weights)[1]
                shapes = None if new is None else {k: np.shape(v) for k, v in new.items()}
        if isinstance(layer, keras.layers.Layer) and id(layer) not in counted:
            counted.add(id(layer))
            params += layer.count_params() if shapes is None else sum(int(np.prod(s)) for s in shapes.values())
        macs += spec_for(layer).macs(sized.get(call, call), macs_graph, shapes) or 0
    return int(params), int(macs)


__all__ = [
    "CompactionError",
    "CompactionReport",
    "LayerReport",
    "compact",
    "projected_size",
    "random_batch",
]
