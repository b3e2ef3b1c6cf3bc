"""keras-hub models made compactable: their layers expanded into stock Keras layers.

keras-hub's transformer blocks (`TransformerEncoder` of BERT,
`TransformerDecoder` of GPT-2, ViT's `ViTEncoder`/`ViTEncoderBlock`/`MLP`,
Llama's `LlamaTransformerDecoder`) are single layers whose head size is
`hidden_dim // num_heads`: a block with fewer heads or a narrower feed-forward
part cannot be expressed in their configs. Each gets a registry entry whose
`expand` builds the same computation from stock Keras layers with copies of
the weights (MultiHeadAttention, Dense, LayerNormalization, RMSNormalization,
EinsumDense, Softmax, Embedding, ReversibleEmbedding, Conv2D, Reshape,
Concatenate, Add, Multiply, Dropout) and raw `keras.ops` where Keras has no
layer (masks, positions, rotary embeddings, grouped-query attention, the
tanh-approximated gelu). `compact` expands, verifies, then removes what is
dead, so the compact model is a plain Keras model that loads without
keras-compact and without keras-hub. The non-block layers of these backbones
(token and position embeddings, ViT's patching, Llama's RMS norm) expand too.

While the keras-hub model trains as it is, penalties reach the same
variables through `sublayers`: a block's self-attention layer (head
penalties) and its feed-forward intermediate Dense (and gate Dense), never
the feed-forward output Dense, whose outputs are the residual stream. Llama's
attention is not a MultiHeadAttention: its `heads` are the query kernel and
output kernel slices of each query head, and its expansion builds only the
heads that are not inert (below), so they go there.

A head is inert when its output is exactly zero whatever the input: its
value path is zero, or its output-projection rows are. A zero query/key path
alone is not inert (softmax of zeros still averages the values). The
residual stream (hidden_dim channels) stays whole: every block reads it
through LayerNormalization (or RMS normalization), which is not exact under
channel removal (a removed channel changes the mean and variance of the
rest).

This is the one module that knows keras-hub's classes and the private
attributes of their sublayers (`_self_attention_layer`,
`_feedforward_intermediate_dense`, `rotary_embedding_layer`, ...); a
keras-hub release that renames one fails tests/test_hub.py. keras-hub is an
optional extra (`pip install 'keras-compact[hub]'`), and `import
keras_compact` does not import this module: `register()` does, once.
"""

import importlib
import inspect

import keras
import numpy as np

from keras_compact import _keras_adapter as adapter
from keras_compact import attention
from keras_compact.compaction.expand import call_stock, note
from keras_compact.registry import Barrier, LayerSpec, Member, register_layer, zero_slices

L = keras.layers
ops = keras.ops

_REGISTERED = False


def register():
    """Register the entries of keras-hub's layers; True the first time (False after, or without keras-hub)."""
    global _REGISTERED
    if _REGISTERED:
        return False
    try:
        importlib.import_module("keras_hub")
    except ImportError:
        return False
    _REGISTERED = True
    _register_all()
    return True


# -- the registry entry ---------------------------------------------------------


class HubLayerSpec(LayerSpec):
    """A keras-hub layer: a barrier as it is, expanded by `compact` into stock layers.

    Args:
        expander: fn(layer, arguments) -> outputs, `arguments` the call's
            arguments by name (defaults filled in); raises `Barrier` for a
            call it does not support.
        sublayers: fn(layer) -> the layers penalties may act on.
        heads: fn(layer) -> `Member`s whose [:, h, :] are head h, or None.
    """

    def __init__(self, expander, sublayers=None, heads=None):
        super().__init__("is a keras-hub layer: compact() expands it into stock Keras layers first")
        self._expander = expander
        self._sublayers = sublayers
        self._heads = heads

    def sublayers(self, layer):
        return list(self._sublayers(layer)) if self._sublayers else []

    def heads(self, layer):
        return self._heads(layer) if self._heads else None

    def expand(self, layer, args, kwargs):
        try:
            bound = inspect.signature(layer.call).bind(*args, **kwargs)
        except TypeError as error:
            raise Barrier(f"call arguments not understood: {error}") from None
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop("training", None)  # Dropout copies follow the model's training flag
        return self._expander(layer, arguments)


# -- helpers --------------------------------------------------------------------


def _weights(layer):
    return [keras.ops.convert_to_numpy(w) for w in layer.weights]


def _name(prefix, layer):
    return f"{prefix}_{layer.name}" if prefix else layer.name


def _copy(layer, prefix, *args, cls=None, **kwargs):
    """A stock copy of `layer` (same config and weights) called on `args`."""
    config = dict(layer.get_config(), name=_name(prefix, layer))
    return call_stock(cls or type(layer), config, _weights(layer), *args, **kwargs)


def _dropout(layer, prefix, x):
    """A copy of a Dropout sublayer, or nothing when its rate is 0 (the identity)."""
    return _copy(layer, prefix, x) if layer.rate else x


def _add(x, residual, name):
    return call_stock(L.Add, {"name": name}, None, [x, residual])


def _reject(arguments, **unsupported):
    """Barrier if any named argument is set (not None / not False)."""
    for name, what in unsupported.items():
        value = arguments.get(name)
        if value is not None and value is not False:
            raise Barrier(f"called with {name} ({what}), which the expansion does not support")


_APPROXIMATE_GELU = "approximate gelu"


def _stock_activation(activation, where):
    """The name of a stock Keras activation computing `activation`, or `_APPROXIMATE_GELU`."""
    from keras_hub.src.utils.keras_utils import gelu_approximate

    if activation is gelu_approximate:
        return _APPROXIMATE_GELU  # keras has no layer for it: a raw keras.ops.gelu
    name = keras.activations.serialize(activation)
    if isinstance(name, str):
        try:
            keras.activations.get(name)
            return name
        except ValueError:
            pass
    raise Barrier(f"activation {name!r} of '{where}' has no stock Keras equivalent")


def _dense(layer, prefix, x, activation=None):
    """A stock Dense copy of `layer`; `activation` (a function) replaces its own."""
    activation = _stock_activation(layer.activation if activation is None else activation, layer.name)
    config = dict(layer.get_config(), name=_name(prefix, layer))
    config["activation"] = "linear" if activation == _APPROXIMATE_GELU else activation
    y = call_stock(L.Dense, config, _weights(layer), x)
    if activation == _APPROXIMATE_GELU:
        y = ops.gelu(y, approximate=True)
    return y


def _merged_mask(padding_mask, attention_mask):
    """keras-hub's `merge_padding_and_attention_mask`: (B, 1, S) or (B, T, S) int32, or None."""
    mask = None
    if padding_mask is not None:
        mask = ops.cast(ops.expand_dims(padding_mask, axis=1), "int32")
    if attention_mask is not None:
        attention_mask = ops.cast(attention_mask, "int32")
        mask = attention_mask if mask is None else ops.minimum(mask, attention_mask)
    return mask


def _positions(x):
    """0, 1, ..., S-1 along axis 1 of `x` (B, S, ...), per sample: int32 (B, S).

    From the input itself (a cumulative sum of ones), so that the graph holds
    no shape arithmetic: it saves, loads and converts to TFLite as it is.
    """
    while len(x.shape) > 2:
        x = x[..., 0]
    return ops.cumsum(ops.ones_like(x, dtype="int32"), axis=1) - 1


def _residual_note(layer, x):
    note(
        f"residual stream of '{layer.name}' ({x.shape[-1]} channels) stays whole: it is read "
        "through a normalization layer, which is not exact under channel removal"
    )


def _attention(layer, prefix, x, **kwargs):
    """A stock MultiHeadAttention copy of `layer` (keras-hub's CachedMultiHeadAttention too)."""
    if type(layer).__name__ == "CachedMultiHeadAttention" or isinstance(layer, L.MultiHeadAttention):
        return _copy(layer, prefix, cls=L.MultiHeadAttention, query=x, value=x, **kwargs)
    raise Barrier(f"attention layer '{layer.name}' ({type(layer).__name__}) is not known")


def _attention_sublayers(layer):
    return [layer]


# -- BERT: TransformerEncoder -----------------------------------------------------


def _self_attention_block(layer, x, mask):
    """A TransformerEncoder, or a TransformerDecoder without cross-attention: attention, then the FFN."""
    prefix, first = layer.name, layer.normalize_first
    residual = x
    if first:
        x = _copy(layer._self_attention_layer_norm, prefix, x)
    x = _attention(layer._self_attention_layer, prefix, x, attention_mask=mask)
    x = _dropout(layer._self_attention_dropout, prefix, x)
    x = _add(x, residual, f"{prefix}_self_attention_residual")
    if not first:
        x = _copy(layer._self_attention_layer_norm, prefix, x)
    residual = x
    if first:
        x = _copy(layer._feedforward_layer_norm, prefix, x)
    x = _dense(layer._feedforward_intermediate_dense, prefix, x)
    x = _dense(layer._feedforward_output_dense, prefix, x)
    x = _dropout(layer._feedforward_dropout, prefix, x)
    x = _add(x, residual, f"{prefix}_feedforward_residual")
    if not first:
        x = _copy(layer._feedforward_layer_norm, prefix, x)
    _residual_note(layer, x)
    return x


def _encoder_sublayers(layer):
    return [layer._self_attention_layer, layer._feedforward_intermediate_dense]


def _expand_encoder(layer, arguments):
    _reject(arguments, return_attention_scores="attention scores as a second output")
    x = arguments["inputs"]
    mask = _merged_mask(arguments["padding_mask"], arguments["attention_mask"])
    return _self_attention_block(layer, x, mask)


# -- GPT-2: TransformerDecoder without cross-attention ----------------------------


def _decoder_sublayers(layer):
    found = [layer._self_attention_layer]
    if getattr(layer, "_cross_attention_layer", None) is not None:
        found.append(layer._cross_attention_layer)
    return found + [layer._feedforward_intermediate_dense]


def _expand_decoder(layer, arguments):
    if layer._cross_attention_layer is not None or arguments["encoder_sequence"] is not None:
        raise Barrier("a decoder with cross-attention is not expanded (only decoder-only blocks, as GPT-2's)")
    _reject(
        arguments,
        self_attention_cache="a key/value cache",
        self_attention_cache_update_index="a key/value cache",
    )
    x = arguments["decoder_sequence"]
    if not isinstance(arguments["use_causal_mask"], bool):
        raise Barrier("use_causal_mask is not a Python bool")
    padding, attention = arguments["decoder_padding_mask"], arguments["decoder_attention_mask"]
    # The mask keras-hub passes, built the same way (not MultiHeadAttention's
    # use_causal_mask): MultiHeadAttention takes another kernel path for it,
    # which may differ on rows whose every key is masked.
    if arguments["use_causal_mask"]:
        mask = _causal_mask(x, padding, attention)
    else:
        mask = _merged_mask(padding, attention)
    return _self_attention_block(layer, x, mask)


# -- embeddings ---------------------------------------------------------------------


def _expand_reversible_embedding(layer, arguments):
    # keras-hub's ReversibleEmbedding is keras.layers.ReversibleEmbedding renamed.
    return _copy(layer, "", arguments["inputs"], cls=L.ReversibleEmbedding, reverse=arguments["reverse"])


def _position_lookup(layer, prefix, x):
    """keras-hub's PositionEmbedding (rows 0..S-1 of its table) as an Embedding of positions."""
    if len(x.shape) != 3:
        raise Barrier(f"position embedding of a rank-{len(x.shape)} input (only (batch, sequence, features))")
    table = keras.ops.convert_to_numpy(layer.position_embeddings)
    config = {"input_dim": table.shape[0], "output_dim": table.shape[1], "dtype": layer.dtype_policy}
    return call_stock(L.Embedding, dict(config, name=_name(prefix, layer)), [table], _positions(x))


def _expand_position_embedding(layer, arguments):
    _reject(arguments, positions="explicit positions")
    if not (isinstance(arguments["start_index"], int) and arguments["start_index"] == 0):
        raise Barrier("called with a start_index other than 0")
    return _position_lookup(layer, "", arguments["inputs"])


def _expand_token_and_position_embedding(layer, arguments):
    _reject(arguments, positions="explicit positions")
    if not (isinstance(arguments["start_index"], int) and arguments["start_index"] == 0):
        raise Barrier("called with a start_index other than 0")
    prefix = layer.name
    tokens = _copy(layer.token_embedding, prefix, arguments["inputs"], cls=L.ReversibleEmbedding)
    positions = _position_lookup(layer.position_embedding, prefix, tokens)
    return _add(tokens, positions, f"{prefix}_add")


# -- ViT --------------------------------------------------------------------------


def _expand_vit_patching(layer, arguments):
    if layer.data_format != "channels_last":
        raise Barrier("channels_first images are not expanded")
    prefix = layer.name
    x = _copy(layer.patch_embedding, prefix, arguments["inputs"])
    reshape = {"target_shape": (layer.num_patches, layer.hidden_dim), "name": f"{prefix}_flatten"}
    x = call_stock(L.Reshape, reshape, None, x)
    if layer.use_class_token:
        # The class token as a one-row Embedding looked up at id 0: a learned
        # (1, hidden) row for every sample, with no shape arithmetic.
        token = keras.ops.convert_to_numpy(layer.class_token).reshape(1, layer.hidden_dim)
        ids = ops.zeros_like(_positions(x)[:, :1])
        config = {"input_dim": 1, "output_dim": layer.hidden_dim, "dtype": layer.dtype_policy}
        cls = call_stock(L.Embedding, dict(config, name=f"{prefix}_class_token"), [token], ids)
        x = call_stock(L.Concatenate, {"axis": 1, "name": f"{prefix}_concatenate"}, None, [cls, x])
    table = layer.position_embedding
    positions = _copy(table, prefix, _positions(x), cls=L.Embedding)
    return _add(x, positions, f"{prefix}_add")


def _mlp_sublayers(layer):
    return [layer.dense_1]


def _vit_mlp(layer, prefix, x):
    x = _dense(layer.dense_1, prefix, x)
    x = _dropout(layer.dropout, f"{prefix}_1", x)
    x = _dense(layer.dense_2, prefix, x)
    return _dropout(layer.dropout, f"{prefix}_2", x)


def _expand_vit_mlp(layer, arguments):
    return _vit_mlp(layer, layer.name, arguments["inputs"])


def _vit_block_sublayers(layer):
    return [layer.mha, layer.mlp]


def _vit_block(layer, x):
    prefix = layer.name
    inputs = x
    x = _copy(layer.layer_norm_1, prefix, x)
    x = _attention(layer.mha, prefix, x)
    x = _dropout(layer.dropout, prefix, x)
    x = _add(x, inputs, f"{prefix}_attention_residual")
    y = _copy(layer.layer_norm_2, prefix, x)
    y = _vit_mlp(layer.mlp, f"{prefix}_mlp", y)
    x = _add(x, y, f"{prefix}_mlp_residual")
    _residual_note(layer, x)
    return x


def _expand_vit_block(layer, arguments):
    return _vit_block(layer, arguments["inputs"])


def _vit_encoder_sublayers(layer):
    # The blocks, whose entries give their own sublayers: penalties see
    # "vit_encoder/transformer_block_1/mha", one name per layer.
    return list(layer.encoder_layers)


def _expand_vit_encoder(layer, arguments):
    x = _dropout(layer.dropout, layer.name, arguments["inputs"])
    for block in layer.encoder_layers:
        x = _vit_block(block, x)
    return _copy(layer.layer_norm, layer.name, x)


# -- Llama --------------------------------------------------------------------------


def _rms_norm(layer, prefix, x):
    """keras-hub's LlamaLayerNorm: x / sqrt(mean(x^2) + eps) * scale, Keras's RMSNormalization."""
    config = {"axis": -1, "epsilon": layer.epsilon, "dtype": layer.dtype_policy, "name": _name(prefix, layer)}
    return call_stock(L.RMSNormalization, config, _weights(layer), x)


def _expand_llama_norm(layer, arguments):
    return _rms_norm(layer, "", arguments["x"])


def llama_heads(layer):
    """Query head h of a LlamaAttention: its query kernel slice and output kernel rows."""
    query, output = layer._query_dense.kernel, layer._output_dense.kernel
    hidden, heads, head_dim = tuple(query.shape)
    return [
        Member(query, hidden, heads, head_dim),
        Member(output, 1, heads, head_dim * int(output.shape[-1])),
    ]


def inert_llama_heads(layer):
    """(inert query heads (bool per head), the reason of each inert one).

    The rule of `attention.inert_heads` (Llama's projections have no bias):
    query head h is inert when its output rows are zero or when the value
    kernel of its key/value head h // repeats is.
    """
    repeats = layer.num_key_value_groups
    output = keras.ops.convert_to_numpy(layer._output_dense.kernel)  # (H, head_dim, hidden)
    value = keras.ops.convert_to_numpy(layer._value_dense.kernel)  # (hidden, KV, head_dim)
    value = np.repeat(value, repeats, axis=1)  # query head h reads key/value head h // repeats
    inert, _ = attention.inert_heads(value, None, output, fold_allowed=False)
    zero_rows = zero_slices(output, 0)
    reasons = {
        h: "zero output-projection rows"
        if zero_rows[h]
        else f"zero value kernel of key/value head {h // repeats}"
        for h in np.flatnonzero(inert).tolist()
    }
    return inert, reasons


def _rotary(x, angles):
    """keras-hub's RotaryEmbedding of x (B, S, heads, head_dim): x cos + rotate_half(x) sin."""
    cos, sin = angles
    half = x.shape[-1] // 2
    rotated = ops.concatenate([ops.negative(x[..., half:]), x[..., :half]], axis=-1)
    return ops.add(ops.multiply(x, cos), ops.multiply(rotated, sin))


def _rotary_angles(rope, positions, head_dim):
    """cos and sin (B, S, 1, head_dim) of keras-hub's rotary embedding at positions 0..S-1."""
    if getattr(rope, "rope_type", None) == "yarn" or rope.sequence_axis != 1 or rope.feature_axis != -1:
        raise Barrier("a rotary embedding other than Llama's (yarn scaling or other axes)")
    inverse = keras.ops.convert_to_numpy(rope._get_inverse_freq(head_dim)).astype("float32")
    positions = ops.cast(positions, "float32")
    angles = ops.multiply(ops.expand_dims(positions, -1), inverse)  # keras-hub: einsum bi,j->bij
    angles = ops.concatenate([angles, angles], axis=-1)
    return ops.expand_dims(ops.cos(angles), 2), ops.expand_dims(ops.sin(angles), 2)


def _einsum_dense(layer, prefix, x, kernel, output_shape):
    config = dict(layer.get_config(), output_shape=output_shape, name=_name(prefix, layer))
    return call_stock(L.EinsumDense, config, [kernel], x)


def _llama_attention(layer, prefix, x, mask, positions=None):
    """LlamaAttention without its inert heads, in EinsumDense, Softmax and raw ops."""
    for dense in (layer._query_dense, layer._key_dense, layer._value_dense, layer._output_dense):
        if dense.bias is not None:
            raise Barrier(f"'{dense.name}' has a bias (Llama's attention has none)")
    prefix = _name(prefix, layer)
    heads, kv_heads = layer.num_query_heads, layer.num_key_value_heads
    inert, reasons = inert_llama_heads(layer)
    # Key/value heads go with their last query head; each kept one keeps as many query heads.
    kept, kept_groups = attention.balanced_heads(inert, layer.num_key_value_groups)
    kept_q, kept_kv = np.flatnonzero(kept), np.flatnonzero(kept_groups)
    per_group = len(kept_q) // len(kept_kv)
    _note_heads(layer, prefix, heads, kv_heads, kept_q, kept_kv, reasons)
    weights = {
        name: keras.ops.convert_to_numpy(getattr(layer, name).kernel)
        for name in ("_query_dense", "_key_dense", "_value_dense", "_output_dense")
    }
    head_dim = weights["_query_dense"].shape[-1]
    query = _einsum_dense(
        layer._query_dense, prefix, x, weights["_query_dense"][:, kept_q], (None, len(kept_q), head_dim)
    )
    key = _einsum_dense(layer._key_dense, prefix, x, weights["_key_dense"][:, kept_kv], (None, len(kept_kv), head_dim))
    value = _einsum_dense(
        layer._value_dense, prefix, x, weights["_value_dense"][:, kept_kv], (None, len(kept_kv), head_dim)
    )
    positions = _positions(x) if positions is None else positions
    angles = _rotary_angles(layer.rotary_embedding_layer, positions, head_dim)
    query = _rotary(query, angles)
    key = _rotary(key, angles)
    if per_group > 1:
        # keras-hub repeats each key/value head for its consecutive query heads.
        key = ops.repeat(key, per_group, axis=2)
        value = ops.repeat(value, per_group, axis=2)
    scores = ops.einsum("bquh,bkuh->buqk", query, key)
    scores = ops.multiply(scores, float(layer._inv_norm_factor))
    softmax = {"axis": -1, "dtype": "float32", "name": f"{prefix}_softmax"}
    if mask is None:
        scores = call_stock(L.Softmax, softmax, None, scores)
    else:
        scores = call_stock(L.Softmax, softmax, None, scores, mask=ops.expand_dims(mask, 1))
    output = ops.einsum("buqk,bkuh->bquh", scores, value)
    output = _dropout(layer._dropout_layer, prefix, output)
    return _einsum_dense(layer._output_dense, prefix, output, weights["_output_dense"][kept_q], (None, x.shape[-1]))


def _note_heads(layer, prefix, heads, kv_heads, kept_q, kept_kv, reasons):
    removed = sorted(set(range(heads)) - set(kept_q.tolist()))
    kept_inert = [h for h in kept_q.tolist() if h in reasons]
    text = f"'{prefix}': query heads {heads} -> {len(kept_q)}"
    if removed:
        text += " (removed " + ", ".join(f"{h}: {reasons[h]}" for h in removed) + ")"
    text += f"; key/value heads {kv_heads} -> {len(kept_kv)}"
    if len(kept_kv) < kv_heads:
        gone = sorted(set(range(kv_heads)) - set(kept_kv.tolist()))
        text += f" (removed {gone}: every query head reading them is inert)"
    if kept_inert:
        text += (
            f"; inert query heads {kept_inert} stay so that each key/value head keeps "
            f"{len(kept_q) // len(kept_kv)} query heads (grouped-query attention)"
        )
    note(text)


def _causal_mask(x, padding_mask, attention_mask, positions=None):
    """keras-hub's decoder mask: minimum(merged padding/attention mask, causal), (B, S, S)."""
    positions = _positions(x) if positions is None else positions
    causal = ops.cast(ops.greater_equal(ops.expand_dims(positions, 2), ops.expand_dims(positions, 1)), "int32")
    mask = _merged_mask(padding_mask, attention_mask)
    return causal if mask is None else ops.minimum(mask, causal)


def _expand_llama_attention(layer, arguments):
    _reject(arguments, cache="a key/value cache", cache_update_index="a key/value cache")
    return _llama_attention(layer, "", arguments["hidden_states"], arguments["attention_mask"])


def _llama_decoder_sublayers(layer):
    return [layer._self_attention_layer, layer._feedforward_gate_dense, layer._feedforward_intermediate_dense]


def _expand_llama_decoder(layer, arguments):
    _reject(
        arguments,
        self_attention_cache="a key/value cache",
        self_attention_cache_update_index="a key/value cache",
    )
    x = arguments["decoder_sequence"]
    prefix = layer.name
    positions = _positions(x)
    mask = _causal_mask(x, arguments["decoder_padding_mask"], arguments["decoder_attention_mask"], positions)
    residual = x
    x = _rms_norm(layer._self_attention_layernorm, prefix, x)
    x = _llama_attention(layer._self_attention_layer, prefix, x, mask, positions)
    x = _dropout(layer._self_attention_dropout, prefix, x)
    x = _add(x, residual, f"{prefix}_self_attention_residual")
    residual = x
    x = _rms_norm(layer._feedforward_layernorm, prefix, x)
    gate = _dense(layer._feedforward_gate_dense, prefix, x, activation=layer.activation)
    x = _dense(layer._feedforward_intermediate_dense, prefix, x)
    x = call_stock(L.Multiply, {"name": f"{prefix}_feedforward_gate"}, None, [x, gate])
    x = _dense(layer._feedforward_output_dense, prefix, x)
    x = _add(x, residual, f"{prefix}_feedforward_residual")
    _residual_note(layer, x)
    return x


# -- registration -------------------------------------------------------------------


def _gelu_op_class():
    """The class of the raw op `keras.ops.gelu(x, approximate=True)` records in a graph."""
    x = keras.Input((1,))
    model = keras.Model(x, ops.gelu(x, approximate=True))
    return type(next(adapter.operation_calls(model))[0])


def _register_all():
    from keras_hub.src.layers.modeling.cached_multi_head_attention import CachedMultiHeadAttention
    from keras_hub.src.layers.modeling.position_embedding import PositionEmbedding
    from keras_hub.src.layers.modeling.reversible_embedding import ReversibleEmbedding
    from keras_hub.src.layers.modeling.token_and_position_embedding import TokenAndPositionEmbedding
    from keras_hub.src.layers.modeling.transformer_decoder import TransformerDecoder
    from keras_hub.src.layers.modeling.transformer_encoder import TransformerEncoder
    from keras_hub.src.models.llama.llama_attention import LlamaAttention
    from keras_hub.src.models.llama.llama_decoder import LlamaTransformerDecoder
    from keras_hub.src.models.llama.llama_layernorm import LlamaLayerNorm
    from keras_hub.src.models.vit.vit_layers import MLP, ViTEncoder, ViTEncoderBlock, ViTPatchingAndEmbedding

    from keras_compact import builtin_layers

    register_layer(TransformerEncoder, HubLayerSpec(_expand_encoder, _encoder_sublayers))
    register_layer(TransformerDecoder, HubLayerSpec(_expand_decoder, _decoder_sublayers))
    register_layer(ViTEncoder, HubLayerSpec(_expand_vit_encoder, _vit_encoder_sublayers))
    register_layer(ViTEncoderBlock, HubLayerSpec(_expand_vit_block, _vit_block_sublayers))
    register_layer(MLP, HubLayerSpec(_expand_vit_mlp, _mlp_sublayers))
    register_layer(ViTPatchingAndEmbedding, HubLayerSpec(_expand_vit_patching))
    register_layer(LlamaTransformerDecoder, HubLayerSpec(_expand_llama_decoder, _llama_decoder_sublayers))
    register_layer(LlamaAttention, HubLayerSpec(_expand_llama_attention, heads=llama_heads))
    register_layer(LlamaLayerNorm, HubLayerSpec(_expand_llama_norm))
    register_layer(ReversibleEmbedding, HubLayerSpec(_expand_reversible_embedding))
    register_layer(PositionEmbedding, HubLayerSpec(_expand_position_embedding))
    register_layer(TokenAndPositionEmbedding, HubLayerSpec(_expand_token_and_position_embedding))
    # keras-hub's CachedMultiHeadAttention is a MultiHeadAttention with a cache:
    # the same heads for penalties (it is expanded into a stock one anyway).
    register_layer(CachedMultiHeadAttention, attention.MultiHeadAttentionSpec())
    # The tanh-approximated gelu of BERT and GPT-2 is a raw op in the expanded
    # graph: an elementwise activation for the compactor (a dead neuron's
    # constant is gelu(bias)).
    register_layer(_gelu_op_class(), builtin_layers.ElementwiseActivationSpec())
