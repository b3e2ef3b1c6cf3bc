"""Compaction: rebuild a model without its dead neurons, exactly.

    compact_model, report = keras_compact.compact(model)

Which channels go is decided from weights only (`channels`), per-layer
behaviour lives in one table of rules (`rules.RULES`), the rebuild slices
weights and folds constants into biases (`rebuild`), and the result is
checked against the original on a random batch (`verify`). Layers whose
kernels are of low rank are then split into two thin layers (`factorize`).
"""

from keras_compact import graph as graph_lib
from keras_compact.compaction.channels import WeightCache, analyze
from keras_compact.compaction.factorize import Factorization, factorize as factorize_model
from keras_compact.compaction.rebuild import rebuild
from keras_compact.compaction.report import (
    CompactionReport,
    LayerReport,
    add_factorizations,
    make_report,
)
from keras_compact.compaction.verify import CompactionError, random_batch
from keras_compact.compaction.verify import verify as verify_models


def compact(
    model,
    *,
    sample_data=None,
    atol=1e-5,
    rtol=1e-4,
    verify=True,
    seed=0,
    factorize=True,
    rank_rtol=1e-5,
    channel_multiple=1,
):
    """A copy of `model` without its dead neurons, and a `CompactionReport`.

    A channel goes when, from the weights alone, it is a structural constant
    that is zero where it is cut or folds exactly into every consumer's bias,
    or when nothing reads it (all outgoing weights zero). Channels coupled by
    Add, Multiply, ... go together. Model outputs keep all their channels.

    Args:
        model: a built Sequential or Functional model (nested models, shared
            layers, several inputs and outputs are fine). It is not modified.
        sample_data: optional inputs (as `model(...)` takes them) on which the
            two models are compared too, beside a random batch.
        atol, rtol: tolerance of the comparison, |a - b| <= atol + rtol * |a|.
        verify: compare the two models (raise `CompactionError` if they differ).
        seed: seed of the random batch.
        factorize: replace each Dense/Conv layer whose kernel has low rank by
            two thin layers where that is smaller (see `factorize.py`).
        rank_rtol: singular values at or below `rank_rtol` times a kernel's
            largest count as zero when factorizing.
        channel_multiple: keep some removable channels so that each Dense/conv
            layer's width is a multiple of this (8 suits XNNPACK's SIMD blocks
            on CPUs); exact, since a kept channel needs no folding.

    Returns:
        (compact_model, report): a plain Functional Keras model of standard
        layers (nested models expanded) and a `CompactionReport`.
    """
    graph = graph_lib.build_graph(model)
    weights = WeightCache()
    if int(channel_multiple) != channel_multiple or channel_multiple < 1:
        raise ValueError(f"channel_multiple must be an integer >= 1, got {channel_multiple!r}.")
    analysis = analyze(graph, weights, int(channel_multiple))
    rebuilt = rebuild(model, graph, analysis, weights)
    report = make_report(model, graph, analysis, rebuilt)
    compact_model = rebuilt.model
    if factorize:
        compact_model, factorizations = factorize_model(compact_model, rtol=rank_rtol)
        add_factorizations(report, compact_model, factorizations)
    if verify:
        try:
            report.max_abs_diff, report.max_rel_diff = verify_models(
                model, compact_model, sample_data=sample_data, atol=atol, rtol=rtol, seed=seed
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


__all__ = [
    "CompactionError",
    "CompactionReport",
    "Factorization",
    "LayerReport",
    "compact",
    "random_batch",
]
