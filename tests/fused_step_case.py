"""The optimizer's group-lasso step against the plain prox, on any backend.

`check(seed)` runs in the test process (TensorFlow, tests/test_optimizers.py)
and, as a script, under KERAS_BACKEND=jax or torch (tests/test_backends.py),
where the torch backend takes the step of all targets at once
(optimizers/_torch_group_step.py). It raises AssertionError on a mismatch;
the script prints one JSON line.
"""

import json

import keras
import numpy as np

import keras_compact as kc


def _numpy(value):
    return np.asarray(keras.ops.convert_to_numpy(value))


def check(seed):
    """One SGD step then the prox: the same values and zeros as each entry's
    `penalty.prox` applied in order, the neuron mask after it, and momentum
    reset exactly on the zero groups.

    Three penalties, so that the order is kept around a penalty of another
    kind: a weighted GroupLasso on every hidden layer (fc with its
    BatchNormalization, fc2 with a pinned neuron, a transposed conv),
    TensorLowRank on fc2, an unweighted GroupLasso on fc2 again.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,))
    x = keras.layers.Dense(8, name="fc")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Dense(7, activation="relu", name="fc2")(keras.layers.ReLU()(x))
    # A transposed conv: its neuron axis is not the kernel's last, (2, 4, 7)
    # is (rows, n, cols) with cols > 1.
    x = keras.layers.Conv1DTranspose(4, 2, name="deconv")(keras.layers.Reshape((1, 7))(x))
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(keras.layers.Flatten()(x)))
    rng = np.random.default_rng(seed)
    lr, strength = 0.1, 0.5
    threshold = lr * strength
    for layer in (model.get_layer("fc"), model.get_layer("fc2"), model.get_layer("deconv")):
        # Kernel norms from zero to twice the weighted threshold, one exactly
        # zero. Each kernel's neuron axis is axis 1 (moved last and back).
        kernel = np.moveaxis(rng.normal(size=layer.kernel.shape).astype("float32"), 1, -1)
        weighted = threshold * np.sqrt(kernel[..., 0].size + 3)  # at most bias, gamma, beta more
        scale = rng.uniform(0, 2 * weighted, size=kernel.shape[-1]).astype("float32")
        scale[rng.integers(kernel.shape[-1])] = 0
        norms = np.sqrt(np.sum(np.square(kernel), axis=tuple(range(kernel.ndim - 1))))
        layer.kernel.assign(np.moveaxis(kernel / norms * scale, -1, 1))
    for variable in (model.get_layer("bn").gamma, model.get_layer("bn").beta):
        variable.assign(rng.uniform(-threshold, threshold, size=variable.shape).astype("float32"))
    penalties = [
        kc.GroupLasso(strength, weighted=True),
        kc.TensorLowRank(strength / 10, layers=["fc2"]),
        kc.GroupLasso(strength / 10, layers=["fc2"]),
    ]
    optimizer = kc.ProxSGD(lr, 0.9, penalties=penalties).bind(model)
    optimizer.build(model.trainable_variables)
    removed = int(rng.integers(7))
    optimizer.remove_neurons("fc2", [removed])
    entries = optimizer._proximal.entries
    pinned = [None if e.mask is None else _numpy(e.mask).reshape(1, -1, 1) for e in entries]
    variables = model.trainable_variables
    position = {id(v): i for i, v in enumerate(variables)}
    grads = [0.01 * rng.normal(size=v.shape).astype("float32") for v in variables]
    grads[position[id(model.get_layer("fc2").kernel)]][:, removed] = -10.0  # revives it but for the mask
    expected = [_numpy(v) - lr * g for v, g in zip(variables, grads)]  # first step: momentum 0
    momentum = [-lr * g for g in grads]
    zero_groups = []
    for entry, mask in zip(entries, pinned):
        members = entry.target.members
        blocks = [m.view(expected[position[id(m.variable)]]) for m in members]
        penalty = penalties[entry.penalty_index]
        new = [_numpy(b) for b in penalty.prox(blocks, lr * penalty.strength, entry.target)]
        if mask is not None:
            new = [b * mask for b in new]
        for member, block in zip(members, new):
            expected[position[id(member.variable)]] = block.reshape(tuple(member.variable.shape))
        if entry.target.neuron_groups:
            zero = ~np.any([np.any(b != 0, axis=(0, 2)) for b in new], axis=0)
            zero_groups.append(int(zero.sum()))
            for member in members:
                i = position[id(member.variable)]
                kept = _numpy(member.view(momentum[i])) * ~zero.reshape(1, -1, 1)
                momentum[i] = np.reshape(kept, momentum[i].shape)
    assert all(0 < z for z in zero_groups), zero_groups
    # Tensors: Keras's fused torch SGD (which ProxSGD uses there) takes no NumPy gradients.
    optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], variables)
    momenta = {id(v): m for v, m in zip(variables, optimizer.momentums)}
    for variable, want, want_momentum in zip(variables, expected, momentum):
        got = _numpy(variable)
        np.testing.assert_array_equal(got == 0, want == 0, err_msg=variable.path)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, err_msg=variable.path)
        got_momentum = _numpy(momenta[id(variable)])
        np.testing.assert_allclose(got_momentum, want_momentum, atol=1e-7, err_msg=variable.path)
    batches = optimizer._proximal.torch_batches or []
    return {
        "backend": keras.backend.backend(),
        "zero_groups": zero_groups,
        "fused_batches": [len(b.entries) for b in batches if hasattr(b, "entries")],
    }


if __name__ == "__main__":
    print(json.dumps([check(seed) for seed in range(3)]))
