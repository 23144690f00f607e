"""The radon formula notebook runs end to end and says what it should (executed with nbclient on
this interpreter, as tests/test_examples.py does)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from test_examples import KNOWN_KERNEL_STDERR, interpreter_kernel  # noqa: F401 (fixture)

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "radon_hierarchical.ipynb"


def test_radon_hierarchical_notebook(tmp_path, interpreter_kernel):  # noqa: F811
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
    assert "919 houses in 85 counties" in text
    assert "NUTS fit: no problems found" in text
    assert "1|county_sigma" in text and "floor|county_sigma" in text
    assert "new county wider: True" in text
    assert "InputError: 'county' has level '999'" in text
    assert "reloaded predictions identical: True" in text
    assert images >= 1, "the ArviZ rank plot was not displayed"
    unexpected = [line for line in "".join(stderr).splitlines()
                  if line.strip() and not any(k in line for k in KNOWN_KERNEL_STDERR)]
    assert not unexpected, "\n".join(unexpected)
