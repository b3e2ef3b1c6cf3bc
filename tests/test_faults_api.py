"""Fault injection, Python API half: wrong types, bounds, non-finite values, silent no-ops.

Each case asserts the outcome: the exception type, a message that names the
argument, layer or variable at fault and says what to do, and that nothing
was changed. The command-line half is tests/test_faults_cli.py.
"""

import keras
import numpy as np
import pytest

import keras_compact as kc
from keras_compact.numerics import relative_difference
from small_models import convnet


def mlp(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,))
    x = keras.layers.Dense(6, activation="relu", name="fc")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x), name="mlp")


def weights_of(model):
    return [keras.ops.convert_to_numpy(v).copy() for v in model.weights]


# -- penalties and optimizers: wrong types and bounds ----------------------------------


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: kc.GroupLasso("strong"), TypeError, r"GroupLasso: strength must be a number.*'strong' \(str\)"),
        (lambda: kc.GroupLasso(None), TypeError, r"strength must be a number.*None"),
        (lambda: kc.L1(True), TypeError, r"L1: strength must be a number"),
        (lambda: kc.GroupLasso(-1e-4), ValueError, r"strength must be finite and >= 0, got -0.0001"),
        (lambda: kc.SparseGroupLasso(float("nan")), ValueError, r"strength must be finite"),
        (lambda: kc.TensorLowRank(float("inf")), ValueError, r"strength must be finite"),
        (lambda: kc.GroupLasso(1e-4, layers=[3]), TypeError, r"layers must be None, a regex string or a list"),
        (lambda: kc.GroupLasso(1e-4, layers=5), TypeError, r"layers must be None"),
        (lambda: kc.GroupLasso(1e-4, layers=[]), ValueError, r"layers=\[\] names no layer"),
        (lambda: kc.GroupLasso(1e-4, layers="(open"), ValueError, r"not a valid regex"),
        (lambda: kc.TensorLowRank(1e-4, every=0), ValueError, r"every must be an integer >= 1"),
        (lambda: kc.TensorLowRank(1e-4, method="tucker"), ValueError, r"method must be one of"),
        (lambda: kc.SparseGroupLasso(1e-4, l1_ratio=2), ValueError, r"l1_ratio must be in \[0, 1\]"),
        (lambda: kc.ProxSGD(penalties=kc.GroupLasso), TypeError, r"a class: call it with a strength"),
        (lambda: kc.ProxSGD(penalties=0.1), TypeError, r"penalties must be a penalty instance or a list"),
        (lambda: kc.ProxSGD(penalties="g"), TypeError, r"penalties must be a penalty instance or a list"),
        (lambda: kc.ProxAdam(penalties=["group_lasso"]), TypeError, r"each penalty must be a keras_compact penalty"),
        (lambda: kc.ProxSGD(-0.01), ValueError, r"learning_rate must be finite and >= 0"),
        (lambda: kc.ProxAdam(float("nan")), ValueError, r"learning_rate must be finite"),
        (lambda: kc.register_layer("Dense", kc.PassThroughSpec()), TypeError, r"layer_class must be"),
        (lambda: kc.register_layer(keras.layers.Dense, "dense"), TypeError, r"spec must be a keras_compact.LayerSpec"),
    ],
)
def test_bad_arguments_are_clear_errors(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_optimizers_are_auto_named_as_keras_names_its_own():
    names = [kc.ProxSGD().name, kc.ProxSGD().name, kc.ProxAdam().name]
    assert len(set(names)) == 3
    assert names[0].startswith("prox_sgd") and names[2].startswith("prox_adam")


def test_strength_and_neuron_controls_refuse_bad_use():
    model = mlp()
    optimizer = kc.ProxSGD(0.1, penalties=[kc.GroupLasso(1e-3)])
    with pytest.raises(ValueError, match="not built yet"):
        optimizer.set_strengths([1.0])
    optimizer.build(model.trainable_variables)
    with pytest.raises(ValueError, match="2 values for 1 penalties"):
        optimizer.set_strengths([1.0, 2.0])
    with pytest.raises(ValueError, match="strength must be finite and >= 0"):
        optimizer.set_strengths([-1.0])
    with pytest.raises(ValueError, match=r"no neuron group of layer 'out'.*\['fc'\]"):
        optimizer.remove_neurons("out", [0])


# -- silent no-ops ------------------------------------------------------------------------


def test_a_penalty_that_selects_nothing_stops_training_with_a_reason():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="only")])
    model.compile(optimizer=kc.ProxSGD(0.1, penalties=[kc.GroupLasso(1e-3)]), loss="mse")
    before = weights_of(model)
    with pytest.raises(ValueError, match=r"selects no layer, so it would do nothing.*\['only'\]"):
        model.fit(np.ones((4, 4)), np.ones((4, 2)), verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, weights_of(model)))


class Opaque(keras.layers.Layer):
    """A custom layer with a kernel that keras-compact does not know."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], 3))

    def call(self, x):
        return x @ self.kernel


def test_unknown_custom_layers_are_named_with_the_way_to_register_them():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(Opaque(name="block")(inputs)))
    with pytest.raises(ValueError, match=r"unknown to keras-compact: \['block \(Opaque\)'\].*register_layer"):
        kc.GroupLasso(1e-3).resolve(model)


# -- training faults --------------------------------------------------------------------


def test_gradient_accumulation_with_penalties_trains_on_tensorflow():
    model = mlp()
    optimizer = kc.ProxSGD(0.1, penalties=[kc.GroupLasso(3.0)], gradient_accumulation_steps=2)
    model.compile(optimizer=optimizer, loss="mse")
    x, y = np.random.default_rng(0).normal(size=(32, 5)), np.zeros((32, 3))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)  # failed: 'SymbolicTensor' has no .value
    live = kc.NeuronMonitor(verbose=0)
    live.set_model(model)
    assert live.live_counts()["fc"][0] < 6  # the prox ran: a strong penalty killed neurons


def test_a_negative_learning_rate_schedule_never_makes_nan():
    class Negative(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return -0.1

        def get_config(self):
            return {}

    model = mlp()
    model.get_layer("fc").kernel.assign(np.zeros((5, 6), "float32"))  # dead neurons: zero norms
    model.compile(optimizer=kc.ProxSGD(Negative(), penalties=[kc.GroupLasso(1.0)]), loss="mse")
    model.fit(np.ones((8, 5)), np.ones((8, 3)), verbose=0)
    assert all(np.all(np.isfinite(w)) for w in weights_of(model))


# -- compaction faults -----------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("factorize", [True, False])
def test_non_finite_weights_are_named_before_any_work(bad, factorize):
    model = mlp()
    kernel = keras.ops.convert_to_numpy(model.get_layer("fc").kernel).copy()
    kernel[0, 0] = bad
    model.get_layer("fc").kernel.assign(kernel)
    with pytest.raises(ValueError, match=r"Variable '.*fc/kernel' of model 'mlp' holds 1 NaN or infinite"):
        kc.compact(model, factorize=factorize)


def test_a_model_whose_own_outputs_overflow_asks_for_sample_data():
    model = mlp()
    model.get_layer("out").kernel.assign(np.full((6, 3), 3e38, "float32"))
    model.get_layer("fc").kernel.assign(np.full((5, 6), 3e38, "float32"))
    with pytest.raises(ValueError, match=r"itself gives NaN or infinite outputs on a random batch.*sample_data"):
        kc.compact(model)


class ForgetfulScale(keras.layers.Layer):
    """Its get_config leaves out `factor`: a clone computes something else."""

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def get_config(self):
        config = super().get_config()  # Keras records constructor arguments itself...
        config.pop("factor", None)  # ...so forget it as a hand-written get_config would
        return config

    def call(self, x):
        return x * self.factor


class NoRoundTrip(keras.layers.Layer):
    """Its from_config rejects what its own get_config returns."""

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = size

    def get_config(self):
        return dict(super().get_config(), size=self.size, derived=2 * self.size)

    def call(self, x):
        return x


def _with(layer):
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(layer(inputs)), name="custom")


def test_a_layer_whose_config_is_incomplete_is_named_by_verification():
    with pytest.raises(kc.compaction.CompactionError, match=r"Layers 'forgetful' \(ForgetfulScale\) compute something else.*get_config"):
        kc.compact(_with(ForgetfulScale(3.0, name="forgetful")))


def test_a_layer_that_cannot_round_trip_its_config_is_named():
    with pytest.raises(ValueError, match=r"layer 'bad' \(NoRoundTrip\) cannot be rebuilt from its own get_config"):
        kc.compact(_with(NoRoundTrip(3, name="bad")))


def test_dict_inputs_verify_on_a_random_batch_and_on_sample_data():
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    hidden = keras.layers.Dense(5, activation="relu", name="hidden")(keras.layers.Add()([a, b]))
    model = keras.Model({"a": a, "b": b}, keras.layers.Dense(2, name="out")(hidden))
    kernel = keras.ops.convert_to_numpy(model.get_layer("hidden").kernel).copy()
    kernel[:, :2] = 0
    model.get_layer("hidden").kernel.assign(kernel)
    model.get_layer("hidden").bias.assign(np.zeros(5, "float32"))
    sample = {"a": np.ones((3, 4), "float32"), "b": np.zeros((3, 4), "float32")}
    compact_model, report = kc.compact(model, sample_data=sample)
    assert report.params_after < report.params_before
    assert report.max_rel_diff <= 1e-6


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(factorize="yes"), r"factorize must be 'auto', True, False or a list"),
        (dict(channel_multiple=0), r"channel_multiple must be an integer >= 1"),
        (dict(channel_multiple=2.5), r"channel_multiple must be an integer >= 1"),
        (dict(atol=-1.0), r"atol must be a finite number >= 0"),
        (dict(rtol=float("nan")), r"rtol must be a finite number >= 0"),
        (dict(rank_rtol=float("inf")), r"rank_rtol must be a finite number >= 0"),
    ],
)
def test_compact_arguments_at_their_bounds(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kc.compact(mlp(), **kwargs)


def test_subclassed_and_unbuilt_models_are_refused_with_advice():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed model.*functional API"):
        kc.compact(Subclassed())
    with pytest.raises(ValueError, match=r"has no graph yet.*keras.Input"):
        kc.compact(keras.Sequential([keras.layers.Dense(2)]))


def test_compact_leaves_its_input_untouched():
    model = convnet()
    kernel = keras.ops.convert_to_numpy(model.get_layer("fc").kernel).copy()
    kernel[:, :8] = 0
    model.get_layer("fc").kernel.assign(kernel)
    before = weights_of(model)
    kc.compact(model, factorize=True)
    assert all(np.array_equal(a, b) for a, b in zip(before, weights_of(model)))


def test_agreement_is_relative_to_the_output_scale_not_elementwise():
    tiny = np.array([1e-12, -3e-9, 0.0])
    # Element-wise, 1e-9 over 1e-12 would read 1e3; on the output's scale it is 1e-9.
    assert relative_difference(tiny, tiny + 1e-9) == pytest.approx(1e-9)
    large = np.array([1e3, -2e3])
    assert relative_difference(large, large + 2.0) == pytest.approx(1e-3)
    assert relative_difference(np.zeros(0), np.zeros(0)) == 0.0
