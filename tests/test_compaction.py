"""Compaction: hand-built graphs with dead neurons placed on purpose.

Each test checks that the compact model computes the original's outputs and
that the expected number of units is left in each layer.
"""

import numpy as np
import pytest

import keras
import keras_compact
from keras_compact.compaction.verify import CompactionError, verify
from keras_compact.registry import spec_for


def _kernel_member(layer):
    return spec_for(layer).neurons(layer)


L = keras.layers


def kill(layer, channels, bias=0.0):
    """Zero the kernel slices of `channels` (output neurons) and set their bias."""
    member = _kernel_member(layer)
    value = np.array(member.view(member.variable))
    value[:, channels, :] = 0.0
    member.variable.assign(value.reshape(member.variable.shape))
    if getattr(layer, "bias", None) is not None:
        b = layer.bias.numpy()
        b[channels] = bias
        layer.bias.assign(b)


def cut_inputs(layer, rows):
    """Zero the weights with which `layer` (Dense or conv) reads input channels `rows`."""
    kernel = layer.kernel.numpy()
    kernel[..., rows, :] = 0.0
    layer.kernel.assign(kernel)


def randomize_batchnorm(layer, seed=0):
    rng = np.random.default_rng(seed)
    n = layer.gamma.shape[0]
    layer.moving_mean.assign(rng.normal(size=n))
    layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=n))
    layer.gamma.assign(rng.uniform(0.5, 1.5, size=n))
    layer.beta.assign(rng.normal(size=n))


def inputs_like(model, seed=1, batch=3):
    rng = np.random.default_rng(seed)
    data = [rng.normal(size=(batch, *t.shape[1:])).astype("float32") for t in model.inputs]
    return data[0] if len(data) == 1 else data


def compact_and_check(model, units):
    """Compact, check outputs on fresh data and the unit count of each named layer."""
    snapshot = [w.copy() for w in model.get_weights()]
    compact_model, report = keras_compact.compact(model)
    data = inputs_like(model)
    expected = keras.tree.flatten(model(data))
    actual = keras.tree.flatten(compact_model(data))
    for e, a in zip(expected, actual):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-4, atol=1e-5)
    found = {entry.name: entry.units_after for entry in report.layers}
    assert {name: found[name] for name in units} == units
    for name, count in units.items():
        layer = compact_model.get_layer(name)
        assert _kernel_member(layer).n == count, name
    # The original is untouched.
    for before, after in zip(snapshot, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    return compact_model, report


def test_sequential_chain_folds_constants_through_batchnorm_and_flatten():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.Conv2D(6, 3, padding="same", activation="relu", name="c1"),
            L.BatchNormalization(name="bn"),
            L.Conv2D(5, 3, padding="valid", activation="relu", name="c2"),
            L.Flatten(),
            L.Dense(7, activation="relu", name="d1"),
            L.Dense(3, name="out"),
        ]
    )
    randomize_batchnorm(model.get_layer("bn"))
    kill(model.get_layer("c1"), [1], bias=0.7)  # constant relu(0.7), affine through BN, folded
    kill(model.get_layer("c2"), [0, 2])  # exactly zero
    kill(model.get_layer("d1"), [4], bias=0.3)  # constant 0.3 folded into a Dense
    _, report = compact_and_check(model, {"c1": 5, "c2": 3, "d1": 6, "out": 3})
    assert report.params_after < report.params_before
    assert report.macs_after < report.macs_before
    assert report.max_abs_diff <= 1e-5


def test_same_padding_refuses_a_nonzero_constant_but_takes_a_zero_one():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            L.Conv2D(4, 3, padding="same", activation="relu", name="c1"),
            L.Conv2D(3, 3, padding="same", name="c2"),
            L.GlobalAveragePooling2D(),
            L.Dense(2, name="out"),
        ]
    )
    kill(model.get_layer("c1"), [0], bias=0.5)  # constant 0.5: not exact at c2's borders
    kill(model.get_layer("c1"), [2], bias=-1.0)  # relu(-1) = 0: removable anywhere
    _, report = compact_and_check(model, {"c1": 3, "c2": 3})
    reasons = report.layers[0].reason_kept
    assert any("cannot be folded exactly into 'c2'" in r for r in reasons), reasons


def test_batchnorm_with_zero_gamma_and_beta_kills_a_live_kernel():
    inputs = keras.Input((5, 5, 3))
    x = L.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(2, 3, padding="same", name="c2")(x)
    model = keras.Model(inputs, x)
    bn = model.get_layer("bn")
    randomize_batchnorm(bn)
    for variable in (bn.gamma, bn.beta):
        value = variable.numpy()
        value[3] = 0.0
        variable.assign(value)
    compact_and_check(model, {"c1": 3, "c2": 2})


def test_unused_channel_goes_although_its_kernel_is_alive():
    model = keras.Sequential(
        [
            keras.Input((10,)),
            L.Dense(6, activation="tanh", name="d1"),
            L.Dense(4, activation="relu", name="d2"),
            L.Dense(2, name="out"),
        ]
    )
    cut_inputs(model.get_layer("d2"), [1, 5])
    _, report = compact_and_check(model, {"d1": 4, "d2": 4, "out": 2})
    assert report.layers[0].dead_found == 0


def test_add_couples_branches():
    inputs = keras.Input((6, 6, 3))
    a = L.Conv2D(4, 1, name="a")(inputs)
    b = L.Conv2D(4, 3, padding="same", name="b")(inputs)
    x = L.Add()([a, b])
    x = L.Activation("relu")(x)
    x = L.Conv2D(2, 3, name="head")(x)
    model = keras.Model(inputs, x)
    kill(model.get_layer("a"), [0, 1])
    kill(model.get_layer("b"), [0, 3])  # channel 0 dead on both branches; 1 and 3 on one only
    compact_and_check(model, {"a": 3, "b": 3, "head": 2})


@pytest.mark.parametrize(
    "merge", [L.Subtract, L.Average, L.Maximum, L.Minimum], ids=lambda c: c.__name__
)
def test_other_merges_couple_branches(merge):
    inputs = keras.Input((7,))
    a = L.Dense(5, name="a")(inputs)
    b = L.Dense(5, name="b")(inputs)
    x = merge()([a, b])
    x = L.Dense(2, name="out")(x)
    model = keras.Model(inputs, x)
    kill(model.get_layer("a"), [1, 2], bias=0.25)
    kill(model.get_layer("b"), [2], bias=-0.5)  # only channel 2 is constant on both
    compact_and_check(model, {"a": 4, "b": 4})


def test_multiply_by_zero_kills_the_other_branch_too():
    inputs = keras.Input((7,))
    a = L.Dense(5, activation="relu", name="a")(inputs)
    b = L.Dense(5, activation="sigmoid", name="b")(inputs)
    x = L.Multiply()([a, b])
    x = L.Dense(2, name="out")(x)
    model = keras.Model(inputs, x)
    kill(model.get_layer("a"), [0, 3], bias=-1.0)  # 0 * sigmoid(...) = 0
    compact_and_check(model, {"a": 3, "b": 3})


def test_concatenate_maps_offsets():
    inputs = keras.Input((6, 6, 2))
    a = L.Conv2D(3, 3, padding="same", activation="relu", name="a")(inputs)
    b = L.Conv2D(4, 1, activation="relu", name="b")(inputs)
    x = L.Concatenate()([a, b])
    x = L.Conv2D(3, 1, name="mix")(x)  # 1x1: a constant folds exactly
    x = L.GlobalMaxPooling2D()(x)
    model = keras.Model(inputs, x)
    kill(model.get_layer("a"), [2])
    kill(model.get_layer("b"), [0], bias=0.4)
    kill(model.get_layer("b"), [3])
    compact_and_check(model, {"a": 2, "b": 2, "mix": 3})


def test_reshape_to_vector_into_dense():
    model = keras.Sequential(
        [
            keras.Input((4, 4, 2)),
            L.Conv2D(3, 2, activation="relu", name="c"),
            L.Reshape((-1,)),
            L.Dense(4, name="d"),
            L.Dense(2, name="out"),
        ]
    )
    kill(model.get_layer("c"), [1], bias=0.2)
    compact_and_check(model, {"c": 2, "d": 4})


def test_depthwise_and_separable_carry_channels():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(5, 3, padding="same", activation="relu", name="c1")(inputs)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.Conv2D(4, 1, activation="relu", name="pw")(x)
    x = L.SeparableConv2D(3, 3, padding="same", depth_multiplier=2, name="sep")(x)
    x = L.SeparableConv2D(2, 3, padding="valid", name="sep_out")(x)
    model = keras.Model(inputs, x)
    kill(model.get_layer("c1"), [1, 4])  # zero through the depthwise: dw bias folds into pw
    kill(model.get_layer("pw"), [2], bias=0.3)  # constant into a 'same' separable: kept
    kill(model.get_layer("pw"), [0], bias=-0.3)  # zero: removed
    sep = model.get_layer("sep")
    pointwise = sep.pointwise_kernel.numpy()
    pointwise[..., 1] = 0.0
    sep.pointwise_kernel.assign(pointwise)
    compact_model, _ = compact_and_check(model, {"c1": 3, "pw": 3, "sep": 2, "sep_out": 2})
    assert compact_model.get_layer("dw").kernel.shape[-2] == 3


@pytest.mark.parametrize("rank", [1, 3])
def test_conv1d_and_conv3d(rank):
    conv = {1: L.Conv1D, 3: L.Conv3D}[rank]
    pool = {1: L.GlobalAveragePooling1D, 3: L.GlobalAveragePooling3D}[rank]
    model = keras.Sequential(
        [
            keras.Input((5,) * rank + (2,)),
            conv(4, 3, padding="same", activation="relu", name="c1"),
            conv(3, 3, padding="valid", name="c2"),
            pool(),
            L.Dense(2, name="out"),
        ]
    )
    kill(model.get_layer("c1"), [0], bias=1.5)  # folds: c2 is 'valid'
    kill(model.get_layer("c1"), [3])
    compact_and_check(model, {"c1": 2, "c2": 3})


def test_conv2d_transpose_takes_zeros_refuses_constants():
    model = keras.Sequential(
        [
            keras.Input((4, 4, 2)),
            L.Conv2D(5, 3, padding="same", activation="relu", name="c"),
            L.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu", name="up"),
            L.Conv2D(2, 1, name="out"),
        ]
    )
    kill(model.get_layer("c"), [0])  # zero: removable
    kill(model.get_layer("c"), [1], bias=0.5)  # constant into a transposed conv: kept
    kill(model.get_layer("up"), [3], bias=0.5)  # constant into a 1x1 conv: folded
    compact_and_check(model, {"c": 4, "up": 3, "out": 2})


def test_dense_on_sequences():
    model = keras.Sequential(
        [
            keras.Input((5, 6)),
            L.Dense(8, activation="relu", name="d1"),
            L.Dense(4, name="d2"),
            L.GlobalAveragePooling1D(),
            L.Dense(2, name="out"),
        ]
    )
    kill(model.get_layer("d1"), [0, 1, 7], bias=0.1)
    compact_and_check(model, {"d1": 5, "d2": 4})


def test_barrier_keeps_channels_and_says_why():
    inputs = keras.Input((6, 8))
    x = L.Dense(6, activation="relu", name="d1")(inputs)
    x = L.LayerNormalization(name="ln")(x)
    x = L.Dense(5, activation="relu", name="d2")(x)
    x = L.Permute((2, 1), name="swap")(x)
    x = L.Dense(3, name="d3")(x)
    x = L.Flatten()(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    kill(model.get_layer("d1"), [0])
    kill(model.get_layer("d2"), [1])
    kill(model.get_layer("d3"), [0])  # after the Permute: flatten into 'out' is fine
    _, report = compact_and_check(model, {"d1": 6, "d2": 5, "d3": 2})
    by_name = {entry.name: entry for entry in report.layers}
    assert any("'ln'" in reason for reason in by_name["d1"].reason_kept)
    assert any("'swap'" in reason for reason in by_name["d2"].reason_kept)
    assert set(report.barriers) == {"ln", "swap"}


def test_model_outputs_keep_all_their_channels():
    inputs = keras.Input((4,))
    hidden = L.Dense(5, name="hidden")(inputs)
    out = L.Dense(3, name="out")(L.ReLU()(hidden))
    model = keras.Model(inputs, [hidden, out])
    kill(model.get_layer("hidden"), [0])
    kill(model.get_layer("out"), [1])
    compact_and_check(model, {"hidden": 5, "out": 3})


def test_nested_shared_and_multi_io():
    # A nested model used twice (its layers are shared), two inputs, two outputs.
    block_in = keras.Input((6,))
    block_out = L.Dense(4, activation="relu", name="inner")(block_in)
    block = keras.Model(block_in, block_out, name="block")
    left, right = keras.Input((6,), name="left"), keras.Input((6,), name="right")
    shared = L.Dense(6, activation="relu", name="shared")
    a = block(shared(left))
    b = block(shared(right))
    x = L.Concatenate()([a, b])
    out1 = L.Dense(2, name="out1")(x)
    out2 = L.Dense(1, name="out2")(L.Dense(3, activation="relu", name="tail")(a))
    model = keras.Model([left, right], [out1, out2])
    kill(model.get_layer("shared"), [0, 5], bias=-2.0)
    kill(block.get_layer("inner"), [3], bias=0.25)  # same constant at both calls: folds
    compact_model, _ = compact_and_check(model, {"shared": 4, "inner": 3, "tail": 3})
    assert [t.name for t in compact_model.inputs] == ["left", "right"]


def test_shared_layer_with_different_constants_keeps_the_channel():
    inputs = keras.Input((4,))
    a = L.Dense(3, activation="relu", name="a")(inputs)
    b = L.Dense(3, activation="relu", name="b")(inputs)
    shared = L.Dense(2, name="shared")
    model = keras.Model(inputs, L.Add()([shared(a), shared(b)]))
    kill(model.get_layer("a"), [0], bias=0.5)
    kill(model.get_layer("b"), [0], bias=0.7)  # shared folds into one bias: cannot
    kill(model.get_layer("a"), [2], bias=0.5)
    kill(model.get_layer("b"), [2], bias=0.5)
    compact_and_check(model, {"a": 2, "b": 2})


def test_compact_model_is_plain_keras_and_round_trips(tmp_path):
    model = keras.Sequential(
        [keras.Input((5,)), L.Dense(4, activation="relu", name="d"), L.Dense(2, name="out")]
    )
    kill(model.get_layer("d"), [1])
    compact_model, _ = keras_compact.compact(model)
    for layer in compact_model.layers:
        assert type(layer).__module__.startswith("keras."), type(layer)
    path = tmp_path / "compact.keras"
    compact_model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    data = inputs_like(model)
    np.testing.assert_allclose(loaded(data), model(data), rtol=1e-5, atol=1e-6)


def test_report_contract():
    model = keras.Sequential(
        [keras.Input((5,)), L.Dense(4, activation="relu", name="d"), L.Dense(2, name="out")]
    )
    kill(model.get_layer("d"), [1, 2])
    _, report = keras_compact.compact(model, sample_data=inputs_like(model, batch=5))
    assert isinstance(report, keras_compact.CompactionReport)
    as_dict = report.to_dict()
    for key in ("params_before", "params_after", "macs_before", "macs_after", "max_abs_diff", "max_rel_diff"):
        assert key in as_dict
    assert as_dict["params_before"] == 4 * 6 + 5 * 2 and as_dict["params_after"] == 2 * 6 + 3 * 2
    assert as_dict["macs_before"] == 5 * 4 + 4 * 2 and as_dict["macs_after"] == 5 * 2 + 2 * 2
    assert [(e["name"], e["units_before"], e["units_after"]) for e in as_dict["layers"]] == [
        ("d", 4, 2),
        ("out", 2, 2),
    ]
    assert as_dict["layers"][0]["dead_found"] == 2
    table = report.table()
    assert "4 -> 2" in table and "model output (2)" in table


def test_verify_raises_on_a_different_model():
    model = keras.Sequential([keras.Input((3,)), L.Dense(2, name="d")])
    other = keras.models.clone_model(model)
    other.set_weights([w + 1.0 for w in model.get_weights()])
    with pytest.raises(CompactionError, match="not exact"):
        verify(model, other)


def test_subclassed_and_unbuilt_models_are_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="subclassed"):
        keras_compact.compact(net)
    with pytest.raises(ValueError, match="no graph yet"):
        keras_compact.compact(keras.Sequential([L.Dense(2)]))


def test_folding_into_a_layer_without_bias_gives_it_one():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            L.Dense(5, activation="relu", name="d1"),
            L.Dense(3, use_bias=False, name="d2"),
            L.Dense(2, name="out"),
        ]
    )
    kill(model.get_layer("d1"), [2], bias=0.8)
    compact_model, _ = compact_and_check(model, {"d1": 4, "d2": 3})
    assert compact_model.get_layer("d2").use_bias


def test_raw_ops_in_a_functional_graph():
    # MobileNetV3's hard swish: x * relu6(x + 3) / 6, written with operators.
    inputs = keras.Input((5, 5, 2))
    x = L.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = x * (L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0))
    x = L.Conv2D(3, 3, padding="same", name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    kill(model.get_layer("c1"), [0])  # 0 * hard_sigmoid(0): exactly 0
    kill(model.get_layer("c1"), [1], bias=1.0)  # hard_swish(1) != 0 into a 'same' conv: kept
    _, report = compact_and_check(model, {"c1": 3, "c2": 3})
    assert not report.barriers


def test_a_layer_whose_neurons_all_died_keeps_one_unit():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, name="out")(hidden)
    model = keras.Model(inputs, outputs)
    layer = model.get_layer("hidden")
    layer.kernel.assign(np.zeros((6, 4), "float32"))
    layer.bias.assign(np.zeros(4, "float32"))
    compact_model, report = keras_compact.compact(model)
    assert compact_model.get_layer("hidden").units == 1
    (entry,) = [e for e in report.layers if e.name == "hidden"]
    assert entry.reason_kept == {"last channel (a layer needs at least one unit)": 1}
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    np.testing.assert_allclose(compact_model(x), model(x), atol=1e-6)


def test_channel_multiple_keeps_widths_at_multiples_exactly():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10, 10, 3))
    a = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="a")(inputs)
    b = keras.layers.Conv2D(16, 3, padding="same", name="b")(a)
    c = keras.layers.Conv2D(16, 1, name="c")(a)
    x = keras.layers.Add()([b, c])
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(20, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(4, name="out")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    dead_b = rng.permutation(16)[:13]  # b and c are coupled by Add: the same channels die
    dead = {"a": rng.permutation(16)[:11], "b": dead_b, "c": dead_b, "fc": rng.permutation(20)[:9]}
    for name, columns in dead.items():
        member = _kernel_member(model.get_layer(name))
        kernel = member.variable.numpy().reshape(member.pre, member.n, member.post)
        kernel[:, columns, :] = 0
        member.variable.assign(kernel.reshape(member.variable.shape))
        bias = model.get_layer(name).bias.numpy()
        bias[columns] = 0
        model.get_layer(name).bias.assign(bias)
    plain, _ = keras_compact.compact(model)
    rounded, report = keras_compact.compact(model, channel_multiple=4)
    widths = {name: rounded.get_layer(name).kernel.shape[-1] for name in ("a", "b", "c", "fc")}
    assert widths == {"a": 8, "b": 4, "c": 4, "fc": 12}
    assert {n: plain.get_layer(n).kernel.shape[-1] for n in widths} == {"a": 5, "b": 3, "c": 3, "fc": 11}
    assert any("multiple of 4" in reason for e in report.layers for reason in e.reason_kept)
    x = rng.normal(size=(2, 10, 10, 3)).astype("float32")
    np.testing.assert_allclose(rounded(x), model(x), atol=1e-5)
    with pytest.raises(ValueError, match="channel_multiple"):
        keras_compact.compact(model, channel_multiple=0)


def test_a_shared_reshape_keeps_the_same_channels_at_every_call():
    # Found while writing the property tests: a Reshape whose target names the
    # channel count is rebuilt once, from its first call, so every call must
    # keep the same channels (here 'a' could lose channel 1, 'b' cannot).
    inputs = keras.Input((2, 2, 2))
    a = L.Conv2D(3, 1, name="a")(inputs)
    b = L.Conv2D(3, 1, name="b")(inputs)
    reshape = L.Reshape((4, 3), name="r")
    x = L.Concatenate()([reshape(a), reshape(b)])
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    kill(model.get_layer("a"), [1])
    compact_and_check(model, {"a": 3, "b": 3})


def test_a_shared_dropout_with_a_noise_shape_keeps_the_same_channels_at_every_call():
    # The same fix as for the shared Reshape: the rebuilt noise_shape names the
    # channel count, so a call that kept more channels failed in training
    # (fine-tuning the compact model), though inference ignores the noise.
    inputs = keras.Input((2, 2))
    a = L.Conv1D(3, 1, name="a")(inputs)
    b = L.Conv1D(3, 1, name="b")(inputs)
    dropout = L.Dropout(0.3, noise_shape=(None, 1, 3), name="drop")
    x = L.Concatenate()([dropout(a), dropout(b)])
    model = keras.Model(inputs, L.Dense(2, name="out")(x))
    kill(model.get_layer("a"), [1])
    compact_model, _ = compact_and_check(model, {"a": 3, "b": 3})
    assert compact_model(inputs_like(model), training=True).shape == (3, 2, 2)


def test_the_report_groups_barriers_by_reason_and_names_a_group_by_its_real_barrier():
    """Calls with no channel axis (masks, positions) are grouped; a residual stream is named by its LayerNorm."""
    tokens = keras.Input((None,), dtype="int32")  # any length: no channel axis
    x = keras.layers.Embedding(20, 8, name="embed")(tokens)  # reads ids: no channel axis
    x = x + keras.layers.Dense(8, name="mix")(x)
    x = keras.layers.LayerNormalization(name="norm")(x)
    model = keras.Model(tokens, keras.layers.Dense(3, name="head")(x))
    _, report = keras_compact.compact(model)
    rows = {row.name: row for row in report.layers}
    assert list(rows["mix"].reason_kept) == [
        "feeds barrier 'norm' (LayerNormalization): LayerNormalization mixes channels"
    ]
    table = report.table()
    assert "barrier 'embed': an input has no known channel axis" in table
    assert "barrier 'norm': LayerNormalization mixes channels" in table


def _half_precision_convnet(policy):
    """Two convs computing under `policy`, the first with 8 dead filters whose
    constant relu(bias) folds into the second's bias; a float32 head."""
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        inputs = keras.Input((16, 16, 3))
        x = keras.layers.Conv2D(32, 3, activation="relu", name="c1")(inputs)
        x = keras.layers.Conv2D(32, 3, activation="relu", name="c2")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(3, name="out", dtype="float32")(x))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 0.3, layer.bias.shape))
    kernel = keras.ops.convert_to_numpy(model.get_layer("c1").kernel).copy()
    kernel[..., :8] = 0
    model.get_layer("c1").kernel.assign(kernel)
    return model


def test_a_half_precision_model_is_verified_at_its_own_precision():
    """float16 rounding moves this model's outputs by about 2e-4 once its
    layers are rebuilt (a folded bias is added once instead of per position):
    the float32 defaults (1e-5 + 1e-4 * scale) called that a bug. The
    defaults now rise to 4 epsilons of the narrowest compute dtype; a
    tolerance given is used as given."""
    model = _half_precision_convnet("mixed_float16")
    assert keras_compact.compaction.verify.verification_tolerances(model) == (4 * 2.0**-10,) * 2
    compact_model, report = keras_compact.compact(model)
    assert compact_model.get_layer("c1").compute_dtype == "float16"  # the policy is kept
    assert compact_model.get_layer("c1").filters == 24
    assert 0 < report.max_rel_diff <= 4 * 2.0**-10
    with pytest.raises(CompactionError, match="rtol=1e-06"):
        keras_compact.compact(model, atol=1e-6, rtol=1e-6)
    float32_model = _half_precision_convnet("float32")
    assert keras_compact.compaction.verify.verification_tolerances(float32_model) == (1e-5, 1e-4)
    bfloat16_model = _half_precision_convnet("mixed_bfloat16")
    assert keras_compact.compaction.verify.verification_tolerances(bfloat16_model) == (4 * 2.0**-7,) * 2


def test_report_says_which_layers_its_mac_total_leaves_out():
    """Over an open sequence length a conv's MACs are unknown: the totals count
    it as 0, and the report names it, until open_dim_size counts it."""
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(100, 16)(inputs)
    x = keras.layers.GlobalMaxPooling1D()(keras.layers.Conv1D(8, 3, name="conv")(x))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(8, name="fc")(x)))
    _, report = keras_compact.compact(model)
    assert report.macs_uncounted == ["conv"]
    assert report.macs_before == 8 * 8 + 8 * 2  # the two Dense layers alone
    assert "MACs counted without 'conv'" in report.table() and "--open-dim-size N" in report.table()
    _, report = keras_compact.compact(model, open_dim_size=16)
    assert report.macs_uncounted == [] and "counted without" not in report.table()
    assert report.macs_before == 14 * 3 * 16 * 8 + 8 * 8 + 8 * 2
