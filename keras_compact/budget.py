"""Budgets, not strengths: a callback that trains a model down to a requested size.

    model.compile(optimizer=keras_compact.ProxSGD(0.01, 0.9, penalties=[keras_compact.GroupLasso(1e-4)]), ...)
    model.fit(x, y, epochs=10, callbacks=[keras_compact.BudgetController(params=0.1)])
    small, report = keras_compact.compact(model)      # at most 10% of the parameters

How it works, over the `fit` it is given:

1. **Sparsify** (up to `reach_by` of the training steps). Every `check_every`
   steps it projects what `compact` would keep (`projected_size`: the same
   channel analysis, coupling and `channel_multiple`) and moves every
   penalty's strength by a factor `growth`: up while the projection is above
   a path that falls geometrically from the dense size to the budget by
   `reach_by` and no neuron died since the last check, down while it is
   below. Neurons die in bursts: when a check finds the projection under 0.9
   of the budget, the weights go back to the previous check's and it lands
   from there. It starts where shrinkage alone
   would take a tenth of the median neuron's norm by `reach_by`; the
   penalties' own strengths give the ratios between penalties.
2. **Land**, as soon as the projection is within `landing_margin` of the
   budget or `reach_by` of training has passed: the weakest coupled groups
   of neurons (by the l2 norm of all their weights, the group lasso's own
   measure; a channel summed by a residual Add goes with every neuron that
   makes it) are zeroed until the projection is at or under the budget, the
   dead neurons are pinned (`ProximalMixin.freeze_dead_neurons`), and the
   strength goes to 0.
3. **Recover**: the rest of training fine-tunes the live neurons; the
   pinned ones cannot come back, so the size stays where it landed.

The promise: when `fit` ends, `compact(model, channel_multiple=...)` is at
or under the budget. If training ends before the landing (too few steps), the
landing happens in `on_train_end`, with no steps left to recover: the result
meets the budget, and `landed_at_end` in the log says to fine-tune it
(`keras-compact compress` always fine-tunes after compaction).

Progress goes into `logs` each epoch (so the progress bar, `History` and
`TensorBoard` show it): `budget/strength` (the first penalty's), and
`budget/params` and `budget/macs` as fractions of the dense model, as projected
at the last check (after the landing, the final size).
"""

import math

import keras
import numpy as np

from keras_compact import graph as graph_lib
from keras_compact import penalties as penalties_lib
from keras_compact.compaction import projected_size
from keras_compact.compaction.channels import WeightCache, analyze
from keras_compact.compaction.expand import expand_model
from keras_compact.compaction.report import layers_of_unknown_macs, multiply_adds
from keras_compact.optimizers.proximal import proximal_optimizer_of
from keras_compact.registry import has_neurons

# Removed groups the landing tries to put back (one projection each).
_REFINE = 16
# A projection under this fraction of the budget at a check is an overshoot.
_OVERSHOOT = 0.9


def check_budget(name, value, owner="BudgetController"):
    """A budget as a float: a fraction in (0, 1], or a whole count > 1; else a clear error."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{owner}: {name} must be a fraction in (0, 1] or a count > 1, got {value!r}.")
    value = float(value)
    if not math.isfinite(value) or value <= 0 or (value > 1 and value != int(value)):
        raise ValueError(
            f"{owner}: {name}={value:g} is not a budget: give a fraction of the dense model in "
            "(0, 1] (0.1 keeps at most 10%) or a whole number of them (> 1)."
        )
    return value


@keras.saving.register_keras_serializable(package="keras_compact")
class BudgetController(keras.callbacks.Callback):
    """Drives the penalties' strength during `fit` so that `compact` meets a budget.

    Args:
        params: the parameter budget: a fraction of the dense model in (0, 1]
            (0.1 keeps at most 10%), or an absolute count (> 1).
        macs: the multiply-add budget per sample, the same way. `params` and
            `macs` may be given together; both are met.
        channel_multiple: as `compact`'s; give the same value to both.
        open_dim_size: the size each dimension the model leaves open (None in
            an input shape, such as a transformer's sequence length) stands
            for when MACs are counted. A `macs` budget on a model whose
            multiply-adds depend on such a dimension needs it.
        reach_by: fraction of the training steps by which the budget is
            reached (the rest recovers accuracy), in (0, 1].
        check_every: steps between projections; None: four times an epoch.
        growth: factor by which the strength moves at a check (> 1).
        landing_margin: land once the projection is within this fraction
            above the budget (>= 0).
        verbose: print one line when it lands.
    """

    def __init__(
        self,
        params=None,
        macs=None,
        channel_multiple=1,
        open_dim_size=None,
        reach_by=0.6,
        check_every=None,
        growth=1.5,
        landing_margin=0.25,
        verbose=1,
    ):
        super().__init__()
        self.params_budget = check_budget("params", params)
        self.macs_budget = check_budget("macs", macs)
        if self.params_budget is None and self.macs_budget is None:
            raise ValueError("BudgetController: give params=, macs= or both (a fraction or a count).")
        if not 0 < reach_by <= 1:
            raise ValueError(f"BudgetController: reach_by must be in (0, 1], got {reach_by}.")
        if check_every is not None and (int(check_every) != check_every or check_every < 1):
            raise ValueError(f"BudgetController: check_every must be an integer >= 1 or None, got {check_every!r}.")
        if not growth > 1:
            raise ValueError(f"BudgetController: growth must be > 1, got {growth}.")
        if not landing_margin >= 0:
            raise ValueError(f"BudgetController: landing_margin must be >= 0, got {landing_margin}.")
        self.channel_multiple = int(channel_multiple)
        self.open_dim_size = graph_lib.check_open_dim_size(open_dim_size, "BudgetController")
        self.reach_by = float(reach_by)
        self.check_every = check_every
        self.growth = float(growth)
        self.landing_margin = float(landing_margin)
        self.verbose = verbose
        self.landed = False
        self.landed_at_end = False
        self.history = []  # (step, strength, params, macs) at each check

    # -- sizes ----------------------------------------------------------------------------

    def _targets(self):
        """(params target, macs target) as absolute counts, None where not asked."""
        def absolute(budget, dense):
            if budget is None:
                return None
            return budget * dense if budget <= 1 else budget

        return absolute(self.params_budget, self._dense[0]), absolute(self.macs_budget, self._dense[1])

    def _excess(self, size):
        """max over the budgets of size / target: <= 1 means the budget is met."""
        ratios = [s / t for s, t in zip(size, self._targets()) if t is not None]
        return max(ratios)

    def _project(self):
        return projected_size(
            self.model, channel_multiple=self.channel_multiple, open_dim_size=self.open_dim_size
        )

    # -- Keras hooks ----------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        optimizer = proximal_optimizer_of(self.model)
        if optimizer is None or not optimizer.penalties:
            raise ValueError(
                "BudgetController drives the penalties of a keras_compact proximal optimizer: "
                "compile the model with optimizer=keras_compact.ProxSGD(..., penalties=[GroupLasso(...)])."
            )
        if not any(isinstance(p, penalties_lib.NeuronPenalty) for p in optimizer.penalties):
            raise ValueError(
                "BudgetController needs a penalty on neurons (GroupLasso, L1, SparseGroupLasso): "
                "TensorLowRank alone removes no neuron."
            )
        self._optimizer = optimizer
        if not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self._dense = self._dense_size()
        steps = (self.params or {}).get("steps") or 100
        self._total_steps = max(1, steps * (self.params or {}).get("epochs", 1))
        self._check_every = int(self.check_every or max(1, steps // 4))
        self._last_size, self._quiet = None, 0
        # The optimizer's counter, not the callback's: BackupAndRestore restores it.
        self._step = int(keras.ops.convert_to_numpy(optimizer.iterations))
        strengths = [self._strength(v) for v in optimizer.strength_variables]
        if self._step and not any(strengths):
            self.landed = True  # a resumed run that had landed: strengths 0, neurons pinned
        minimum = self._minimum_size()
        if self._excess(minimum) > 1:
            raise ValueError(
                f"BudgetController: the budget (params {self._targets()[0]}, macs "
                f"{self._targets()[1]}) is below what compact can reach on this model, "
                f"{minimum[0]:,} parameters and {minimum[1]:,} MACs with every penalized "
                "neuron removed: output layers, barriers and unpenalized layers keep the rest. "
                "Ask for a larger budget, or penalize more layers."
            )
        if not self.landed and not self._step:
            optimizer.set_strengths(self._starting_strengths(strengths))
        self._size = self._project()  # what the logs report until the next check
        # A first check that finds a burst rolls back to these weights.
        self._snapshot = None if self.landed else self.model.get_weights()

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self.landed or self._step % self._check_every:
            return
        size = self._size = self._project()
        self.history.append((self._step, self._strength(), *size))
        progress = min(1.0, self._step / (self.reach_by * self._total_steps))
        if self._excess(size) < _OVERSHOOT and self._snapshot is not None:
            # Too many died since the last check (neurons die in bursts): go
            # back to the weights of that check and land from there.
            self.model.set_weights(self._snapshot)
            self._land()
            return
        if self._excess(size) <= 1 + self.landing_margin or progress >= 1:
            self._land()
            return
        # The path falls geometrically from the dense size to the budget. Above
        # it, the strength rises, but only while nothing is dying: neurons take
        # a while to shrink to zero, and raising it meanwhile winds it up.
        path = (1 / self._excess(self._dense)) ** progress
        above = self._excess(size) / self._excess(self._dense) > path
        dying = self._last_size is not None and self._excess(size) < self._excess(self._last_size)
        # Quiet checks in a row (above the path, nothing dying) speed the rise up,
        # up to growth**4 a check: a short run must reach the killing strength in
        # time; a burst it causes is rolled back.
        self._quiet = self._quiet + 1 if above and not dying else 0
        factor = 1 / self.growth if not above else (1.0 if dying else self.growth ** min(self._quiet, 4))
        self._optimizer.set_strengths([self._strength(v) * factor for v in self._optimizer.strength_variables])
        self._last_size = size
        self._snapshot = self.model.get_weights()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        params, macs = self._size  # the last check's (or the landing's) projection
        logs["budget/strength"] = self._strength()
        logs["budget/params"] = params / self._dense[0]
        logs["budget/macs"] = macs / self._dense[1] if self._dense[1] else 0.0

    def on_train_end(self, logs=None):
        if not self.landed:
            self._land()
            self.landed_at_end = True
            if self.verbose:
                print(
                    "BudgetController: training ended before the budget was reached; the weakest "
                    "neurons were removed at the end. Fine-tune the compact model (keras-compact "
                    "compress does), or train longer."
                )

    def _starting_strengths(self, strengths):
        """The penalties' strengths scaled so that shrinkage alone would zero a tenth of
        the median group's norm by `reach_by`: small enough to let the data decide which
        neurons die, large enough that the path is followed from the first checks.
        The penalties' own strengths give the ratios between them."""
        # A weighted group's threshold is strength * its weight (sqrt of its size).
        norms = np.concatenate(
            [
                np.sqrt(_group_squares(t)) / (1.0 if t.group_weights is None else np.asarray(t.group_weights))
                for _, t in self._optimizer.proximal_targets
                if t.neuron_groups
            ]
        )
        learning_rate = float(keras.ops.convert_to_numpy(self._optimizer.learning_rate))
        start = 0.1 * float(np.median(norms)) / max(learning_rate * self.reach_by * self._total_steps, 1e-12)
        ratios = np.asarray(strengths) if any(strengths) else np.ones(len(strengths))
        return (ratios / ratios.max() * start).tolist()

    # -- landing --------------------------------------------------------------------------

    def _strength(self, variable=None):
        variable = variable if variable is not None else self._optimizer.strength_variables[0]
        return float(keras.ops.convert_to_numpy(variable))

    def _land(self):
        optimizer = self._optimizer
        candidates = self._removal_order()
        if self._excess(self._project()) > 1:
            removed = self._fit_to_budget(candidates)
            for layer_name, indices in _by_layer(removed).items():
                optimizer.remove_neurons(layer_name, indices)
        optimizer.freeze_dead_neurons()
        optimizer.set_strengths([0.0] * len(optimizer.penalties))
        self.landed = True
        self._snapshot = None  # a copy of every weight: not kept once it cannot be used
        params, macs = self._size = self._project()
        if self.verbose:
            print(
                f"BudgetController: landed at step {self._step}: {params:,} parameters "
                f"({params / self._dense[0]:.1%}), {macs:,} MACs ({macs / max(1, self._dense[1]):.1%}); "
                "dead neurons pinned, strength 0."
            )

    def _removal_order(self):
        """Coupled groups of live penalized neurons, and heads, weakest first: [[(layer, index), ...], ...]."""
        graph = graph_lib.build_graph(self.model)
        analysis = analyze(graph, WeightCache(), self.channel_multiple)
        structural = analysis.structural_roots()
        targets = {}
        for _, target in self._optimizer.proximal_targets:
            if target.neuron_groups:
                targets.setdefault(target.layer_name, target)
        members, norms, blocked = {}, {}, set(structural)
        seen = set()
        for call in graph.calls:
            layer = call.layer
            if not has_neurons(layer) or id(layer) in seen:
                continue
            seen.add(id(layer))
            roots = analysis.neuron_roots(layer)
            target = targets.get(layer.name)
            if target is None:
                blocked.update(roots.tolist())  # a neuron nothing may zero keeps its group alive
                continue
            relative = _relative_norms(target)
            for index, root in enumerate(roots.tolist()):
                members.setdefault(root, []).append((layer.name, index))
                # A coupled group is as strong as its strongest member.
                norms[root] = max(norms.get(root, 0.0), relative[index])
        # Attention heads (HeadLasso) are coupled to nothing: each head is its own group. So is
        # each neuron of a layer inside a block (a keras-hub FFN Dense, reached as "block/layer"):
        # the graph does not see its coupling, and the projection (on the expanded block) says
        # what zeroing it removes.
        in_graph = {call.layer.name for call in graph.calls}
        for name, target in targets.items():
            if target.unit == "heads" or name not in in_graph:
                relative = _relative_norms(target)
                for index in range(target.num_neurons):
                    members[(name, index)] = [(name, index)]
                    norms[(name, index)] = relative[index]
        order = sorted((root for root in members if root not in blocked and norms[root] > 0), key=norms.get)
        return [members[root] for root in order]

    def _fit_to_budget(self, candidates):
        """Weakest groups to remove so that the projection meets the budget, and not by much.

        The fewest weakest groups that meet it (a binary search on real
        projections), then, strongest first among the last `_REFINE` of
        them, each group is put back if the budget still holds: one removal
        can take a conv channel's whole fan-out, far more than is needed.
        """
        lowest, highest = 0, len(candidates)
        while lowest < highest:
            middle = (lowest + highest) // 2
            if self._excess(self._size_without(candidates[:middle])) <= 1:
                highest = middle
            else:
                lowest = middle + 1
        removed = list(candidates[:lowest])
        for group in list(reversed(removed))[:_REFINE]:
            trial = [g for g in removed if g is not group]
            if self._excess(self._size_without(trial)) <= 1:
                removed = trial
        return removed

    def _size_without(self, groups):
        """Projected size with `groups` zeroed; the weights are put back."""
        saved = []
        by_layer = _by_layer(groups)
        for layer_name, indices in by_layer.items():
            for member in _neuron_members(self._optimizer, layer_name):
                original = keras.ops.convert_to_numpy(member.variable).copy()
                saved.append((member.variable, original))
                view = original.reshape(member.pre, member.n, member.post).copy()
                view[:, indices, :] = 0
                member.variable.assign(view.reshape(original.shape))
        try:
            return self._project()
        finally:
            for variable, original in saved:
                variable.assign(original)

    def get_config(self):
        return {
            "params": self.params_budget,
            "macs": self.macs_budget,
            "channel_multiple": self.channel_multiple,
            "open_dim_size": self.open_dim_size,
            "reach_by": self.reach_by,
            "check_every": self.check_every,
            "growth": self.growth,
            "landing_margin": self.landing_margin,
            "verbose": self.verbose,
        }

    def _minimum_size(self):
        """The projection with every penalized neuron zeroed: the smallest compact can reach."""
        return self._size_without(self._removal_order())


    def _dense_size(self):
        """(parameters, MACs) of the model with no channel removed: the budget's 100%.

        MACs are counted as the projection counts them, on the model with its
        blocks expanded (a keras-hub transformer layer's own entry counts none).
        """
        expanded = expand_model(self.model)[0]
        if self.macs_budget is not None:
            unknown = layers_of_unknown_macs(graph_lib.build_graph_at(expanded, self.open_dim_size))
            if unknown:
                shapes = {tensor.name: tuple(tensor.shape) for tensor in self.model.inputs}
                raise ValueError(
                    f"BudgetController: a macs budget needs every layer's multiply-adds, and those of "
                    f"{unknown[:5]}{' and more' if len(unknown) > 5 else ''} depend on a dimension "
                    f"model '{self.model.name}' leaves open (its inputs: {shapes}). Pass "
                    "open_dim_size=N (--open-dim-size N on the command line), the sequence length "
                    "(or size) to count them at, or give a params budget instead."
                )
        return int(self.model.count_params()), int(multiply_adds(expanded, self.open_dim_size))


def _relative_norms(target):
    """Each group's norm relative to the median live group of its layer.

    Layers differ in scale (a wide layer's weights are small), and an
    absolute ranking empties whole layers of an untrained-looking net.
    """
    norms = np.sqrt(_group_squares(target))
    live = norms[norms > 0]
    return norms / (float(np.median(live)) if live.size else 1.0)


def _group_squares(target):
    """Squared l2 norm of each neuron's whole group in `target`."""
    total = np.zeros(target.num_neurons)
    for member in target.members:
        value = keras.ops.convert_to_numpy(member.variable).reshape(member.pre, member.n, member.post)
        total += np.square(value.astype("float64")).sum(axis=(0, 2))
    return total


def _by_layer(groups):
    result = {}
    for group in groups:
        for layer_name, index in group:
            result.setdefault(layer_name, []).append(index)
    return result


def _neuron_members(optimizer, layer_name):
    """Each variable (as a `Member`) of the neuron groups of `layer_name`, once each."""
    found, seen = [], set()
    for _, target in optimizer.proximal_targets:
        if target.layer_name != layer_name or not target.neuron_groups:
            continue
        for member in target.members:
            if id(member.variable) not in seen:
                seen.add(id(member.variable))
                found.append(member)
    return found
