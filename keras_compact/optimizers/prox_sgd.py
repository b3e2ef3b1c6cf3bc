"""ProxSGD: SGD (with momentum) followed by the exact prox of sparse penalties."""

import keras

from keras_compact import _keras_adapter as adapter
from keras_compact.optimizers.proximal import ProximalMixin


@keras.saving.register_keras_serializable(package="keras_compact")
class ProxSGD(ProximalMixin, adapter.backend_optimizer_class(keras.optimizers.SGD)):
    """Proximal stochastic gradient descent (forward-backward splitting).

    Each step, with learning rate tau (the schedule's value at this step):

    ```
    velocity = momentum * velocity - tau * g                 # Keras SGD
    w' = w + velocity                  (nesterov: w + momentum * velocity - tau * g)
    w  = prox_{tau * lambda_k * g_k}(w')        for each penalty k, in order
    velocity[neuron j] = 0      for each neuron whose group is now all zero
    ```

    The last line (`reset_momentum=True`) is the paper's trick: momentum
    would otherwise push a dead neuron straight back to life.

    Args:
        learning_rate: float or `keras.optimizers.schedules.LearningRateSchedule`.
        momentum: float >= 0.
        nesterov: whether to use Nesterov momentum.
        penalties: a penalty or a sequence of them (`GroupLasso`, `L1`,
            `SparseGroupLasso`, ...); their proxes are applied in order.
        reset_momentum: zero the momentum of neurons whose group is zero.
        resolved_groups: the neuron groups the optimizer resolved when it was
            built, as its `get_config` saves them, so that `load_model`
            rebuilds them without looking for the model; leave it None.
        name: None lets Keras name it uniquely (`prox_sgd`, `prox_sgd_1`, ...).
        **kwargs: the base optimizer arguments (`weight_decay`, `clipnorm`,
            `global_clipnorm`, `gradient_accumulation_steps`...; not
            `use_ema` with penalties: the moving averages that replace the
            weights at the end of fit are never exactly sparse).

    Example:

    ```python
    model.compile(
        optimizer=keras_compact.ProxSGD(0.01, momentum=0.9,
                                        penalties=[keras_compact.GroupLasso(1e-4)]),
        loss="sparse_categorical_crossentropy")
    model.fit(x, y)
    ```
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.0,
        nesterov=False,
        penalties=(),
        reset_momentum=True,
        resolved_groups=None,
        name=None,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            momentum=momentum,
            nesterov=nesterov,
            name=name,
            **kwargs,
        )
        self._init_proximal(learning_rate, penalties, reset_momentum, resolved_groups)
