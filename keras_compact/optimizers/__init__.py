"""Proximal optimizers: a Keras optimizer's step, then the exact prox."""

from keras_compact.optimizers.prox_adam import ProxAdam
from keras_compact.optimizers.prox_sgd import ProxSGD
from keras_compact.optimizers.proximal import ProximalMixin

__all__ = ["ProxAdam", "ProxSGD", "ProximalMixin"]
