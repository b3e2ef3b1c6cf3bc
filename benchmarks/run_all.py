"""Runs every benchmarks/bench_*.py, each in its own process (`make bench`).

A new benchmark needs no registration: name it bench_<something>.py. Each
runs with its default arguments; a failure is reported and the rest still run.
"""

import glob
import os
import subprocess
import sys


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    failed = []
    for script in sorted(glob.glob(os.path.join(here, "bench_*.py"))):
        print(f"== {os.path.basename(script)}", flush=True)
        if subprocess.run([sys.executable, script]).returncode != 0:
            failed.append(os.path.basename(script))
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
