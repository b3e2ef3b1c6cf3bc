"""NeuronMonitor: live neurons per penalized layer, in logs and on screen."""

import keras
import numpy as np

import keras_compact as kc


def test_neuron_monitor_logs_history_and_prints(capsys):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(10, activation="relu", name="fc1"),
            keras.layers.Dense(6, activation="relu", name="fc2"),
            keras.layers.Dense(2, name="out"),
        ]
    )
    model.compile(
        kc.ProxSGD(0.1, penalties=[kc.GroupLasso(3.0, layers=["fc1"])]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 2, 64)
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[kc.NeuronMonitor()])
    live = history.history["live_neurons/fc1"]
    assert len(live) == 3 and live[-1] < 10
    assert live == sorted(live, reverse=True)
    # Only the penalized layer is watched by default.
    assert "live_neurons/fc2" not in history.history
    kernel = model.get_layer("fc1").kernel.numpy()
    assert live[-1] == int(np.sum(np.any(kernel != 0, axis=0) | (model.get_layer("fc1").bias.numpy() != 0)))
    lines = [l for l in capsys.readouterr().out.splitlines() if "live neurons" in l]
    assert lines[-1] == f"Epoch 3: live neurons: fc1 {live[-1]}/10"


def test_neuron_monitor_without_penalties_watches_hidden_layers():
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(5, name="h"), keras.layers.Dense(1, name="o")]
    )
    model.compile("sgd", "mse")
    history = model.fit(
        np.ones((8, 4)), np.ones((8, 1)), epochs=1, verbose=0,
        callbacks=[kc.NeuronMonitor(verbose=0)],
    )
    assert history.history["live_neurons/h"] == [5]
    assert "live_neurons/o" not in history.history
