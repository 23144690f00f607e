"""The example script and the quickstart notebook run end to end and say what they should."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "radon_quickstart.py"
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"

#: stderr lines of the notebook kernel that are not problems of the notebook: tqdm.auto (imported
#: by NumPyro) cannot find ipywidgets in a bare kernel, and ipykernel >= 7 logs that a kernel
#: started by nbclient talks over unencrypted local TCP.
KNOWN_KERNEL_STDERR = ("TqdmWarning: IProgress not found", "from .autonotebook import tqdm",
                       "Kernel is running over TCP without encryption")


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


@pytest.fixture
def interpreter_kernel(tmp_path, monkeypatch):
    """A kernelspec that runs this interpreter (the venv's), found before any other python kernel."""
    spec = tmp_path / "jupyter" / "kernels" / "bayesinf-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "bayesinf tests", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "bayesinf-test"


def test_quickstart_notebook(tmp_path, interpreter_kernel):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    assert nb.metadata.kernelspec.name == "python3"
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
    assert "919 houses in 85 counties" in text
    assert "NUTS fit: no problems found" in text
    assert "SVI fit: no problems found" in text
    assert "hdi90" in text and "eti90" in text
    assert "reloaded predictions identical: True" in text
    assert images >= 1, "the ArviZ rank plot was not displayed"
    unexpected = [line for line in "".join(stderr).splitlines()
                  if line.strip() and not any(k in line for k in KNOWN_KERNEL_STDERR)]
    assert not unexpected, "\n".join(unexpected)
