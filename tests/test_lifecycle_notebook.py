"""The production-lifecycle notebook runs end to end: save, a real `bayesinf serve` process,
predictions, feedback, monitoring reports before and after an input shift, and a warm update
saved as a new version with its lineage."""

from __future__ import annotations

from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "production_lifecycle.ipynb"


def test_production_lifecycle_notebook(run_notebook):
    text, images = run_notebook(NOTEBOOK)
    assert "NUTS fit: no problems found" in text
    assert "saved radon version 1" in text
    assert "answered by version 1" in text
    assert "problems before the shift: []" in text
    assert "drifted columns: ['floor', 'county']" in text
    assert "version 2 lineage:" in text and "'store_version': 1" in text
    assert "server stopped" in text
    assert images >= 1, "the monitoring plot was not displayed"
