"""ProxAdam: Adam followed by the exact prox of sparse penalties."""

import keras

from keras_compact import _keras_adapter as adapter
from keras_compact.optimizers.proximal import ProximalMixin


@keras.saving.register_keras_serializable(package="keras_compact")
class ProxAdam(ProximalMixin, adapter.backend_optimizer_class(keras.optimizers.Adam)):
    """Adam, then the proximal step of each penalty (forward-backward splitting).

    Each step, with learning rate tau (the schedule's value at this step):

    ```
    m = beta_1 * m + (1 - beta_1) * g;   v = beta_2 * v + (1 - beta_2) * g^2
    w' = w - tau * m_hat / (sqrt(v_hat) + epsilon)            # Keras Adam
    w  = prox_{tau * lambda_k * g_k}(w')       for each penalty k, in order
    m[neuron j] = 0   for each neuron whose group is now all zero
    ```

    The prox uses tau, not Adam's per-coordinate step: this is the usual
    proximal-Adam approximation; the prox itself is exact. The second moment
    v is kept: zeroed, the next step of a dead neuron would be about
    3 tau per weight whatever its gradient (m_hat / sqrt(v_hat) with both
    fresh), enough to bring it back.

    Args:
        learning_rate, beta_1, beta_2, epsilon, amsgrad: as `keras.optimizers.Adam`.
        penalties: a penalty or a sequence of them, applied in order.
        reset_momentum: zero the first moments of neurons whose group is zero.
        resolved_groups: the neuron groups the optimizer resolved when it was
            built, as its `get_config` saves them, so that `load_model`
            rebuilds them without looking for the model; leave it None.
        name: None lets Keras name it uniquely (`prox_sgd`, `prox_sgd_1`, ...).
        **kwargs: the base optimizer arguments (not `use_ema` with penalties,
            as for `ProxSGD`).
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad=False,
        penalties=(),
        reset_momentum=True,
        resolved_groups=None,
        name=None,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            name=name,
            **kwargs,
        )
        self._init_proximal(learning_rate, penalties, reset_momentum, resolved_groups)
