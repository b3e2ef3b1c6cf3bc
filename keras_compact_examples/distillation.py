"""Knowledge distillation for fine-tuning a compact network with its dense one as teacher.

Hinton, Vinyals and Dean (2015): the student learns from the labels and from
the teacher's outputs softened by a temperature T,

    loss = (1 - w) * CE(y, p_s) + w * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)),

the T^2 keeping the soft term's gradients on the scale of the hard term's.
Both networks end in a softmax (the examples' classifiers), so the logits are
recovered as log-probabilities, which differ from them by a constant per
sample and give the same softened distributions.

Backend-independent: the pair is a Functional model whose output is the
student's and the teacher's probabilities side by side, and the loss splits
them; the teacher is frozen.
"""

import keras


def distillation_loss(weight, temperature):
    """A Keras loss on `[student probabilities, teacher probabilities]` concatenated on the last axis.

    Args:
        weight: w in [0, 1], the share of the distillation term (0: cross-entropy only).
        temperature: T > 0.
    """
    if not 0 <= weight <= 1:
        raise ValueError(f"distillation weight must be in [0, 1], got {weight!r}.")
    if not temperature > 0:
        raise ValueError(f"distillation temperature must be > 0, got {temperature!r}.")
    ops = keras.ops

    def loss(labels, pair):
        classes = pair.shape[-1] // 2
        student, teacher = pair[..., :classes], pair[..., classes:]
        cross_entropy = keras.losses.sparse_categorical_crossentropy(labels, student)
        soft_student = ops.log_softmax(ops.log(ops.clip(student, 1e-7, 1.0)) / temperature, axis=-1)
        soft_teacher = ops.log_softmax(ops.log(ops.clip(teacher, 1e-7, 1.0)) / temperature, axis=-1)
        kl = ops.sum(ops.exp(soft_teacher) * (soft_teacher - soft_student), axis=-1)
        return (1.0 - weight) * cross_entropy + weight * temperature**2 * kl

    return loss


def teacher_student_pair(student, teacher):
    """A model computing `[student(x), teacher(x)]` concatenated, with the teacher frozen.

    Training it trains `student`'s own layers; `teacher` is left trainable=False.
    """
    teacher.trainable = False
    # The same layers under a name of its own: both networks may carry the same model name.
    frozen = keras.Model(teacher.inputs[0], teacher.outputs[0], name=f"{teacher.name}_teacher")
    inputs = keras.Input(tuple(student.inputs[0].shape[1:]))
    return keras.Model(inputs, keras.layers.Concatenate()([student(inputs), frozen(inputs)]))
