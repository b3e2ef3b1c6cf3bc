"""The ViT example over seeds, and Torch-Pruning 1.6.1 on the same ViT at the same size.

For each seed, runs examples/vit_mnist.py (dense ViT; ProxAdam with HeadLasso and the FFN
GroupLasso; compaction; fine-tuning; TFLite size and latency) in its own process, into
--out_dir/seed<s>. Then Torch-Pruning prunes the same ViT in PyTorch, trained dense with the
example's schedule, to the same number of heads removed and at most the same parameter count
as that seed's compact model, and fine-tunes it with the example's fine-tuning schedule
(peer_torch_pruning_vit_worker.py, in the peer's own venv, made as peer_torch_pruning.py
makes it; the mnist5k split goes to it as .npy files). Writes --out (JSON: every run, the
means, the targets) and prints a markdown table (also --table).

    python benchmarks/bench_vit.py --seeds 0 1 2 --out benchmarks/results/vit_mnist5k.json \\
        --table benchmarks/results/vit_mnist5k.md
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from keras_compact.files import write_json, write_text
from keras_compact_examples import data
from peer_torch_pruning import DEFAULT_TORCH, PINS, Unavailable, ensure_venv

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_VENV = os.path.join(HERE, ".venv-torch-pruning")
# The targets (mean of the seeds).
FFN_REMOVED, HEADS_REMOVED, MAX_ACCURACY_LOSS, SPEEDUP_SHARE = 0.5, 0.25, 0.5, 0.8


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out_dir", default="out/bench_vit", help="the example's runs go here")
    parser.add_argument("--out", default="out/bench_vit/vit_mnist5k.json", help="JSON results")
    parser.add_argument("--table", help="also write the markdown table here")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse an example run whose results.json exists (same flags assumed)")
    parser.add_argument("--no_peer", action="store_true", help="skip Torch-Pruning")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the peer")
    parser.add_argument("--time_limit", type=float, default=3600, help="seconds for the peer's worker")
    parser.add_argument("--venv", default=DEFAULT_VENV)
    parser.add_argument("--torch", default=DEFAULT_TORCH)
    parser.add_argument("example_flags", nargs="*",
                        help="after --: flags for examples/vit_mnist.py (e.g. -- --epochs=20)")
    args = parser.parse_args()
    started = time.time()

    ours = []
    for seed in args.seeds:
        out_dir = os.path.join(args.out_dir, f"seed{seed}")
        results_path = os.path.join(out_dir, "results.json")
        if not (args.reuse and os.path.exists(results_path)):
            command = [sys.executable, os.path.join(ROOT, "examples", "vit_mnist.py"), f"--seed={seed}",
                       f"--out_dir={out_dir}", "--progress=none", *args.example_flags]
            print("$", " ".join(command), flush=True)
            subprocess.run(command, check=True)
        with open(results_path) as f:
            results = json.load(f)
        ours.append(summarize_ours(seed, results))
        print(f"seed {seed}: {ours[-1]}", flush=True)

    record = dict(command=" ".join(sys.argv), machine=f"{os.cpu_count()}-core CPU ({platform.machine()}), no GPU",
                  ours=ours)
    config = results["config"]
    if not args.no_peer:
        record["peer"] = run_peer(args, ours, config)
    record["means"] = means(ours, record.get("peer", {}).get("records", []))
    record["targets"] = targets(record["means"])
    record["wall_seconds"] = round(time.time() - started, 1)
    write_json(args.out, record)
    table = markdown(record)
    if args.table:
        write_text(args.table, table)
    print(table)


def summarize_ours(seed, results):
    dense, compact = results["dense"], results["compact"]
    heads = [sum(b["heads"] for b in entry["blocks"]) for entry in (dense, compact)]
    ffn = [sum(b["ffn"] for b in entry["blocks"]) for entry in (dense, compact)]
    return dict(
        seed=seed,
        dense_accuracy=dense["accuracy"],
        accuracy=compact["accuracy"],
        accuracy_before_finetune=compact["accuracy_before_finetune"],
        dense_parameters=dense["params"],
        parameters=compact["params"],
        dense_macs=dense["macs"],
        macs=compact["macs"],
        blocks=compact["blocks"],
        heads_removed=heads[0] - heads[1],
        heads_total=heads[0],
        ffn_removed=ffn[0] - ffn[1],
        ffn_total=ffn[0],
        dense_tflite_bytes=dense.get("tflite_bytes"),
        tflite_bytes=compact.get("tflite_bytes"),
        dense_latency_us=dense.get("latency_us"),
        latency_us=compact.get("latency_us"),
        load_average=results.get("latency", {}).get("load_average"),
    )


def run_peer(args, ours, config):
    result = dict(peer="torch_pruning")
    if config.get("train_limit") or config.get("test_limit"):
        raise SystemExit("the peer trains and tests on the whole mnist5k split: run the example without "
                         "--train_limit/--test_limit, or pass --no_peer.")
    try:
        result["install"] = ensure_venv(args.venv, (args.torch, *PINS))
    except Unavailable as error:
        result.update(skipped=str(error), records=[])
        print(f"Torch-Pruning peer skipped: {error}", file=sys.stderr)
        return result
    x_train, y_train, x_test, y_test = data.mnist5k_arrays()
    job = dict(
        architecture=dict(patch=config["patch"], dim=config["dim"], heads=config["heads"],
                          blocks=config["blocks"], mlp=config["mlp"]),
        dense_parameters=ours[0]["dense_parameters"],
        seeds=[dict(seed=o["seed"], target_parameters=o["parameters"], heads_removed=o["heads_removed"])
               for o in ours],
        epochs=config["epochs"], finetune_epochs=config["finetune_epochs"],
        learning_rate=config["learning_rate"], finetune_learning_rate=config["finetune_learning_rate"],
        batch_size=config["batch_size"], shift=config["shift"], threads=args.threads,
        distill=config.get("distill", 0.0), distill_temperature=config.get("distill_temperature", 2.0),
    )
    result["job"] = job
    with tempfile.TemporaryDirectory() as folder:
        for name, array in (("x_train", x_train), ("y_train", y_train), ("x_test", x_test), ("y_test", y_test)):
            np.save(os.path.join(folder, f"{name}.npy"), array)
        with open(os.path.join(folder, "job.json"), "w") as f:
            json.dump(job, f)
        records_path = os.path.join(folder, "records.jsonl")
        command = [os.path.join(args.venv, "bin", "python"), os.path.join(HERE, "peer_torch_pruning_vit_worker.py"),
                   "--data", folder, "--job", os.path.join(folder, "job.json"), "--records", records_path]
        started = time.time()
        try:
            status = subprocess.run(command, timeout=args.time_limit).returncode
            result["stopped"] = f"worker exit status {status}" if status else None
        except subprocess.TimeoutExpired:
            result["stopped"] = f"killed at --time_limit {args.time_limit:g} s"
        result["wall_seconds"] = round(time.time() - started, 1)
        records = []
        if os.path.exists(records_path):
            with open(records_path) as f:
                records = [json.loads(line) for line in f]
    result["records"] = records
    return result


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def means(ours, peer):
    found = dict(
        dense_accuracy=_mean(o["dense_accuracy"] for o in ours),
        accuracy=_mean(o["accuracy"] for o in ours),
        parameters=_mean(o["parameters"] for o in ours),
        dense_parameters=ours[0]["dense_parameters"],
        macs=_mean(o["macs"] for o in ours),
        dense_macs=ours[0]["dense_macs"],
        heads_removed_share=_mean(o["heads_removed"] / o["heads_total"] for o in ours),
        ffn_removed_share=_mean(o["ffn_removed"] / o["ffn_total"] for o in ours),
        macs_reduction=_mean(o["dense_macs"] / o["macs"] for o in ours),
        speedup=_mean(o["dense_latency_us"] / o["latency_us"] for o in ours if o["latency_us"]),
    )
    if peer:
        found.update(
            peer_dense_accuracy=_mean(r["accuracy_dense"] for r in peer),
            peer_accuracy=_mean(r["accuracy"] for r in peer),
            peer_parameters=_mean(r["parameters"] for r in peer),
        )
    return found


def targets(mean):
    loss = 100 * (mean["dense_accuracy"] - mean["accuracy"])
    ratio = mean["speedup"] / mean["macs_reduction"] if mean["speedup"] else None
    return dict(
        ffn_removed=dict(value=mean["ffn_removed_share"], goal=f">= {FFN_REMOVED}",
                         met=mean["ffn_removed_share"] >= FFN_REMOVED),
        heads_removed=dict(value=mean["heads_removed_share"], goal=f">= {HEADS_REMOVED}",
                           met=mean["heads_removed_share"] >= HEADS_REMOVED),
        accuracy_loss_points=dict(value=loss, goal=f"<= {MAX_ACCURACY_LOSS}", met=loss <= MAX_ACCURACY_LOSS),
        speedup_over_macs_reduction=dict(value=ratio, goal=f">= {SPEEDUP_SHARE}",
                                         met=ratio is not None and ratio >= SPEEDUP_SHARE),
    )


def markdown(record):
    peer = {r["seed"]: r for r in record.get("peer", {}).get("records", [])}
    lines = [
        "| seed | dense acc. | compact acc. | change (pt) | heads kept per block | FFN neurons kept per block "
        "| params | MACs | .tflite | latency dense -> compact | speed-up / MACs reduction "
        "| TP dense acc. | TP pruned acc. | TP params | TP heads / FFN per block |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for o in record["ours"]:
        speedup = o["dense_latency_us"] / o["latency_us"] if o["latency_us"] else None
        reduction = o["dense_macs"] / o["macs"]
        t = peer.get(o["seed"])
        tp_cells = (
            f"{100 * t['accuracy_dense']:.2f}% | {100 * t['accuracy']:.2f}% | {t['parameters']:,} "
            f"| {'-'.join(str(b['heads']) for b in t['blocks'])} / {'-'.join(str(b['ffn']) for b in t['blocks'])}"
            if t else "- | - | - | -"
        )
        lines.append(
            f"| {o['seed']} | {100 * o['dense_accuracy']:.2f}% | {100 * o['accuracy']:.2f}% "
            f"| {100 * (o['accuracy'] - o['dense_accuracy']):+.2f} "
            f"| {'-'.join(str(b['heads']) for b in o['blocks'])} | {'-'.join(str(b['ffn']) for b in o['blocks'])} "
            f"| {o['parameters']:,} of {o['dense_parameters']:,} | {o['macs']:,} of {o['dense_macs']:,} "
            f"| {o['tflite_bytes'] or 0:,} B | "
            + (f"{o['dense_latency_us']:.1f} -> {o['latency_us']:.1f} us | {speedup:.2f}x / {reduction:.2f}x "
               if speedup else "- | - ")
            + f"| {tp_cells} |"
        )
    m = record["means"]
    lines.append(
        f"| **mean** | {100 * m['dense_accuracy']:.2f}% | {100 * m['accuracy']:.2f}% "
        f"| {100 * (m['accuracy'] - m['dense_accuracy']):+.2f} | {100 * m['heads_removed_share']:.0f}% removed "
        f"| {100 * m['ffn_removed_share']:.0f}% removed | {m['parameters']:,.0f} | {m['macs']:,.0f} | | "
        + (f"| {m['speedup']:.2f}x / {m['macs_reduction']:.2f}x " if m["speedup"] else "| - ")
        + (f"| {100 * m['peer_dense_accuracy']:.2f}% | {100 * m['peer_accuracy']:.2f}% | {m['peer_parameters']:,.0f} | |"
           if "peer_accuracy" in m else "| - | - | - | - |")
    )
    lines.append("")
    for name, target in record["targets"].items():
        value = target["value"]
        shown = "-" if value is None else f"{value:.3f}"
        lines.append(f"- {name}: {shown} (goal {target['goal']}): {'met' if target['met'] else '**missed**'}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
