"""Constant branches: an Add input that is one vector for every input goes into a bias, exactly."""

import keras
import numpy as np

import keras_compact as kc
from keras_compact.compaction.constant_branches import fold_constant_branches


def _set(variable, value):
    variable.assign(np.broadcast_to(np.asarray(value, "float32"), variable.shape))


def _weight(layer, suffix):
    return next(w for w in layer.weights if w.path.endswith(suffix))


def _vit_block(seq=6, width=8, heads=4):
    """Two pre-norm transformer blocks and a classifier."""
    inputs = keras.Input((seq, width), name="tokens")
    x = inputs
    for block in range(2):
        h = keras.layers.LayerNormalization(name=f"ln1_{block}")(x)
        h = keras.layers.MultiHeadAttention(heads, 5, name=f"mha_{block}")(h, h)
        x = keras.layers.Add(name=f"add1_{block}")([x, h])
        h = keras.layers.LayerNormalization(name=f"ln2_{block}")(x)
        h = keras.layers.Dense(16, activation="gelu", name=f"ffn_in_{block}")(h)
        h = keras.layers.Dense(width, name=f"ffn_out_{block}")(h)
        x = keras.layers.Add(name=f"add2_{block}")([x, h])
    outputs = keras.layers.Dense(3, name="classes")(keras.layers.GlobalAveragePooling1D()(x))
    return keras.Model(inputs, outputs)


def _randomized(model, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(rng.standard_normal(weight.shape).astype("float32") * scale)
    return model


def _kill_ffn(model, block, bias=0.4):
    """Every neuron of the FFN dead: a zero kernel and a non-zero bias (GELU(bias) != 0 is a constant)."""
    layer = model.get_layer(f"ffn_in_{block}")
    _set(layer.kernel, 0.0)
    _set(layer.bias, bias)


def _assert_same(model, compact, seq=6, width=8):
    data = np.random.default_rng(1).standard_normal((5, seq, width)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(compact(data)), keras.ops.convert_to_numpy(model(data)), atol=1e-5, rtol=1e-5
    )


def _names(model):
    return {layer.name for layer in model.layers}


def test_dead_ffn_branch_is_gone_and_its_constant_in_the_attention_bias():
    model = _randomized(_vit_block())
    _kill_ffn(model, 0)
    compact, report = kc.compact(model)
    _assert_same(model, compact)
    # Block 0's FFN branch is gone whole; block 1's, alive, stays.
    assert not {"ln2_0", "ffn_in_0", "ffn_out_0", "add2_0"} & _names(compact)
    assert {"ln2_1", "ffn_in_1", "ffn_out_1", "add2_1"} <= _names(compact)
    [fold] = report.folded_branches
    assert fold["add"] == "add2_0" and fold["into"] == "mha_0" and fold["constant_inputs"] == ["ffn_out_0"]
    # The constant is what the dead FFN adds: ffn_out's bias + GELU(0.4) times its kernel rows.
    ffn_out = model.get_layer("ffn_out_0")
    gelu = keras.ops.convert_to_numpy(keras.activations.gelu(keras.ops.convert_to_tensor(np.float32(0.4))))
    constant = keras.ops.convert_to_numpy(ffn_out.bias) + gelu * keras.ops.convert_to_numpy(ffn_out.kernel).sum(0)
    np.testing.assert_allclose(fold["max_abs_constant"], np.abs(constant).max(), rtol=1e-5)
    new_bias = keras.ops.convert_to_numpy(_weight(compact.get_layer("mha_0"), "attention_output/bias"))
    old_bias = keras.ops.convert_to_numpy(_weight(model.get_layer("mha_0"), "attention_output/bias"))
    np.testing.assert_allclose(new_bias, old_bias + constant, atol=1e-6)
    rows = {entry.name: entry for entry in report.layers}
    assert (rows["ffn_in_0"].units_after, rows["ffn_in_0"].params_after, rows["ffn_in_0"].macs_after) == (0, 0, 0)
    assert rows["ffn_in_1"].units_after == 16
    assert report.params_after == compact.count_params()
    # The budget's projection leaves the folded branch out too.
    assert kc.projected_size(model) == (report.params_after, report.macs_after)
    assert "ln2_0" not in report.barriers and "ln2_1" in report.barriers
    assert "folded the constant input of 'add2_0'" in report.table()


def test_the_constant_goes_through_a_dropout_into_the_bias_before_it():
    """x + Dropout(attention) + c: at inference the Dropout is the identity, so the attention takes c."""
    inputs = keras.Input((6, 8), name="tokens")
    h = keras.layers.MultiHeadAttention(2, 4, name="mha")(inputs, inputs)
    x = keras.layers.Add(name="add1")([inputs, keras.layers.Dropout(0.1, name="drop")(h)])
    h = keras.layers.Dense(16, activation="gelu", name="ffn_in")(x)
    x = keras.layers.Add(name="add2")([x, keras.layers.Dense(8, name="ffn_out")(h)])
    model = _randomized(keras.Model(inputs, keras.layers.Dense(3, name="classes")(x)))
    _set(model.get_layer("ffn_in").kernel, 0.0)
    _set(model.get_layer("ffn_in").bias, 0.4)
    compact, report = kc.compact(model)
    _assert_same(model, compact)
    [fold] = report.folded_branches
    assert (fold["add"], fold["into"]) == ("add2", "mha")
    assert "drop" in _names(compact) and not {"ffn_in", "ffn_out", "add2"} & _names(compact)
    assert kc.projected_size(model) == (report.params_after, report.macs_after)


def test_the_input_model_is_untouched_and_the_compact_model_saves(tmp_path):
    model = _randomized(_vit_block())
    _kill_ffn(model, 1)
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.weights]
    compact, report = kc.compact(model)
    for old, weight in zip(before, model.weights):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(weight))
    assert [f["into"] for f in report.folded_branches] == ["mha_1"]
    path = tmp_path / "compact.keras"
    compact.save(path)
    _assert_same(model, keras.models.load_model(path))


def test_an_attention_layer_whose_heads_all_died_is_a_constant_branch():
    model = _randomized(_vit_block())
    attention = model.get_layer("mha_1")
    _set(_weight(attention, "value/kernel"), 0.0)  # value bias stays: softmax averages a constant
    compact, report = kc.compact(model)
    _assert_same(model, compact)
    assert not {"ln1_1", "mha_1", "add1_1"} & _names(compact)
    assert kc.projected_size(model) == (compact.count_params(), report.macs_after)
    [fold] = report.folded_branches
    # add1_1 = add2_0 + c: add2_0 sums block 0's branches, and its FFN output Dense takes c.
    assert (fold["add"], fold["into"]) == ("add1_1", "ffn_out_0")


def test_a_constant_added_to_a_model_input_stays():
    """Nothing before the Add can take the constant: the branch stays, and the model is still exact."""
    inputs = keras.Input((6,), name="x")
    branch = keras.layers.Dense(4, activation="relu", name="dead")(inputs)
    branch = keras.layers.Dense(6, name="constant")(branch)
    x = keras.layers.Add(name="add")([inputs, branch])
    model = _randomized(keras.Model(inputs, keras.layers.Dense(2, name="out")(x)))
    _set(model.get_layer("dead").kernel, 0.0)
    _set(model.get_layer("dead").bias, 0.5)
    compact, report = kc.compact(model)
    assert report.folded_branches == []
    assert {"constant", "add"} <= _names(compact)
    assert kc.projected_size(model) == (report.params_after, report.macs_after)
    data = np.random.default_rng(2).standard_normal((4, 6)).astype("float32")
    np.testing.assert_allclose(compact(data), model(data), atol=1e-5)


def test_a_taker_with_an_activation_or_two_readers_is_refused():
    inputs = keras.Input((6,), name="x")
    relu = keras.layers.Dense(6, activation="relu", name="relu")(inputs)
    linear = keras.layers.Dense(6, name="linear")(inputs)
    branch = keras.layers.Dense(3, name="dead")(inputs)
    branch = keras.layers.Dense(6, name="constant")(branch)
    first = keras.layers.Add(name="add_relu")([relu, branch])
    second = keras.layers.Add(name="add_linear_read_twice")([linear, branch])
    outputs = keras.layers.Concatenate(name="out")([first, second, linear])
    model = _randomized(keras.Model(inputs, outputs))
    _set(model.get_layer("dead").kernel, 0.0)
    compact, report = kc.compact(model)
    assert report.folded_branches == []
    data = np.random.default_rng(3).standard_normal((4, 6)).astype("float32")
    np.testing.assert_allclose(compact(data), model(data), atol=1e-5)


def test_a_conv_branch_is_constant_only_where_its_window_sees_every_position():
    """A 1x1 conv of a constant is constant; a 3x3 'same' conv of one is not (the borders)."""

    def model_with(kernel_size):
        inputs = keras.Input((5, 5, 3), name="image")
        trunk = keras.layers.Conv2D(4, 3, padding="same", name="trunk")(inputs)
        branch = keras.layers.Conv2D(2, 1, name="dead")(inputs)
        branch = keras.layers.Conv2D(4, kernel_size, padding="same", name="branch")(branch)
        x = keras.layers.Add(name="add")([trunk, branch])
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = _randomized(keras.Model(inputs, keras.layers.Dense(2, name="out")(x)))
        _set(model.get_layer("dead").kernel, 0.0)
        return model

    data = np.random.default_rng(4).standard_normal((3, 5, 5, 3)).astype("float32")
    folded_model = model_with(1)
    compact, report = kc.compact(folded_model)
    assert [(f["add"], f["into"]) for f in report.folded_branches] == [("add", "trunk")]
    assert not {"dead", "branch", "add"} & _names(compact)
    np.testing.assert_allclose(compact(data), folded_model(data), atol=1e-5)
    kept_model = model_with(3)
    compact, report = kc.compact(kept_model)
    assert report.folded_branches == []
    assert "branch" in _names(compact)
    np.testing.assert_allclose(compact(data), kept_model(data), atol=1e-5)


def test_a_dense_reading_only_constants_is_constant_and_its_reader_folds_it():
    """Dense(4) after a dead Dense(8) outputs a constant; the next Dense folds it and it shrinks to one unit."""
    inputs = keras.Input((6,), name="x")
    x = keras.layers.Dense(8, activation="relu", name="dead")(inputs)
    x = keras.layers.Dense(4, activation="tanh", name="constant")(x)
    model = _randomized(keras.Model(inputs, keras.layers.Dense(2, name="out")(x)))
    _set(model.get_layer("dead").kernel, 0.0)
    compact, _ = kc.compact(model)
    assert compact.get_layer("constant").units == 1
    assert compact.get_layer("dead").units == 1
    data = np.random.default_rng(5).standard_normal((4, 6)).astype("float32")
    np.testing.assert_allclose(compact(data), model(data), atol=1e-5)


def test_nothing_to_fold_returns_the_model_itself():
    model = _randomized(_vit_block())
    same, folds = fold_constant_branches(model)
    assert same is model and folds == []
