"""The optimizer's state: strengths and neuron masks as variables, and how it finds its model."""

import keras
import numpy as np
import pytest

import keras_compact as kc
from small_models import convnet
from test_optimizers import InterruptAt


def data(n=64, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 10, 10, 1)).astype("float32"), rng.integers(0, 4, n)


def weights_of(model):
    return [keras.ops.convert_to_numpy(v).copy() for v in model.weights]


def live(model, layer):
    monitor = kc.NeuronMonitor(verbose=0)
    monitor.set_model(model)
    return monitor.live_counts()[layer][0]


@keras.saving.register_keras_serializable(package="tests")
class CountingGroupLasso(kc.GroupLasso):
    """GroupLasso that counts how often its prox is traced (Python runs once per trace)."""

    traces = 0

    # The optimizer takes the group-lasso step through `group_factors` (one factor
    # per neuron); `prox` is what other callers use. Count whichever runs.
    def group_factors(self, blocks, threshold, target):
        CountingGroupLasso.traces += 1
        return super().group_factors(blocks, threshold, target)

    def prox(self, blocks, threshold, target):
        CountingGroupLasso.traces += 1
        return super().prox(blocks, threshold, target)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_strength_changes_during_training_without_retracing(jit_compile):
    x, y = data()
    model = convnet()
    optimizer = kc.ProxSGD(0.05, penalties=[CountingGroupLasso(0.0, layers=["fc"])])
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit_compile)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    traced = CountingGroupLasso.traces
    assert traced >= 1 and live(model, "fc") == 16  # strength 0: nothing dies
    optimizer.set_strengths([1e4])
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert CountingGroupLasso.traces == traced  # the same compiled step ran...
    assert live(model, "fc") == 0  # ...with the new strength
    assert float(keras.ops.convert_to_numpy(optimizer.strength_variables[0])) == 1e4


def test_strength_and_masks_are_saved_and_loaded_with_the_optimizer(tmp_path):
    x, y = data()
    model = convnet()
    optimizer = kc.ProxSGD(0.05, momentum=0.9, penalties=[kc.GroupLasso(0.01)])
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    optimizer.set_strengths([0.5])
    optimizer.remove_neurons("fc", [0, 3, 7])
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    restored_optimizer = restored.optimizer
    assert float(keras.ops.convert_to_numpy(restored_optimizer.strength_variables[0])) == 0.5
    # The groups come back from the saved config, without looking for the model.
    assert [t.layer_name for _, t in restored_optimizer.proximal_targets] == ["conv", "fc"]
    # The pinned neurons stay dead while training goes on.
    restored_optimizer.set_strengths([0.0])
    restored.fit(x, y, epochs=1, batch_size=16, verbose=0)
    kernel = keras.ops.convert_to_numpy(restored.get_layer("fc").kernel)
    assert not kernel[:, [0, 3, 7]].any() and kernel[:, [1, 2]].any()


class StrengthenAtEpoch1(keras.callbacks.Callback):
    """Raises the strength once, at epoch 1: a resumed run must get it from the backup."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            self.model.optimizer.set_strengths([0.3])
            self.model.optimizer.freeze_dead_neurons()


def test_backup_and_restore_resumes_the_strength_and_masks(tmp_path):
    x, y = data()

    def run(callbacks):
        model = convnet(seed=0)
        optimizer = kc.ProxSGD(0.05, momentum=0.9, penalties=[kc.GroupLasso(0.05)])
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=4, batch_size=16, shuffle=False, verbose=0, callbacks=callbacks)
        return model

    uninterrupted = run([StrengthenAtEpoch1()])
    with pytest.raises(RuntimeError, match="on purpose"):
        run([keras.callbacks.BackupAndRestore(str(tmp_path / "backup")), StrengthenAtEpoch1(), InterruptAt(3)])
    resumed = run([keras.callbacks.BackupAndRestore(str(tmp_path / "backup")), StrengthenAtEpoch1()])
    for a, b in zip(weights_of(uninterrupted), weights_of(resumed)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_freeze_dead_neurons_keeps_them_dead_when_the_data_would_revive_them():
    # tanh'(0) = 1: without the mask, a zeroed neuron gets gradient and comes back.
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(8, activation="tanh", name="fc"), keras.layers.Dense(2, name="out")]
    )
    optimizer = kc.ProxSGD(0.1, penalties=[kc.GroupLasso(0.0)])
    model.compile(optimizer, "mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 5)), rng.normal(size=(64, 2))
    model.fit(x, y, epochs=1, verbose=0)
    optimizer.remove_neurons("fc", [1, 2])
    model.fit(x, y, epochs=3, verbose=0)
    assert live(model, "fc") == 6
    fresh = kc.ProxSGD(0.1, penalties=[kc.GroupLasso(0.0)])
    model.compile(fresh, "mse")
    model.fit(x, y, epochs=1, verbose=0)
    assert live(model, "fc") == 8  # the data does revive them once the mask is gone


class Wrapper(keras.Model):
    """A subclassed model around a Functional backbone and a head."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        inputs = keras.Input((10, 10, 1))
        x = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dense(12, activation="relu", name="fc")(x)
        self.backbone = keras.Model(inputs, x, name="backbone")
        self.head = keras.layers.Dense(4, name="head")

    def call(self, x):
        return self.head(self.backbone(x))


def test_a_subclassed_model_wrapping_a_functional_backbone_trains_with_no_extra_line():
    x, y = data()
    keras.utils.set_random_seed(0)
    model = Wrapper()
    optimizer = kc.ProxSGD(0.1, penalties=[kc.GroupLasso(2.0)])
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    # The backbone's hidden conv is penalized; its output layer fc is the
    # backbone's output, so (as for any model) only when listed.
    assert [t.layer_name for _, t in optimizer.proximal_targets] == ["conv"]
    kernel = keras.ops.convert_to_numpy(model.backbone.get_layer("conv").kernel)
    assert (~kernel.reshape(-1, 6).any(axis=0)).sum() > 0  # neurons died


def test_strength_changes_under_mirrored_strategy_as_on_one_device():
    import tensorflow as tf

    x, y = data()

    def run(strategy):
        with strategy.scope():
            model = convnet(seed=0)
            optimizer = kc.ProxSGD(0.05, momentum=0.9, penalties=[kc.GroupLasso(0.2)])
            model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
        optimizer.set_strengths([10.0])
        model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
        return model

    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    single = run(tf.distribute.get_strategy())
    mirrored = run(tf.distribute.MirroredStrategy(devices))
    for a, b in zip(weights_of(single), weights_of(mirrored)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert live(single, "fc") < 16 and live(mirrored, "fc") == live(single, "fc")


class ShrinkTwice(kc.GroupLasso):
    """A user's variant that redefines `prox` only: the optimizer must apply it."""

    def prox(self, blocks, threshold, target):
        return super().prox(blocks, 2 * threshold, target)


def test_a_group_lasso_subclass_that_redefines_prox_is_applied_through_it():
    results = {}
    for penalty in (kc.GroupLasso(0.5, layers=["fc"]), ShrinkTwice(0.5, layers=["fc"])):
        model = convnet(seed=0)
        model.compile(kc.ProxSGD(0.1, penalties=[penalty]), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        x, y = data(n=16)
        model.train_on_batch(x, y)
        results[type(penalty).__name__] = keras.ops.convert_to_numpy(model.get_layer("fc").kernel)
    # Twice the threshold shrinks further: the override ran.
    assert np.linalg.norm(results["ShrinkTwice"]) < np.linalg.norm(results["GroupLasso"])
