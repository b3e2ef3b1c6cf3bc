"""BudgetController: a requested size, met in one training run."""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

import keras_compact as kc


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    return x[:1400], data.target[:1400], x[1400:], data.target[1400:]


def residual_net(seed=0):
    """Two 3x3 convs summed by a residual Add, then a small classifier (13,562 parameters)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    a = keras.layers.Conv2D(24, 3, padding="same", activation="relu", name="conv_a")(inputs)
    b = keras.layers.Conv2D(24, 3, padding="same", name="conv_b")(a)
    x = keras.layers.ReLU()(keras.layers.Add()([a, b]))
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(32, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="residual_net")


def train(model, digits, controller, epochs=12, strength=1e-3):
    x, y, x_test, y_test = digits
    model.compile(
        kc.ProxSGD(0.05, momentum=0.9, penalties=[kc.GroupLasso(strength)]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=[controller])
    return history, model.evaluate(x_test, y_test, verbose=0)[1]


@pytest.mark.parametrize("budget", [dict(params=0.2), dict(macs=0.3), dict(params=0.3, macs=0.4)])
def test_a_budget_is_met_in_one_run_on_a_residual_net(digits, budget):
    model = residual_net()
    dense_params, dense_macs = model.count_params(), kc.multiply_adds(model)
    controller = kc.BudgetController(**budget, verbose=0)
    history, accuracy = train(model, digits, controller)
    compact_model, report = kc.compact(model)
    assert controller.landed and not controller.landed_at_end
    used = {
        key: after / (budget[key] * dense)
        for key, dense, after in (("params", dense_params, report.params_after), ("macs", dense_macs, report.macs_after))
        if key in budget
    }
    # At or under every budget, and not needlessly far under the one that binds.
    assert max(used.values()) <= 1.0 and max(used.values()) >= 0.7, used
    assert accuracy > 0.85  # digits: chance is 0.1; the dense net reaches about 0.97
    # Progress is in the logs, for the progress bar, History and TensorBoard.
    assert history.history["budget/strength"][-1] == 0.0  # landed: strength 0, neurons pinned
    assert history.history["budget/params"][-1] == pytest.approx(report.params_after / dense_params)


def test_starting_from_a_trained_dense_model(digits, tmp_path):
    x, y, x_test, y_test = digits
    dense = residual_net(seed=1)
    dense.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    dense.fit(x, y, epochs=8, batch_size=32, verbose=0)
    dense.save_weights(tmp_path / "dense.weights.h5")
    model = residual_net(seed=2)
    model.load_weights(tmp_path / "dense.weights.h5")  # trained weights, not re-initialized
    _, accuracy = train(model, digits, kc.BudgetController(params=0.15, verbose=0), epochs=8)
    compact_model, report = kc.compact(model)
    assert report.params_after <= 0.15 * report.params_before
    assert accuracy > 0.85


def test_too_short_training_lands_at_the_end_and_still_meets_the_budget(digits):
    model = residual_net()
    controller = kc.BudgetController(params=0.1, check_every=1000, verbose=0)  # no check in 44 steps
    train(model, digits, controller, epochs=1, strength=1e-6)
    assert controller.landed_at_end
    _, report = kc.compact(model)
    assert report.params_after <= 0.1 * report.params_before


def test_an_impossible_budget_is_refused_before_training(digits):
    model = residual_net()
    before = [w.copy() for w in model.get_weights()]
    # The logits layer alone (fc's 1 kept unit to 10 classes, and conv_a's last channel) keeps more.
    with pytest.raises(ValueError, match=r"below what compact can reach.*output layers"):
        train(model, digits, kc.BudgetController(params=20, verbose=0), epochs=1)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(), ValueError, "give params=, macs= or both"),
        (dict(params=0), ValueError, r"params=0 is not a budget"),
        (dict(params=-0.5), ValueError, "is not a budget"),
        (dict(params=1.5), ValueError, r"params=1.5 is not a budget.*\(0, 1\]"),
        (dict(macs=float("nan")), ValueError, "macs=nan is not a budget"),
        (dict(params="10%"), TypeError, "params must be a fraction"),
        (dict(params=0.1, reach_by=0), ValueError, r"reach_by must be in \(0, 1\]"),
        (dict(params=0.1, growth=1.0), ValueError, "growth must be > 1"),
        (dict(params=0.1, check_every=0), ValueError, "check_every must be an integer >= 1"),
        (dict(macs=0.5, open_dim_size=0), ValueError, "open_dim_size must be an integer >= 1"),
        (dict(macs=0.5, open_dim_size=8.5), ValueError, "open_dim_size must be an integer >= 1"),
    ],
)
def test_bad_budgets_are_clear_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        kc.BudgetController(**kwargs)


def test_needs_a_proximal_optimizer_with_a_neuron_penalty(digits):
    x, y, _, _ = digits
    model = residual_net()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match="keras_compact proximal optimizer"):
        model.fit(x[:64], y[:64], verbose=0, callbacks=[kc.BudgetController(params=0.5)])


def tiny_transformer(seed=0):
    """Digits as 8 tokens (rows) of 8 pixels: one pre-norm block of 4 heads and a 64-unit FFN."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    tokens = keras.layers.Dense(32, name="embed")(keras.layers.Reshape((8, 8))(inputs))
    x = keras.layers.LayerNormalization()(tokens)
    x = keras.layers.Add()([tokens, keras.layers.MultiHeadAttention(4, 8, name="mha")(x, x)])
    f = keras.layers.Dense(64, activation="gelu", name="ffn_in")(keras.layers.LayerNormalization()(x))
    x = keras.layers.Add()([x, keras.layers.Dense(32, name="ffn_out")(f)])
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.LayerNormalization()(x))
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="tiny_transformer")


def test_a_budget_lands_on_heads_and_feed_forward_neurons(digits):
    x, y, x_test, y_test = digits
    model = tiny_transformer()
    dense_params = model.count_params()
    model.compile(
        kc.ProxSGD(0.05, momentum=0.9, penalties=[kc.HeadLasso(1e-3), kc.GroupLasso(1e-3, layers="ffn_in")]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    controller = kc.BudgetController(params=0.45, verbose=0)
    model.fit(x, y, epochs=10, batch_size=32, verbose=0, callbacks=[controller])
    compact_model, report = kc.compact(model)
    assert controller.landed
    # Feed-forward neurons alone cannot reach 45% (the FFN is 45% of the net): heads must go too.
    assert 0.7 * 0.45 <= report.params_after / dense_params <= 0.45
    rows = {row.name: row for row in report.layers}
    assert rows["mha"].units_after < 4 and rows["ffn_in"].units_after < 64
    assert model.evaluate(x_test, y_test, verbose=0)[1] > 0.6  # chance is 0.1


def test_compress_penalizes_the_heads_of_a_transformer(digits):
    from keras_compact.compress import compress

    x, y, x_test, y_test = digits
    model = tiny_transformer(seed=1)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    result = compress(
        model, (x, y), params=0.45, epochs=6, finetune_epochs=1, validation_data=(x_test, y_test), verbose=0
    )
    rows = {row.name: row for row in result.report.layers}
    assert rows["mha"].unit == "heads" and rows["mha"].units_after < 4
    assert result.report.params_after <= 0.45 * model.count_params()


def sequence_transformer(length=None, seed=0):
    """Digits as a sequence of rows (8 pixels each), of any length when `length` is None."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((length, 8))
    tokens = keras.layers.Dense(32, name="embed")(inputs)
    x = keras.layers.LayerNormalization()(tokens)
    x = keras.layers.Add()([tokens, keras.layers.MultiHeadAttention(4, 8, name="mha")(x, x)])
    f = keras.layers.Dense(64, activation="gelu", name="ffn_in")(keras.layers.LayerNormalization()(x))
    x = keras.layers.Add()([x, keras.layers.Dense(32, name="ffn_out")(f)])
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.LayerNormalization()(x))
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def test_open_dim_size_counts_macs_as_a_model_built_for_that_length():
    open_model, fixed = sequence_transformer(), sequence_transformer(length=8)
    rng = np.random.default_rng(0)
    ffn = open_model.get_layer("ffn_in")
    kernel = keras.ops.convert_to_numpy(ffn.kernel).copy()
    kernel[:, rng.choice(64, 40, replace=False)] = 0  # dead neurons, so the projection is not the dense count
    ffn.kernel.assign(kernel)
    fixed.set_weights(open_model.get_weights())
    assert kc.projected_size(open_model)[1] < kc.projected_size(fixed)[1]  # open: attention, FFN count 0
    assert kc.projected_size(open_model, open_dim_size=8) == kc.projected_size(fixed)
    assert kc.multiply_adds(open_model, open_dim_size=8) == kc.multiply_adds(fixed)
    assert kc.multiply_adds(open_model, open_dim_size=16) > kc.multiply_adds(fixed)


def test_open_dim_size_follows_each_layer_s_own_sizes():
    """An image model of any size: a strided conv halves the size the next conv runs at."""

    def convnet(size):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((size, size, 3))
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="down")(inputs)
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(x)
        tokens = keras.layers.Reshape((-1, 8))(x)
        x = keras.layers.MultiHeadAttention(2, 4, name="mha")(tokens, tokens)
        return keras.Model(inputs, keras.layers.Dense(3, name="out")(keras.layers.GlobalAveragePooling1D()(x)))

    open_model, fixed = convnet(None), convnet(16)
    assert kc.multiply_adds(open_model, open_dim_size=16) == kc.multiply_adds(fixed)
    assert kc.projected_size(open_model, open_dim_size=16) == kc.projected_size(fixed)
    _, report = kc.compact(open_model, open_dim_size=16)
    assert report.macs_before == kc.multiply_adds(fixed)


def test_a_macs_budget_on_an_open_sequence_length(digits):
    x, y, _, _ = digits
    x = x[..., 0]  # (samples, 8 rows, 8 pixels)

    def compiled(model):
        model.compile(
            kc.ProxSGD(0.05, momentum=0.9, penalties=[kc.HeadLasso(1e-3), kc.GroupLasso(1e-3, layers="ffn_in")]),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return model

    model = compiled(sequence_transformer())
    with pytest.raises(ValueError, match=r"'embed'.*open.*open_dim_size=N"):
        model.fit(x[:64], y[:64], verbose=0, callbacks=[kc.BudgetController(macs=0.5)])
    model = compiled(sequence_transformer())
    controller = kc.BudgetController(macs=0.5, open_dim_size=8, verbose=0)
    model.fit(x, y, epochs=8, batch_size=32, verbose=0, callbacks=[controller])
    assert controller.landed
    # Counted as compact counts the same network built for 8 tokens.
    fixed = sequence_transformer(length=8)
    fixed.set_weights(model.get_weights())
    _, report = kc.compact(fixed)
    assert 0.7 * 0.5 <= report.macs_after / report.macs_before <= 0.5

