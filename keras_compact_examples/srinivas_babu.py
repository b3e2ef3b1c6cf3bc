"""Srinivas and Babu's data-free parameter pruning (BMVC 2015), the paper's LeNet baseline.

For a fully connected layer followed by another, neuron j is merged into the
neuron i whose incoming weights are most similar: neuron j is removed and
its outgoing weights are added to neuron i's. Which pair goes next is the
one of least saliency

    s(i, j) = <a_j^2> * ||w_i - w_j||^2

with w the incoming weights (and bias) of a neuron and <a_j^2> the mean
square of neuron j's outgoing weights. Merges are greedy, one at a time, and
the saliencies of the kept neuron are updated after each. No data is needed;
only the evaluation of the pruned networks reads the test set.
"""

import numpy as np


def merge_sequence(kernel_in, bias_in, kernel_out):
    """The greedy order of merges for one (Dense, Dense) pair.

    Args:
        kernel_in: (inputs, n) kernel of the layer being pruned.
        bias_in: (n,) its bias.
        kernel_out: (n, outputs) kernel of the next layer.

    Returns:
        [(removed j, kept i)], n - 1 merges in order.
    """
    incoming = np.concatenate([kernel_in, bias_in[None, :]], axis=0).astype("float64")
    squared = np.sum(incoming**2, axis=0)
    distance = squared[:, None] + squared[None, :] - 2 * incoming.T @ incoming
    distance = np.maximum(distance, 0)
    np.fill_diagonal(distance, np.inf)
    outgoing = kernel_out.astype("float64").copy()
    mean_square_out = np.mean(outgoing**2, axis=1)
    merges = []
    for _ in range(len(squared) - 1):
        # saliency[i, j]: cost of removing j into i.
        saliency = distance * mean_square_out[None, :]
        kept, removed = np.unravel_index(np.argmin(saliency), saliency.shape)
        outgoing[kept] += outgoing[removed]
        mean_square_out[kept] = np.mean(outgoing[kept] ** 2)
        distance[removed, :] = np.inf
        distance[:, removed] = np.inf
        merges.append((int(removed), int(kept)))
    return merges


def pruned_weights(kernel_in, bias_in, kernel_out, merges):
    """Weights after `merges`: removed neurons zeroed in and out, outgoing weights summed."""
    kernel_in, bias_in, kernel_out = kernel_in.copy(), bias_in.copy(), kernel_out.copy()
    for removed, kept in merges:
        kernel_out[kept] += kernel_out[removed]
        kernel_out[removed] = 0
        kernel_in[:, removed] = 0
        bias_in[removed] = 0
    return kernel_in, bias_in, kernel_out


def prune_curve(model, layer_name, next_layer_name, fractions, evaluate):
    """Accuracy and non-zero parameters of `model` with a share of one layer's neurons merged away.

    Args:
        model: a trained model; its weights are restored before returning.
        layer_name, next_layer_name: the Dense layer to prune and the Dense that reads it.
        fractions: shares of the layer's neurons to remove, each in [0, 1).
        evaluate: function model -> test accuracy (a fraction).

    Returns:
        [{removed_fraction, units, nonzero_params, accuracy}], one per fraction.
    """
    layer, next_layer = model.get_layer(layer_name), model.get_layer(next_layer_name)
    kernel_in, bias_in = layer.get_weights()
    kernel_out, bias_out = next_layer.get_weights()
    merges = merge_sequence(kernel_in, bias_in, kernel_out)
    units = kernel_in.shape[1]
    points = []
    try:
        for fraction in fractions:
            removed = int(round(fraction * units))
            new_in, new_bias, new_out = pruned_weights(
                kernel_in, bias_in, kernel_out, merges[:removed]
            )
            layer.set_weights([new_in, new_bias])
            next_layer.set_weights([new_out, bias_out])
            points.append(
                {
                    "removed_fraction": fraction,
                    "units": units - removed,
                    "nonzero_params": int(sum(np.count_nonzero(w) for w in model.get_weights())),
                    "accuracy": evaluate(model),
                }
            )
    finally:
        layer.set_weights([kernel_in, bias_in])
        next_layer.set_weights([kernel_out, bias_out])
    return points
