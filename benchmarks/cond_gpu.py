"""What a skipped `cond` costs in a compiled JAX step on a GPU.

    python benchmarks/cond_gpu.py [--reps 30]

TensorLowRank(every=k) puts its prox in a `cond` that is false k-1 steps in
k. This times a jitted stand-in for a train step (a chain of float32 matrix
products of about a VGG step's length, then an update of nine weight
matrices of the VGG-style net's low-rank kernels' shapes) in three forms,
with the predicate always false: no cond; a cond whose true branch is one
multiply; a cond whose true branch is the library's SVT. Median ms per
call, each call synchronized. Run it under several XLA_FLAGS to see whether
a flag changes the cost.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from keras_compact import prox

SHAPES = [(27, 64), (576, 64), (576, 128), (1152, 128), (1152, 256), (2304, 256), (2304, 512),
          (4608, 512), (2048, 512)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    weights = [jnp.asarray(rng.standard_normal(s) * 0.05, "float32") for s in SHAPES]
    activations = jnp.asarray(rng.standard_normal((2048, 2048)) / 45, "float32")

    def body(a):
        for _ in range(12):
            a = jnp.tanh(a @ a)
        return a

    def step(branch):
        def run(weights, a, iteration):
            a = body(a)
            updated = [w - 1e-3 * jnp.mean(a) for w in weights]
            if branch is None:
                return updated, a
            on_step = iteration % 10 == 0
            return jax.lax.cond(on_step, lambda ws: [branch(w) for w in ws], lambda ws: ws, updated), a

        return jax.jit(run)

    forms = {
        "no cond": None,
        "cond, cheap true branch": lambda w: w * 0.5,
        "cond, SVT true branch": lambda w: prox.singular_value_threshold(w, 1e-4),
    }
    for name, branch in forms.items():
        compiled = step(branch)
        jax.block_until_ready(compiled(weights, activations, 1))
        times = []
        for _ in range(args.reps):
            start = time.perf_counter()
            jax.block_until_ready(compiled(weights, activations, 1))
            times.append(time.perf_counter() - start)
        print(f"{name:28} {statistics.median(times) * 1e3:8.3f} ms", flush=True)


if __name__ == "__main__":
    main()
