"""Attention heads: the groups `HeadLasso` acts on, and when a head can go.

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


def head_view(variable, head_axis):
    """`variable` seen as (pre, H, post), so that head h is [:, h, :]."""
    shape = tuple(variable.shape)
    return Member(
        variable,
        int(np.prod(shape[:head_axis], dtype=np.int64)),
        shape[head_axis],
        int(np.prod(shape[head_axis + 1 :], dtype=np.int64)),
    )


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


class MultiHeadAttentionSpec(LayerSpec):
    """`keras.layers.MultiHeadAttention`: heads as groups; inert heads removed.

    Its input and output widths (the residual stream of a transformer) stay:
    the layer is rebuilt with fewer heads, each with its key_dim and value_dim.
    """

    needs_input_channels = False  # masks (batch, T, S) have no channel axis

    def __init__(self):
        super().__init__("")

    def heads(self, layer):
        views = []
        for dense in (layer.query_dense, layer.key_dense, layer.value_dense):
            views.append(head_view(dense.kernel, 1))
            if layer.use_bias:
                views.append(head_view(dense.bias, 0))
        views.append(head_view(layer.output_dense.kernel, 0))
        return views

    def check(self, layer, call, analysis):
        if layer.get_config().get("use_gate"):
            raise Barrier("a gated MultiHeadAttention (use_gate=True) keeps its heads")
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
        """(kept, folded, reasons): which heads stay, whose constants fold, why each kept one stays."""
        value_bias = weights.get(layer.value_dense.bias) if layer.use_bias else None
        fold_allowed = self.fold_allowed(layer, call)
        inert, folded = inert_heads(
            weights.get(layer.value_dense.kernel),
            value_bias,
            weights.get(layer.output_dense.kernel),
            fold_allowed,
        )
        kept = ~inert
        reasons = ["alive"] * len(kept)
        for head in np.flatnonzero(kept & zero_slices(weights.get(layer.value_dense.kernel), 1)).tolist():
            reasons[head] = "its value path is its bias, a constant an attention mask keeps from folding"
        if not kept.any():
            kept[0], folded[0] = True, False
            reasons[0] = "last head (a layer needs at least one)"
        return kept, folded, [r if k else None for r, k in zip(reasons, kept)]

    def propagate(self, call, inputs, analysis):
        for source in inputs:
            if source is not None:
                analysis.keep(source.slots, f"read by MultiHeadAttention '{call.name}' (its input width stays)")
        outputs = []
        for index, key in enumerate(call.outputs):
            width = analysis.shape(key)[-1]
            slots = analysis.output_slots(call, index, width)
            analysis.keep(slots, f"made by MultiHeadAttention '{call.name}' (its output width stays)")
            outputs.append(analysis.channels(slots, np.full(width, np.nan)))
        return outputs

    def changes(self, layer, masks, weights):
        return not self.kept_heads(layer, masks.call, weights)[0].all()

    def rebuild(self, layer, masks, weights):
        kept, folded, _ = self.kept_heads(layer, masks.call, weights)
        config = layer.get_config()
        config["num_heads"] = int(kept.sum())
        new = {}
        for name in ("query_dense", "key_dense", "value_dense"):
            dense = getattr(layer, name)
            new[f"{name}.kernel"] = weights.get(dense.kernel)[:, kept]
            if layer.use_bias:
                new[f"{name}.bias"] = weights.get(dense.bias)[kept]
        output_kernel = weights.get(layer.output_dense.kernel)
        new["output_dense.kernel"] = output_kernel[kept]
        if layer.use_bias:
            bias = weights.get(layer.output_dense.bias)
            if folded.any():
                bias = folded_output_bias(bias, weights.get(layer.value_dense.bias), output_kernel, folded)
            new["output_dense.bias"] = bias
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
        query_positions = int(np.prod(query_dims, dtype=np.int64))
        value_positions = int(np.prod(value_dims, dtype=np.int64))
        axes = layer.attention_axes or tuple(range(1, len(query.shape) - 1))
        keys_per_query = int(np.prod([value.shape[a] for a in axes], dtype=np.int64))

        def size(name):
            if weights is not None:
                return int(np.prod(weights[f"{name}.kernel"], dtype=np.int64))
            return int(np.prod(getattr(layer, name).kernel.shape, dtype=np.int64))

        heads = (weights["query_dense.kernel"] if weights is not None else layer.query_dense.kernel.shape)[1]
        scores = query_positions * keys_per_query * heads * (layer.key_dim + layer.value_dim)
        return (
            query_positions * (size("query_dense") + size("output_dense"))
            + value_positions * (size("key_dense") + size("value_dense"))
            + scores
        )
