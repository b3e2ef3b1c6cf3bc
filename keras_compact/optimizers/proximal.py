"""Forward-backward splitting for any Keras optimizer: the shared machinery.

`ProximalMixin` turns a Keras optimizer into a proximal one. Each step is

    forward:  W' = the wrapped optimizer's own update of W    (SGD, Adam, ...)
    backward: W  = prox_{tau * lambda_k * g_k}(W')              per penalty k
    pinned:   W[neuron j] = 0 where neuron j is pinned dead     (see below)
    reset:    zero every optimizer slot (momentum, Adam moments) of a neuron
              whose whole group is now zero                     (reset_momentum)

with tau the learning rate of this step (a schedule's current value). The
backward step runs after the wrapped update, where gradient accumulation has
decided to update (`_keras_adapter.PostUpdateHook`), so gradient clipping,
weight decay, accumulation, EMA and loss scaling keep their Keras meaning.
Under `tf.distribute` it runs in cross-replica context through
`strategy.extended.update`, the route Keras takes for its own update, so
every replica applies the identical prox to its copy of the variables.

State, all of it optimizer variables (so `model.save`, `load_model` and
`BackupAndRestore` keep it, and a change needs no retracing): the strength
lambda_k of each penalty, and a 0/1 mask per neuron group that pins neurons
dead (`freeze_dead_neurons`; the budget controller uses it).

Which variables form a neuron's group depends on the model's graph (the
BatchNormalization that follows a conv; which layers produce outputs). The
optimizer learns the model when it is built: from `bind(model)` if it was
called; else from the groups it resolved before and saved in its config
(after `load_model`); else it finds the live `keras.Model` whose trainable
variables are exactly the ones it is built for (`fit`, `train_on_batch` and
`load_model`'s compile build it with `model.trainable_variables`).
BUILD_NOTES.md compares this with the alternatives.
"""

import dataclasses
import gc
import warnings

import keras
import numpy as np

from keras_compact import _keras_adapter as adapter
from keras_compact import penalties as penalties_lib
from keras_compact import prox
from keras_compact.registry import Member

# Optimizer variables made from a model variable that are not per-weight
# momentum state: leave them alone when a neuron dies. Adam's second moments
# are a scale, not a direction: zeroed, they would make the next step of a
# dead neuron tau * (1 - beta_1) / sqrt(1 - beta_2), about 3 tau per weight,
# which revives it (seen on the ViT example).
_NOT_SLOTS = ("gradient_accumulator", "average", "velocity", "velocity_hat")


@dataclasses.dataclass(eq=False)
class _Entry:
    penalty_index: int
    target: object
    slots: list = None  # per member: the optimizer slots of its variable
    mask: object = None  # keras.Variable (n,) of 0/1 for neuron groups, else None


@dataclasses.dataclass(eq=False)
class _ProximalState:
    """Kept in one plain object so Keras's tracker does not re-track variables."""

    model: object = None
    saved_groups: list = None  # resolved groups from a saved config
    entries: list = dataclasses.field(default_factory=list)
    slots: dict = dataclasses.field(default_factory=dict)  # id(variable) -> [slot]
    strengths: list = dataclasses.field(default_factory=list)  # keras.Variable per penalty
    variables: list = dataclasses.field(default_factory=list)  # what the optimizer was built for
    torch_batches: list = None  # the torch backend's grouping of entries, made at the first step


def _deserialize_penalties(penalties, owner):
    if isinstance(penalties, (penalties_lib.Penalty, dict)):
        penalties = [penalties]
    if isinstance(penalties, type):
        raise TypeError(
            f"{owner}: penalties=<class {penalties.__name__}> is a class: call it with a "
            f"strength, e.g. penalties=[keras_compact.{penalties.__name__}(1e-4)]."
        )
    if not isinstance(penalties, (list, tuple)):
        raise TypeError(
            f"{owner}: penalties must be a penalty instance or a list of them, e.g. "
            f"penalties=[keras_compact.GroupLasso(1e-4)], got {penalties!r}."
        )
    result = []
    for penalty in penalties:
        if isinstance(penalty, dict):
            penalty = keras.saving.deserialize_keras_object(penalty)
        if not isinstance(penalty, penalties_lib.Penalty):
            hint = " (a class: call it with a strength)" if isinstance(penalty, type) else ""
            raise TypeError(
                f"{owner}: each penalty must be a keras_compact penalty instance "
                f"(GroupLasso(1e-4), L1(...), SparseGroupLasso(...), TensorLowRank(...)), "
                f"got {penalty!r}{hint}."
            )
        result.append(penalty)
    return tuple(result)


def _check_learning_rate(owner, learning_rate):
    if isinstance(learning_rate, (int, float)) and not isinstance(learning_rate, bool):
        if not np.isfinite(learning_rate) or learning_rate < 0:
            raise ValueError(
                f"{owner}: learning_rate must be finite and >= 0, got {learning_rate}: the prox "
                "threshold is learning_rate * strength and must not be negative."
            )


def _is_model(candidate):
    try:
        return isinstance(candidate, keras.Model)
    except Exception:  # noqa: BLE001 - a proxy object whose __class__ fails
        return False


def _models_owning(variables):
    """Live keras.Models whose trainable variables are exactly `variables`, one per graph."""
    wanted = {id(v) for v in variables}
    found, graphs = [], set()
    # A deprecated proxy (torch.distributed.reduce_op) warns when its
    # __class__ is read: not the user's doing, so not the user's warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        candidates = [c for c in gc.get_objects() if _is_model(c)]
    for candidate in candidates:
        if {id(v) for v in candidate.trainable_variables} != wanted:
            continue
        # A Sequential model and the Functional graph inside it are one model.
        key = id(adapter.functional_of(candidate) or candidate)
        if key not in graphs:
            graphs.add(key)
            found.append(candidate)
    return found


def proximal_optimizer_of(model):
    """The model's compiled proximal optimizer (inside a LossScaleOptimizer too), or None."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    return optimizer if isinstance(optimizer, ProximalMixin) else None


def _signature(entries):
    return [(e.penalty_index, e.target.layer_name, [id(v) for v in e.target.variables]) for e in entries]


class ProximalMixin(adapter.PostUpdateHook):
    """Adds `penalties` and `reset_momentum` to a Keras optimizer class."""

    def _init_proximal(self, learning_rate, penalties, reset_momentum, resolved_groups):
        owner = type(self).__name__
        _check_learning_rate(owner, learning_rate)
        self.penalties = _deserialize_penalties(penalties, owner)
        if self.use_ema and self.penalties:
            # Keras replaces the weights with their moving averages at the end
            # of fit (and every ema_overwrite_frequency steps); an average of
            # a group that died is small, never zero.
            raise ValueError(
                f"{owner}: use_ema=True with penalties is not supported: at the end of fit Keras "
                "replaces the weights with their moving averages, which the prox does not act on, "
                "so no neuron would stay exactly zero and compact() would remove none. Train "
                "without use_ema."
            )
        self.reset_momentum = bool(reset_momentum)
        self._proximal = _ProximalState(saved_groups=resolved_groups)

    def bind(self, model):
        """Tell the optimizer which model it trains.

        Rarely needed: `fit`, `train_on_batch` and `load_model` find the model
        themselves. Call it before the first `apply` of a custom training loop
        when the variables you pass are not exactly `model.trainable_variables`.
        """
        if not isinstance(model, keras.Model):
            raise TypeError(f"{type(self).__name__}.bind: expected a keras.Model, got {model!r}.")
        if self.built and self.penalties and self._proximal.model not in (None, model):
            raise ValueError(
                f"{type(self).__name__} is already built for model "
                f"'{self._proximal.model.name}'; use a new optimizer for '{model.name}'."
            )
        self._proximal.model = model
        return self

    def add_variable_from_reference(self, reference_variable, name=None, initializer="zeros"):
        slot = super().add_variable_from_reference(reference_variable, name=name, initializer=initializer)
        if (name or "") not in _NOT_SLOTS:
            self._proximal.slots.setdefault(id(reference_variable), []).append(slot)
        return slot

    # -- build: which groups ----------------------------------------------------

    def build(self, variables):
        if self.built:
            return
        # Resolve first: a failure leaves the optimizer unbuilt, so that a
        # retry after `bind(model)` resolves again instead of silently
        # training without penalties.
        entries = self._resolve_entries(variables) if self.penalties else []
        super().build(variables)
        state = self._proximal
        state.strengths = [
            self.add_variable(
                shape=(),
                initializer=keras.initializers.Constant(penalty.strength),
                dtype="float32",
                name=f"penalty_strength_{index}",
            )
            for index, penalty in enumerate(self.penalties)
        ]
        for entry in entries:
            entry.slots = [state.slots.get(id(m.variable), []) for m in entry.target.members]
            if entry.target.neuron_groups:
                entry.mask = self.add_variable(
                    shape=(entry.target.num_neurons,),
                    initializer="ones",
                    dtype="float32",
                    # A sublayer's name is '<block>/<layer>'; a variable's may not hold '/'.
                    name=f"neuron_mask_{entry.target.layer_name.replace('/', '_')}",
                )
        state.entries = entries
        state.torch_batches = None
        state.variables = list(variables)

    def _resolve_entries(self, variables):
        state = self._proximal
        if state.model is None and state.saved_groups:
            entries = self._entries_from_saved(variables)
            if entries is not None:
                return entries
        if state.model is not None:
            return self._entries_for(state.model, variables)
        models = _models_owning(variables)
        if not models:
            raise ValueError(
                f"{type(self).__name__} has penalties but cannot tell which model it trains: "
                "no keras.Model has exactly these trainable variables. In a custom training "
                "loop, call `optimizer.bind(model)` before the first `optimizer.apply`."
            )
        candidates = [self._entries_for(model, variables) for model in models]
        if any(_signature(c) != _signature(candidates[0]) for c in candidates[1:]):
            raise ValueError(
                f"{type(self).__name__}: models {[m.name for m in models]} share these variables "
                "but differ in their graphs: call `optimizer.bind(model)` with the one you train."
            )
        state.model = models[0]
        return candidates[0]

    def _entries_for(self, model, variables):
        return [
            _Entry(index, target)
            for index, penalty in enumerate(self.penalties)
            for target in penalty.resolve(model, trainable=variables)
        ]

    def _entries_from_saved(self, variables):
        """Entries rebuilt from `resolved_groups`, or None if they do not fit `variables`."""
        entries = []
        for group in self._proximal.saved_groups:
            members = []
            for index, path, pre, n, post in group["members"]:
                if index >= len(variables):
                    return None
                variable = variables[index]
                # A loaded model's paths may lose an outer scope ('sequential/'):
                # the layer and variable names must agree, and the size.
                same_name = variable.path.split("/")[-2:] == path.split("/")[-2:]
                if not same_name or int(np.prod(variable.shape)) != pre * n * post:
                    return None
                members.append(Member(variable, pre, n, post))
            weights = group["group_weights"]
            target = penalties_lib.Target(
                group["layer"],
                members,
                None if weights is None else np.asarray(weights, dtype="float32"),
                group["neuron_groups"],
                group.get("unit", "neurons"),
            )
            entries.append(_Entry(group["penalty"], target))
        return entries

    def _resolved_groups(self):
        positions = {id(v): i for i, v in enumerate(self._proximal.variables)}
        return [
            {
                "penalty": entry.penalty_index,
                "layer": entry.target.layer_name,
                "members": [
                    [positions[id(m.variable)], m.variable.path, m.pre, m.n, m.post]
                    for m in entry.target.members
                ],
                "group_weights": None
                if entry.target.group_weights is None
                else np.asarray(entry.target.group_weights).tolist(),
                "neuron_groups": entry.target.neuron_groups,
                "unit": entry.target.unit,
            }
            for entry in self._proximal.entries
        ]

    # -- what callbacks read and drive -------------------------------------------

    @property
    def proximal_targets(self):
        """[(penalty, Target)] this optimizer applies, once built."""
        return [(self.penalties[e.penalty_index], e.target) for e in self._proximal.entries]

    @property
    def strength_variables(self):
        """One float32 variable per penalty: the strength applied now (once built)."""
        return list(self._proximal.strengths)

    def set_strengths(self, values):
        """Set the strength of each penalty (a list, in `penalties` order); no retracing."""
        self._require_built("set_strengths")
        values = [penalties_lib.check_strength(f"{type(self).__name__}.set_strengths", v) for v in values]
        if len(values) != len(self.penalties):
            raise ValueError(
                f"{type(self).__name__}.set_strengths: {len(values)} values for "
                f"{len(self.penalties)} penalties."
            )
        for variable, value in zip(self._proximal.strengths, values):
            variable.assign(value)

    def freeze_dead_neurons(self):
        """Pin every neuron whose group is zero now: it stays zero from here on.

        With the strength then lowered, the network keeps training its live
        neurons without the dead ones coming back (a tanh or a BatchNorm shift
        would otherwise revive them).
        """
        self._require_built("freeze_dead_neurons")
        for entry in self._proximal.entries:
            if entry.mask is not None:
                alive = penalties_lib.live_neurons(entry.target)
                entry.mask.assign(alive.astype("float32") * self._mask_value(entry))

    def remove_neurons(self, layer_name, indices):
        """Zero neurons `indices` of `layer_name` in every group here, and pin them dead."""
        self._require_built("remove_neurons")
        indices = np.asarray(indices, dtype=np.int64)
        found = False
        for entry in self._proximal.entries:
            if entry.mask is None or entry.target.layer_name != layer_name:
                continue
            found = True
            keep = np.ones(entry.target.num_neurons, dtype="float32")
            keep[indices] = 0.0
            entry.mask.assign(keep * self._mask_value(entry))
            view = keep.reshape(1, -1, 1)
            for member, member_slots in zip(entry.target.members, entry.slots):
                for variable in [member.variable, *member_slots]:
                    value = keras.ops.convert_to_numpy(member.view(variable))
                    variable.assign(np.reshape(value * view, tuple(variable.shape)))
        if not found:
            raise ValueError(
                f"{type(self).__name__}.remove_neurons: no neuron group of layer '{layer_name}' "
                f"is penalized here; penalized layers: "
                f"{sorted({e.target.layer_name for e in self._proximal.entries})}."
            )

    def _mask_value(self, entry):
        return np.asarray(keras.ops.convert_to_numpy(entry.mask), dtype="float32")

    def _require_built(self, what):
        if not self.built:
            raise ValueError(
                f"{type(self).__name__}.{what}: the optimizer is not built yet (it is built "
                "by the first training step, or by `optimizer.build(model.trainable_variables)`)."
            )

    # -- the backward step ---------------------------------------------------------

    def _after_update(self, learning_rate):
        if not self._proximal.entries:
            return
        if keras.backend.backend() == "tensorflow":
            adapter.cross_replica_call(self, self._distributed_proximal_step, learning_rate)
        elif keras.backend.backend() == "torch":
            self._torch_proximal_step(learning_rate)
        else:
            iterations = self._iterations_value()
            for entry in self._proximal.entries:
                self._proximal_step(
                    entry,
                    entry.target.variables,
                    entry.slots,
                    entry.mask,
                    self._proximal.strengths[entry.penalty_index],
                    learning_rate,
                    iterations,
                )

    def _torch_proximal_step(self, learning_rate):
        # Eager torch: the group-lasso targets of each penalty take their step
        # together (a few ops for all layers, not a few per layer); the
        # others, one by one as on the compiled backends.
        from keras_compact.optimizers import _torch_group_step

        state = self._proximal
        if state.torch_batches is None:
            state.torch_batches = _torch_group_step.batches(state.entries, self.penalties)
        iterations = self._iterations_value()
        if any(penalty.every > 1 for penalty in self.penalties):
            # Eager torch reads the step count back once a step, not once a target.
            iterations = int(keras.ops.convert_to_numpy(iterations))
        for item in state.torch_batches:
            if isinstance(item, _torch_group_step.GroupBatch):
                index = item.entries[0].penalty_index
                penalty, strength = self.penalties[index], state.strengths[index]
                threshold = self._threshold(learning_rate, strength, penalty, "float32")
                _torch_group_step.group_step(item, threshold, self.reset_momentum)
                continue
            self._proximal_step(
                item,
                item.target.variables,
                item.slots,
                item.mask,
                state.strengths[item.penalty_index],
                learning_rate,
                iterations,
            )

    @staticmethod
    def _threshold(learning_rate, strength, penalty, dtype):
        # A negative step (a schedule gone below zero) must not turn the
        # threshold negative: that would divide zero norms by zero.
        step = keras.ops.maximum(keras.ops.cast(learning_rate, dtype), 0.0)
        return step * keras.ops.cast(strength, dtype) * penalty.every

    def _iterations_value(self):
        # With `gradient_accumulation_steps`, Keras's `iterations` is a tensor
        # (a floor division of an internal counter), not a variable.
        iterations = self.iterations
        return iterations.value if isinstance(iterations, keras.Variable) else iterations

    def _distributed_proximal_step(self, distribution, learning_rate):
        # `extended.update` runs the function once per replica, on that
        # replica's component of the first variable and (select_replica) of
        # every other variable passed in `args`.
        iterations = self._iterations_value()
        for entry in self._proximal.entries:
            variables = [v.value for v in entry.target.variables]
            slots = [[s.value for s in member_slots] for member_slots in entry.slots]
            mask = None if entry.mask is None else entry.mask.value
            strength = self._proximal.strengths[entry.penalty_index].value

            def step(first, rest, slots, mask, strength, learning_rate, iterations, entry=entry):
                self._proximal_step(
                    entry, [first, *rest], slots, mask, strength, learning_rate, iterations
                )

            distribution.extended.update(
                variables[0],
                step,
                args=(variables[1:], slots, mask, strength, learning_rate, iterations),
                group=False,
            )

    def _proximal_step(self, entry, variables, slots, mask, strength, learning_rate, iterations):
        """The prox of one penalty on one target (on one replica's variables)."""
        penalty = self.penalties[entry.penalty_index]
        members = entry.target.members
        dtype = variables[0].dtype
        every = penalty.every
        threshold = self._threshold(learning_rate, strength, penalty, dtype)
        blocks = [m.view(v) for m, v in zip(members, variables)]
        if getattr(penalty, "group_factors", None) is not None:
            # A prox that scales whole groups (GroupLasso): the pinned mask
            # folds into its factors, so each member takes one multiply and
            # one assign, and a group is left alive exactly where its factor
            # is positive (no second pass over the weights for its norm).
            factors = penalty.group_factors(blocks, threshold, entry.target)
            if mask is not None:
                factors = factors * keras.ops.cast(mask, dtype)
            scale = keras.ops.reshape(factors, (1, -1, 1))
            new_blocks = [keras.ops.multiply(block, scale) for block in blocks]
            self._assign_and_reset(entry, variables, slots, new_blocks, factors > 0)
            return
        if every > 1:
            if isinstance(iterations, int):  # torch: the step count read back once
                on_step = iterations % every == 0
            else:
                on_step = keras.ops.equal(iterations % every, 0)
            if mask is None and keras.backend.backend() != "jax":
                # Between two proxes the variables are left as they are, not
                # assigned their own values (a copy of each on TensorFlow).
                adapter.assign_if(
                    on_step,
                    lambda: self._assign_and_reset(
                        entry, variables, slots, penalty.prox(blocks, threshold, entry.target)
                    ),
                )
                return
            # Every `every` steps, a step `every` times as large: the same
            # shrinkage per step as every=1, for 1/every of the SVDs. The cond
            # returns values (no assignment inside), as JAX's tracing requires.
            new_blocks = keras.ops.cond(
                on_step, lambda: penalty.prox(blocks, threshold, entry.target), lambda: blocks
            )
        else:
            new_blocks = penalty.prox(blocks, threshold, entry.target)
        if mask is not None:
            pinned = keras.ops.reshape(keras.ops.cast(mask, dtype), (1, -1, 1))
            new_blocks = [block * pinned for block in new_blocks]
        self._assign_and_reset(entry, variables, slots, new_blocks)

    def _assign_and_reset(self, entry, variables, slots, new_blocks, alive=None):
        """Assign the new values; zero the optimizer slots of each group now zero.

        `alive` (n,), where known, says which groups are not zero; else their
        norms decide.
        """
        members = entry.target.members
        for member, variable, block in zip(members, variables, new_blocks):
            variable.assign(member.unview(block))
        if not (self.reset_momentum and entry.target.neuron_groups):
            return
        if alive is None:
            alive = prox.group_norms(new_blocks) > 0
        scale = keras.ops.reshape(keras.ops.cast(alive, variables[0].dtype), (1, -1, 1))

        def reset():
            for member, member_slots in zip(members, slots):
                for slot in member_slots:
                    slot.assign(member.unview(member.view(slot) * scale))

        if keras.backend.backend() == "tensorflow":
            # Most steps zero no group: then the slots are not copied.
            adapter.assign_if(keras.ops.logical_not(keras.ops.all(alive)), reset)
        else:
            # JAX cannot assign in a branch, and on torch reading the
            # condition back would cost a GPU step more than the copy.
            reset()

    def get_config(self):
        config = super().get_config()
        config["penalties"] = [keras.saving.serialize_keras_object(p) for p in self.penalties]
        config["reset_momentum"] = self.reset_momentum
        if self.built and self._proximal.entries:
            config["resolved_groups"] = self._resolved_groups()
        return config
