"""The examples' knowledge distillation: the loss is Hinton's, and only the student trains."""

import keras
import numpy as np
import pytest

from keras_compact_examples.distillation import distillation_loss, teacher_student_pair


def _probabilities(rng, shape):
    logits = rng.standard_normal(shape) * 2
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True), logits


def _value(loss, labels, student, teacher):
    pair = np.concatenate([student, teacher], axis=-1).astype("float32")
    return keras.ops.convert_to_numpy(loss(labels, keras.ops.convert_to_tensor(pair)))


def test_the_loss_is_cross_entropy_plus_t_squared_kl_of_the_softened_outputs():
    rng = np.random.default_rng(0)
    student, student_logits = _probabilities(rng, (6, 5))
    teacher, teacher_logits = _probabilities(rng, (6, 5))
    labels = rng.integers(0, 5, 6)
    weight, temperature = 0.7, 3.0

    def softened(logits):
        z = logits / temperature
        z = z - z.max(-1, keepdims=True)
        return np.exp(z) / np.exp(z).sum(-1, keepdims=True)

    p_t, p_s = softened(teacher_logits), softened(student_logits)
    kl = (p_t * (np.log(p_t) - np.log(p_s))).sum(-1)
    cross_entropy = -np.log(student[np.arange(6), labels])
    expected = (1 - weight) * cross_entropy + weight * temperature**2 * kl
    got = _value(distillation_loss(weight, temperature), labels, student, teacher)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert np.all(kl > 0)


def test_weight_zero_is_cross_entropy_and_a_student_equal_to_its_teacher_pays_no_kl():
    rng = np.random.default_rng(1)
    student, _ = _probabilities(rng, (4, 3))
    teacher, _ = _probabilities(rng, (4, 3))
    labels = np.array([0, 1, 2, 1])
    cross_entropy = -np.log(student[np.arange(4), labels])
    np.testing.assert_allclose(_value(distillation_loss(0.0, 2.0), labels, student, teacher), cross_entropy, rtol=1e-5)
    np.testing.assert_allclose(
        _value(distillation_loss(0.5, 2.0), labels, student, student), 0.5 * cross_entropy, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("weight, temperature", [(-0.1, 2.0), (1.5, 2.0), (0.5, 0.0)])
def test_bad_settings_are_refused(weight, temperature):
    with pytest.raises(ValueError, match="distillation"):
        distillation_loss(weight, temperature)


def _classifier(name, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden), name=name)


def test_training_the_pair_trains_the_student_only():
    student, teacher = _classifier("net", 0), _classifier("net", 1)  # the same model name is fine
    before_student = [w.copy() for w in student.get_weights()]
    before_teacher = [w.copy() for w in teacher.get_weights()]
    pair = teacher_student_pair(student, teacher)
    pair.compile(optimizer=keras.optimizers.SGD(0.1), loss=distillation_loss(0.5, 2.0))
    rng = np.random.default_rng(2)
    pair.fit(rng.standard_normal((32, 4)).astype("float32"), rng.integers(0, 3, 32), epochs=2, verbose=0)
    assert all(np.any(a != b) for a, b in zip(before_student, student.get_weights()))
    assert all(np.array_equal(a, b) for a, b in zip(before_teacher, teacher.get_weights()))
