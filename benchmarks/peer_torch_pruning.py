"""The Torch-Pruning peer: group-norm structured pruning to a parameter or MAC budget.

Torch-Pruning 1.6.1 (GroupNormPruner with its group-lasso sparse training)
prunes the same LeNet-5 to 3%, 5%, 10% and 25% of its parameters and the same
vgg_small to 50% and 25% of its multiply-adds, on the project's mnist5k split;
one JSON record per (model, budget, seed). What is trained and how: see
peer_torch_pruning_worker.py.

torch never enters the project venv. On first use this script creates its own
venv (default benchmarks/.venv-torch-pruning/, git-ignored) and pip-installs
into it, from the package index, the pins below: this is the only network use,
and it says so before it starts. Offline, it writes an --out file whose
"skipped" says why and exits 0. The default torch is the 192 MB CPU-only wheel
torch==2.13.0+cpu, which pip finds on these machines through their
find-links folder; the index itself serves Linux torch only as the CUDA build
(torch==2.14.1 pulls about 3 GB of wheels): pass --torch torch==2.14.1 where
the CPU wheel is not at hand. The driver runs in the project venv; it writes
the data to a temporary .npz and runs the worker with the peer venv's python,
killed at --time_limit (finished records are kept and written, "complete" and
"not_run" say what is missing, and the exit status is non-zero).

    python benchmarks/peer_torch_pruning.py --models lenet5 --seeds 0 1 2 \\
        --out benchmarks/results/torch_pruning_lenet5.json
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np

from _common import ARCHITECTURES
from _common import BUDGETS
from _common import mnist5k
from keras_compact.compaction.report import multiply_adds
from keras_compact.files import write_json

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_VENV = os.path.join(HERE, ".venv-torch-pruning")
DEFAULT_TORCH = "torch==2.13.0+cpu"
PINS = ("torch-pruning==1.6.1", "numpy==2.4.6")
REG = 5e-4  # Torch-Pruning's group_sl recipe (ResNet-56 on CIFAR-10)


class Unavailable(Exception):
    """The peer venv could not be made (offline, or the wheel is not there)."""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(BUDGETS), default=list(BUDGETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10, help="sparse-training epochs")
    parser.add_argument("--finetune_epochs", type=int, default=5)
    parser.add_argument("--reg", type=float, default=REG, help="GroupNormPruner's reg")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on 2 shared cores, 2 threads ran 4x slower)")
    parser.add_argument("--time_limit", type=float, default=3600,
                        help="seconds from the start (install included); the worker is "
                             "killed then, finished records kept")
    parser.add_argument("--venv", default=DEFAULT_VENV)
    parser.add_argument("--torch", default=DEFAULT_TORCH, help="pip requirement for torch")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    started = time.time()
    result = dict(peer="torch_pruning", command=" ".join(sys.argv),
                  device=f"{os.cpu_count()}-core CPU ({platform.machine()}), no GPU")
    try:
        result["install"] = ensure_venv(args.venv, (args.torch, *PINS))
    except Unavailable as error:
        result.update(skipped=str(error), records=[])
        write_json(args.out, result)
        print(f"Torch-Pruning peer skipped: {error}", file=sys.stderr)
        return

    expected = [(name, kind, fraction, seed) for name in args.models for seed in args.seeds
                for kind, fraction in BUDGETS[name]]
    with tempfile.TemporaryDirectory() as folder:
        paths = {k: os.path.join(folder, k) for k in ("data.npz", "job.json", "records.jsonl")}
        arrays, dense = {}, {}
        for name in args.models:
            build, shape = ARCHITECTURES[name]
            (x_train, y_train), (x_test, y_test) = mnist5k(**shape)
            arrays.update({f"{name}_x_train": x_train, f"{name}_y_train": y_train,
                           f"{name}_x_test": x_test, f"{name}_y_test": y_test})
            model = build(keras)
            dense[name] = dict(parameters=model.count_params(), multiply_adds=multiply_adds(model))
        np.savez(paths["data.npz"], **arrays)
        with open(paths["job.json"], "w") as f:
            json.dump(dict(models=args.models, seeds=args.seeds, epochs=args.epochs,
                           finetune_epochs=args.finetune_epochs, reg=args.reg, dense=dense,
                           threads=args.threads,
                           budgets={name: BUDGETS[name] for name in args.models}), f)
        python = os.path.join(args.venv, "bin", "python")
        command = [python, os.path.join(HERE, "peer_torch_pruning_worker.py"), "--data",
                   paths["data.npz"], "--job", paths["job.json"], "--records", paths["records.jsonl"]]
        try:
            worker = subprocess.run(command, timeout=args.time_limit - (time.time() - started))
            status = worker.returncode
            result["stopped"] = f"worker exit status {status}" if status else None
        except subprocess.TimeoutExpired:
            result["stopped"] = f"killed at --time_limit {args.time_limit:g} s"
        records = []
        if os.path.exists(paths["records.jsonl"]):
            with open(paths["records.jsonl"]) as f:
                records = [json.loads(line) for line in f]

    done = {(r["model"], r["budget"]["kind"], r["budget"]["fraction"], r["seed"]) for r in records}
    result.update(
        dense=dense,
        settings=dict(epochs=args.epochs, finetune_epochs=args.finetune_epochs, reg=args.reg,
                      batch=64, lr=0.01, momentum=0.9, weight_decay=0.0,
                      torch_threads=args.threads),
        complete=len(done) == len(expected),
        not_run=[dict(model=m, kind=k, fraction=f, seed=s)
                 for m, k, f, s in expected if (m, k, f, s) not in done],
        wall_seconds=round(time.time() - started, 1),
        records=records,
    )
    write_json(args.out, result)
    print(f"{len(records)}/{len(expected)} records in {result['wall_seconds']:.0f} s -> {args.out}")
    if result["stopped"]:
        sys.exit(f"stopped early: {result['stopped']}")


def ensure_venv(venv, requirements):
    """The peer venv with exactly `requirements` (pip specs 'name==version'): reused when
    it has them, else made and installed from the package index. Returns what was done."""
    wanted = dict(spec.split("==") for spec in requirements)
    python = os.path.join(venv, "bin", "python")
    if installed_versions(python, wanted) == wanted:
        return dict(installed_now=False, versions=wanted, venv=venv)
    print(f"Installing {' '.join(requirements)} into {venv} from the package index "
          f"(network needed once; the CPU torch wheel is about 200 MB) ...", flush=True)
    started = time.time()
    subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True)
    pip = subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check",
                          "--no-input", *requirements], capture_output=True, text=True)
    if pip.returncode != 0:
        tail = "\n".join(pip.stderr.strip().splitlines()[-3:])
        raise Unavailable(f"pip install {' '.join(requirements)} failed (offline, or no such "
                          f"wheel here; see --torch):\n{tail}")
    seconds = time.time() - started
    found = installed_versions(python, wanted)
    if found != wanted:
        raise Unavailable(f"the venv has {found}, not {wanted}")
    size = subprocess.run(["du", "-sm", venv], capture_output=True, text=True).stdout.split()[0]
    print(f"Installed in {seconds:.0f} s; the venv takes {size} MB", flush=True)
    return dict(installed_now=True, versions=wanted, venv=venv,
                install_seconds=round(seconds, 1), venv_megabytes=int(size))


def installed_versions(python, wanted):
    if not os.path.exists(python):
        return None
    query = ("import importlib.metadata as m, json, sys; "
             "print(json.dumps({d: m.version(d) for d in sys.argv[1:]}))")
    found = subprocess.run([python, "-c", query, *wanted], capture_output=True, text=True)
    return json.loads(found.stdout) if found.returncode == 0 else None


if __name__ == "__main__":
    main()
