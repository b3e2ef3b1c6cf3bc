"""The group-lasso step of many targets at once, on the PyTorch backend.

Keras runs its PyTorch optimizer eagerly, so each `keras.ops` call of the
per-target step is a Python dispatch and a kernel launch, and a step bound by
the host's launches (ResNet50 on a GPU) pays for every one. Here every
`GroupLasso` target of one penalty takes its step together, in raw torch
under `no_grad`:

    r_i = ||member_i[:, j, :]||_2^2 per neuron j   one reduction per kernel; the
                                                     vectors (bias, gamma, beta) in
                                                     one concatenation
    ||w_j|| = sqrt(sum_i r_i)                        one index_add for all layers
    f_j = max(0, 1 - t * s_j / ||w_j||) * mask_j     `prox.group_shrink_factors`, once
    member_i *= f (broadcast over rows, cols)        one `_foreach_mul_` for all
    slot *= (f > 0)                                  one `_foreach_mul_`, on the targets
                                                     with a zero group (reset_momentum)

The factor is the one `GroupLasso.group_factors` gives (the same shrink
function on the same norms), so the values and zeros are those of the per-target
step; tests/fused_step_case.py checks both against `GroupLasso.prox`.
"""

import numpy as np
import torch

from keras_compact import prox


class GroupBatch:
    """The constant layout of one batch of targets: which neuron each value adds to.

    Members that are vectors (a bias, gamma, beta: `pre == post == 1`) are
    squared in one concatenation; the others (kernels) are reduced one by one.
    """

    def __init__(self, entries):
        self.entries = entries
        members = [(m, index) for index, e in enumerate(entries) for m in e.target.members]
        self.vectors = [(m, i) for m, i in members if m.pre == m.post == 1]
        self.kernels = [(m, i) for m, i in members if not m.pre == m.post == 1]
        self.members = self.vectors + self.kernels  # the order of `index`
        self.sizes = [e.target.num_neurons for e in entries]
        offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.target_of = np.repeat(np.arange(len(entries)), self.sizes)
        self.index = np.concatenate([offsets[i] + np.arange(m.n) for m, i in self.members])
        self.weights = np.concatenate(
            [
                np.ones(e.target.num_neurons, "float32")
                if e.target.group_weights is None
                else np.asarray(e.target.group_weights, "float32")
                for e in entries
            ]
        )
        self.masked = [e.mask is not None for e in entries]
        self._device_constants = {}

    def constants(self, device, dtype):
        key = (str(device), dtype)
        if key not in self._device_constants:
            self._device_constants[key] = (
                torch.as_tensor(self.index, device=device),
                torch.as_tensor(self.weights, device=device, dtype=dtype),
                torch.as_tensor(self.target_of, device=device),
            )
        return self._device_constants[key]


def batches(entries, penalties):
    """Consecutive GroupLasso entries of one penalty, no variable in two of them.

    Penalties stay in their order (several on one layer compose in order);
    an entry that cannot join a batch (another penalty type, a GroupLasso
    subclass with its own prox, a variable seen twice) is returned alone, as
    a plain entry, for the per-target step.
    """
    result, current, seen = [], [], set()

    def close():
        if current:
            result.append(GroupBatch(list(current)))
            current.clear()
            seen.clear()

    for entry in entries:
        penalty = penalties[entry.penalty_index]
        fusable = getattr(penalty, "group_factors", None) is not None and entry.target.neuron_groups
        ids = {id(v) for v in entry.target.variables}
        if not fusable:
            close()
            result.append(entry)
            continue
        if current and (entry.penalty_index != current[0].penalty_index or ids & seen):
            close()
        current.append(entry)
        seen |= ids
    close()
    return result


def neuron_sums_of_squares(view):
    """``sum over rows and cols of view**2`` for a (rows, n, cols) view: shape (n,).

    The fastest form depends on the device (measured on VGG16's kernels and a
    4608x512 one): on a GPU `vector_norm`'s one fused pass (0.37 ms for all of
    VGG16's kernels on an H200, against 0.83 ms for a square, then a sum); on
    the CPU the square, then a sum over the contiguous axis first (0.4 ms for
    the 4608x512 kernel, against 4.2 ms for `vector_norm` over axes (0, 2)).
    """
    if view.is_cuda:
        return torch.linalg.vector_norm(view, dim=(0, 2)).square()
    squares = view.square()
    return squares.sum(2).sum(0) if view.shape[2] > 1 else squares[:, :, 0].sum(0)


@torch.no_grad()
def group_step(batch, threshold, reset_momentum):
    """Apply the group-lasso prox (and momentum reset) to every target of `batch`."""
    first = batch.entries[0].target.members[0].variable.value
    device, dtype = first.device, first.dtype
    index, weights, target_of = batch.constants(device, dtype)
    views = [m.variable.value.view(m.pre, m.n, m.post) for m, _ in batch.members]
    vectors = len(batch.vectors)
    parts = [neuron_sums_of_squares(v) for v in views[vectors:]]
    if vectors:
        parts.insert(0, torch.cat([v.view(-1) for v in views[:vectors]]).square())
    total = sum(batch.sizes)
    squares = torch.zeros(total, device=device, dtype=dtype)
    squares.index_add_(0, index, torch.cat(parts))
    threshold = torch.as_tensor(threshold, device=device, dtype=dtype)
    factors = prox.group_shrink_factors(torch.sqrt(squares), threshold * weights)
    if any(batch.masked):
        masks = [
            e.mask.value.to(dtype) if e.mask is not None else torch.ones(n, device=device, dtype=dtype)
            for e, n in zip(batch.entries, batch.sizes)
        ]
        factors = factors * torch.cat(masks)
    per_target = torch.split(factors, batch.sizes)
    scales = [per_target[i].view(1, -1, 1) for _, i in batch.members]
    torch._foreach_mul_(views, scales)
    if not reset_momentum:
        return
    # Only the slots of targets with a zero group need the pass: one small
    # read-back says which (the launches it saves cost more, on a GPU too,
    # where the step is bound by the host's launches, not by the device).
    dead = torch.zeros(len(batch.entries), device=device, dtype=torch.int32)
    dead.index_add_(0, target_of, (factors <= 0).to(torch.int32))
    slots, keep = [], []
    for entry_index in torch.nonzero(dead).view(-1).tolist():
        entry = batch.entries[entry_index]
        alive = (per_target[entry_index] > 0).to(dtype).view(1, -1, 1)
        for member, member_slots in zip(entry.target.members, entry.slots):
            for slot in member_slots:
                slots.append(slot.value.view(member.pre, member.n, member.post))
                keep.append(alive)
    if slots:
        torch._foreach_mul_(slots, keep)
