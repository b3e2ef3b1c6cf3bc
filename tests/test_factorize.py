"""Low-rank factorization of Dense and conv layers: exact on low-rank kernels."""

import keras
import numpy as np
import pytest

from keras_compact.compaction.factorize import factorize

RNG = np.random.default_rng(0)


def low_rank(rows, cols, rank):
    return (RNG.normal(size=(rows, rank)) @ RNG.normal(size=(rank, cols)) / np.sqrt(rows)).astype(
        "float32"
    )


def assert_same_function(model, new, input_shape):
    x = RNG.normal(size=(3, *input_shape)).astype("float32")
    before, after = keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(new(x))
    assert before.shape == after.shape
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())


def test_dense_factorized_exactly():
    model = keras.Sequential(
        [
            keras.Input((30,)),
            keras.layers.Dense(40, activation="relu", name="fc"),
            keras.layers.Dense(2, name="out"),
        ]
    )
    model.get_layer("fc").kernel.assign(low_rank(30, 40, 3))
    new, (record,) = factorize(model)
    assert (record.name, record.form, record.rank, record.full_rank) == ("fc", "dense", 3, 30)
    assert record.params_after == 30 * 3 + 3 * 40 + 40 < record.params_before
    assert [l.name for l in new.layers if isinstance(l, keras.layers.Dense)] == ["fc_factor", "fc", "out"]
    assert new.get_layer("fc_factor").use_bias is False
    assert_same_function(model, new, (30,))


@pytest.mark.parametrize("strides, padding", [(1, "same"), (2, "same"), (2, "valid")])
def test_conv2d_output_form(strides, padding):
    inputs = keras.Input((11, 11, 8))
    outputs = keras.layers.Conv2D(24, 3, strides=strides, padding=padding, activation="relu", name="c")(inputs)
    model = keras.Model(inputs, outputs)
    model.get_layer("c").kernel.assign(low_rank(72, 24, 2).reshape(3, 3, 8, 24))
    new, (record,) = factorize(model)
    assert (record.form, record.rank) == ("output", 2)
    first, second = new.get_layer("c_factor"), new.get_layer("c")
    assert first.kernel.shape == (3, 3, 8, 2) and second.kernel.shape == (1, 1, 2, 24)
    assert_same_function(model, new, (11, 11, 8))


@pytest.mark.parametrize("strides, padding, dilation", [(1, "same", 1), (2, "same", 1), (1, "valid", 2)])
def test_conv2d_spatial_form(strides, padding, dilation):
    inputs = keras.Input((13, 12, 16))
    outputs = keras.layers.Conv2D(
        16, 3, strides=strides, padding=padding, dilation_rate=dilation, name="c"
    )(inputs)
    model = keras.Model(inputs, outputs)
    matrix = low_rank(3 * 16, 3 * 16, 2)  # (kh*in, kw*out)
    model.get_layer("c").kernel.assign(matrix.reshape(3, 16, 3, 16).transpose(0, 2, 1, 3))
    new, (record,) = factorize(model)
    assert (record.form, record.rank) == ("spatial", 2)
    assert new.get_layer("c_factor").kernel.shape == (3, 1, 16, 2)
    assert new.get_layer("c").kernel.shape == (1, 3, 2, 16)
    assert_same_function(model, new, (13, 12, 16))


def test_conv1d_and_shared_layer():
    inputs = [keras.Input((20, 6)), keras.Input((20, 6))]
    conv = keras.layers.Conv1D(32, 5, name="shared")
    outputs = keras.layers.Add()([conv(inputs[0]), conv(inputs[1])])
    model = keras.Model(inputs, outputs)
    conv.kernel.assign(low_rank(30, 32, 2).reshape(5, 6, 32))
    new, (record,) = factorize(model)
    assert record.name == "shared" and record.rank == 2
    x = [RNG.normal(size=(2, 20, 6)).astype("float32") for _ in range(2)]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(new(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-4
    )


def test_full_rank_and_small_layers_are_left_alone():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(10), keras.layers.Dense(3)])
    new, records = factorize(model)
    assert new is model and records == []


def test_truncation_reports_the_largest_dropped_value():
    model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(40, name="fc")])
    kernel = low_rank(30, 40, 2) + 1e-3 * RNG.normal(size=(30, 40)).astype("float32")
    model.get_layer("fc").kernel.assign(kernel)
    _, records = factorize(model, rtol=1e-2)
    assert records[0].rank == 2
    assert 0 < records[0].largest_dropped <= 1e-2
