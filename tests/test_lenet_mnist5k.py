"""LeNet-5 on the embedded MNIST digits: neurons die while accuracy stays high."""

import keras
import numpy as np
import pytest

import keras_compact as kc
from keras_compact_examples import data, models


def test_group_lasso_kills_neurons_and_keeps_accuracy():
    x_train, y_train, x_test, y_test = data.mnist5k_arrays()
    keras.utils.set_random_seed(0)
    model = models.lenet5()
    model.compile(
        optimizer=kc.ProxSGD(0.01, momentum=0.9, penalties=[kc.GroupLasso(0.02, weighted=True)]),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        x_train, y_train, epochs=4, batch_size=64, verbose=0,
        callbacks=[kc.NeuronMonitor(verbose=0)],
    )
    live = {name: history.history[f"live_neurons/{name}"] for name in ("conv1", "conv2", "fc1")}
    # Neurons die during training, and stay dead (the counts never rise much).
    assert live["fc1"][-1] < 0.5 * 500
    assert live["conv2"][-1] < 50
    for counts in live.values():
        assert counts[-1] <= counts[0]
    # A dead neuron's whole group is exactly zero.
    kernel, bias = model.get_layer("fc1").kernel.numpy(), model.get_layer("fc1").bias.numpy()
    dead = ~(np.any(kernel != 0, axis=0) | (bias != 0))
    assert dead.sum() == 500 - live["fc1"][-1]
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy > 0.85  # chance is 0.1
    # Removing the dead neurons changes nothing but the size.
    compact_model, report = kc.compact(model, sample_data=x_test[:64])
    assert report.params_after < 0.5 * report.params_before
    predictions = compact_model.predict(x_test, verbose=0).argmax(axis=1)
    assert np.mean(predictions == y_test) == pytest.approx(accuracy, abs=1e-6)
