"""keras-compact: train Keras 3 networks whose neurons die exactly, then ship them small.

Implements "Less is More: Towards Compact CNNs" (Zhou, Alvarez, Porikli,
ECCV 2016): sparse penalties on neurons solved by forward-backward splitting
(`ProxSGD`, `ProxAdam`), then removal of the dead neurons (`compact`) and
verified export (`export`).
"""

from keras_compact import prox
from keras_compact.budget import BudgetController
from keras_compact.builtin_layers import BarrierSpec, NeuronSpec, PassThroughSpec
from keras_compact.callbacks import NeuronMonitor
from keras_compact.compaction import CompactionReport, compact, projected_size
from keras_compact.compaction.report import multiply_adds
from keras_compact.exporter import ExportReport, export
from keras_compact.optimizers import ProxAdam, ProxSGD
from keras_compact.penalties import L1, GroupLasso, HeadLasso, SparseGroupLasso, TensorLowRank
from keras_compact.registry import LayerSpec, register_layer

__version__ = "0.1.0"

__all__ = [
    "BarrierSpec",
    "BudgetController",
    "CompactionReport",
    "ExportReport",
    "GroupLasso",
    "HeadLasso",
    "L1",
    "LayerSpec",
    "NeuronMonitor",
    "NeuronSpec",
    "PassThroughSpec",
    "ProxAdam",
    "ProxSGD",
    "SparseGroupLasso",
    "TensorLowRank",
    "compact",
    "export",
    "multiply_adds",
    "projected_size",
    "prox",
    "register_layer",
]
