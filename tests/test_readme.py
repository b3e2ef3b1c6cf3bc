"""README.md's opening script runs as pasted, and does what the text around it says."""

import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def test_the_opening_script_runs_as_pasted(tmp_path):
    with open(os.path.join(HERE, "..", "README.md"), encoding="utf-8") as readme:
        script = re.search(r"runs as pasted.*?```python\n(.*?)```", readme.read(), re.S).group(1)
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    parameters = re.search(r"parameters 431,080 -> ([\d,]+)", completed.stdout)
    kept = int(parameters.group(1).replace(",", ""))
    assert 0.9 * 0.05 * 431_080 <= kept <= 0.05 * 431_080  # the budget, met and not far under
    accuracy = float(re.search(r"test accuracy: ([\d.]+)", completed.stdout).group(1))
    assert accuracy > 0.9
    assert (tmp_path / "lenet5_small.tflite").stat().st_size > 0
