"""The radon formula notebook runs end to end and says what it should (executed with nbclient on
this interpreter, as tests/test_examples.py does)."""

from __future__ import annotations

from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "radon_hierarchical.ipynb"


def test_radon_hierarchical_notebook(run_notebook):
    text, images = run_notebook(NOTEBOOK)
    assert "919 houses in 85 counties" in text
    assert "NUTS fit: no problems found" in text
    assert "1|county_sigma" in text and "floor|county_sigma" in text
    assert "new county wider: True" in text
    assert "InputError: 'county' has level '999'" in text
    assert "reloaded predictions identical: True" in text
    assert images >= 1, "the ArviZ rank plot was not displayed"
