"""Singular value thresholding of every kernel of the VGG-style net: time and exactness by route.

    KERAS_BACKEND=jax python benchmarks/svt_routes.py [--reps 5] [--out FILE]

The kernels are those TensorLowRank acts on in `vgg_cifar` (its eight convs
as (kh*kw*in, out) and fc1; fresh Glorot weights). Each route computes the
SVT of all of them in one call (compiled with jax.jit under JAX); the time is
the median of `--reps` calls after a warm-up. Exactness is against NumPy's
float64 SVD of the same float32 kernels: the largest absolute difference of
the result, and for a threshold at each kernel's median singular value, the
number of kernels whose result has another rank than the SVD's (singular
values above 1e-5 * s_max counted).

Routes: "library" is `prox.singular_value_threshold` (the Gram matrix in
float64); "svd" the float32 SVD; under JAX also the float64 Gram route with
each of JAX's eigh implementations, and the float32 Gram route at default
and at highest matmul precision (a GPU may multiply float32 in TF32 by
default). One JSON line is printed.
"""

import argparse
import json
import os
import statistics
import time

import keras
import numpy as np

from keras_compact import prox


def kernels():
    from keras_compact_examples import models

    keras.utils.set_random_seed(0)
    model = models.vgg_cifar()
    matrices = []
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and layer.name != "predictions":
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            matrices.append(kernel.reshape(-1, kernel.shape[-1]).astype("float32"))
    return matrices


def numpy_svt(x, t):
    u, s, vt = np.linalg.svd(x.astype("float64"), full_matrices=False)
    return (u * np.maximum(s - t, 0)) @ vt, s


def svd_route(x, t):
    u, s, vt = keras.ops.svd(x, full_matrices=False)
    return keras.ops.matmul(u * keras.ops.relu(s - t), vt)


def jax_routes():
    import jax
    import jax.numpy as jnp
    from jax import lax

    def gram(x, t, dtype, implementation=None, precision=None):
        wide = x.shape[0] < x.shape[1]
        x = x.T if wide else x
        with jax.enable_x64(dtype == "float64"), jax.default_matmul_precision(precision):
            xd = x.astype(dtype)
            v, w = lax.linalg.eigh(xd.T @ xd, implementation=implementation)  # vectors first
            s = jnp.sqrt(jnp.maximum(w, 0))
            keep = s > t
            f = jnp.where(keep, 1 - t / jnp.where(keep, s, 1), 0)
            result = x @ ((v * f) @ v.T).astype("float32")
        return result.T if wide else result

    routes = {}
    for name in ("qr", "jacobi"):  # (QDWH runs on TPUs only)
        routes[f"gram64 eigh={name}"] = (
            lambda x, t, name=name: gram(x, t, "float64", lax.linalg.EighImplementation(name), "highest")
        )
    routes["gram32 highest"] = lambda x, t: gram(x, t, "float32", None, "highest")
    routes["gram32 default"] = lambda x, t: gram(x, t, "float32", None, None)
    return routes


def timed(route, matrices, t, reps):
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        compiled = jax.jit(lambda xs: [route(x, t) for x in xs])
        arrays = [jax.numpy.asarray(x) for x in matrices]

        def call():
            return [np.asarray(r) for r in jax.block_until_ready(compiled(arrays))]
    else:
        tensors = [keras.ops.convert_to_tensor(x) for x in matrices]

        def call():
            results = [route(x, t) for x in tensors]
            if backend == "torch":
                import torch

                if torch.cuda.is_available():
                    torch.cuda.synchronize()
            return [keras.ops.convert_to_numpy(r) for r in results]

    results = call()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return (statistics.median(times) * 1e3 if times else None), results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", default=None)
    parser.add_argument("--routes", default=None, help="comma-separated subset of the route names")
    args = parser.parse_args()
    matrices = kernels()
    routes = {"library": prox.singular_value_threshold, "svd": svd_route}
    if keras.backend.backend() == "jax":
        routes.update(jax_routes())
    if args.routes:
        routes = {name: routes[name] for name in args.routes.split(",")}
    references = [numpy_svt(x, 1e-6) for x in matrices]
    medians = [float(np.median(s)) for _, s in references]
    rows = []
    for name, route in routes.items():
        try:
            ms, results = timed(route, matrices, 1e-6, args.reps)
            diff = max(float(np.max(np.abs(r - ref))) for r, (ref, _) in zip(results, references))
            wrong_rank = 0
            for x, t in zip(matrices, medians):
                _, got = timed(route, [x], t, 0)
                expected, s = numpy_svt(x, t)
                floor = 1e-5 * s[0]
                got_rank = int(np.sum(np.linalg.svd(got[0], compute_uv=False) > floor))
                wrong_rank += got_rank != int(np.sum(np.maximum(s - t, 0) > floor))
            rows.append({"route": name, "ms_all_kernels": round(ms, 2), "max_abs_diff_t1e-6": diff,
                         "kernels_with_wrong_rank_t_median": wrong_rank})
        except Exception as error:  # noqa: BLE001 - a route this backend or device lacks
            rows.append({"route": name, "error": f"{type(error).__name__}: {str(error)[:200]}"})
        print(rows[-1], flush=True)
    from bench_optimizer import device_name

    result = {
        "backend": keras.backend.backend(),
        "device": device_name(),
        "kernels": [list(x.shape) for x in matrices],
        "load_average_1min": round(os.getloadavg()[0], 2),
        "rows": rows,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
