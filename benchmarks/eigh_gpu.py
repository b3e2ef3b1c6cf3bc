"""Where the low-rank prox's time goes on a GPU: one eigendecomposition at a time.

    python benchmarks/eigh_gpu.py [--reps 10] [--out FILE]

TensorLowRank's prox (`prox.singular_value_threshold`) costs, per kernel, a
Gram matrix, its eigendecomposition and two products. For the VGG-style net
the Gram matrices are 27, 64, 128, 128, 256, 256, 512, 512 and 512 wide.
This times, under JAX and (where installed) PyTorch, each backend's `eigh`
of one symmetric positive definite matrix of each of those sizes, in float32
and float64, and the three 512-wide ones as one batched call, against the
whole SVT of the nine kernels. Median of `--reps` calls after a warm-up,
each call synchronized. One JSON line is printed and written to `--out`.
"""

import argparse
import json
import statistics
import time

import numpy as np

SIZES = (27, 64, 128, 256, 512)


def spd(n, rng):
    x = rng.standard_normal((4 * n, n))
    return x.T @ x / (4 * n)


def median_ms(call, reps):
    call()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e3, 3)


def jax_rows(reps, rng):
    import jax
    import jax.numpy as jnp

    rows = []
    with jax.enable_x64(True):
        for dtype in ("float32", "float64"):
            eigh = jax.jit(jnp.linalg.eigh)
            for n in SIZES:
                a = jnp.asarray(spd(n, rng), dtype)
                rows.append({"backend": "jax", "call": f"eigh {n}", "dtype": dtype,
                             "ms": median_ms(lambda: jax.block_until_ready(eigh(a)), reps)})
            stacked = jnp.asarray(np.stack([spd(512, rng) for _ in range(3)]), dtype)
            rows.append({"backend": "jax", "call": "eigh 3 x 512, batched", "dtype": dtype,
                         "ms": median_ms(lambda: jax.block_until_ready(eigh(stacked)), reps)})
    return rows


def torch_rows(reps, rng):
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    rows = []
    for dtype in (torch.float32, torch.float64):
        for n in SIZES:
            a = torch.as_tensor(spd(n, rng), dtype=dtype, device="cuda")

            def call(a=a):
                torch.linalg.eigh(a)
                torch.cuda.synchronize()

            rows.append({"backend": "torch", "call": f"eigh {n}", "dtype": str(dtype).split(".")[-1],
                         "ms": median_ms(call, reps)})
        stacked = torch.as_tensor(np.stack([spd(512, rng) for _ in range(3)]), dtype=dtype, device="cuda")

        def batched():
            torch.linalg.eigh(stacked)
            torch.cuda.synchronize()

        rows.append({"backend": "torch", "call": "eigh 3 x 512, batched",
                     "dtype": str(dtype).split(".")[-1], "ms": median_ms(batched, reps)})
    return rows


def library_svt_row(reps):
    import jax
    import keras

    from keras_compact import prox
    from svt_routes import kernels

    matrices = [jax.numpy.asarray(x) for x in kernels()]
    compiled = jax.jit(lambda xs: [prox.singular_value_threshold(x, 1e-6) for x in xs])
    return {"backend": keras.backend.backend(), "call": "library SVT, all nine kernels", "dtype": "float32",
            "ms": median_ms(lambda: jax.block_until_ready(compiled(matrices)), reps)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = jax_rows(args.reps, rng) + torch_rows(args.reps, rng) + [library_svt_row(args.reps)]
    from bench_optimizer import device_name

    result = {"device": device_name(), "rows": rows}
    for row in rows:
        print(f"{row['backend']:6} {row['dtype']:8} {row['call']:32} {row['ms']:9.3f} ms")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
