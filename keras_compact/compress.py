"""compress: a trained model in, a smaller one out, at a requested size.

The whole job of `keras-compact compress` as one function: train a copy of
the model's weights with ProxSGD under a `BudgetController`, compact it
(verified), fine-tune the compact model, and return it with its report.
"""

import dataclasses
import hashlib
import json
import os

import keras
import numpy as np

from keras_compact.budget import BudgetController
from keras_compact.compaction import compact
from keras_compact.files import atomic_path
from keras_compact.optimizers import ProxSGD
from keras_compact import graph as graph_lib
from keras_compact.penalties import GroupLasso, HeadLasso, layer_calls


@dataclasses.dataclass
class CompressResult:
    """What `compress` made: the compact model, its compaction report, and the accuracies seen."""

    model: object
    report: object
    landed_at_end: bool
    metrics_before: dict  # the input model's evaluation on the validation data
    metrics_compact: dict  # the compact model's, before fine-tuning
    metrics_after: dict  # after fine-tuning
    budget: dict  # what was asked: {"params": f or None, "macs": f or None}

    def to_dict(self):
        return {
            "compaction": self.report.to_dict(),
            "budget": self.budget,
            "landed_at_end": self.landed_at_end,
            "metrics_before": self.metrics_before,
            "metrics_compact": self.metrics_compact,
            "metrics_after": self.metrics_after,
        }

    def summary(self, source, destination):
        """Lines for the command line: sizes against the budget, then the metrics."""
        report = self.report
        lines = [
            f"{source} -> {destination}: parameters {report.params_before:,} -> {report.params_after:,} "
            f"({report.params_after / report.params_before:.1%}), MACs {report.macs_before:,} -> "
            f"{report.macs_after:,} ({report.macs_after / max(1, report.macs_before):.1%}); budget "
            + ", ".join(f"{k} {v:g}" for k, v in self.budget.items() if v is not None)
        ]
        for label, values in (
            ("input", self.metrics_before),
            ("compact", self.metrics_compact),
            ("fine-tuned", self.metrics_after),
        ):
            if values:
                lines.append(f"{label}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(values.items())))
        if self.landed_at_end:
            lines.append("the budget was reached only at the end of sparse training: consider more --epochs")
        return "\n".join(lines)


def loss_and_metrics(model, loss=None):
    """The loss and metrics to train `model` with: `loss` if given, else its compile config's."""
    config = model.get_compile_config() if getattr(model, "compiled", False) else None
    if loss is None and config and config.get("loss") is not None:
        # Strings stay strings: compile() resolves "accuracy" by the loss and output shape.
        def restore(item, get):
            return item if isinstance(item, str) else get(item)

        metrics = [restore(m, keras.metrics.get) for m in keras.tree.flatten(config.get("metrics") or [])]
        return restore(config["loss"], keras.losses.get), metrics
    if loss is None:
        raise ValueError(
            f"Model '{model.name}' was saved without a compiled loss: say which loss to train "
            "it with (loss=..., or --loss on the command line, e.g. sparse_categorical_crossentropy)."
        )
    return loss, ["accuracy"] if "categorical" in str(loss) else []


def _copy(model):
    """A new model with the same graph and the same weights (the input is never changed)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _as_fit_arguments(data, batch_size):
    """`fit`/`evaluate` keyword arguments for (x, y) arrays or a dataset of batches."""
    if isinstance(data, tuple):
        return dict(x=data[0], y=data[1], batch_size=batch_size)
    return dict(x=data)


def _evaluate(model, data, batch_size):
    if data is None:
        return {}
    values = model.evaluate(**_as_fit_arguments(data, batch_size), verbose=0, return_dict=True)
    return {k: float(v) for k, v in values.items()}


def compress(
    model,
    train_data,
    *,
    params=None,
    macs=None,
    epochs=10,
    finetune_epochs=None,
    validation_data=None,
    loss=None,
    batch_size=64,
    learning_rate=0.01,
    momentum=0.9,
    strength=1e-4,
    channel_multiple=1,
    open_dim_size=None,
    work_dir=None,
    verbose=1,
):
    """Train `model`'s weights down to a budget, compact, fine-tune; `model` is not changed.

    Args:
        model: a built Sequential or Functional Keras model, typically trained.
        train_data: (x, y) arrays, or a `tf.data.Dataset` of batches.
        params, macs: the budget (see `BudgetController`).
        epochs: epochs of sparse training (ProxSGD with a GroupLasso on every
            hidden layer, groups weighted by sqrt(size): under the budget controller
            it kept more accuracy than unweighted groups, BENCHMARKS.md "Budgets";
            and a HeadLasso, weighted too, where the model has attention layers).
        finetune_epochs: epochs of plain SGD on the compact model (default
            `epochs // 2`, at a tenth of the learning rate).
        validation_data: (x, y) to evaluate the input, the compact and the
            fine-tuned model on.
        loss: used when the model was saved without a compiled loss.
        channel_multiple, open_dim_size: as `BudgetController`'s and
            `compact`'s.
        work_dir: a folder for resumable state: training resumes from its
            last epoch (`BackupAndRestore`), and a finished stage is not run
            again.
    Returns:
        A `CompressResult`.
    """
    loss, metrics = loss_and_metrics(model, loss)
    _check_class_labels(model, loss, train_data, "train_data (--train-data)")
    _check_class_labels(model, loss, validation_data, "validation_data (--validation-data)")
    finetune_epochs = epochs // 2 if finetune_epochs is None else finetune_epochs
    fit_data = _as_fit_arguments(train_data, batch_size)
    run = {
        "budget": {"params": params, "macs": macs},
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "momentum": momentum,
        "strength": strength,
        "channel_multiple": channel_multiple,
        "open_dim_size": open_dim_size,
        "loss": str(loss),
        "model": _fingerprint(w for w in model.get_weights()),
        "train_data": _fingerprint(train_data) if isinstance(train_data, (tuple, list)) else None,
    }
    stage = {} if work_dir is None else _stages(work_dir, run)

    before = _evaluate(_compiled(_copy(model), loss, metrics), validation_data, batch_size)
    controller = BudgetController(
        params=params, macs=macs, channel_multiple=channel_multiple, open_dim_size=open_dim_size, verbose=verbose
    )
    if stage and os.path.exists(stage["trained"]):
        trained = keras.models.load_model(stage["trained"], compile=False)
        landed_at_end = False
    else:
        trained = _copy(model)
        trained.compile(
            optimizer=ProxSGD(learning_rate, momentum=momentum, penalties=_penalties(model, strength)),
            loss=loss,
            metrics=metrics,
        )
        callbacks = [controller]
        if work_dir is not None:
            callbacks.append(keras.callbacks.BackupAndRestore(stage["train_backup"]))
        trained.fit(**fit_data, epochs=epochs, verbose=verbose, callbacks=callbacks)
        landed_at_end = controller.landed_at_end
        if work_dir is not None:
            with atomic_path(stage["trained"]) as temporary:
                trained.save(temporary)
    compact_model, report = compact(
        trained, channel_multiple=channel_multiple, factorize=False, open_dim_size=open_dim_size
    )
    compact_model = _compiled(compact_model, loss, metrics)
    metrics_compact = _evaluate(compact_model, validation_data, batch_size)
    if finetune_epochs:
        compact_model.compile(
            optimizer=keras.optimizers.SGD(learning_rate / 10, momentum=momentum), loss=loss, metrics=metrics
        )
        callbacks = [] if work_dir is None else [keras.callbacks.BackupAndRestore(stage["finetune_backup"])]
        compact_model.fit(**fit_data, epochs=finetune_epochs, verbose=verbose, callbacks=callbacks)
    if not all(np.all(np.isfinite(keras.ops.convert_to_numpy(w))) for w in compact_model.weights):
        raise ValueError(
            "Fine-tuning the compact model made its weights non-finite: lower the learning rate."
        )
    return CompressResult(
        model=compact_model,
        report=report,
        landed_at_end=landed_at_end,
        metrics_before=before,
        metrics_compact=metrics_compact,
        metrics_after=_evaluate(compact_model, validation_data, batch_size),
        budget={"params": params, "macs": macs},
    )


def _check_class_labels(model, loss, data, what):
    """Refuse (x, y) arrays whose labels a sparse categorical loss cannot take.

    Checked before training: out of range, they fail deep inside `fit` (a
    backend error, a traceback on the command line) or, on some backends,
    train on garbage. A `tf.data.Dataset` is not read ahead for this.
    """
    name = loss if isinstance(loss, str) else getattr(loss, "name", getattr(loss, "__name__", ""))
    if not isinstance(data, (tuple, list)) or "sparse_categorical" not in str(name) or len(model.outputs) != 1:
        return
    labels = np.asarray(data[1])
    classes = model.outputs[0].shape[-1]
    if labels.size == 0 or classes is None:
        return
    if labels.ndim > 1 and labels.shape[-1] > 1:
        raise ValueError(
            f"{what} holds labels of shape {labels.shape[1:]} per sample, but {name} takes one class "
            "index per sample: one-hot labels need loss=categorical_crossentropy (--loss)."
        )
    whole = np.issubdtype(labels.dtype, np.integer) or bool(np.all(np.mod(labels, 1) == 0))
    low, high = labels.min(), labels.max()
    if not whole or low < 0 or high >= classes:
        kind = "class indices" if whole else "non-integer values"
        raise ValueError(
            f"{what} holds labels from {low:g} to {high:g} ({kind}), but the model has {classes} "
            f"outputs and {name} takes class indices 0 to {classes - 1}: give labels in that range."
        )


def _penalties(model, strength):
    """Weighted group lasso on the hidden neurons, and on the heads of any attention layer."""
    penalties = [GroupLasso(strength, weighted=True)]
    heads = HeadLasso(strength, weighted=True)
    graphs = [graph_lib.build_graph(part) for part in graph_lib.functional_parts(model)]
    if any(heads.acts_on(call.layer) for graph in graphs for call in layer_calls(graph)):
        penalties.append(heads)
    return penalties


def _compiled(model, loss, metrics):
    model.compile(optimizer="sgd", loss=loss, metrics=metrics)
    return model


def _stages(work_dir, run):
    """The stage files of `work_dir`, for the run described by `run`.

    A work dir resumes only the run that made it: `run.json` records what
    the stages depend on (budget, schedule, the input's weights, array
    training data), and a run that differs is refused, since its finished
    stages would be reused as if they were this run's (a new budget would
    get the old one's model).
    """
    os.makedirs(work_dir, exist_ok=True)
    stages = {
        "trained": os.path.join(work_dir, "trained.keras"),
        "train_backup": os.path.join(work_dir, "train_backup"),
        "finetune_backup": os.path.join(work_dir, "finetune_backup"),
    }
    record = os.path.join(work_dir, "run.json")
    run = json.loads(json.dumps(run))  # as it reads back: tuples as lists
    if os.path.exists(record):
        with open(record, encoding="utf-8") as file:
            saved = json.load(file)
        changed = sorted(key for key in set(run) | set(saved) if run.get(key) != saved.get(key))
        if changed:
            raise ValueError(
                f"work_dir '{work_dir}' (--work-dir) holds a run made with other {', '.join(changed)}: "
                "its finished stages are not this run's. Give another work dir, or remove this one "
                "to start over."
            )
    elif any(os.path.exists(path) for path in stages.values()):
        raise ValueError(
            f"work_dir '{work_dir}' (--work-dir) holds stages of a run that did not record its "
            "configuration: give another work dir, or remove this one to start over."
        )
    else:
        with atomic_path(record) as temporary:
            with open(temporary, "w", encoding="utf-8") as file:
                json.dump(run, file, indent=1)
    return stages


def _fingerprint(arrays):
    """A SHA-256 of arrays' shapes, dtypes and bytes."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(np.asarray(array))
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
