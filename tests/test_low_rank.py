"""TensorLowRank: SVT on kernels, its approximations for conv tensors, `every`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_compact as kc


def numpy_svt(matrix, t):
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    return (u * np.maximum(s - t, 0)) @ vt


def model_with_conv_and_dense(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((9, 9, 4))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(12, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(3, name="out")(x)
    return keras.Model(inputs, outputs)


def prox_once(model, penalty, lr=0.1):
    """One ProxSGD step with zero gradients: the prox alone, with t = lr * strength."""
    optimizer = kc.ProxSGD(lr, penalties=[penalty]).bind(model)
    zeros = [np.zeros(v.shape, "float32") for v in model.trainable_variables]
    optimizer.apply(zeros, model.trainable_variables)


def test_dense_kernel_is_exact_svt():
    model = model_with_conv_and_dense()
    kernel = model.get_layer("fc").kernel.numpy()
    s = np.linalg.svd(kernel, compute_uv=False)
    t = float(np.median(s))  # half the singular values go
    prox_once(model, kc.TensorLowRank(t / 0.1, layers=["fc"]))
    got = model.get_layer("fc").kernel.numpy()
    np.testing.assert_allclose(got, numpy_svt(kernel, t), atol=1e-5)
    assert np.linalg.matrix_rank(got, tol=1e-4) == np.sum(s > t)


@pytest.mark.parametrize("method", ["output", "spatial", "average"])
def test_conv_kernel_methods_match_numpy(method):
    model = model_with_conv_and_dense()
    kernel = model.get_layer("conv").kernel.numpy()  # (3, 3, 4, 6)
    t = 0.3
    prox_once(model, kc.TensorLowRank(t / 0.1, layers=["conv"], method=method))
    got = model.get_layer("conv").kernel.numpy()
    if method == "output":
        expected = numpy_svt(kernel.reshape(-1, 6), t).reshape(kernel.shape)
    elif method == "spatial":
        matrix = kernel.transpose(0, 2, 1, 3).reshape(3 * 4, 3 * 6)
        expected = numpy_svt(matrix, t).reshape(3, 4, 3, 6).transpose(0, 2, 1, 3)
    else:
        folded = []
        for mode in range(4):
            moved = np.moveaxis(kernel, mode, 0)
            low = numpy_svt(moved.reshape(moved.shape[0], -1), t).reshape(moved.shape)
            folded.append(np.moveaxis(low, 0, mode))
        expected = np.mean(folded, axis=0)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("compiled", [False, True])
def test_every_k_applies_a_k_times_larger_step_every_k_steps(compiled):
    model = model_with_conv_and_dense()
    kernel = model.get_layer("fc").kernel.numpy()
    optimizer = kc.ProxSGD(0.1, penalties=[kc.TensorLowRank(1.0, layers=["fc"], every=3)])
    optimizer.bind(model)
    optimizer.build(model.trainable_variables)
    zeros = [np.zeros(v.shape, "float32") for v in model.trainable_variables]

    def apply():
        optimizer.apply(zeros, model.trainable_variables)

    # The branch on the step count is traced once, as in `fit`.
    step = tf.function(apply) if compiled else apply
    step()  # step 0: applied, t = 3 * 0.1
    after_first = model.get_layer("fc").kernel.numpy()
    np.testing.assert_allclose(after_first, numpy_svt(kernel, 0.3), atol=1e-5)
    step()  # steps 1, 2: not applied
    step()
    np.testing.assert_array_equal(model.get_layer("fc").kernel.numpy(), after_first)
    step()  # step 3: applied
    np.testing.assert_allclose(
        model.get_layer("fc").kernel.numpy(), numpy_svt(after_first, 0.3), atol=1e-5
    )


def test_low_rank_with_group_lasso_on_the_same_layer():
    model = model_with_conv_and_dense()
    kernel = model.get_layer("fc").kernel.numpy()
    bias = model.get_layer("fc").bias.numpy()
    penalties = [kc.GroupLasso(1.0, layers=["fc"]), kc.TensorLowRank(2.0, layers=["fc"])]
    optimizer = kc.ProxSGD(0.1, penalties=penalties).bind(model)
    optimizer.apply(
        [np.zeros(v.shape, "float32") for v in model.trainable_variables],
        model.trainable_variables,
    )
    # Group prox first (t = 0.1), then SVT (t = 0.2), in the order given.
    full = np.vstack([kernel, bias[None]])
    norms = np.linalg.norm(full, axis=0)
    scale = np.maximum(0, 1 - 0.1 / norms)
    expected = numpy_svt(kernel * scale, 0.2)
    np.testing.assert_allclose(model.get_layer("fc").kernel.numpy(), expected, atol=1e-5)


def test_a_low_rank_step_after_group_lasso_keeps_dead_neurons_exactly_dead():
    """GroupLasso then TensorLowRank, as the examples' `group_lasso+low_rank`,
    under a parameter budget: the SVT of a kernel with zero columns keeps them
    zero. Its eigenvectors' ~1e-16 brought them back at 1e-15 (once the
    budget had landed and the group step no longer cut them), so `compact`
    kept them and the compact model was 0.57 of the dense one, for a budget
    reported met at 0.3."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(64, activation="relu", name="d0"),
        keras.layers.Dense(32, activation="relu", name="d1"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    penalties = [kc.GroupLasso(1e-3), kc.TensorLowRank(1e-3)]
    model.compile(kc.ProxSGD(0.05, 0.9, penalties=penalties), "sparse_categorical_crossentropy")
    model.fit((digits.data / 16).astype("float32"), digits.target, epochs=6, batch_size=64, verbose=0,
              callbacks=[kc.BudgetController(params=0.3, verbose=0)])
    for name in ("d0", "d1"):
        norms = np.linalg.norm(model.get_layer(name).kernel.numpy(), axis=0)
        assert not np.any((norms > 0) & (norms < 1e-6)), (name, norms)
    compact_model, _ = kc.compact(model)
    assert compact_model.count_params() <= 0.3 * model.count_params()


@pytest.mark.parametrize("optimizer_class", [kc.ProxSGD, kc.ProxAdam])
def test_fit_lowers_rank(optimizer_class):
    model = model_with_conv_and_dense()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 9, 9, 4)).astype("float32"), rng.integers(0, 3, 64)
    optimizer = optimizer_class(
        0.01, penalties=[kc.GroupLasso(0.1), kc.TensorLowRank(20.0)]
    )
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=4, batch_size=16, verbose=0)
    assert np.linalg.matrix_rank(model.get_layer("fc").kernel.numpy(), tol=1e-5) < 12
    conv = model.get_layer("conv").kernel.numpy().reshape(-1, 6)
    assert np.linalg.matrix_rank(conv, tol=1e-5) < 6


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: kc.TensorLowRank(1.0, every=0), "every must be an integer >= 1"),
        (lambda: kc.TensorLowRank(1.0, every=1.5), "every must be an integer >= 1"),
        (lambda: kc.TensorLowRank(1.0, method="tucker"), "method must be one of"),
    ],
)
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_spatial_needs_conv2d():
    model = model_with_conv_and_dense()
    with pytest.raises(ValueError, match="layer 'fc'.*needs a Conv2D"):
        kc.TensorLowRank(1.0, layers=["fc"], method="spatial").resolve(model)


def test_serialization_round_trip():
    penalty = kc.TensorLowRank(1e-3, layers="conv", every=10, method="average")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(penalty))
    assert restored.get_config() == penalty.get_config()


def test_trained_low_rank_layers_are_factorized_by_compact(tmp_path):
    model = model_with_conv_and_dense()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 9, 9, 4)).astype("float32"), rng.integers(0, 3, 64)
    model.compile(
        kc.ProxSGD(0.01, 0.9, penalties=[kc.TensorLowRank(8.0, layers=["fc"])]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=4, batch_size=16, verbose=0)
    rank = np.linalg.matrix_rank(model.get_layer("fc").kernel.numpy(), tol=1e-5)
    compact_model, report = kc.compact(model, sample_data=x)
    (record,) = report.factorized
    assert (record["name"], record["form"], record["rank"]) == ("fc", "dense", rank)
    assert report.params_after == compact_model.count_params() < report.params_before
    fc = next(entry for entry in report.layers if entry.name == "fc")
    assert fc.params_after == record["params_after"] == 294 * rank + rank * 12 + 12
    np.testing.assert_allclose(compact_model.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert "factorized 'fc' (dense)" in report.table()
    # The factorized model is plain Keras: it saves and loads.
    compact_model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    unfactorized, report = kc.compact(model, factorize=False)
    assert report.factorized == [] and len(unfactorized.layers) == len(compact_model.layers) - 1
