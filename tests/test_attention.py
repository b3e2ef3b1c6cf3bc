"""Attention heads: HeadLasso's groups and prox, inert heads removed exactly, gated FFNs, blocks."""

import keras
import numpy as np
import pytest

import keras_compact as kc
from keras_compact import prox
from keras_compact.penalties import layer_calls
from keras_compact.registry import LayerSpec, register_layer, spec_for


def _randomize(layer, rng, scale=0.3):
    for weight in layer.weights:
        weight.assign(rng.standard_normal(weight.shape).astype("float32") * scale)


def _set(variable, index, value=0.0):
    array = keras.ops.convert_to_numpy(variable).copy()
    array[index] = value
    variable.assign(array)


def _block(seq=6, width=8, heads=4, key_dim=5, value_dim=3, mask_input=False, **call_kwargs):
    """A pre-norm transformer block with a classifier head; optionally an attention-mask input."""
    inputs = keras.Input((seq, width), name="tokens")
    model_inputs = [inputs]
    if mask_input:
        mask = keras.Input((seq, seq), name="mask")
        model_inputs.append(mask)
        call_kwargs["attention_mask"] = mask
    x = keras.layers.LayerNormalization(name="norm")(inputs)
    attention = keras.layers.MultiHeadAttention(heads, key_dim, value_dim=value_dim, name="mha")
    x = keras.layers.Add(name="residual")([inputs, attention(x, x, **call_kwargs)])
    f = keras.layers.Dense(16, activation="gelu", name="ffn_in")(x)
    x = keras.layers.Add(name="residual_ffn")([x, keras.layers.Dense(width, name="ffn_out")(f)])
    outputs = keras.layers.Dense(3, name="classes")(keras.layers.GlobalAveragePooling1D()(x))
    return keras.Model(model_inputs if mask_input else inputs, outputs)


def _inputs(model, rng, batch=4):
    tokens = rng.standard_normal((batch, 6, 8)).astype("float32")
    if len(model.inputs) == 1:
        return tokens
    mask = np.tril(np.ones((6, 6), "float32"))[None].repeat(batch, 0)
    return [tokens, mask]


def _assert_same(model, compact, rng):
    data = _inputs(model, rng)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(compact(data)), keras.ops.convert_to_numpy(model(data)), atol=1e-5, rtol=1e-4
    )


def test_head_lasso_prox_is_the_block_soft_threshold_of_each_head():
    """With zero gradients, one step is exactly the prox of the head groups, computed here by hand."""
    rng = np.random.default_rng(0)
    model = _block()
    attention = model.get_layer("mha")
    _randomize(attention, rng)
    parts = [
        (attention.query_dense.kernel, 1),
        (attention.query_dense.bias, 0),
        (attention.key_dense.kernel, 1),
        (attention.key_dense.bias, 0),
        (attention.value_dense.kernel, 1),
        (attention.value_dense.bias, 0),
        (attention.output_dense.kernel, 0),
    ]
    before = [np.moveaxis(keras.ops.convert_to_numpy(v), axis, 0).reshape(4, -1) for v, axis in parts]
    norms = np.sqrt(sum((b.astype("float64") ** 2).sum(axis=1) for b in before))
    threshold = float(np.median(norms))  # learning rate 0.5 times strength
    optimizer = kc.ProxSGD(0.5, penalties=[kc.HeadLasso(2 * threshold, layers=["mha"])])
    optimizer.bind(model)
    variables = model.trainable_variables
    optimizer.apply([keras.ops.zeros_like(v) for v in variables], variables)
    factors = np.maximum(0.0, 1.0 - threshold / norms)
    assert (factors == 0).sum() == 2 and (factors > 0).sum() == 2  # half the heads die
    for (variable, axis), old in zip(parts, before):
        new = np.moveaxis(keras.ops.convert_to_numpy(variable), axis, 0).reshape(4, -1)
        np.testing.assert_allclose(new, old * factors[:, None], rtol=1e-5, atol=1e-7)
        assert np.all(new[factors == 0] == 0)
    # The output projection's bias is no head's: untouched.
    assert np.any(keras.ops.convert_to_numpy(attention.output_dense.bias) != 0)


def test_inert_heads_are_removed_and_the_value_bias_folded():
    rng = np.random.default_rng(1)
    model = _block()
    attention = model.get_layer("mha")
    _randomize(attention, rng)
    _set(attention.output_dense.kernel, 0)  # head 0: zero output rows
    _set(attention.value_dense.kernel, (slice(None), 2))  # head 2: its value path is its bias
    compact, report = kc.compact(model)
    assert compact.get_layer("mha").num_heads == 2
    _assert_same(model, compact, rng)
    row = {entry.name: entry for entry in report.layers}["mha"]
    assert (row.unit, row.units_before, row.units_after, row.dead_found) == ("heads", 4, 2, 2)
    assert "2 -> 2 heads" not in report.table() and "4 -> 2 heads" in report.table()


def test_a_zero_query_or_key_path_alone_does_not_make_a_head_inert():
    """Softmax of zero scores still averages the values: the head stays, the outputs too."""
    rng = np.random.default_rng(2)
    model = _block()
    attention = model.get_layer("mha")
    _randomize(attention, rng)
    for dense in (attention.query_dense, attention.key_dense):
        _set(dense.kernel, (slice(None), 1))
        _set(dense.bias, 1)
    compact, report = kc.compact(model)
    assert compact.get_layer("mha").num_heads == 4
    _assert_same(model, compact, rng)


def test_an_attention_mask_keeps_a_head_whose_constant_could_not_fold():
    """A fully masked query row averages nothing: the constant b_v W_o is not exact there."""
    rng = np.random.default_rng(3)
    model = _block(mask_input=True)
    attention = model.get_layer("mha")
    _randomize(attention, rng)
    _set(attention.value_dense.kernel, (slice(None), 1))  # constant value path: kept
    _set(attention.value_dense.kernel, (slice(None), 3))
    _set(attention.value_dense.bias, 3)  # zero value path: removed, nothing to fold
    compact, report = kc.compact(model)
    assert compact.get_layer("mha").num_heads == 3
    _assert_same(model, compact, rng)
    reasons = {entry.name: entry.reason_kept for entry in report.layers}["mha"]
    assert reasons == {
        "alive": 2,
        "its value path is its bias, a constant an attention mask keeps from folding": 1,
    }


def test_causal_cross_attention_with_its_own_key_and_output_shape():
    rng = np.random.default_rng(4)
    query = keras.Input((5, 8))
    memory = keras.Input((7, 6))
    keys = keras.Input((7, 4))
    attention = keras.layers.MultiHeadAttention(3, 4, value_dim=2, output_shape=(9,), name="cross")
    outputs = attention(query, memory, keys, use_causal_mask=True)
    model = keras.Model([query, memory, keys], outputs)
    _randomize(attention, rng)
    _set(attention.value_dense.kernel, (slice(None), 0))  # bias folded: causal rows see a key
    _set(attention.output_dense.kernel, 2)
    compact, report = kc.compact(model)
    assert compact.get_layer("cross").num_heads == 1
    data = [rng.standard_normal((2, *shape)).astype("float32") for shape in ((5, 8), (7, 6), (7, 4))]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(compact(data)), keras.ops.convert_to_numpy(model(data)), atol=1e-5, rtol=1e-4
    )
    assert kc.projected_size(model) == (report.params_after, report.macs_after)


def test_macs_count_projections_and_scores():
    model = _block()
    graph = kc.graph.build_graph(model)
    attention_macs = spec_for(model.get_layer("mha")).macs(next(c for c in graph.calls if c.name == "mha"), graph, None)
    projections = 6 * (8 * 4 * 5) * 2 + 6 * (8 * 4 * 3) + 6 * (4 * 3 * 8)  # q, k; v; output
    scores = 6 * 6 * 4 * (5 + 3)
    assert attention_macs == projections + scores


def test_all_heads_dead_keeps_one_and_says_why():
    rng = np.random.default_rng(5)
    model = _block()
    attention = model.get_layer("mha")
    _randomize(attention, rng)
    _set(attention.output_dense.kernel, slice(None))
    compact, report = kc.compact(model)
    assert compact.get_layer("mha").num_heads == 1
    _assert_same(model, compact, rng)
    assert {e.name: e.reason_kept for e in report.layers}["mha"] == {"last head (a layer needs at least one)": 1}


def test_a_gated_attention_or_returned_scores_keep_their_heads():
    rng = np.random.default_rng(6)
    inputs = keras.Input((6, 8))
    gated = keras.layers.MultiHeadAttention(2, 4, use_gate=True, name="gated")
    plain = keras.layers.MultiHeadAttention(2, 4, name="scored")
    scored, scores = plain(inputs, inputs, return_attention_scores=True)
    model = keras.Model(inputs, [gated(inputs, inputs), scored, scores])
    for layer in (gated, plain):
        _randomize(layer, rng)
        _set(layer.output_dense.kernel, 0)
    compact, report = kc.compact(model)
    assert compact.get_layer("gated").num_heads == 2 and compact.get_layer("scored").num_heads == 2
    assert "use_gate" in report.barriers["gated"] and "scores" in report.barriers["scored"]


def test_training_with_head_lasso_removes_whole_heads_and_is_saved_with_the_optimizer(tmp_path):
    rng = np.random.default_rng(7)
    keras.utils.set_random_seed(7)
    model = _block()
    steps = 4 * 4  # epochs times batches
    members = kc.HeadLasso(0.0).resolve(model)[0].members
    head_norms = prox.group_norms([m.view(m.variable) for m in members])
    # Enough strength to shrink the median head to zero over the run, were the loss flat.
    strength = float(np.median(keras.ops.convert_to_numpy(head_norms))) / (0.1 * steps)
    model.compile(
        kc.ProxSGD(0.1, penalties=[kc.HeadLasso(strength), kc.GroupLasso(0.05)]),
        loss="sparse_categorical_crossentropy",
    )
    monitor = kc.NeuronMonitor(verbose=0)
    history = model.fit(
        rng.standard_normal((128, 6, 8)).astype("float32"),
        rng.integers(0, 3, 128),
        epochs=4,
        batch_size=32,
        verbose=0,
        callbacks=[monitor],
    )
    live, total = monitor.live_counts("heads")["mha"]
    assert total == 4 and 0 < live < 4, live  # some heads died, as whole groups
    assert history.history["live_heads/mha"][-1] == live
    compact, _ = kc.compact(model)
    assert compact.get_layer("mha").num_heads == live
    _assert_same(model, compact, rng)
    path = tmp_path / "trained.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    groups = loaded.optimizer.get_config()["resolved_groups"]
    assert [g["unit"] for g in groups][:1] == ["heads"]
    assert kc.HeadLasso.from_config(kc.HeadLasso(0.6, layers="m.a", weighted=True).get_config()).get_config() == {
        "strength": 0.6,
        "layers": "m.a",
        "weighted": True,
    }


def test_head_lasso_on_a_model_without_attention_says_so():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(3)(inputs)))
    with pytest.raises(ValueError, match="HeadLasso.*selects no layer"):
        kc.HeadLasso(0.1).resolve(model)


def test_a_gated_feed_forward_neuron_goes_with_its_up_column_and_down_row():
    """silu(0) * up = 0: a dead gate neuron takes the up projection's neuron and the down row with it."""
    rng = np.random.default_rng(8)
    inputs = keras.Input((6, 8))
    gate = keras.layers.Dense(12, activation="silu", name="gate")(inputs)
    up = keras.layers.Dense(12, name="up")(inputs)
    hidden = keras.layers.Multiply(name="gated")([gate, up])
    outputs = keras.layers.Dense(8, name="down")(hidden)
    model = keras.Model(inputs, outputs)
    for layer in model.layers[1:]:
        _randomize(layer, rng)
    _set(model.get_layer("gate").kernel, (slice(None), slice(0, 5)))
    _set(model.get_layer("gate").bias, slice(0, 5))
    compact, _ = kc.compact(model)
    assert [compact.get_layer(n).units for n in ("gate", "up")] == [7, 7]
    assert compact.get_layer("down").kernel.shape == (7, 8)
    data = rng.standard_normal((3, 6, 8)).astype("float32")
    np.testing.assert_allclose(compact(data), model(data), atol=1e-5, rtol=1e-4)


class TinyBlock(keras.layers.Layer):
    """A block that holds its attention and feed-forward layers (as keras-hub's blocks do)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.attention = keras.layers.MultiHeadAttention(2, 4, name="attention")
        self.hidden = keras.layers.Dense(10, activation="relu", name="hidden")
        self.back = keras.layers.Dense(8, name="back")

    def call(self, x):
        x = x + self.attention(x, x)
        return x + self.back(self.hidden(x))


class TinyBlockSpec(LayerSpec):
    def sublayers(self, layer):
        return [layer.attention, layer.hidden]


def test_penalties_reach_the_layers_inside_a_registered_block():
    register_layer(TinyBlock, TinyBlockSpec("is a block"))
    rng = np.random.default_rng(9)
    keras.utils.set_random_seed(9)
    inputs = keras.Input((5, 8))
    outputs = keras.layers.Dense(2, name="out")(keras.layers.Flatten()(TinyBlock(name="block")(inputs)))
    model = keras.Model(inputs, outputs)
    names = [call.name for call in layer_calls(kc.graph.build_graph(model))]
    assert "block/attention" in names and "block/hidden" in names and "block/back" not in names
    model.compile(
        kc.ProxSGD(0.1, penalties=[kc.HeadLasso(10.0), kc.GroupLasso(10.0, layers=["block/hidden"])]),
        loss="mse",
    )
    model.fit(rng.standard_normal((32, 5, 8)), rng.standard_normal((32, 2)), epochs=3, batch_size=8, verbose=0)
    block = model.get_layer("block")
    assert np.all(keras.ops.convert_to_numpy(block.attention.output_dense.kernel) == 0)
    hidden = keras.ops.convert_to_numpy(block.hidden.kernel)
    assert np.all(hidden == 0)
    monitor = kc.NeuronMonitor(verbose=0)
    monitor.set_model(model)
    assert monitor.live_counts("heads") == {"block/attention": (0, 2)}


def _gqa_model():
    inputs = keras.Input((6, 8))
    attention = keras.layers.GroupQueryAttention(4, num_query_heads=6, num_key_value_heads=3, name="gqa")
    outputs = keras.layers.Add()([inputs, attention(inputs, inputs, use_causal_mask=True)])
    return keras.Model(inputs, outputs), attention


def test_grouped_query_attention_keeps_query_heads_a_multiple_of_key_value_heads():
    """6 query heads over 3 key/value heads (2 each): kill both of group 0 and one of group 1."""
    rng = np.random.default_rng(10)
    model, attention = _gqa_model()
    _randomize(attention, rng)
    output_kernel = [w for w in attention.weights if w.path.endswith("attention_output/kernel")][0]
    _set(output_kernel, [0, 1, 2])
    compact, report = kc.compact(model)
    rebuilt = compact.get_layer("gqa")
    # Group 0 goes whole; groups 1 and 2 keep 2 query heads each (head 2, inert, stays to balance).
    assert (rebuilt.num_query_heads, rebuilt.num_key_value_heads) == (4, 2)
    _assert_same(model, compact, rng)
    assert {e.name: e.reason_kept for e in report.layers}["gqa"] == {
        "alive": 3,
        "keeps each key/value head's query heads equal in number": 1,
    }
    assert kc.projected_size(model) == (report.params_after, report.macs_after)


def test_head_lasso_groups_of_grouped_query_attention_are_query_heads():
    model, attention = _gqa_model()
    (target,) = kc.HeadLasso(0.1).resolve(model)
    assert [m.variable.path.split("/", 1)[1] for m in target.members] == [
        "query/kernel",
        "query/bias",
        "attention_output/kernel",
    ]
    assert target.num_neurons == 6
