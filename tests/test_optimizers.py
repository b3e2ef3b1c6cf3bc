"""ProxSGD / ProxAdam: the exact update, and every way Keras users train."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_compact as kc
import fused_step_case
from small_models import convnet


def mlp(seed=0, hidden=6):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,))
    x = keras.layers.Dense(hidden, activation="relu", name="fc")(inputs)
    outputs = keras.layers.Dense(3, name="out")(x)
    return keras.Model(inputs, outputs)


def data(n=96, shape=(10, 10, 1), classes=4, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype("float32"), rng.integers(0, classes, n)


def compile_fit(model, optimizer, x, y, epochs=3, batch_size=16, **compile_kwargs):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **compile_kwargs,
    )
    return model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=False, verbose=0)


def numpy_group_prox(kernel, bias, t):
    full = np.concatenate([kernel, bias[None, :]], axis=0)
    norms = np.linalg.norm(full, axis=0)
    scale = np.where(norms > t, 1 - t / np.where(norms > 0, norms, 1), 0)
    return kernel * scale, bias * scale


def synthetic_grads(model, seed=3):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=v.shape).astype("float32") for v in model.trainable_variables]


def set_fc_columns(model, norms):
    """Give fc's neuron j (kernel column and bias) the l2 norm norms[j]."""
    layer = model.get_layer("fc")
    rng = np.random.default_rng(7)
    kernel = rng.normal(size=layer.kernel.shape).astype("float32")
    bias = rng.normal(size=layer.bias.shape).astype("float32")
    scale = np.asarray(norms) / np.linalg.norm(np.vstack([kernel, bias]), axis=0)
    layer.kernel.assign(kernel * scale)
    layer.bias.assign(bias * scale)


def weights_of(model):
    return [v.numpy().copy() for v in model.trainable_variables]


def test_one_apply_equals_numpy_reference():
    model = mlp()
    set_fc_columns(model, [0.05, 0.1, 3.0, 0.01, 1.0, 2.5])
    lr, strength = 0.1, 2.0
    optimizer = kc.ProxSGD(lr, penalties=[kc.GroupLasso(strength)]).bind(model)
    before = weights_of(model)
    grads = synthetic_grads(model)
    grads[0] *= 0.01  # keep the small groups small after the gradient step
    grads[1] *= 0.01
    optimizer.apply(grads, model.trainable_variables)
    stepped = [w - lr * g for w, g in zip(before, grads)]
    kernel, bias = numpy_group_prox(stepped[0], stepped[1], lr * strength)
    expected = [kernel, bias, stepped[2], stepped[3]]  # "out" is not penalized
    for got, want in zip(weights_of(model), expected):
        np.testing.assert_allclose(got, want, atol=1e-6)
    dead = np.all(weights_of(model)[0] == 0, axis=0) & (weights_of(model)[1] == 0)
    assert dead.tolist() == [True, True, False, True, False, False]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fused_group_step_equals_the_plain_prox_of_each_target(seed):
    """The optimizer scales each group once, the neuron mask folded into the
    factor: the same values and the same zeros as `GroupLasso.prox` of each
    target followed by the mask, penalties in order, and momentum reset
    exactly on the zero groups (tests/fused_step_case.py; the JAX and PyTorch
    backends run it in test_backends.py)."""
    result = fused_step_case.check(seed)
    assert len(result["zero_groups"]) == 4


def apply_step(optimizer, grads, variables, compiled):
    """One `optimizer.apply`, eager or traced in a tf.function as `fit` runs it."""
    if compiled:
        tf.function(lambda: optimizer.apply(grads, variables))()
    else:
        optimizer.apply(grads, variables)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_reset_for_dead_neurons(nesterov, compiled):
    model = mlp()
    set_fc_columns(model, [0.05, 0.1, 3.0, 0.01, 1.0, 2.5])
    lr, momentum, strength = 0.1, 0.9, 2.0
    optimizer = kc.ProxSGD(lr, momentum, nesterov, penalties=[kc.GroupLasso(strength)])
    optimizer.bind(model)
    grads = synthetic_grads(model)
    grads[0] *= 0.01
    grads[1] *= 0.01
    before = weights_of(model)
    optimizer.build(model.trainable_variables)
    apply_step(optimizer, grads, model.trainable_variables, compiled)
    velocity = [-lr * g for g in grads]  # first step from zero momentum
    if nesterov:
        stepped = [w + momentum * v - lr * g for w, v, g in zip(before, velocity, grads)]
    else:
        stepped = [w + v for w, v in zip(before, velocity)]
    kernel, bias = numpy_group_prox(stepped[0], stepped[1], lr * strength)
    np.testing.assert_allclose(weights_of(model)[0], kernel, atol=1e-6)
    alive = np.any(kernel != 0, axis=0) | (bias != 0)
    momenta = {m.path.split("/")[-1]: m.numpy() for m in optimizer.momentums}
    kernel_momentum = next(v for k, v in momenta.items() if "fc_kernel" in k)
    bias_momentum = next(v for k, v in momenta.items() if "fc_bias" in k)
    np.testing.assert_array_equal(kernel_momentum[:, ~alive], 0)
    np.testing.assert_array_equal(bias_momentum[~alive], 0)
    np.testing.assert_allclose(kernel_momentum[:, alive], velocity[0][:, alive], atol=1e-7)
    out_momentum = next(v for k, v in momenta.items() if "out_kernel" in k)
    np.testing.assert_allclose(out_momentum, velocity[2], atol=1e-7)


@pytest.mark.parametrize("compiled", [False, True])
def test_momentum_is_kept_on_a_step_where_no_neuron_dies(compiled):
    model = mlp()
    set_fc_columns(model, [0.5, 1.0, 3.0, 0.6, 1.0, 2.5])
    optimizer = kc.ProxSGD(0.1, 0.9, penalties=[kc.GroupLasso(0.1)]).bind(model)
    optimizer.build(model.trainable_variables)
    grads = synthetic_grads(model)
    apply_step(optimizer, grads, model.trainable_variables, compiled)
    assert np.all(np.linalg.norm(model.get_layer("fc").kernel.numpy(), axis=0) > 0)
    for momentum, grad in zip(optimizer.momentums, grads):
        np.testing.assert_allclose(momentum.numpy(), -0.1 * grad, atol=1e-7)


def test_reset_momentum_false_keeps_momentum():
    model = mlp()
    set_fc_columns(model, [0.05, 0.1, 3.0, 0.01, 1.0, 2.5])
    optimizer = kc.ProxSGD(0.1, 0.9, penalties=[kc.GroupLasso(2.0)], reset_momentum=False)
    optimizer.bind(model)
    grads = synthetic_grads(model)
    optimizer.apply(grads, model.trainable_variables)
    kernel_momentum = next(m for m in optimizer.momentums if "fc_kernel" in m.path).numpy()
    np.testing.assert_allclose(kernel_momentum, -0.1 * grads[0], atol=1e-7)


def test_learning_rate_schedule_sets_the_prox_step():
    model = mlp()
    set_fc_columns(model, [0.5, 0.5, 3.0, 0.5, 1.0, 2.5])
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([0], [0.1, 0.01])  # step 0: 0.1, then 0.01
    strength = 3.0
    optimizer = kc.ProxSGD(schedule, penalties=[kc.GroupLasso(strength, layers=["fc"])])
    optimizer.bind(model)
    weights = weights_of(model)
    for step, lr in enumerate([0.1, 0.01]):
        grads = synthetic_grads(model, seed=step)
        optimizer.apply(grads, model.trainable_variables)
        weights = [w - lr * g for w, g in zip(weights, grads)]
        weights[0], weights[1] = numpy_group_prox(weights[0], weights[1], lr * strength)
        for got, want in zip(weights_of(model), weights):
            np.testing.assert_allclose(got, want, atol=1e-6)


def test_prox_adam_is_adam_then_prox():
    model, reference = mlp(), mlp()
    for m in (model, reference):
        set_fc_columns(m, [0.05, 0.1, 3.0, 0.01, 1.0, 2.5])
    lr, strength = 0.01, 5.0
    optimizer = kc.ProxAdam(lr, penalties=[kc.GroupLasso(strength)]).bind(model)
    adam = keras.optimizers.Adam(lr)
    grads = synthetic_grads(model)
    optimizer.apply(grads, model.trainable_variables)
    adam.apply(grads, reference.trainable_variables)
    stepped = weights_of(reference)
    kernel, bias = numpy_group_prox(stepped[0], stepped[1], lr * strength)
    for got, want in zip(weights_of(model), [kernel, bias, *stepped[2:]]):
        np.testing.assert_allclose(got, want, atol=1e-6)
    alive = np.any(kernel != 0, axis=0)
    assert 0 < alive.sum() < 6
    def fc_kernel_slot(slots):
        return keras.ops.convert_to_numpy(next(s for s in slots if "fc_kernel" in s.path))

    momentum = fc_kernel_slot(optimizer._momentums)
    np.testing.assert_array_equal(momentum[:, ~alive], 0)
    assert np.all(momentum[:, alive] != 0)
    # The second moments stay Adam's own: zeroed, a dead neuron's next step would be ~3 lr per weight.
    np.testing.assert_allclose(fc_kernel_slot(optimizer._velocities), fc_kernel_slot(adam._velocities), rtol=1e-6)


@pytest.mark.parametrize("penalty", [kc.L1(0.5), kc.SparseGroupLasso(0.5, l1_ratio=0.5)])
def test_other_penalties_apply_their_prox(penalty):
    model = mlp()
    optimizer = kc.ProxSGD(0.1, penalties=[penalty]).bind(model)
    grads = [np.zeros(v.shape, "float32") for v in model.trainable_variables]
    before = weights_of(model)
    optimizer.apply(grads, model.trainable_variables)
    blocks = [before[0][:, :, None], before[1][None, :, None]]
    if isinstance(penalty, kc.L1):
        expected = [kc.prox.soft_threshold(b, 0.05) for b in blocks]
    else:
        expected = kc.prox.sparse_group_soft_threshold(blocks, 0.05, 0.5)
    np.testing.assert_allclose(weights_of(model)[0], np.asarray(expected[0])[:, :, 0], atol=1e-7)
    np.testing.assert_allclose(weights_of(model)[1], np.asarray(expected[1])[0, :, 0], atol=1e-7)


def test_custom_loop_finds_the_model_of_its_variables_without_bind():
    model = mlp()
    optimizer = kc.ProxSGD(0.1, penalties=[kc.GroupLasso(1.0)])
    optimizer.apply(synthetic_grads(model), model.trainable_variables)
    assert [t.layer_name for _, t in optimizer.proximal_targets] == ["fc"]


def test_unknown_model_is_a_clear_error_and_bind_then_retry_applies_the_penalties():
    model = mlp()
    variables = model.trainable_variables[:2]  # no model has exactly these
    grads = synthetic_grads(model)[:2]
    optimizer = kc.ProxSGD(0.1, penalties=[kc.GroupLasso(1e3)])
    with pytest.raises(ValueError, match=r"optimizer.bind\(model\)"):
        optimizer.apply(grads, variables)
    assert not optimizer.built  # a failed build leaves nothing half-done
    optimizer.bind(model).apply(grads, variables)
    assert [t.layer_name for _, t in optimizer.proximal_targets] == ["fc"]
    # The huge strength killed every neuron of fc: the prox did run.
    assert not np.any(keras.ops.convert_to_numpy(model.get_layer("fc").kernel))


def test_penalties_must_be_penalties():
    with pytest.raises(TypeError, match="GroupLasso"):
        kc.ProxSGD(0.1, penalties=["group_lasso"])


def test_get_config_round_trips():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 100, 0.5)
    optimizer = kc.ProxSGD(
        schedule,
        momentum=0.9,
        nesterov=True,
        penalties=[kc.GroupLasso(1e-3, layers="conv"), kc.L1(1e-4, layers=["fc"])],
        reset_momentum=False,
        clipnorm=1.0,
    )
    config = optimizer.get_config()
    restored = kc.ProxSGD.from_config(keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(optimizer)).get_config())
    assert restored.get_config() == config
    assert [p.get_config() for p in restored.penalties] == [p.get_config() for p in optimizer.penalties]
    adam = kc.ProxAdam(1e-3, amsgrad=True, penalties=kc.SparseGroupLasso(1e-3, 0.2))
    assert kc.ProxAdam.from_config(adam.get_config()).get_config() == adam.get_config()


def fit_convnet(jit_compile, epochs=3, strength=1.0, seed=0):
    model = convnet(seed)
    x, y = data()
    optimizer = kc.ProxSGD(0.05, momentum=0.9, penalties=[kc.GroupLasso(strength)])
    compile_fit(model, optimizer, x, y, epochs=epochs, jit_compile=jit_compile)
    return model


def dead_neurons(model, name):
    kernel = model.get_layer(name).kernel.numpy()
    return np.all(kernel.reshape(-1, kernel.shape[-1]) == 0, axis=0)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_kills_neurons_with_and_without_xla(jit_compile):
    model = fit_convnet(jit_compile, strength=1.0)
    assert 0 < dead_neurons(model, "conv").sum() < 6
    assert np.all(np.isfinite(model.get_layer("fc").kernel.numpy()))


def test_xla_and_eager_graph_agree():
    plain, xla = fit_convnet(False), fit_convnet(True)
    for a, b in zip(weights_of(plain), weights_of(xla)):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert np.array_equal(dead_neurons(plain, "conv"), dead_neurons(xla, "conv"))


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    yield
    keras.mixed_precision.set_dtype_policy("float32")


def test_mixed_precision_loss_scale_optimizer(mixed_precision):
    model = convnet()
    x, y = data()
    optimizer = kc.ProxSGD(0.05, momentum=0.9, penalties=[kc.GroupLasso(1.0)])
    compile_fit(model, optimizer, x, y, epochs=3)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.optimizer.inner_optimizer is optimizer
    assert model.get_layer("fc").kernel.dtype == "float32"
    assert 0 < dead_neurons(model, "conv").sum() < 6
    monitor = kc.NeuronMonitor(verbose=0)
    monitor.set_model(model)
    live, total = monitor.live_counts()["conv"]
    assert live == 6 - dead_neurons(model, "conv").sum() and total == 6


def test_save_load_restores_state_and_training_continues_identically(tmp_path):
    x, y = data()
    model = fit_convnet(False, epochs=2, strength=0.2)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    optimizer = restored.optimizer
    assert isinstance(optimizer, kc.ProxSGD)
    assert [p.get_config() for p in optimizer.penalties] == [
        p.get_config() for p in model.optimizer.penalties
    ]
    assert int(optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())
    for a, b in zip(model.optimizer.variables, optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for m in (model, restored):
        m.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    for a, b in zip(weights_of(model), weights_of(restored)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert [t.layer_name for _, t in optimizer.proximal_targets] == ["conv", "fc"]


class InterruptAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted on purpose")


def test_backup_and_restore_resume_matches_uninterrupted_run(tmp_path):
    x, y = data()

    def run(callbacks):
        model = convnet(seed=0)
        optimizer = kc.ProxSGD(0.05, momentum=0.9, penalties=[kc.GroupLasso(0.2)])
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x, y, epochs=4, batch_size=16, shuffle=False, verbose=0, callbacks=callbacks)
        return model

    uninterrupted = run([])
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="on purpose"):
        run([backup, InterruptAt(2)])
    resumed = run([keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    for a, b in zip(weights_of(uninterrupted), weights_of(resumed)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_mirrored_strategy_matches_one_device():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest.py sets up two logical CPU devices"
    x, y = data(n=128)
    single = convnet(seed=0)
    initial = single.get_weights()
    compile_fit(single, kc.ProxSGD(0.05, 0.9, penalties=[kc.GroupLasso(1.0)]), x, y, batch_size=32)
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        mirrored = convnet(seed=0)
        mirrored.set_weights(initial)
        optimizer = kc.ProxSGD(0.05, 0.9, penalties=[kc.GroupLasso(1.0)])
        compile_fit(mirrored, optimizer, x, y, batch_size=32)
    assert optimizer._distribution_strategy is strategy
    for a, b in zip(weights_of(single), weights_of(mirrored)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.array_equal(dead_neurons(single, "conv"), dead_neurons(mirrored, "conv"))
    assert dead_neurons(single, "conv").sum() > 0
    # Every replica holds the same values after the prox.
    kernel = mirrored.get_layer("fc").kernel.value
    replicas = [v.numpy() for v in kernel.values]
    np.testing.assert_array_equal(replicas[0], replicas[1])


@pytest.mark.parametrize("optimizer_class", [kc.ProxSGD, kc.ProxAdam])
def test_moving_averages_with_penalties_are_refused(optimizer_class):
    """With use_ema, Keras replaces the weights with their moving averages at
    the end of fit; those are never exactly sparse, so every dead neuron would
    come back (a budget reported met would not be). Without penalties the
    optimizer is the base one, and EMA is fine."""
    with pytest.raises(ValueError, match="use_ema=True with penalties is not supported"):
        optimizer_class(0.01, penalties=[kc.GroupLasso(1e-3)], use_ema=True)
    plain = optimizer_class(0.01, use_ema=True)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(plain, "mse")
    model.fit(np.ones((8, 3)), np.ones((8, 2)), verbose=0)
