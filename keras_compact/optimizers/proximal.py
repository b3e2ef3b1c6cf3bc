"""Forward-backward splitting for any Keras optimizer: the shared machinery.

`ProximalMixin` turns a Keras optimizer into a proximal one. Each step is

    forward:  W' = the wrapped optimizer's own update of W    (SGD, Adam, ...)
    backward: W  = prox_{tau * lambda * g}(W')                  per penalty
    reset:    zero every optimizer slot (momentum, Adam moments) of a neuron
              whose whole group is now zero                     (reset_momentum)

with tau the learning rate of this step (a schedule's current value). The
prox runs in `_backend_update_step`, after the wrapped update, so gradient
clipping, weight decay, gradient accumulation, EMA and loss scaling keep
their Keras meaning. Under `tf.distribute` it runs in a merge call through
`strategy.extended.update`, the same route Keras takes for its own update,
so every replica applies the identical prox to its copy of the variables.

Which variables form a neuron's group depends on the model's graph (the
BatchNormalization that follows a conv; which layers produce outputs). The
optimizer learns the model in `build`: from `bind(model)` if it was called,
or else from the Keras model whose method is building it (`fit`,
`train_on_batch`, `evaluate`, `load_model`'s compile all build the optimizer
from inside a `keras.Model` method). BUILD_NOTES.md explains this choice.
"""

import dataclasses
import sys

import keras

from keras_compact import penalties as penalties_lib
from keras_compact import prox

# Optimizer variables made from a model variable that are not per-weight
# momentum state: leave them alone when a neuron dies.
_NOT_SLOTS = ("gradient_accumulator", "average")


@dataclasses.dataclass(eq=False)
class _Entry:
    penalty: object
    target: object
    slots: list  # per member: the optimizer slots of its variable


@dataclasses.dataclass(eq=False)
class _ProximalState:
    """Kept in one plain object so Keras's tracker does not re-track variables."""

    model: object = None
    entries: list = dataclasses.field(default_factory=list)
    slots: dict = dataclasses.field(default_factory=dict)  # id(variable) -> [slot]


def _calling_model(variables):
    """The keras.Model on the call stack whose trainable variables hold `variables`."""
    wanted = {id(v) for v in variables}
    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, keras.Model) and wanted <= {
            id(v) for v in candidate.trainable_variables
        }:
            return candidate
        frame = frame.f_back
    return None


def _deserialize_penalties(penalties, owner):
    if isinstance(penalties, penalties_lib.Penalty):
        penalties = [penalties]
    result = []
    for penalty in penalties:
        if isinstance(penalty, dict):
            penalty = keras.saving.deserialize_keras_object(penalty)
        if not isinstance(penalty, penalties_lib.Penalty):
            raise TypeError(
                f"{owner}: each penalty must be a keras_compact penalty "
                f"(GroupLasso, L1, SparseGroupLasso, ...), got {penalty!r}."
            )
        result.append(penalty)
    return tuple(result)


class ProximalMixin:
    """Adds `penalties` and `reset_momentum` to a Keras optimizer class."""

    def _init_proximal(self, penalties, reset_momentum):
        self.penalties = _deserialize_penalties(penalties, type(self).__name__)
        self.reset_momentum = bool(reset_momentum)
        self._proximal = _ProximalState()

    def bind(self, model):
        """Tell the optimizer which model it trains (for custom training loops).

        `fit`, `train_on_batch` and `load_model` need no call to `bind`. Call it
        before the first `apply` when you drive the optimizer yourself.
        """
        self._proximal.model = model
        return self

    def add_variable_from_reference(self, reference_variable, name=None, initializer="zeros"):
        slot = super().add_variable_from_reference(reference_variable, name=name, initializer=initializer)
        if (name or "") not in _NOT_SLOTS:
            self._proximal.slots.setdefault(id(reference_variable), []).append(slot)
        return slot

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        if not self.penalties:
            return
        model = self._proximal.model or _calling_model(variables)
        if model is None:
            raise ValueError(
                f"{type(self).__name__} has penalties but cannot tell which model "
                "it trains: call `optimizer.bind(model)` before `optimizer.build` "
                "or `optimizer.apply` in a custom training loop."
            )
        self._proximal.model = model
        slots = self._proximal.slots
        self._proximal.entries = [
            _Entry(
                penalty,
                target,
                [slots.get(id(m.variable), []) for m in target.members],
            )
            for penalty in self.penalties
            for target in penalty.resolve(model, trainable=variables)
        ]

    @property
    def proximal_targets(self):
        """[(penalty, Target)] this optimizer applies, once built."""
        return [(e.penalty, e.target) for e in self._proximal.entries]

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        super()._backend_update_step(grads, trainable_variables, learning_rate)
        if not self._proximal.entries:
            return
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.__internal__.distribute.interim.maybe_merge_call(
                self._distributed_proximal_step,
                self._distribution_strategy,
                learning_rate,
            )
        else:
            for entry in self._proximal.entries:
                self._proximal_step(
                    entry, entry.target.variables, entry.slots, learning_rate, self.iterations
                )

    def _distributed_proximal_step(self, distribution, learning_rate):
        # `extended.update` runs the function once per replica, on that
        # replica's component of the first variable and (select_replica) of
        # every other variable passed in `args`.
        iterations = self.iterations.value
        for entry in self._proximal.entries:
            variables = [v.value for v in entry.target.variables]
            slots = [[s.value for s in member_slots] for member_slots in entry.slots]

            def step(first, rest, slots, learning_rate, iterations, entry=entry):
                self._proximal_step(entry, [first, *rest], slots, learning_rate, iterations)

            distribution.extended.update(
                variables[0],
                step,
                args=(variables[1:], slots, learning_rate, iterations),
                group=False,
            )

    def _proximal_step(self, entry, variables, slots, learning_rate, iterations):
        """The prox of one penalty on one target (on one replica's variables)."""
        members = entry.target.members
        dtype = variables[0].dtype
        every = entry.penalty.every
        threshold = keras.ops.cast(learning_rate, dtype) * entry.penalty.strength * every
        blocks = [m.view(v) for m, v in zip(members, variables)]
        if every == 1:
            new_blocks = entry.penalty.prox(blocks, threshold, entry.target)
        else:
            # Every `every` steps, a step `every` times as large: the same
            # shrinkage per step as every=1, for 1/every of the SVDs. The cond
            # returns values (no assignment inside), as JAX's tracing requires.
            new_blocks = keras.ops.cond(
                keras.ops.equal(iterations % every, 0),
                lambda: entry.penalty.prox(blocks, threshold, entry.target),
                lambda: blocks,
            )
        for member, variable, block in zip(members, variables, new_blocks):
            variable.assign(member.unview(block))
        if not (self.reset_momentum and entry.target.neuron_groups):
            return
        alive = keras.ops.cast(prox.group_norms(new_blocks) > 0, dtype)
        mask = keras.ops.reshape(alive, (1, -1, 1))
        for member, member_slots in zip(members, slots):
            for slot in member_slots:
                slot.assign(member.unview(member.view(slot) * mask))

    def get_config(self):
        config = super().get_config()
        config["penalties"] = [keras.saving.serialize_keras_object(p) for p in self.penalties]
        config["reset_momentum"] = self.reset_momentum
        return config
