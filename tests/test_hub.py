"""keras-hub models: BERT, GPT-2, ViT and Llama backbones made compactable.

Each backbone is built from its constructor with a tiny config and seeded
random weights; some feed-forward neurons and attention heads are made dead
by hand, the way a penalty leaves them (zero kernel columns, zero value
slices, zero output rows). Then: the expansion into stock Keras layers equals
the original; `compact` removes exactly what is dead and computes the same;
the compact model loads in a process that cannot import keras_compact or
keras_hub; ViT's exports to TFLite.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is not installed (pip install 'keras-compact[hub]')")

import keras_compact  # noqa: E402
from keras_compact import attention, hub  # noqa: E402
from keras_compact.compaction.expand import expand_model  # noqa: E402
from keras_compact.compaction.verify import predict, random_batch  # noqa: E402
from keras_compact.numerics import relative_difference  # noqa: E402
from keras_compact.penalties import layer_calls  # noqa: E402
from keras_compact.registry import spec_for  # noqa: E402

HIDDEN, FFN, HEADS = 16, 32, 4


@pytest.fixture(scope="module", autouse=True)
def registered():
    hub.register()


def _zero_columns(dense, columns, bias=True):
    kernel = keras.ops.convert_to_numpy(dense.kernel)
    kernel[:, columns] = 0
    dense.kernel.assign(kernel)
    if bias and dense.bias is not None:
        values = keras.ops.convert_to_numpy(dense.bias)
        values[columns] = 0
        dense.bias.assign(values)


def _zero_value_head(attention, head):
    """Head `head` of a MultiHeadAttention: zero value kernel slice and value bias."""
    dense = attention._value_dense
    kernel = keras.ops.convert_to_numpy(dense.kernel)
    kernel[:, head, :] = 0
    dense.kernel.assign(kernel)
    if dense.bias is not None:
        bias = keras.ops.convert_to_numpy(dense.bias)
        bias[head] = 0
        dense.bias.assign(bias)


def _zero_output_rows(attention, head):
    kernel = keras.ops.convert_to_numpy(attention._output_dense.kernel)
    kernel[head] = 0
    attention._output_dense.kernel.assign(kernel)


def _kill_ffn(intermediate):
    """Neurons 1, 2, 3 of a feed-forward Dense dead to 0, neuron 5 dead to the constant act(bias)."""
    # Trained biases, not the zeros keras-hub starts from: neuron 5's constant is then
    # act(bias) != 0, which must be folded into the output Dense's bias.
    rng = np.random.default_rng(intermediate.kernel.shape[-1])
    intermediate.bias.assign(rng.normal(0.0, 0.5, intermediate.bias.shape).astype("float32"))
    _zero_columns(intermediate, [1, 2, 3])
    _zero_columns(intermediate, [5], bias=False)
    return 4


def _text_model(backbone_class, seed, **extra):
    """A two-block BERT or GPT-2 with feed-forward neurons dead in both blocks."""
    keras.utils.set_random_seed(seed)
    model = backbone_class(
        vocabulary_size=40, num_layers=2, num_heads=HEADS, hidden_dim=HIDDEN, intermediate_dim=FFN,
        max_sequence_length=16, **extra,
    )
    blocks = [model.get_layer(f"transformer_layer_{i}") for i in range(2)]
    dead = [_kill_ffn(block._feedforward_intermediate_dense) for block in blocks][-1]
    return model, blocks, dead


def bert():
    model, blocks, dead = _text_model(keras_hub.models.BertBackbone, 1)
    _zero_output_rows(blocks[0]._self_attention_layer, 2)
    return model, {"ffn_dead": dead, "heads_dead": {"transformer_layer_0": 1, "transformer_layer_1": 0}}


def gpt2():
    # dropout=0: the fused attention kernel path (BERT takes the other).
    model, blocks, dead = _text_model(keras_hub.models.GPT2Backbone, 2, dropout=0.0)
    _zero_value_head(blocks[1]._self_attention_layer, 0)
    return model, {"ffn_dead": dead, "heads_dead": {"transformer_layer_0": 0, "transformer_layer_1": 1}}


def vit():
    keras.utils.set_random_seed(3)
    model = keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=4, num_layers=2, num_heads=HEADS, hidden_dim=HIDDEN, mlp_dim=FFN,
    )
    blocks = model.get_layer("vit_encoder").encoder_layers
    for block in blocks:
        dead = _kill_ffn(block.mlp.dense_1)
    _zero_output_rows(blocks[0].mha, 1)
    _zero_value_head(blocks[0].mha, 3)
    return model, {"ffn_dead": dead, "heads_dead": {"transformer_block_1": 2, "transformer_block_2": 0}}


def llama():
    keras.utils.set_random_seed(4)
    model = keras_hub.models.LlamaBackbone(
        vocabulary_size=40, num_layers=3, num_query_heads=HEADS, num_key_value_heads=2, hidden_dim=HIDDEN,
        intermediate_dim=FFN,
    )
    blocks = [model.get_layer(f"transformer_layer_{i}") for i in range(3)]
    for block in blocks:
        _zero_columns(block._feedforward_gate_dense, [1, 2])  # silu(0) = 0: the product is 0
        _zero_columns(block._feedforward_intermediate_dense, [4, 5])
    attention = [block._self_attention_layer for block in blocks]
    # Layer 0: one dead query head in each group: 4 -> 2 query heads, 2 key/value heads.
    _zero_output_rows(attention[0], 1)
    _zero_output_rows(attention[0], 3)
    # Layer 1: key/value head 1's value path is dead (query heads 2, 3 with it), and
    # query head 0: one query head and one key/value head stay.
    value = keras.ops.convert_to_numpy(attention[1]._value_dense.kernel)
    value[:, 1, :] = 0
    attention[1]._value_dense.kernel.assign(value)
    _zero_output_rows(attention[1], 0)
    # Layer 2: query head 3 is dead, but key/value head 0 needs its 2 query heads, so
    # key/value head 1 keeps 2 as well: nothing goes.
    _zero_output_rows(attention[2], 3)
    return model, {
        "ffn_dead": 4,
        "ffn_layers": 6,
        "query_heads": [2, 1, 4],
        "kv_heads": [2, 1, 2],
    }


BUILDERS = {"bert": bert, "gpt2": gpt2, "vit": vit, "llama": llama}


@pytest.fixture(scope="module")
def compacted():
    """name -> (original model, expectations, compact model, report)."""
    found = {}
    for name, build in BUILDERS.items():
        model, expected = build()
        small, report = keras_compact.compact(model)
        found[name] = (model, expected, small, report)
    return found


def _operations(model):
    return [op for op in model.operations if not isinstance(op, keras.layers.InputLayer)]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_expansion_computes_the_original_in_stock_keras(name):
    model, _ = BUILDERS[name]()
    expanded, expansions = expand_model(model)
    assert expansions and all(e.why_not is None for e in expansions)
    modules = {type(op).__module__.split(".")[0] for op in _operations(expanded)}
    assert modules == {"keras"}, modules
    batch = random_batch(model, seed=5)
    for a, b in zip(predict(model, batch), predict(expanded, batch)):
        assert relative_difference(a, b) <= 1e-5


@pytest.mark.parametrize("name", list(BUILDERS))
def test_compact_removes_dead_neurons_and_computes_the_same(name, compacted):
    model, expected, small, report = compacted[name]
    assert report.max_rel_diff <= 1e-4
    batch = random_batch(model, seed=7)
    for a, b in zip(predict(model, batch), predict(small, batch)):
        assert relative_difference(a, b) <= 1e-4
    # Exactly the dead feed-forward neurons went, in every block.
    intermediates = [
        entry for entry in report.layers
        if entry.name.endswith(("feedforward_intermediate_dense", "mlp_dense_1", "feedforward_gate_dense"))
    ]
    assert len(intermediates) == expected.get("ffn_layers", 2)
    for entry in intermediates:
        assert (entry.units_before, entry.units_after) == (FFN, FFN - expected["ffn_dead"]), entry
    assert not any(type(op).__module__.startswith("keras_hub") for op in _operations(small))
    # The report says what stayed and why: the residual stream, read through normalization layers.
    text = report.table()
    assert "residual stream" in text and "not exact under channel removal" in text
    assert report.params_after < report.params_before == model.count_params()


@pytest.mark.parametrize("name", list(BUILDERS))
def test_projected_size_counts_the_blocks_as_compact_rebuilds_them(name, compacted):
    """The budget's size projection reads the expanded blocks, so dead heads and neurons count."""
    model, _, small, _ = compacted[name]
    params, macs = keras_compact.projected_size(model)
    assert params < model.count_params()
    # The compact model folds no constant branch here (each FFN keeps live neurons): equal counts.
    assert params == small.count_params()


def _bert_regression(seed, samples, tokens=8):
    """Random BertBackbone inputs and regression targets for its two outputs."""
    rng = np.random.default_rng(seed)
    inputs = {
        "token_ids": rng.integers(0, 40, (samples, tokens)).astype("int32"),
        "segment_ids": rng.integers(0, 2, (samples, tokens)).astype("int32"),
        "padding_mask": np.ones((samples, tokens), "int32"),
    }
    targets = {
        "sequence_output": rng.standard_normal((samples, tokens, HIDDEN)),
        "pooled_output": rng.standard_normal((samples, HIDDEN)),
    }
    return inputs, targets


def test_a_budget_on_a_keras_hub_model_counts_its_blocks_and_is_met():
    """BudgetController on BertBackbone as it is: the projection reads the expanded blocks."""
    keras.utils.set_random_seed(9)
    model = keras_hub.models.BertBackbone(
        vocabulary_size=40, num_layers=2, num_heads=HEADS, hidden_dim=HIDDEN, intermediate_dim=FFN,
        max_sequence_length=16, dropout=0.0,
    )
    blocks = [f"transformer_layer_{i}" for i in range(2)]
    model.compile(
        keras_compact.ProxSGD(0.05, momentum=0.9, penalties=[
            keras_compact.HeadLasso(1e-3, layers=[f"{b}/self_attention_layer" for b in blocks]),
            keras_compact.GroupLasso(1e-3, layers=[f"{b}/feedforward_intermediate_dense" for b in blocks]),
        ]),
        loss="mse",
    )
    inputs, targets = _bert_regression(seed=9, samples=64)
    controller = keras_compact.BudgetController(params=0.6, verbose=0)
    model.fit(inputs, targets, epochs=10, batch_size=16, verbose=0, callbacks=[controller])
    assert controller.landed
    small, report = keras_compact.compact(model, sample_data=inputs)
    assert small.count_params() <= 0.6 * model.count_params()
    assert any(row.unit == "heads" and row.units_after < row.units_before for row in report.layers)
    # Heads alone cannot reach 60% (the removable ones hold under 30% of this BERT): FFN neurons went too.
    assert any(
        row.name.endswith("feedforward_intermediate_dense") and row.units_after < row.units_before
        for row in report.layers
    )


def test_macs_of_a_keras_hub_model_are_counted_at_a_given_sequence_length():
    """BertBackbone takes any sequence length: its blocks' MACs count at `open_dim_size`, else not at all."""
    model = keras_hub.models.BertBackbone(
        vocabulary_size=40, num_layers=2, num_heads=HEADS, hidden_dim=HIDDEN, intermediate_dim=FFN,
        max_sequence_length=16, dropout=0.0,
    )
    tokens = 8
    # Per block: the four projections, the scores and the weighted values of each head, the FFN; then the pooler.
    per_block = 4 * tokens * HIDDEN * HIDDEN + 2 * tokens * tokens * HIDDEN + 2 * tokens * HIDDEN * FFN
    assert keras_compact.projected_size(model, open_dim_size=tokens)[1] == 2 * per_block + HIDDEN * HIDDEN
    assert keras_compact.projected_size(model)[1] == HIDDEN * HIDDEN  # the blocks' MACs are unknown
    # multiply_adds counts the blocks as expanded too (whole, they are no Dense or conv: it read 0).
    assert keras_compact.multiply_adds(model, tokens) == 2 * per_block + HIDDEN * HIDDEN
    model.compile(keras_compact.ProxSGD(0.05, penalties=[keras_compact.GroupLasso(1e-3)]), loss="mse")
    inputs, targets = _bert_regression(seed=0, samples=4)
    with pytest.raises(ValueError, match=r"transformer_layer_0.*open_dim_size=N"):
        model.fit(inputs, targets, verbose=0, callbacks=[keras_compact.BudgetController(macs=0.5)])


@pytest.mark.parametrize("name", ["bert", "gpt2", "vit"])
def test_compact_removes_dead_attention_heads(name, compacted):
    _, expected, small, _ = compacted[name]
    for block, dead in expected["heads_dead"].items():
        attention = [
            layer for layer in small.layers
            if isinstance(layer, keras.layers.MultiHeadAttention) and layer.name.startswith(block)
        ]
        assert len(attention) == 1
        assert attention[0].num_heads == HEADS - dead
        assert attention[0].key_dim == HIDDEN // HEADS


def test_llama_inert_heads_go_at_expansion_in_whole_groups(compacted):
    _, expected, small, report = compacted["llama"]
    for i in range(3):
        query = small.get_layer(f"transformer_layer_{i}_self_attention_query").kernel
        key = small.get_layer(f"transformer_layer_{i}_self_attention_key").kernel
        value = small.get_layer(f"transformer_layer_{i}_self_attention_value").kernel
        output = small.get_layer(f"transformer_layer_{i}_self_attention_attention_output").kernel
        assert query.shape[1] == output.shape[0] == expected["query_heads"][i]
        assert key.shape[1] == value.shape[1] == expected["kv_heads"][i]
        assert query.shape[1] % key.shape[1] == 0
        assert query.shape[2] == HIDDEN // HEADS  # the head size stays
    notes = [note for e in report.expanded for note in e["notes"] if "query heads" in note]
    assert notes == [
        "'transformer_layer_0_self_attention': query heads 4 -> 2 (removed 1: zero output-projection "
        "rows, 3: zero output-projection rows); key/value heads 2 -> 2",
        "'transformer_layer_1_self_attention': query heads 4 -> 1 (removed 0: zero output-projection "
        "rows, 2: zero value kernel of key/value head 1, 3: zero value kernel of key/value head 1); "
        "key/value heads 2 -> 1 (removed [1]: every query head reading them is inert)",
        "'transformer_layer_2_self_attention': query heads 4 -> 4; key/value heads 2 -> 2; inert query "
        "heads [3] stay so that each key/value head keeps 2 query heads (grouped-query attention)",
    ]


def test_llama_head_selection_keeps_the_query_count_a_multiple_of_the_key_value_count():
    """The rule Llama's expansion applies (`attention.balanced_heads`), on its inertness."""
    def kept(inert, kv_heads):
        query, groups = attention.balanced_heads(np.array(inert, dtype=bool), len(inert) // kv_heads)
        return np.flatnonzero(query).tolist(), np.flatnonzero(groups).tolist()

    assert kept([0, 1, 0, 1], 2) == ([0, 2], [0, 1])
    assert kept([0, 1, 0, 0], 2) == ([0, 1, 2, 3], [0, 1])  # head 1 fills kv head 0's group
    assert kept([1, 1, 0, 1], 2) == ([2], [1])
    assert kept([1, 1, 1, 1], 2) == ([0], [0])  # a layer keeps one head
    assert kept([0, 0, 1, 0, 1, 1], 3) == ([0, 1, 2, 3], [0, 1])


def test_llama_heads_are_the_groups_a_head_penalty_zeroes():
    """Zeroing query head h through `heads` (as HeadLasso's prox does) makes it inert."""
    model, _ = llama()
    attention = model.get_layer("transformer_layer_2")._self_attention_layer
    members = spec_for(attention).heads(attention)
    assert [(m.pre, m.n, m.post) for m in members] == [(HIDDEN, HEADS, HIDDEN // HEADS), (1, HEADS, HIDDEN * HIDDEN // HEADS)]
    assert hub.inert_llama_heads(attention)[0].tolist() == [False, False, False, True]
    for member in members:
        view = keras.ops.convert_to_numpy(member.view(member.variable))
        view[:, 2, :] = 0
        member.variable.assign(keras.ops.convert_to_numpy(member.unview(view)))
    inert, reasons = hub.inert_llama_heads(attention)
    assert inert.tolist() == [False, False, True, True]
    assert reasons[2] == "zero output-projection rows"


def test_sublayers_are_attention_and_intermediate_dense_never_the_output_dense():
    model, _ = bert()
    block = model.get_layer("transformer_layer_0")
    assert spec_for(block).sublayers(block) == [block._self_attention_layer, block._feedforward_intermediate_dense]
    model, _ = llama()
    block = model.get_layer("transformer_layer_0")
    assert spec_for(block).sublayers(block) == [
        block._self_attention_layer, block._feedforward_gate_dense, block._feedforward_intermediate_dense
    ]
    model, _ = vit()
    names = [call.name for call in layer_calls(keras_compact.graph.build_graph(model))]
    assert [name for name in names if name.startswith("vit_encoder/")] == [
        "vit_encoder/transformer_block_1",
        "vit_encoder/transformer_block_1/mha",
        "vit_encoder/transformer_block_1/mlp",
        "vit_encoder/transformer_block_1/mlp/dense_1",
        "vit_encoder/transformer_block_2",
        "vit_encoder/transformer_block_2/mha",
        "vit_encoder/transformer_block_2/mlp",
        "vit_encoder/transformer_block_2/mlp/dense_1",
    ]
    (target,) = keras_compact.GroupLasso(0.1, layers="dense_1").resolve(model)[:1]
    assert target.layer_name == "vit_encoder/transformer_block_1/mlp/dense_1"


def test_a_block_call_the_expansion_does_not_know_stays_a_barrier():
    decoder = keras_hub.layers.TransformerDecoder(intermediate_dim=8, num_heads=2, name="cross_decoder")
    x = keras.Input((None, 8))
    memory = keras.Input((None, 8))
    model = keras.Model([x, memory], decoder(x, memory))
    expanded, expansions = expand_model(model)
    assert [(e.name, e.why_not) for e in expansions] == [
        ("cross_decoder", "a decoder with cross-attention is not expanded (only decoder-only blocks, as GPT-2's)")
    ]
    batch = random_batch(model)
    np.testing.assert_allclose(predict(model, batch)[0], predict(expanded, batch)[0], atol=1e-6)


_RELOAD = r"""
import json, sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("keras_hub", "keras_compact"):
            raise ImportError(f"{name} must not be needed to load a compact model")

sys.meta_path.insert(0, Refuse())
import keras, numpy as np

folder = sys.argv[1]
result = {}
for name in json.load(open(f"{folder}/names.json")):
    model = keras.models.load_model(f"{folder}/{name}.keras")
    data = np.load(f"{folder}/{name}_inputs.npz")
    inputs = {k: data[k] for k in data.files} if len(data.files) > 1 else data[data.files[0]]
    outputs = [keras.ops.convert_to_numpy(o) for o in keras.tree.flatten(model(inputs))]
    expected = np.load(f"{folder}/{name}_outputs.npz")
    result[name] = max(float(np.max(np.abs(o - expected[f"o{i}"]))) for i, o in enumerate(outputs))
result["modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("keras_hub", "keras_compact"))
print(json.dumps(result))
"""


def test_compact_models_reload_without_keras_compact_or_keras_hub(compacted, tmp_path):
    for name, (model, _, small, _) in compacted.items():
        small.save(tmp_path / f"{name}.keras")
        batch = random_batch(model, seed=11)
        inputs = batch if isinstance(batch, dict) else {"x": batch}
        np.savez(tmp_path / f"{name}_inputs.npz", **inputs)
        outputs = predict(small, batch)
        np.savez(tmp_path / f"{name}_outputs.npz", **{f"o{i}": o for i, o in enumerate(outputs)})
    (tmp_path / "names.json").write_text(json.dumps(list(compacted)))
    script = tmp_path / "reload.py"
    script.write_text(_RELOAD)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result.pop("modules") == []
    for name, difference in result.items():
        assert difference <= 1e-5, (name, difference)


def test_compact_vit_exports_to_tflite(compacted, tmp_path):
    _, _, small, _ = compacted["vit"]
    report = keras_compact.export(small, str(tmp_path / "vit.tflite"), format="tflite")
    assert report.max_rel_diff <= 1e-4
    assert (tmp_path / "vit.tflite").stat().st_size > 0


def test_head_and_group_lasso_train_the_keras_hub_model_as_it_is_and_compact_removes_what_died():
    """ProxSGD trains BertBackbone itself; the prox reaches its blocks' own sublayers."""
    keras.utils.set_random_seed(6)
    model = keras_hub.models.BertBackbone(
        vocabulary_size=40, num_layers=2, num_heads=HEADS, hidden_dim=HIDDEN, intermediate_dim=FFN,
        max_sequence_length=16, dropout=0.0,
    )
    first, second = model.get_layer("transformer_layer_0"), model.get_layer("transformer_layer_1")
    model.compile(
        keras_compact.ProxSGD(0.1, penalties=[
            keras_compact.HeadLasso(100.0, layers=["transformer_layer_0/self_attention_layer"]),
            keras_compact.GroupLasso(100.0, layers=["transformer_layer_1/feedforward_intermediate_dense"]),
        ]),
        loss="mse",
    )
    inputs, targets = _bert_regression(seed=6, samples=16)
    model.fit(inputs, targets, epochs=2, batch_size=8, verbose=0)
    # The keras-hub model's own variables: every head of block 0, every intermediate neuron of block 1.
    for weight in first._self_attention_layer.weights:
        if not weight.path.endswith("attention_output/bias"):
            assert not np.any(keras.ops.convert_to_numpy(weight)), weight.path
    assert not np.any(keras.ops.convert_to_numpy(second._feedforward_intermediate_dense.kernel))
    assert np.all(np.any(keras.ops.convert_to_numpy(second._self_attention_layer._output_dense.kernel), axis=(1, 2)))
    small, report = keras_compact.compact(model, sample_data=inputs)
    assert small.get_layer("transformer_layer_1_self_attention_layer").num_heads == HEADS
    assert small.get_layer("transformer_layer_0_feedforward_intermediate_dense").units == FFN
    # Block 0's attention and block 1's FFN died whole: each only added a constant, which went into
    # the beta of the LayerNormalization before it (block 0's through the embeddings' Dropout, the
    # identity at inference), and their layers are gone.
    names = {layer.name for layer in small.layers}
    assert not {
        "transformer_layer_0_self_attention_layer",
        "transformer_layer_1_feedforward_intermediate_dense",
        "transformer_layer_1_feedforward_output_dense",
    } & names
    assert [(fold["add"], fold["into"]) for fold in report.folded_branches] == [
        ("transformer_layer_0_self_attention_residual", "embeddings_layer_norm"),
        ("transformer_layer_1_feedforward_residual", "transformer_layer_1_self_attention_layer_norm"),
    ]
    assert report.max_rel_diff <= 1e-4


def test_head_lasso_kills_llama_query_heads_through_their_members_and_the_expansion_drops_them():
    keras.utils.set_random_seed(8)
    model = keras_hub.models.LlamaBackbone(
        vocabulary_size=40, num_layers=2, num_query_heads=HEADS, num_key_value_heads=2, hidden_dim=HIDDEN,
        intermediate_dim=FFN,
    )
    model.compile(
        keras_compact.ProxSGD(0.1, penalties=[
            keras_compact.HeadLasso(100.0, layers=["transformer_layer_1/self_attention"]),
            keras_compact.GroupLasso(100.0, layers=["transformer_layer_0/feedforward_gate_dense"]),
        ]),
        loss="mse",
    )
    rng = np.random.default_rng(8)
    inputs = {"token_ids": rng.integers(0, 40, (16, 8)).astype("int32"), "padding_mask": np.ones((16, 8), "int32")}
    model.fit(inputs, rng.standard_normal((16, 8, HIDDEN)), epochs=2, batch_size=8, verbose=0)
    attention_1 = model.get_layer("transformer_layer_1")._self_attention_layer
    assert hub.inert_llama_heads(attention_1)[0].all()
    assert not hub.inert_llama_heads(model.get_layer("transformer_layer_0")._self_attention_layer)[0].any()
    small, report = keras_compact.compact(model, sample_data=inputs)
    assert small.get_layer("transformer_layer_1_self_attention_query").kernel.shape[1] == 1
    assert small.get_layer("transformer_layer_0_self_attention_query").kernel.shape[1] == HEADS
    assert small.get_layer("transformer_layer_1_feedforward_gate_dense").units == FFN
    # Block 0's gates all died: silu(0) * up = 0, and Llama's Dense layers have no bias, so the
    # FFN adds exactly 0 and goes whole, with no bias to take anything.
    names = {layer.name for layer in small.layers}
    assert not any(name.startswith("transformer_layer_0_feedforward") for name in names)
    [fold] = report.folded_branches
    assert (fold["add"], fold["into"], fold["max_abs_constant"]) == ("transformer_layer_0_feedforward_residual", None, 0.0)
    assert report.max_rel_diff <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_compact_token_models_convert_to_tflite_builtins(name, compacted, tmp_path):
    """Their raw ops (positions, masks, rotary embeddings, gelu) are TFLite builtins.

    Through SavedModel and the converter directly: `keras_compact.export`
    verifies single-input models only, and these take token ids and a mask.
    """
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    _, _, small, _ = compacted[name]
    small.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved"))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    runner = Interpreter(model_content=converter.convert()).get_signature_runner()
    batch = random_batch(small, seed=3, batch_size=1)
    outputs = runner(**batch)
    for expected, key in zip(predict(small, batch), sorted(outputs)):
        assert relative_difference(expected, np.asarray(outputs[key])) <= 1e-4


_UNREGISTERED = """
import keras, keras_hub, keras_compact as kc
from keras_compact import hub
backbone = keras_hub.models.BertBackbone(
    vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=8
)
names = sorted(t.layer_name for t in kc.HeadLasso(0.1).resolve(backbone) + kc.GroupLasso(0.1).resolve(backbone))
print(hub.register(), names)
"""


def test_keras_hub_layers_are_learned_the_first_time_one_is_met():
    """In a fresh process, with no `hub.register()` call: penalties find the blocks' sublayers."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", _UNREGISTERED], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == (
        "False ['transformer_layer_0/feedforward_intermediate_dense', 'transformer_layer_0/self_attention_layer']"
    )
