"""Attention heads: the groups `HeadLasso` acts on, and when a head can go.

`keras.layers.MultiHeadAttention` and `keras.layers.GroupQueryAttention`
are read through their weights' paths (``<layer>/query/kernel``, ...), the
one public way to reach the projections of both.

Head h of a `keras.layers.MultiHeadAttention` is the slice ``[:, h, :]`` of
its query, key and value kernels (in, H, key_dim), row h of their biases
(H, key_dim), and the rows ``[h]`` of its output kernel (H, value_dim, *out)
that read the head's output. The layer computes

    out = b_o + sum_h  A_h(q, k) (x_v W_v[h] + b_v[h]) W_o[h],

where each row of the attention weights A_h sums to 1 (a softmax over the
keys). So head h contributes exactly nothing when W_o[h] = 0, and exactly
the constant ``b_v[h] W_o[h]`` when W_v[h] = 0, which the output bias can
absorb, as long as every query attends to at least one key. A zero query or
key path alone leaves A_h uniform, which still averages the values: such a
head is not inert.
"""

import keras
import numpy as np

from keras_compact import _keras_adapter as adapter
from keras_compact.registry import Barrier, LayerSpec, Member, zero_slices

_MASK_ARGUMENTS = ("attention_mask", "query_mask", "value_mask", "key_mask")
LAST_HEAD = "last head (a layer needs at least one)"


def head_view(variable, head_axis):
    """`variable` seen as (pre, H, post), so that head h is [:, h, :]."""
    shape = tuple(variable.shape)
    return Member(
        variable,
        int(np.prod(shape[:head_axis], dtype=np.int64)),
        shape[head_axis],
        int(np.prod(shape[head_axis + 1 :], dtype=np.int64)),
    )


def balanced_heads(inert, repeats):
    """(kept query heads, kept key/value heads), each kept key/value head with as many query heads.

    Query head h reads key/value head h // repeats (grouped-query attention;
    repeats = 1 for multi-head attention). A key/value head goes with the
    last of its query heads; the others keep the same number of query heads,
    their live ones first, so that the query-head count stays a multiple of
    the key/value-head count. Keeping an inert head is exact. At least one
    head stays.
    """
    live = (~inert).reshape(-1, repeats)
    width = max(int(live.sum(axis=1).max()), 1)
    kept_groups = live.any(axis=1)
    if not kept_groups.any():
        kept_groups[0] = True
    kept = np.zeros_like(live)
    for group in np.flatnonzero(kept_groups).tolist():
        live_first = np.argsort(~live[group], kind="stable")
        kept[group, np.sort(live_first[:width])] = True
    return kept.reshape(-1), kept_groups


def inert_heads(value_kernel, value_bias, output_kernel, fold_allowed):
    """(inert, folded): boolean per head.

    A head is inert when its output rows are zero, or when its value kernel
    slice is zero and its value bias is zero or may be folded (`fold_allowed`:
    every query attends to at least one key, so its constant output is
    ``b_v[h] W_o[h]``). `folded` marks the inert heads whose constant must go
    into the output bias.

    Args:
        value_kernel: (in, H, value_dim) numpy array.
        value_bias: (H, value_dim) numpy array, or None (no bias).
        output_kernel: (H, value_dim, ...) numpy array.
        fold_allowed: whether a constant head output folds exactly.
    """
    zero_rows = zero_slices(output_kernel, 0)
    zero_value = zero_slices(value_kernel, 1)
    zero_bias = np.ones_like(zero_rows) if value_bias is None else zero_slices(value_bias, 0)
    inert = zero_rows | (zero_value & (zero_bias | fold_allowed))
    return inert, inert & ~zero_rows & ~zero_bias


def folded_output_bias(output_bias, value_bias, output_kernel, folded):
    """The output bias plus ``sum_{h folded} b_v[h] W_o[h]``, in float64 then the bias's dtype."""
    contribution = np.tensordot(
        value_bias[folded].astype("float64"), output_kernel[folded].astype("float64"), axes=2
    )
    return (output_bias.astype("float64") + contribution).astype(output_bias.dtype)


def projection_weight(layer, name):
    """The weight of an attention layer whose path ends in `name` ('query/kernel'); None if none."""
    suffix = "/" + name
    found = [w for w in layer.weights if w.path.endswith(suffix)]
    return found[0] if found else None


class MultiHeadAttentionSpec(LayerSpec):
    """`keras.layers.MultiHeadAttention`: heads as groups; inert heads removed.

    Its input and output widths (the residual stream of a transformer) stay:
    the layer is rebuilt with fewer heads, each with its key_dim and value_dim.
    """

    needs_input_channels = False  # masks (batch, T, S) have no channel axis
    # The projections whose head slices make a head's group; each head has its own.
    head_projections = ("query", "key", "value")

    def __init__(self):
        super().__init__("")

    def repeats(self, layer):
        """Query heads per key/value head."""
        return 1

    def set_head_counts(self, config, query_heads, key_value_heads):
        config["num_heads"] = query_heads

    def heads(self, layer):
        views = []
        for name in self.head_projections:
            views.append(head_view(projection_weight(layer, f"{name}/kernel"), 1))
            bias = projection_weight(layer, f"{name}/bias")
            if bias is not None:
                views.append(head_view(bias, 0))
        views.append(head_view(projection_weight(layer, "attention_output/kernel"), 0))
        return views

    def check(self, layer, call, analysis):
        if layer.get_config().get("use_gate"):
            raise Barrier(f"a gated {type(layer).__name__} (use_gate=True) keeps its heads")
        if adapter.call_argument(call.arguments, None, "return_attention_scores"):
            raise Barrier("it returns its attention scores, whose head axis must stay")

    def fold_allowed(self, layer, call):
        """Whether every query attends to at least one key in this call (see module docstring)."""
        if layer.get_config().get("sliding_window") is not None:
            return False
        if any(adapter.call_argument(call.arguments, None, name) is not None for name in _MASK_ARGUMENTS):
            return False
        return not any(adapter.has_implicit_mask(t) for t in call.input_tensors)

    def kept_heads(self, layer, call, weights):
        """(kept, kept_key_value, folded, reasons) per query head: which stay, whose constants fold, why."""
        repeats = self.repeats(layer)
        value_kernel = np.repeat(weights.get(projection_weight(layer, "value/kernel")), repeats, axis=1)
        value_bias = projection_weight(layer, "value/bias")
        if value_bias is not None:
            value_bias = np.repeat(weights.get(value_bias), repeats, axis=0)
        output_kernel = weights.get(projection_weight(layer, "attention_output/kernel"))
        inert, folded = inert_heads(value_kernel, value_bias, output_kernel, self.fold_allowed(layer, call))
        kept, kept_key_value = balanced_heads(inert, repeats)
        reasons = []
        for head in range(len(kept)):
            if not kept[head]:
                reasons.append(None)
            elif not inert[head]:
                constant_value = not value_kernel[:, head].any()
                reasons.append(
                    "its value path is its bias, a constant an attention mask keeps from folding"
                    if constant_value
                    else "alive"
                )
            elif inert.all():
                reasons.append(LAST_HEAD)
            else:
                reasons.append("keeps each key/value head's query heads equal in number")
        return kept, kept_key_value, folded & ~kept, reasons

    def propagate(self, call, inputs, analysis):
        kind = type(call.layer).__name__
        for source in inputs:
            if source is not None:
                analysis.keep(source.slots, f"read by {kind} '{call.name}' (its input width stays)")
        outputs = []
        for index, key in enumerate(call.outputs):
            width = analysis.shape(key)[-1]
            slots = analysis.output_slots(call, index, width)
            analysis.keep(slots, f"made by {kind} '{call.name}' (its output width stays)")
            outputs.append(analysis.channels(slots, self._constant_output(call, analysis.weights, width)))
        return outputs

    def _constant_output(self, call, weights, width):
        """The layer's output per channel when every head is inert (a constant), else NaN."""
        kept, _, folded, reasons = self.kept_heads(call.layer, call, weights)
        if any(reason not in (None, LAST_HEAD) for reason in reasons):
            return np.full(width, np.nan)
        # The kept last head is inert too: its constant counts like the folded ones'.
        bias = self._bias_with_folded(call.layer, weights, folded | kept)
        return np.zeros(width) if bias is None else bias.astype("float64")

    def _bias_with_folded(self, layer, weights, folded):
        """The output bias plus ``b_v[h] W_o[h]`` of each `folded` head (numpy); None without an output bias."""
        output_bias = self.output_bias(layer)
        if output_bias is None:
            return None
        bias = weights.get(output_bias)
        value_bias = projection_weight(layer, "value/bias")
        if value_bias is None or not folded.any():
            return bias
        value_bias = np.repeat(weights.get(value_bias), self.repeats(layer), axis=0)
        output_kernel = weights.get(projection_weight(layer, "attention_output/kernel"))
        return folded_output_bias(bias, value_bias, output_kernel, folded)

    def output_bias(self, layer):
        return projection_weight(layer, "attention_output/bias")

    def changes(self, layer, masks, weights):
        return not self.kept_heads(layer, masks.call, weights)[0].all()

    def rebuild(self, layer, masks, weights):
        kept, kept_key_value, folded, _ = self.kept_heads(layer, masks.call, weights)
        config = layer.get_config()
        self.set_head_counts(config, int(kept.sum()), int(kept_key_value.sum()))
        new = {}
        for name, heads in (("query", kept), ("key", kept_key_value), ("value", kept_key_value)):
            new[f"{name}/kernel"] = weights.get(projection_weight(layer, f"{name}/kernel"))[:, heads]
            bias = projection_weight(layer, f"{name}/bias")
            if bias is not None:
                new[f"{name}/bias"] = weights.get(bias)[heads]
        new["attention_output/kernel"] = weights.get(projection_weight(layer, "attention_output/kernel"))[kept]
        bias = self._bias_with_folded(layer, weights, folded)
        if bias is not None:
            new["attention_output/bias"] = bias
        return config, new

    def macs(self, call, graph, weights):
        layer = call.layer
        query = adapter.call_argument(call.arguments, 0, "query")
        value = adapter.call_argument(call.arguments, 1, "value")
        if not isinstance(query, keras.KerasTensor) or not isinstance(value, keras.KerasTensor):
            return None
        query_dims, value_dims = tuple(query.shape[1:-1]), tuple(value.shape[1:-1])
        if None in query_dims or None in value_dims:
            return None
        axes = getattr(layer, "attention_axes", None) or tuple(range(1, len(query.shape) - 1))
        keys_per_query = int(np.prod([value.shape[a] for a in axes], dtype=np.int64))

        def shape(name):
            if weights is not None:
                return tuple(weights[f"{name}/kernel"])
            return tuple(projection_weight(layer, f"{name}/kernel").shape)

        def size(name):
            return int(np.prod(shape(name), dtype=np.int64))

        heads, key_dim, value_dim = shape("query")[1], shape("query")[-1], shape("value")[-1]
        query_positions = int(np.prod(query_dims, dtype=np.int64))
        value_positions = int(np.prod(value_dims, dtype=np.int64))
        return (
            query_positions * (size("query") + size("attention_output"))
            + value_positions * (size("key") + size("value"))
            + query_positions * keys_per_query * heads * (key_dim + value_dim)
        )


class GroupedQueryAttentionSpec(MultiHeadAttentionSpec):
    """`keras.layers.GroupQueryAttention`: each query head a group; key/value heads are shared.

    Head h's group is its query slice and its output rows; key/value head g,
    read by query heads g*r ... g*r + r - 1, goes with the last of them, and
    every kept key/value head keeps the same number of query heads.
    """

    head_projections = ("query",)

    def repeats(self, layer):
        return layer.num_query_heads // layer.num_key_value_heads

    def set_head_counts(self, config, query_heads, key_value_heads):
        config["num_query_heads"] = query_heads
        config["num_key_value_heads"] = key_value_heads
