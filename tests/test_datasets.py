"""Tests for the bundled datasets in ``bayesinf.datasets``."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

import bayesinf as bi
from bayesinf import datasets
from bayesinf.datasets import (
    Dataset,
    citation,
    list_datasets,
    load_eight_schools,
    load_radon,
    load_wells,
)

LOADERS = {
    "radon": load_radon,
    "eight_schools": load_eight_schools,
    "wells": load_wells,
}


def test_list_datasets():
    assert tuple(list_datasets()) == ("radon", "eight_schools", "wells")


@pytest.mark.parametrize("name", list(LOADERS))
def test_dataset_metadata(name):
    ds = LOADERS[name]()
    assert isinstance(ds, Dataset)
    assert ds.name == name
    assert isinstance(ds.frame, pd.DataFrame)
    for text in (ds.description, ds.citation, ds.source, ds.licence):
        assert isinstance(text, str) and text.strip()
    assert "Gelman" in ds.citation
    assert "posteriordb" in ds.citation
    assert "posteriordb" in ds.source
    assert "28f8d3d6e975315f42aa274a8399f21e07a43b30" in ds.source
    assert "BSD-3-Clause" in ds.licence
    assert citation(name) == ds.citation
    assert not ds.frame.isna().any().any()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "other"


@pytest.mark.parametrize("name", list(LOADERS))
def test_fresh_copy_each_call(name):
    first = LOADERS[name]().frame
    expected = first.copy()
    first.iloc[:, 0] = 0
    first["extra"] = 1
    second = LOADERS[name]().frame
    assert second is not first
    pd.testing.assert_frame_equal(second, expected)


def test_unknown_citation():
    with pytest.raises(bi.InputError, match="is not a bundled dataset"):
        citation("nope")


def test_licence_file_shipped():
    from importlib.resources import files

    text = files("bayesinf.datasets").joinpath("LICENCE-posteriordb.md").read_text(
        encoding="utf-8"
    )
    assert "BSD 3-Clause License" in text


def test_pandas_not_needed_at_import():
    # pandas is imported lazily inside the loaders.
    assert "pd" not in vars(datasets)


def test_radon():
    df = load_radon().frame
    assert df.shape == (919, 4)
    assert list(df.columns) == ["log_radon", "floor", "county", "log_uppm"]
    assert "county_idx" not in df.columns
    assert df["log_radon"].dtype == np.float64
    assert df["log_uppm"].dtype == np.float64
    assert np.issubdtype(df["floor"].dtype, np.integer)
    assert np.issubdtype(df["county"].dtype, np.integer)
    assert set(df["floor"]) == {0, 1}
    assert sorted(df["county"].unique()) == list(range(85))
    # log_uppm is a county-level predictor: constant within each county.
    assert (df.groupby("county")["log_uppm"].nunique() == 1).all()
    # Regression values computed from the posteriordb data.
    assert df["log_radon"].mean() == pytest.approx(1.2647792371410602, abs=1e-6)
    assert df["log_uppm"].mean() == pytest.approx(-0.01728594030682668, abs=1e-6)
    assert df["floor"].sum() == 153
    assert df["log_radon"].iloc[0] == pytest.approx(0.0953101798043249)
    assert df["log_uppm"].iloc[0] == pytest.approx(-0.507408136699532)
    assert df["county"].iloc[0] == 0
    assert df["county"].iloc[-1] == 84
    assert df["log_radon"].iloc[-1] == pytest.approx(1.33500106673234)


def test_eight_schools():
    df = load_eight_schools().frame
    assert df.shape == (8, 3)
    assert list(df.columns) == ["school", "y", "sigma"]
    assert np.issubdtype(df["school"].dtype, np.integer)
    assert df["y"].dtype == np.float64
    assert df["sigma"].dtype == np.float64
    np.testing.assert_array_equal(df["school"], np.arange(8))
    np.testing.assert_array_equal(df["y"], [28, 8, -3, 7, -1, 1, 18, 12])
    np.testing.assert_array_equal(df["sigma"], [15, 10, 16, 11, 9, 11, 10, 18])
    assert "Rubin" in citation("eight_schools")


def test_wells():
    df = load_wells().frame
    assert df.shape == (3020, 6)
    assert list(df.columns) == [
        "switched", "dist", "arsenic", "assoc", "educ", "dist100",
    ]
    for col in ("switched", "assoc", "educ"):
        assert np.issubdtype(df[col].dtype, np.integer)
    for col in ("dist", "arsenic", "dist100"):
        assert df[col].dtype == np.float64
    assert set(df["switched"]) == {0, 1}
    assert set(df["assoc"]) == {0, 1}
    np.testing.assert_allclose(df["dist100"], df["dist"] / 100.0)
    assert df["switched"].sum() == 1737
    assert df["assoc"].sum() == 1277
    assert df["dist"].mean() == pytest.approx(48.33186257042435, abs=1e-6)
    assert df["arsenic"].mean() == pytest.approx(1.656930463576159, abs=1e-6)
    assert df["educ"].mean() == pytest.approx(4.828476821192053, abs=1e-6)
    assert df["dist"].iloc[0] == pytest.approx(16.826000213623)
    assert df["arsenic"].iloc[0] == pytest.approx(2.36)
