"""Sparse penalties on neurons: which neurons, how strong, serializable.

A penalty names layers; `resolve` turns it, for one model, into `Target`s:
the groups of variables whose proximal step the optimizer takes. The group of
neuron j of a layer is its kernel slice, its bias[j] (``include_bias``), and
the gamma[j] and beta[j] of each BatchNormalization that directly follows the
layer: with all of them zero, channel j outputs exactly 0 whatever the batch
statistics (../shared/PAPER.md).
"""

import dataclasses
import math
import re

import keras
import numpy as np

from keras_compact import graph as graph_lib
from keras_compact import prox
from keras_compact.registry import Member, channel_axis, has_neurons, is_registered, spec_for


@dataclasses.dataclass(eq=False)
class Target:
    """The variables one penalty acts on in one layer, and its group weights."""

    layer_name: str
    members: list  # registry.Member: the first is the kernel
    group_weights: object = None  # np.ndarray (n,) or None
    neuron_groups: bool = True  # False for penalties without neuron structure
    unit: str = "neurons"  # what a group is: "neurons" or (HeadLasso) "heads"

    @property
    def num_neurons(self):
        return self.members[0].n

    @property
    def variables(self):
        return [m.variable for m in self.members]


def _follows_as_batchnorm(call, use_call, graph):
    """Whether `use_call` is a BatchNormalization over the channel axis of `call`."""
    layer = use_call.layer
    if not isinstance(layer, keras.layers.BatchNormalization):
        return False
    rank = len(graph.tensors[call.outputs[0]].shape)
    axis = layer.axis if layer.axis >= 0 else layer.axis + rank
    return axis == channel_axis(call.layer, rank)


@dataclasses.dataclass(eq=False)
class InnerCall:
    """A layer inside a block (`LayerSpec.sublayers`): penalized, though not itself a call of the graph."""

    layer: keras.layers.Layer
    name: str  # "<block>/<layer>"
    outputs: tuple = ()  # no graph tensors: nothing follows it as a BatchNormalization


def layer_calls(graph):
    """Every call of `graph`, each followed by the layers inside it that penalties may act on."""

    def with_inner(call):
        yield call
        for sublayer in spec_for(call.layer).sublayers(call.layer):
            yield from with_inner(InnerCall(sublayer, f"{call.name}/{sublayer.name}"))

    for call in graph.calls:
        yield from with_inner(call)


def output_layers(graph):
    """Neuron layers whose channels reach a model output without another neuron layer."""
    found, stack, seen = set(), list(graph.outputs), set()
    while stack:
        key = stack.pop()
        if key in seen or key not in graph.producer:
            continue
        seen.add(key)
        call, _ = graph.producer[key]
        if has_neurons(call.layer):
            found.add(id(call.layer))
        else:
            stack.extend(call.inputs)
    return found


def check_strength(owner, strength):
    """`strength` as a float, or a ValueError that names it and says what is wrong."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float, np.floating, np.integer)):
        raise TypeError(
            f"{owner}: strength must be a number >= 0 (e.g. 1e-4), got {strength!r} "
            f"({type(strength).__name__})."
        )
    strength = float(strength)
    if not math.isfinite(strength) or strength < 0:
        raise ValueError(f"{owner}: strength must be finite and >= 0, got {strength}.")
    return strength


class Penalty:
    """Base class: a strength and a selection of layers.

    Subclasses define `acts_on` (the layers they can act on), `_target` (the
    variables of one layer they act on) and `prox`; `every` > 1 makes the
    optimizer apply the prox every `every` steps, with `every` times the step.

    Args:
        strength: lambda >= 0, finite: the initial strength. The optimizer
            keeps the strength it applies as a variable, which a callback
            (`BudgetController`) may change during training.
        layers: a regex searched in layer names, or a list of layer names.
            None selects every hidden layer with neurons (Dense, Conv1D/2D/3D
            and their transposes, DepthwiseConv, SeparableConv, and any layer
            registered with neurons). A layer whose channels are a model
            output is selected only when a list names it.
    """

    every = 1
    # Whether a layer whose channels are a model output is left out unless
    # named (its neurons are the model's outputs); heads are never outputs.
    outputs_excluded = True

    def __init__(self, strength, layers=None):
        owner = type(self).__name__
        strength = check_strength(owner, strength)
        if isinstance(layers, str):
            try:
                re.compile(layers)
            except re.error as error:
                raise ValueError(f"{owner}: layers={layers!r} is not a valid regex: {error}") from None
        elif layers is not None:
            if not isinstance(layers, (list, tuple)) or not all(isinstance(n, str) for n in layers):
                raise TypeError(
                    f"{owner}: layers must be None, a regex string or a list of layer "
                    f"names, got {layers!r}."
                )
            if not layers:
                raise ValueError(f"{owner}: layers=[] names no layer; pass None to select every layer.")
            layers = list(layers)
        self.strength = strength
        self.layers = layers

    def acts_on(self, layer):
        """Whether this penalty can act on `layer` (its registry entry has neurons)."""
        return has_neurons(layer)

    def first_variable(self, layer):
        """The variable whose being frozen means the layer is left alone."""
        return spec_for(layer).neurons(layer).variable

    def select(self, graphs):
        """[(graph, call)] this penalty acts on, in graph order, one per layer.

        Raises ValueError when the selection is empty: a penalty that acts on
        nothing would make the optimizer plain SGD without a word.
        """
        owner = type(self).__name__
        candidates, seen, outputs = [], set(), set()
        for graph in graphs:
            if self.outputs_excluded:
                outputs |= output_layers(graph)
            for call in layer_calls(graph):
                if self.acts_on(call.layer) and id(call.layer) not in seen:
                    seen.add(id(call.layer))
                    candidates.append((graph, call))
        hidden = [(g, c) for g, c in candidates if id(c.layer) not in outputs]
        if self.layers is None:
            chosen = hidden
        elif isinstance(self.layers, str):
            chosen = [(g, c) for g, c in hidden if re.search(self.layers, c.name)]
        else:
            names = {c.name for _, c in candidates}
            missing = [name for name in self.layers if name not in names]
            if missing:
                raise ValueError(
                    f"{owner}: no layer it can act on is named {missing}. "
                    f"Layers it can act on: {sorted(names)}."
                )
            chosen = [(g, c) for g, c in candidates if c.name in self.layers]
        if not chosen:
            unknown = sorted(
                {
                    f"{c.name} ({type(c.layer).__name__})"
                    for graph in graphs
                    for c in layer_calls(graph)
                    if not is_registered(c.layer)
                }
            )
            raise ValueError(
                f"{owner}(layers={self.layers!r}) selects no layer, so it would do nothing. "
                f"Hidden layers it can act on: {[c.name for _, c in hidden]}; output layers "
                f"(only when listed by name): {[c.name for _, c in candidates if id(c.layer) in outputs]}."
                + (
                    f" Layers unknown to keras-compact: {unknown}: teach it a custom layer "
                    "with keras_compact.register_layer (README, 'Your own layers')."
                    if unknown
                    else ""
                )
            )
        return chosen

    def resolve(self, model, trainable=None):
        """The `Target`s of this penalty in `model`.

        Args:
            model: a built Sequential or Functional model, or a subclassed
                model whose Sequential/Functional parts are then penalized
                (`graph.functional_parts`).
            trainable: optional collection of the variables being optimized;
                a variable outside it (a frozen BatchNormalization, say) is left
                out of every group, and a layer whose kernel is outside it (a
                frozen layer) is skipped, or refused when a list names it.
        """
        graphs = [graph_lib.build_graph(part) for part in graph_lib.functional_parts(model)]
        chosen = self.select(graphs)
        if trainable is not None:
            trainable_ids = {id(v) for v in trainable}
            frozen = [
                c.name
                for _, c in chosen
                if id(self.first_variable(c.layer)) not in trainable_ids
            ]
            if frozen and (isinstance(self.layers, list) or len(frozen) == len(chosen)):
                raise ValueError(
                    f"{type(self).__name__}: layers {frozen} are frozen (not trainable): "
                    "the optimizer must not change them. Leave them out of `layers`, or "
                    "make them trainable."
                )
            chosen = [(g, c) for g, c in chosen if c.name not in frozen]
        return [self._target(call, graph, trainable) for graph, call in chosen]

    def _target(self, call, graph, trainable):
        raise NotImplementedError

    def prox(self, blocks, threshold, target):
        """New values of a target's blocks after the prox with step `threshold`."""
        raise NotImplementedError

    def get_config(self):
        return {"strength": self.strength, "layers": self.layers}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _size_weights(members):
    """w_j = sqrt(group size) for every group of `members` (Yuan and Lin's group lasso)."""
    group_size = sum(m.pre * m.post for m in members)
    return np.full((members[0].n,), math.sqrt(group_size), dtype="float32")


class NeuronPenalty(Penalty):
    """A penalty on neuron groups (kernel slice, bias, following BatchNorm)."""

    def __init__(self, strength, layers=None, include_bias=True, weighted=False):
        super().__init__(strength, layers)
        self.include_bias = bool(include_bias)
        self.weighted = bool(weighted)

    def _target(self, call, graph, trainable):
        trainable_ids = None if trainable is None else {id(v) for v in trainable}

        def usable(variable):
            return variable is not None and (trainable_ids is None or id(variable) in trainable_ids)

        kernel = spec_for(call.layer).neurons(call.layer)  # trainable: `resolve` skips frozen layers
        n = kernel.n
        extras = []
        if self.include_bias:
            extras.append(getattr(call.layer, "bias", None))
        for use_call, _ in graph.consumers_of(call):
            if _follows_as_batchnorm(call, use_call, graph):
                extras.extend([use_call.layer.gamma, use_call.layer.beta])
        members = [kernel] + [Member(v, 1, n, 1) for v in extras if usable(v)]
        return Target(call.name, members, _size_weights(members) if self.weighted else None)

    def get_config(self):
        config = super().get_config()
        config.update(include_bias=self.include_bias, weighted=self.weighted)
        return config


@keras.saving.register_keras_serializable(package="keras_compact")
class GroupLasso(NeuronPenalty):
    """Group lasso on neurons: ``strength * sum_j w_j * ||group_j||_2``.

    Drives whole neurons to exactly zero (block soft-threshold). ``weighted``
    sets w_j = sqrt(group size) (Yuan and Lin); unweighted (w_j = 1) is the
    paper's l2,1 norm.
    """

    def prox(self, blocks, threshold, target):
        return prox.group_soft_threshold(blocks, threshold, target.group_weights)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # The optimizer takes the step through `group_factors` when there is
        # one; a subclass that redefines `prox` alone must be applied through it.
        if "prox" in cls.__dict__ and "group_factors" not in cls.__dict__:
            cls.group_factors = None

    def group_factors(self, blocks, threshold, target):
        """The prox as one factor per group (n,): `prox` is `blocks * factors`."""
        return prox.group_soft_threshold_factors(blocks, threshold, target.group_weights)


@keras.saving.register_keras_serializable(package="keras_compact")
class HeadLasso(GroupLasso):
    """Group lasso on attention heads: ``strength * sum_h w_h * ||head_h||_2``.

    The group of head h of a `keras.layers.MultiHeadAttention` is its query,
    key and value kernel slices and biases and the rows of the output
    projection that read it (`keras_compact.attention`); its prox is the
    block soft-threshold, so whole heads reach exactly zero and `compact`
    removes them (fewer heads, each of the same size). Layers with heads are
    any whose registry entry has `heads` (keras-hub's attention layers, once
    `keras_compact.hub` registers them).

    Args:
        strength: lambda >= 0.
        layers: a regex or a list of layer names; None selects every layer
            with heads (model outputs included: heads are never outputs).
        weighted: w_h = sqrt(group size) (Yuan and Lin) instead of 1.
    """

    outputs_excluded = False

    def __init__(self, strength, layers=None, weighted=False):
        super().__init__(strength, layers, include_bias=True, weighted=weighted)

    def acts_on(self, layer):
        """Layers whose registry entry has attention heads."""
        return spec_for(layer).heads(layer) is not None

    def first_variable(self, layer):
        return spec_for(layer).heads(layer)[0].variable

    def _target(self, call, graph, trainable):
        trainable_ids = None if trainable is None else {id(v) for v in trainable}
        members = [
            m
            for m in spec_for(call.layer).heads(call.layer)
            if trainable_ids is None or id(m.variable) in trainable_ids
        ]
        weights = _size_weights(members) if self.weighted else None
        return Target(call.name, members, weights, unit="heads")

    def get_config(self):
        config = super().get_config()
        del config["include_bias"]
        return config


@keras.saving.register_keras_serializable(package="keras_compact")
class L1(NeuronPenalty):
    """Elementwise l1 on the neuron groups' variables: ``strength * ||w||_1``."""

    def __init__(self, strength, layers=None, include_bias=True):
        super().__init__(strength, layers, include_bias=include_bias, weighted=False)

    def prox(self, blocks, threshold, target):
        return [prox.soft_threshold(b, threshold) for b in blocks]

    def get_config(self):
        config = super().get_config()
        del config["weighted"]
        return config


@keras.saving.register_keras_serializable(package="keras_compact")
class SparseGroupLasso(NeuronPenalty):
    """Sparse group lasso: ``strength * (a*||w||_1 + (1-a) * sum_j w_j ||group_j||_2)``.

    Args:
        l1_ratio: a in [0, 1]; 0 is GroupLasso, 1 is L1.
    """

    def __init__(self, strength, l1_ratio=0.5, layers=None, include_bias=True, weighted=False):
        l1_ratio = float(l1_ratio)
        if not 0.0 <= l1_ratio <= 1.0:
            raise ValueError(f"SparseGroupLasso: l1_ratio must be in [0, 1], got {l1_ratio}.")
        super().__init__(strength, layers, include_bias=include_bias, weighted=weighted)
        self.l1_ratio = l1_ratio

    def prox(self, blocks, threshold, target):
        return prox.sparse_group_soft_threshold(
            blocks, threshold, self.l1_ratio, target.group_weights
        )

    def get_config(self):
        config = super().get_config()
        config["l1_ratio"] = self.l1_ratio
        return config


@keras.saving.register_keras_serializable(package="keras_compact")
class TensorLowRank(Penalty):
    """Low rank of each selected kernel, by singular value thresholding.

    For a Dense kernel W (in, out) the penalty is ``strength * ||W||_*`` and
    its prox, SVT, is exact. A conv kernel is a tensor: the sum of the nuclear
    norms of its unfoldings (Liu et al., PAMI 2013) has no closed-form prox,
    so `method` chooses the approximation:

    - "output" (default): SVT of the matricization (kh*kw*in, out), exact for
      the penalty ``||W_(out)||_*``. A kernel of rank r there factorizes into a
      kh x kw conv with r filters followed by a 1x1 conv (`keras_compact.compact`).
    - "spatial": SVT of (kh*in, kw*out) (2D convs only): low rank there gives
      the spatially separable split, a kh x 1 conv then a 1 x kw conv.
    - "average": the average, over every mode i, of SVT of the mode-i
      unfolding folded back (the usual approximation of the tensor penalty).

    Args:
        strength: lambda >= 0.
        layers: as every penalty; by default every hidden Dense and Conv1D/2D/3D.
        every: apply the prox every `every` steps with a step `every` times as
            large (SVDs are costly).
        method: "output", "spatial" or "average".
    """

    methods = ("output", "spatial", "average")

    def __init__(self, strength, layers=None, every=1, method="output"):
        super().__init__(strength, layers)
        if int(every) != every or every < 1:
            raise ValueError(f"TensorLowRank: every must be an integer >= 1, got {every!r}.")
        if method not in self.methods:
            raise ValueError(f"TensorLowRank: method must be one of {self.methods}, got {method!r}.")
        self.every = int(every)
        self.method = method

    def acts_on(self, layer):
        """Layers whose registry entry allows low rank (Dense, Conv1D/2D/3D)."""
        return spec_for(layer).low_rank

    def _target(self, call, graph, trainable):
        kernel = call.layer.kernel
        if self.method == "spatial" and len(kernel.shape) != 4:
            raise ValueError(
                f"TensorLowRank(method='spatial'): layer '{call.name}' has a "
                f"kernel of shape {tuple(kernel.shape)}; 'spatial' needs a Conv2D."
            )
        if getattr(call.layer, "groups", 1) != 1:
            raise ValueError(
                f"TensorLowRank: layer '{call.name}' is a grouped conv "
                f"(groups={call.layer.groups}); leave it out of `layers`."
            )
        return Target(call.name, [spec_for(call.layer).neurons(call.layer)], neuron_groups=False)

    def prox(self, blocks, threshold, target):
        kernel = target.members[0].unview(blocks[0])
        shape = tuple(kernel.shape)
        if self.method == "output":
            matrix = keras.ops.reshape(kernel, (-1, shape[-1]))
            return [keras.ops.reshape(prox.singular_value_threshold(matrix, threshold), blocks[0].shape)]
        if self.method == "spatial":
            kh, kw, cin, cout = shape
            matrix = keras.ops.reshape(keras.ops.transpose(kernel, (0, 2, 1, 3)), (kh * cin, kw * cout))
            low = keras.ops.reshape(prox.singular_value_threshold(matrix, threshold), (kh, cin, kw, cout))
            return [target.members[0].view(keras.ops.transpose(low, (0, 2, 1, 3)))]
        folded = []
        for mode in range(len(shape)):
            moved = keras.ops.moveaxis(kernel, mode, 0)
            unfolded = keras.ops.reshape(moved, (shape[mode], -1))
            low = keras.ops.reshape(prox.singular_value_threshold(unfolded, threshold), moved.shape)
            folded.append(keras.ops.moveaxis(low, 0, mode))
        return [target.members[0].view(sum(folded[1:], folded[0]) / len(folded))]

    def get_config(self):
        config = super().get_config()
        config.update(every=self.every, method=self.method)
        return config


def live_neurons(target):
    """Boolean numpy array (n,): neuron j has a non-zero entry in its group."""
    alive = np.zeros((target.num_neurons,), dtype=bool)
    for member in target.members:
        value = np.asarray(keras.ops.convert_to_numpy(member.view(member.variable)))
        alive |= np.any(value != 0, axis=(0, 2))
    return alive
