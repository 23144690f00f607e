"""The example script and the quickstart notebook run end to end and say what they should."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "radon_quickstart.py"
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"

def test_radon_quickstart_script(tmp_path):
    out = tmp_path / "radon"
    result = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLE), "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    stdout = result.stdout
    assert "919 houses in 85 counties" in stdout
    assert "NUTS fit: no problems found" in stdout
    for name in ("mu_a", "sigma_a", "beta", "sigma"):
        assert f"\n{name} " in stdout, name
    assert "lower_0.9" in stdout and "upper_0.5" in stdout
    assert "reloaded predictions identical: True" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "nuts" and manifest["model"] == "__main__:model"


def test_quickstart_notebook(run_notebook):
    text, images = run_notebook(NOTEBOOK)
    assert "919 houses in 85 counties" in text
    assert "NUTS fit: no problems found" in text
    assert "SVI fit: no problems found" in text
    assert "hdi90" in text and "eti90" in text
    assert "reloaded predictions identical: True" in text
    assert images >= 1, "the ArviZ rank plot was not displayed"
