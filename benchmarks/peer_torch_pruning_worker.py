"""Torch-Pruning's group-norm pruner on LeNet-5 / vgg_small; runs in the peer's own venv.

Started by peer_torch_pruning.py with the peer venv's python (torch and
torch-pruning live only there). Reads the mnist5k arrays and the job from the
files it is given; writes one JSON line per (model, budget, seed) as soon as
that record is done, so a run stopped at its time limit keeps what it finished.

Per (model, seed): the network built as in benchmarks/_common.py (Keras's
initialisation: Glorot-uniform kernels, zero biases), trained from scratch for
`epochs` with SGD (lr 0.01, momentum 0.9, batch 64, no weight decay) plus
GroupNormPruner.regularize after every backward pass (Torch-Pruning's
"group_sl" sparse training, as in its ResNet-56 recipe: global pruning,
GroupMagnitudeImportance(p=2), 400 iterative steps towards a channel ratio of
1.0, classifier ignored). Then that sparse-trained net is pruned step by step
(pruner.step()); the first time its parameters (or multiply-adds) are at or
below a budget, a copy is taken (largest budget first: every budget lies on
the one pruning trajectory, as the recipe's progressive pruning would stop
there), and each copy is fine-tuned for `finetune_epochs` with plain SGD. The
test accuracy reported is the last epoch's (no checkpoint picked on the test
set, unlike the recipe's "best accuracy").
"""

import argparse
import copy
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

BATCH = 64
LEARNING_RATE = 0.01
MOMENTUM = 0.9
ITERATIVE_STEPS = 400


def lenet5():
    """Caffe's LeNet-5 as keras_compact.models.lenet5 (ReLU after conv1, conv2, fc1)."""
    return nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(800, 500), nn.ReLU(),
        nn.Linear(500, 10),
    )


def vgg_small():
    """benchmarks/_common.vgg_small: 3 blocks of two 3x3 'same' convs (32, 64, 128), dense 256, 10."""
    stack, channels = [], 3
    for filters in (32, 64, 128):
        for _ in (1, 2):
            stack += [nn.Conv2d(channels, filters, 3, padding=1), nn.ReLU()]
            channels = filters
        stack.append(nn.MaxPool2d(2))
    stack += [nn.Flatten(), nn.Linear(128 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 10)]
    return nn.Sequential(*stack)


ARCHITECTURES = {"lenet5": lenet5, "vgg_small": vgg_small}


def build(name):
    model = ARCHITECTURES[name]()
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    return model


def multiply_adds(model, example):
    """Multiply-adds of one sample through every Conv2d/Linear (kernel size x output
    positions, biases not counted): keras_compact.compaction.report.multiply_adds."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_position = module.weight[0].numel()  # in_channels / groups * kh * kw
            total += per_position * output[0].numel()
        else:
            total += module.weight.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()
        model(example)
    for handle in handles:
        handle.remove()
    return total


def parameters(model):
    return sum(p.numel() for p in model.parameters())


def widths(model):
    return [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def train(model, x, y, epochs, generator, regularize=None):
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), BATCH):
            batch = order[start:start + BATCH]
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            if regularize is not None:
                regularize(model)
            optimizer.step()


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def make_pruner(model, example, reg):
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return tp.pruner.GroupNormPruner(
        model, example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        reg=reg,
        global_pruning=True,
        pruning_ratio=1.0,
        iterative_steps=ITERATIVE_STEPS,
        ignored_layers=[classifier],
    )


def prune_trajectory(pruner, model, measure, targets):
    """Torch-Pruning's progressive pruning: one pruner.step() at a time; a copy of the
    model is taken the first time measure(model) <= each target (largest first), so
    every budget lies on the one trajectory. Returns {target: (copy, steps)}."""
    snapshots = {}
    for target in sorted(targets, reverse=True):
        while measure(model) > target:
            if pruner.current_step == ITERATIVE_STEPS:
                raise RuntimeError(f"{ITERATIVE_STEPS} pruning steps left {measure(model):,} > {target:,}")
            model.eval()
            pruner.step()
        snapshots[target] = (copy.deepcopy(model), pruner.current_step)
    return snapshots


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help=".npz written by peer_torch_pruning.py")
    parser.add_argument("--job", required=True, help="JSON job written by peer_torch_pruning.py")
    parser.add_argument("--records", required=True, help="JSON lines to append to")
    args = parser.parse_args()
    with open(args.job) as f:
        job = json.load(f)
    data = np.load(args.data)
    torch.set_num_threads(job["threads"])

    for name in job["models"]:
        x_train = torch.from_numpy(data[f"{name}_x_train"].transpose(0, 3, 1, 2).copy())
        y_train = torch.from_numpy(data[f"{name}_y_train"].astype(np.int64))
        x_test = torch.from_numpy(data[f"{name}_x_test"].transpose(0, 3, 1, 2).copy())
        y_test = torch.from_numpy(data[f"{name}_y_test"].astype(np.int64))
        example = x_train[:1]
        dense = job["dense"][name]
        measures = {"parameters": parameters,
                    "multiply_adds": lambda m: multiply_adds(m, example)}
        for seed in job["seeds"]:
            started = time.time()
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            model = build(name)
            counted = dict(parameters=parameters(model), multiply_adds=multiply_adds(model, example))
            if counted != dense:
                raise RuntimeError(f"{name} in PyTorch has {counted}, the Keras one {dense}")
            pruner = make_pruner(model, example, job["reg"])
            train(model, x_train, y_train, job["epochs"], generator, regularize=pruner.regularize)
            trained_seconds = time.time() - started
            sparse_accuracy = accuracy(model, x_test, y_test)
            print(f"{name} seed {seed}: sparse-trained, accuracy {sparse_accuracy:.4f} "
                  f"({trained_seconds:.0f} s)", flush=True)
            targets = {(kind, fraction): math.floor(fraction * dense[kind])
                       for kind, fraction in job["budgets"][name]}
            kind, = {kind for kind, _ in targets}
            started = time.time()
            snapshots = prune_trajectory(pruner, model, measures[kind], targets.values())
            prune_seconds = time.time() - started
            for (kind, fraction), target in targets.items():
                started = time.time()
                pruned, steps = snapshots[target]
                pruned_accuracy = accuracy(pruned, x_test, y_test)
                train(pruned, x_train, y_train, job["finetune_epochs"], generator)
                record = dict(
                    peer="torch_pruning",
                    model=name,
                    seed=seed,
                    budget=dict(kind=kind, fraction=fraction, target=target),
                    accuracy=accuracy(pruned, x_test, y_test),
                    accuracy_before_finetune=pruned_accuracy,
                    accuracy_sparse_trained=sparse_accuracy,
                    parameters=parameters(pruned),
                    nonzero_parameters=int(sum(int(p.count_nonzero()) for p in pruned.parameters())),
                    multiply_adds=multiply_adds(pruned, example),
                    widths=widths(pruned),
                    pruning_steps=steps,
                    epochs=job["epochs"],
                    finetune_epochs=job["finetune_epochs"],
                    train_seconds=round(trained_seconds, 1),
                    prune_seconds=round(prune_seconds, 1),  # the whole trajectory, shared
                    finetune_seconds=round(time.time() - started, 1),
                )
                print(f"  {kind} <= {target:,}: {record['parameters']:,} params, "
                      f"{record['multiply_adds']:,} MACs, widths {record['widths']}, "
                      f"accuracy {pruned_accuracy:.4f} -> {record['accuracy']:.4f}", flush=True)
                with open(args.records, "a") as f:
                    f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
