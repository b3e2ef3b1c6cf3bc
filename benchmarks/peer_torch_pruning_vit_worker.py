"""Torch-Pruning 1.6.1 on the example's ViT: heads and MLP neurons; runs in the peer's own venv.

Started by bench_vit.py with the peer venv's python (torch and torch-pruning
live only there). Reads the mnist5k arrays (.npy files) and the job (.json);
appends one JSON line per seed to --records as soon as that seed is done.

Per seed: the ViT of keras_compact_examples.models.vit in PyTorch (patch-7
Conv2d, a learned position embedding, pre-norm blocks of LayerNorm, attention
with one qkv Linear as timm's, LayerNorm, Linear-GELU-Linear; final LayerNorm,
mean over tokens, classifier; Glorot-uniform kernels, zero biases, position
embedding uniform in [-0.05, 0.05] as Keras's), checked to have exactly the
Keras network's parameters, trained dense with the example's schedule (Adam,
lr cosine from --learning_rate to 0 per step, batch 64, random shifts of up to
`shift` pixels). Then Torch-Pruning's MetaPruner, as in its timm ViT example:
GroupMagnitudeImportance(p=2), global ranking, `num_heads` per qkv layer with
prune_num_heads=True and prune_head_dims=False (whole heads go), the patch
embedding and the classifier ignored (so the residual width stays, and only
heads and MLP neurons are pruned), one step. head_pruning_ratio removes as many
heads as the keras-compact run of the same seed removed; pruning_ratio is
tried every 0.01 (on copies) for the largest network at or under that run's
parameter count, or the smallest it reaches if none is. The pruned network is
fine-tuned with the example's fine-tuning schedule, and with its distillation
from the dense network when the example used it (--distill); the accuracy is
the last epoch's.
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


class Attention(nn.Module):
    """timm's Attention: one qkv Linear, heads of head_dim, an output projection."""

    def __init__(self, dim, heads, head_dim):
        super().__init__()
        self.num_heads, self.head_dim = heads, head_dim
        self.qkv = nn.Linear(dim, 3 * heads * head_dim)
        self.proj = nn.Linear(heads * head_dim, dim)

    def forward(self, x):
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attention = (q @ k.transpose(-2, -1)) * self.head_dim ** -0.5
        out = attention.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim))


class Block(nn.Module):
    def __init__(self, dim, heads, head_dim, mlp):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, head_dim)
        self.ln2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp)
        self.fc2 = nn.Linear(mlp, dim)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class ViT(nn.Module):
    def __init__(self, patch, dim, heads, blocks, mlp, size=28, num_classes=10):
        super().__init__()
        tokens = (size // patch) ** 2
        self.patch_embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.empty(1, tokens, dim).uniform_(-0.05, 0.05))
        self.blocks = nn.Sequential(*[Block(dim, heads, dim // heads, mlp) for _ in range(blocks)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for block in self.blocks:  # Keras initializes q, k and v as three kernels
            for part in block.attn.qkv.weight.data.chunk(3):
                nn.init.xavier_uniform_(part)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (batch, tokens, dim), row-major
        x = self.blocks(x + self.pos_embed)
        return self.head(self.norm(x).mean(dim=1))


def parameters(model):
    return sum(p.numel() for p in model.parameters())


def block_widths(model):
    return [{"heads": block.attn.num_heads, "ffn": block.fc1.out_features} for block in model.blocks]


def shifted(x, pad, generator):
    """Each image shifted by up to `pad` pixels each way, zero padding (bench data.random_shift)."""
    if not pad:
        return x
    padded = F.pad(x, (pad, pad, pad, pad))
    size = x.shape[-1]
    offsets = torch.randint(0, 2 * pad + 1, (len(x), 2), generator=generator)
    return torch.stack([padded[i, :, dy:dy + size, dx:dx + size] for i, (dy, dx) in enumerate(offsets.tolist())])


def distillation_loss(logits, labels, teacher_logits, weight, temperature):
    """(1 - w) CE + w T^2 KL(softmax(teacher / T) || softmax(student / T)): keras_compact_examples.distillation."""
    hard = F.cross_entropy(logits, labels)
    soft = F.kl_div(F.log_softmax(logits / temperature, 1), F.log_softmax(teacher_logits / temperature, 1),
                    reduction="batchmean", log_target=True)
    return (1 - weight) * hard + weight * temperature**2 * soft


def train(model, x, y, epochs, learning_rate, job, generator, teacher=None):
    """Adam (Keras's epsilon), cosine decay from learning_rate to 0 over the steps, batch, shifts;
    with a teacher, the example's distillation loss (job's distill, distill_temperature)."""
    if not epochs:
        return
    if teacher is not None:
        teacher.eval()
    batch = job["batch_size"]
    steps = epochs * math.ceil(len(x) / batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, eps=1e-7)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    )
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        images = shifted(x[order], job["shift"], generator)
        labels = y[order]
        for start in range(0, len(x), batch):
            optimizer.zero_grad()
            inputs, targets = images[start:start + batch], labels[start:start + batch]
            if teacher is None:
                loss = F.cross_entropy(model(inputs), targets)
            else:
                with torch.no_grad():
                    teacher_logits = teacher(inputs)
                loss = distillation_loss(model(inputs), targets, teacher_logits, job["distill"],
                                         job["distill_temperature"])
            loss.backward()
            optimizer.step()
            schedule.step()


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def pruned_copy(model, example, ratio, head_ratio):
    """A copy of `model` after one MetaPruner step at these ratios."""
    pruned = copy.deepcopy(model)
    attentions = [block.attn for block in pruned.blocks]
    pruner = tp.pruner.MetaPruner(
        pruned,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        global_pruning=True,
        pruning_ratio=ratio,
        num_heads={attention.qkv: attention.num_heads for attention in attentions},
        prune_num_heads=True,
        prune_head_dims=False,
        head_pruning_ratio=head_ratio,
        ignored_layers=[pruned.patch_embed, pruned.head],
        iterative_steps=1,
    )
    pruner.step()
    for attention in attentions:
        attention.num_heads = pruner.num_heads[attention.qkv]
        attention.head_dim = attention.qkv.out_features // (3 * attention.num_heads)
    return pruned


def prune_to(model, example, target, heads_removed, total_heads):
    """The largest pruned copy at or under `target` parameters with `heads_removed` heads gone.

    Returns (copy, pruning_ratio, reached). The parameter count is not monotone in the ratio:
    near 1, Torch-Pruning leaves a layer whole rather than empty it, so every ratio of a grid of
    0.01 is tried. If none reaches the target, the smallest network found is returned.
    """
    head_ratio = heads_removed / total_heads
    sizes = {}
    for step in range(100):
        ratio = step / 100
        sizes[ratio] = parameters(pruned_copy(model, example, ratio, head_ratio))
    under = [ratio for ratio, size in sizes.items() if size <= target]
    if under:
        ratio = max(under, key=lambda r: (sizes[r], -r))
    else:
        ratio = min(sizes, key=sizes.get)
    return pruned_copy(model, example, ratio, head_ratio), ratio, bool(under)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder of x_train.npy, y_train.npy, x_test.npy, y_test.npy")
    parser.add_argument("--job", required=True)
    parser.add_argument("--records", required=True)
    args = parser.parse_args()
    with open(args.job) as f:
        job = json.load(f)
    torch.set_num_threads(job["threads"])
    arrays = {name: np.load(f"{args.data}/{name}.npy") for name in ("x_train", "y_train", "x_test", "y_test")}
    x_train = torch.from_numpy(arrays["x_train"].transpose(0, 3, 1, 2).copy())
    x_test = torch.from_numpy(arrays["x_test"].transpose(0, 3, 1, 2).copy())
    y_train = torch.from_numpy(arrays["y_train"].astype(np.int64))
    y_test = torch.from_numpy(arrays["y_test"].astype(np.int64))
    arch = job["architecture"]
    example = x_train[:1]

    for seed_job in job["seeds"]:
        seed = seed_job["seed"]
        started = time.time()
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = ViT(**arch)
        if parameters(model) != job["dense_parameters"]:
            raise RuntimeError(f"the PyTorch ViT has {parameters(model):,} parameters, the Keras one "
                               f"{job['dense_parameters']:,}")
        train(model, x_train, y_train, job["epochs"], job["learning_rate"], job, generator)
        dense_accuracy = accuracy(model, x_test, y_test)
        train_seconds = time.time() - started
        print(f"seed {seed}: dense {dense_accuracy:.4f} ({train_seconds:.0f} s)", flush=True)

        started = time.time()
        total_heads = arch["heads"] * arch["blocks"]
        pruned, ratio, reached = prune_to(model, example, seed_job["target_parameters"],
                                          seed_job["heads_removed"], total_heads)
        prune_seconds = time.time() - started
        pruned_accuracy = accuracy(pruned, x_test, y_test)
        started = time.time()
        teacher = model if job.get("distill") else None  # the dense network, pruned only in copies
        train(pruned, x_train, y_train, job["finetune_epochs"], job["finetune_learning_rate"], job, generator,
              teacher=teacher)
        record = dict(
            peer="torch_pruning",
            model="vit",
            seed=seed,
            target_parameters=seed_job["target_parameters"],
            heads_removed=seed_job["heads_removed"],
            pruning_ratio=ratio,
            target_reached=reached,
            parameters=parameters(pruned),
            dense_parameters=job["dense_parameters"],
            blocks=block_widths(pruned),
            accuracy_dense=dense_accuracy,
            accuracy_before_finetune=pruned_accuracy,
            accuracy=accuracy(pruned, x_test, y_test),
            train_seconds=round(train_seconds, 1),
            prune_seconds=round(prune_seconds, 1),
            finetune_seconds=round(time.time() - started, 1),
        )
        print(f"  pruned to {record['parameters']:,} parameters (target {record['target_parameters']:,}), "
              f"blocks {record['blocks']}, accuracy {pruned_accuracy:.4f} -> {record['accuracy']:.4f}",
              flush=True)
        with open(args.records, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
