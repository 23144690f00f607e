"""The calibration notebook runs end to end and shows each step's finding."""

from __future__ import annotations

import re
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "calibration.ipynb"


def test_calibration_notebook(run_notebook):
    text, images = run_notebook(NOTEBOOK)
    assert "NUTS fit: no problems found" in text
    assert "under-coverage at 90%" in text                 # check
    assert "ranks uniform" in text                         # SBC: the inference is fine
    assert "best model: two_noise" in text                 # diagnose
    found = re.search(r"recalibrated 90% coverage: ([0-9.]+) \(se ([0-9.]+)\)", text)  # recalibrate
    assert found and abs(float(found[1]) - 0.9) <= 3 * float(found[2]) + 5e-4, found  # 3 SE (+ rounding)
    assert "reloaded intervals identical: True" in text
    assert images >= 4, images
