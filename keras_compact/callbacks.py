"""Callbacks: watch neurons die during training."""

import keras

from keras_compact import penalties as penalties_lib
from keras_compact.optimizers.proximal import proximal_optimizer_of


def _optimizer_targets(model):
    optimizer = proximal_optimizer_of(model)
    return [] if optimizer is None else [target for _, target in optimizer.proximal_targets]


@keras.saving.register_keras_serializable(package="keras_compact")
class NeuronMonitor(keras.callbacks.Callback):
    """Counts the live neurons (and heads) of each penalized layer at the end of each epoch.

    A neuron is live while any entry of its group (kernel slice, bias, the
    gamma/beta of a following BatchNorm) is non-zero; a head while any entry
    of its query, key, value or output slices is (`HeadLasso`). The counts go
    into `logs` as ``live_neurons/<layer>`` and ``live_heads/<layer>`` (so
    `History` and `TensorBoard` record them) and, with `verbose`, into one
    printed line per epoch.

    Args:
        layers: which layers to watch, as a penalty's `layers` (a regex or a list
            of names). None watches the layers the model's proximal optimizer
            penalizes, or every hidden neuron layer if it penalizes none.
        verbose: print one line per epoch.
    """

    def __init__(self, layers=None, verbose=1):
        super().__init__()
        self.layers = layers
        self.verbose = verbose
        self._targets = None

    def _resolve(self):
        targets = [] if self.layers is not None else _optimizer_targets(self.model)
        if not targets:
            # Resolve the selection as a penalty would; strength is unused.
            selection = penalties_lib.GroupLasso(0.0, layers=self.layers)
            targets = selection.resolve(self.model)
        # Several penalties may act on one layer: count it once.
        unique = {}
        for target in targets:
            unique.setdefault(target.layer_name, target)
        return list(unique.values())

    def live_counts(self, unit="neurons"):
        """{layer name: (live, total)} of the watched layers' `unit` ("neurons" or "heads"), now."""
        if self._targets is None:
            self._targets = self._resolve()
        return {
            t.layer_name: (int(penalties_lib.live_neurons(t).sum()), t.num_neurons)
            for t in self._targets
            if t.unit == unit
        }

    def on_train_begin(self, logs=None):
        self._targets = None

    def on_epoch_end(self, epoch, logs=None):
        lines = []
        for unit in ("neurons", "heads"):
            counts = self.live_counts(unit)
            if not counts:
                continue
            if logs is not None:
                for name, (live, _) in counts.items():
                    logs[f"live_{unit}/{name}"] = live
            lines.append(f"live {unit}: " + ", ".join(f"{n} {live}/{total}" for n, (live, total) in counts.items()))
        if self.verbose:
            print(f"Epoch {epoch + 1}: " + "; ".join(lines))

    def get_config(self):
        return {"layers": self.layers, "verbose": self.verbose}
