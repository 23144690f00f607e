"""The calibration notebook runs end to end and shows each step's finding."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from test_examples import KNOWN_KERNEL_STDERR, interpreter_kernel  # noqa: F401  (fixture)

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "calibration.ipynb"


def test_calibration_notebook(tmp_path, interpreter_kernel):  # noqa: F811
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print('kernel:', sys.executable)"))
    workdir = tmp_path / "run"
    workdir.mkdir()
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name=interpreter_kernel,
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()

    stdout, stderr, images = [], [], 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                (stdout if output.name == "stdout" else stderr).append(output.text)
            elif output.output_type in ("execute_result", "display_data"):
                stdout.append(output.data.get("text/plain", ""))
                images += "image/png" in output.data
    text = "".join(stdout)
    assert f"kernel: {sys.executable}" in text
    assert "NUTS fit: no problems found" in text
    assert "under-coverage at 90%" in text                 # check
    assert "ranks uniform" in text                         # SBC: the inference is fine
    assert "best model: two_noise" in text                 # diagnose
    found = re.search(r"recalibrated 90% coverage: ([0-9.]+) \(se ([0-9.]+)\)", text)  # recalibrate
    assert found and abs(float(found[1]) - 0.9) <= 3 * float(found[2]) + 5e-4, found  # 3 SE (+ rounding)
    assert "reloaded intervals identical: True" in text
    assert images >= 4, images
    unexpected = [line for line in "".join(stderr).splitlines()
                  if line.strip() and not any(k in line for k in KNOWN_KERNEL_STDERR)]
    assert not unexpected, "\n".join(unexpected)
