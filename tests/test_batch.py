"""Batch scoring (``bayesinf.batch``): CSV/Parquet round trips equal to in-process predict,
independence of chunking and partitioning, resume after a crash, atomic output, input errors
naming the column and rows, the Dask path and the ``bayesinf predict`` command.

Every comparison here is exact (same seed, same numbers): a row's predictive draws depend only on
the seed, the draw and the row's global index (``bayesinf.predictive``), so no Monte Carlo
tolerance is involved.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayesinf as bi
import models
from bayesinf import batch
from bayesinf.batch import scoring
from conftest import TINY_SVI

LEVELS = (0.5, 0.9)
N = 300


def assert_frames_equal(got: pd.DataFrame, expected: pd.DataFrame):
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected)
    for c in expected.columns:
        e = expected[c].to_numpy()
        g = got[c].to_numpy()
        if e.dtype.kind == "f":  # a CSV round trip reads float32 columns back as float64
            g = g.astype(e.dtype)
        np.testing.assert_array_equal(g, e, err_msg=c)


@pytest.fixture(scope="module")
def table():
    """``N`` rows with an id, the two features of ``tiny_frame`` ('a', 'b') and a text column."""
    rng = np.random.default_rng(42)
    return pd.DataFrame({"id": np.arange(1000, 1000 + N), "a": rng.normal(size=N), "b": rng.normal(size=N),
                         "note": [f"r{i}" for i in range(N)]})


def expected_for(post, frame, **kwargs):
    pred = post.predict(frame[["a", "b"]], levels=LEVELS, seed=5, **kwargs)
    return pd.concat([frame[["id"]], pred.to_pandas()], axis=1).reset_index(drop=True)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_file_round_trip_equals_in_process_predict(tiny_frame, table, tmp_path, fmt):
    source = tmp_path / f"in.{fmt}"
    table.to_parquet(source) if fmt == "parquet" else table.to_csv(source, index=False)
    read_back = pd.read_parquet(source) if fmt == "parquet" else pd.read_csv(source)
    sink = tmp_path / f"out.{fmt}"
    result = batch.predict(tiny_frame, source, sink, chunk_rows=128, levels=LEVELS, seed=5, keep=["id"],
                           extra="ignore", progress=False)
    assert result.path == sink and result.num_rows == N and result.num_chunks == 3
    assert result.computed_chunks == 3 and result.reused_chunks == 0
    out = pd.read_parquet(sink) if fmt == "parquet" else pd.read_csv(sink)
    expected = expected_for(tiny_frame, read_back)
    if fmt == "csv":  # CSV pass-through columns are text, exactly as written
        expected["id"] = expected["id"].astype(str).astype(out["id"].dtype)
    assert_frames_equal(out, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, sink.name])  # no parts left


def test_rows_equal_in_process_predict_at_any_offset(tiny_frame, table, tmp_path):
    batch.predict(tiny_frame, table, tmp_path / "out.parquet", chunk_rows=100, levels=LEVELS, seed=5, keep=["id"],
                  extra="ignore", progress=False)
    out = pd.read_parquet(tmp_path / "out.parquet")
    for start, stop in ((0, 1), (37, 38), (99, 131), (250, 300)):  # unaligned starts, one row, a chunk edge
        rows = table.iloc[start:stop]
        assert_frames_equal(out.iloc[start:stop].reset_index(drop=True), expected_for(tiny_frame, rows, row_offset=start))


def test_chunk_size_does_not_change_the_output(tiny_frame, table, tmp_path):
    outputs = []
    for chunk_rows in (37, 64, 1000):
        sink = tmp_path / f"out-{chunk_rows}.parquet"
        batch.predict(tiny_frame, table, sink, chunk_rows=chunk_rows, levels=LEVELS, seed=5, keep=["id"],
                      extra="ignore", progress=False)
        outputs.append(pd.read_parquet(sink))
    assert_frames_equal(outputs[0], outputs[2])
    assert_frames_equal(outputs[1], outputs[2])
    assert_frames_equal(outputs[2], expected_for(tiny_frame, table))  # and equals one in-process call


def test_resume_after_crash_reuses_finished_parts(tiny_frame, table, tmp_path, monkeypatch):
    sink = tmp_path / "out.parquet"
    calls = []
    real = scoring.score_frame

    def crash_on_third(*args, **kwargs):
        calls.append(args[3])  # the chunk's first row
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "score_frame", crash_on_third)
    options = dict(chunk_rows=64, levels=LEVELS, seed=5, keep=["id"], extra="ignore", progress=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        batch.predict(tiny_frame, table, sink, **options)
    assert not sink.exists()  # no partial output
    [work] = [p for p in tmp_path.iterdir() if p.name.startswith(".out.parquet.parts-")]
    assert sorted(p.name for p in work.glob("part-*")) == ["part-000000.parquet", "part-000001.parquet"]

    calls.clear()
    monkeypatch.setattr(scoring, "score_frame", lambda *a, **k: (calls.append(a[3]), real(*a, **k))[1])
    result = batch.predict(tiny_frame, table, sink, **options)
    assert calls == [128, 192, 256]  # chunks 0 and 1 were not recomputed
    assert (result.computed_chunks, result.reused_chunks, result.num_chunks) == (3, 2, 5)
    assert not work.exists()
    assert_frames_equal(pd.read_parquet(sink), expected_for(tiny_frame, table))

    # other settings (here the seed) do not reuse parts written for different settings
    calls.clear()
    batch.predict(tiny_frame, table, tmp_path / "other.parquet", **{**options, "seed": 6})
    assert len(calls) == 5


def test_output_is_atomic(tiny_frame, table, tmp_path, monkeypatch):
    sink = tmp_path / "out.csv"
    sink.write_text("an earlier output\n")
    real = scoring.score_frame

    def fail_late(*args, **kwargs):
        if args[3] >= 256:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "score_frame", fail_late)
    with pytest.raises(RuntimeError, match="disk full"):
        batch.predict(tiny_frame, table, sink, chunk_rows=128, seed=5, extra="ignore", overwrite=True,
                      progress=False)
    assert sink.read_text() == "an earlier output\n"  # untouched
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    with pytest.raises(bi.InputError, match="exists") as info:
        batch.predict(tiny_frame, table, sink, extra="ignore", progress=False)
    assert info.value.field == "sink"


# ----------------------------------------------------------------------------- input errors
def test_missing_and_extra_columns(tiny_frame, table, tmp_path):
    sink = tmp_path / "out.parquet"
    with pytest.raises(bi.InputError, match="missing from the input") as info:
        batch.predict(tiny_frame, table.drop(columns="b"), sink, extra="ignore", progress=False)
    assert info.value.field == "b"
    with pytest.raises(bi.InputError, match="does not read") as info:
        batch.predict(tiny_frame, table, sink, keep=["id"], progress=False)
    assert info.value.field == "note" and "extra='ignore'" in str(info.value)
    with pytest.raises(bi.InputError, match="keep") as info:
        batch.predict(tiny_frame, table, sink, keep=["customer"], extra="ignore", progress=False)
    assert info.value.field == "customer"
    with pytest.raises(bi.InputError, match="not a row argument") as info:
        batch.predict(tiny_frame, table, sink, columns={"Z": ["a"]}, extra="ignore", progress=False)
    assert info.value.field == "columns"
    with pytest.raises(bi.InputError, match="lists 1 column") as info:
        batch.predict(tiny_frame, table, sink, columns={"X": ["a"]}, extra="ignore", progress=False)
    assert info.value.field == "columns['X']"
    assert not sink.exists()


def test_matrix_argument_fit_without_names_needs_columns(tiny_linreg, table, tmp_path):
    with pytest.raises(bi.InputError, match="columns=") as info:
        batch.predict(tiny_linreg, table, tmp_path / "o.parquet", extra="ignore", progress=False)
    assert info.value.field == "columns" and "'X'" in str(info.value)
    batch.predict(tiny_linreg, table, tmp_path / "o.parquet", columns={"X": ["a", "b"]}, chunk_rows=100,
                  levels=LEVELS, seed=5, keep=["id"], extra="ignore", progress=False)
    expected = pd.concat([table[["id"]], tiny_linreg.predict(table[["a", "b"]].to_numpy(), levels=LEVELS,
                                                             seed=5).to_pandas()], axis=1)
    assert_frames_equal(pd.read_parquet(tmp_path / "o.parquet"), expected)


def test_nan_and_wrong_dtype_name_column_and_row(tiny_frame, table, tmp_path):
    bad = table.copy()
    bad.loc[203, "b"] = np.nan
    with pytest.raises(bi.InputError, match=r"first at row 203") as info:
        batch.predict(tiny_frame, bad, tmp_path / "o.parquet", chunk_rows=100, extra="ignore", progress=False)
    assert info.value.field == "b" and "rows 200-299" in str(info.value)
    assert not (tmp_path / "o.parquet").exists()
    bad = table.astype({"a": str})
    with pytest.raises(bi.InputError, match="dtype") as info:
        batch.predict(tiny_frame, bad, tmp_path / "o.parquet", extra="ignore", progress=False)
    assert info.value.field == "a"
    # a CSV column that turns out not to be numeric after the first rows
    path = tmp_path / "bad.csv"
    text = table[["a", "b"]].to_csv(index=False).splitlines()
    text[250] = "oops," + text[250].split(",")[1]
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(bi.InputError, match="oops") as info:
        batch.predict(tiny_frame, path, tmp_path / "o.parquet", chunk_rows=100, progress=False)
    assert info.value.field == "a" and "bad.csv" in str(info.value)  # the column, not Arrow's "column #0"


def test_unseen_index_of_integer_argument(tiny_grouped, small_data, tmp_path):
    frame = pd.DataFrame({"x1": small_data["X"][:40, 0], "x2": small_data["X"][:40, 1], "g": small_data["g"][:40]})
    frame.loc[33, "g"] = 3  # groups 0..2 at fit
    with pytest.raises(bi.InputError, match=r"value 3 at row 33, outside the range \[0, 2\]") as info:
        batch.predict(tiny_grouped, frame, tmp_path / "o.parquet", columns={"X": ["x1", "x2"]}, chunk_rows=16,
                      progress=False)
    assert info.value.field == "g"


def grouped_frame(small_data, rows=40):
    return pd.DataFrame({"x1": small_data["X"][:rows, 0], "x2": small_data["X"][:rows, 1],
                         "g": small_data["g"][:rows]})


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_integer_argument_written_as_float(tiny_grouped, small_data, tmp_path, fmt):
    """``2.0`` for an integer argument (how pandas writes an int column that held a NaN) is ``2``;
    ``2.5`` is an error naming the column and the rows."""
    frame = grouped_frame(small_data)
    floats = frame.astype({"g": float})
    source = tmp_path / f"in.{fmt}"
    floats.to_csv(source, index=False) if fmt == "csv" else floats.to_parquet(source)
    if fmt == "csv":
        assert ",2.0\n" in source.read_text()
    kwargs = dict(columns={"X": ["x1", "x2"]}, chunk_rows=16, levels=LEVELS, seed=5, progress=False)
    batch.predict(tiny_grouped, source, tmp_path / "out.parquet", **kwargs)
    batch.predict(tiny_grouped, frame, tmp_path / "ints.parquet", **kwargs)
    assert_frames_equal(pd.read_parquet(tmp_path / "out.parquet"), pd.read_parquet(tmp_path / "ints.parquet"))

    floats.loc[[21, 30], "g"] = [1.5, 0.25]
    floats.to_csv(source, index=False) if fmt == "csv" else floats.to_parquet(source)
    with pytest.raises(bi.InputError, match=r"2 non-integer values in rows 21-30 \(first 1.5 at row 21\)") as info:
        batch.predict(tiny_grouped, source, tmp_path / "bad.parquet", **{**kwargs, "chunk_rows": 64})
    assert info.value.field == "g"
    floats.loc[[21, 30], "g"] = [1.0, 2.0**60]
    floats.to_csv(source, index=False) if fmt == "csv" else floats.to_parquet(source)
    with pytest.raises(bi.InputError, match=r"the out-of-range value 1.15\d*e\+18 at row 30") as info:
        batch.predict(tiny_grouped, source, tmp_path / "bad.parquet", **kwargs)
    assert info.value.field == "g"


def test_repeated_column_is_an_error(tiny_frame, table, tmp_path):
    path = tmp_path / "dup.csv"
    text = table[["id", "a", "b"]].to_csv(index=False).splitlines()
    path.write_text("\n".join([text[0] + ",a"] + [line + ",9.0" for line in text[1:]]) + "\n")
    for extra in ("error", "ignore"):
        with pytest.raises(bi.InputError, match="appears 2 times") as info:
            batch.predict(tiny_frame, path, tmp_path / "o.parquet", keep=["id"], extra=extra, progress=False)
        assert info.value.field == "a"
    frame = pd.concat([table[["a", "b"]], table[["b"]]], axis=1)  # a DataFrame with two 'b' columns
    with pytest.raises(bi.InputError, match="appears 2 times") as info:
        batch.predict(tiny_frame, frame, tmp_path / "o.parquet", progress=False)
    assert info.value.field == "b"
    # a repeated column the model does not read is skipped with extra="ignore"
    frame = pd.concat([table[["a", "b"]], table[["note", "note"]]], axis=1)
    batch.predict(tiny_frame, frame, tmp_path / "o.parquet", extra="ignore", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dup.csv", "o.parquet"]


def test_failed_run_removes_its_parts_directory_unless_it_can_resume(tiny_frame, table, tmp_path):
    source = tmp_path / "in.csv"
    sink = tmp_path / "out.csv"

    def parts_dirs():
        return [p for p in tmp_path.iterdir() if p.name.startswith(".out.csv.parts-")]

    bad = table.copy()
    bad.loc[3, "b"] = np.nan  # fails in the first chunk: nothing to resume
    bad.to_csv(source, index=False)
    with pytest.raises(bi.InputError, match="first at row 3"):
        batch.predict(tiny_frame, source, sink, chunk_rows=100, keep=["id"], extra="ignore", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]

    bad = table.copy()
    bad.loc[250, "b"] = np.nan  # fails in the third chunk: two parts are kept for a re-run
    bad.to_csv(source, index=False)
    with pytest.raises(bi.InputError, match="first at row 250"):
        batch.predict(tiny_frame, source, sink, chunk_rows=100, keep=["id"], extra="ignore", progress=False)
    (work,) = parts_dirs()
    assert sorted(p.name for p in work.glob("part-*")) == ["part-000000.parquet", "part-000001.parquet"]
    with pytest.raises(bi.InputError, match="first at row 250"):  # same input, same settings: resumes
        batch.predict(tiny_frame, source, sink, chunk_rows=100, keep=["id"], extra="ignore", progress=False)
    assert parts_dirs() == [work] and not sink.exists()


# ----------------------------------------------------------------------------- formula models
@pytest.fixture(scope="module")
def formula_post():
    rng = np.random.default_rng(3)
    n = 80
    df = pd.DataFrame({"x": rng.normal(size=n), "c": rng.choice(["lo", "hi"], size=n),
                       "g": rng.choice(["a", "b", "c"], size=n)})
    df["k"] = rng.poisson(np.exp(1.0 + 0.3 * df["x"] + 0.5 * (df["c"] == "hi")))
    return bi.Model.from_formula("k ~ x + C(c) + (1 | g)", data=df, family="poisson").fit(seed=0, **TINY_SVI)


@pytest.fixture(scope="module")
def formula_table():
    rng = np.random.default_rng(4)
    n = 150
    return pd.DataFrame({"id": [f"u{i}" for i in range(n)], "x": rng.normal(size=n),
                         "c": rng.choice(["lo", "hi"], size=n), "g": rng.choice(["a", "b", "c", "new"], size=n)})


def test_formula_model_parquet_with_probabilities(formula_post, formula_table, tmp_path):
    formula_table.to_parquet(tmp_path / "in.parquet")
    batch.predict(formula_post, tmp_path / "in.parquet", tmp_path / "out.parquet", chunk_rows=48, levels=LEVELS,
                  seed=2, keep=["id"], progress=False)
    out = pd.read_parquet(tmp_path / "out.parquet")
    pred = formula_post.predict(formula_table[["x", "c", "g"]], levels=LEVELS, seed=2)
    expected = pd.concat([formula_table[["id"]], pred.to_pandas()], axis=1)
    assert {"p_0", "p_1"} <= set(out.columns)  # count outcome: class probabilities
    assert_frames_equal(out, expected)


def test_formula_model_unseen_category(formula_post, formula_table, tmp_path):
    bad = formula_table.copy()
    bad.loc[120, "c"] = "mid"
    with pytest.raises(bi.InputError, match="'mid' at row 120") as info:
        batch.predict(formula_post, bad, tmp_path / "o.csv", chunk_rows=48, keep=["id"], progress=False)
    assert info.value.field == "c"
    with pytest.raises(bi.InputError, match="was not in the data at fit") as info:
        batch.predict(formula_post, formula_table, tmp_path / "o.csv", chunk_rows=48, keep=["id"],
                      new_groups="error", progress=False)
    assert info.value.field == "g" and "input rows 0-47" in str(info.value)


def test_row_offset_exact_for_rejection_sampled_counts(formula_post, formula_table):
    """Poisson draws with rates above 10 use a rejection sampler; rows still get the same draws
    whatever the request they are part of."""
    frame = formula_table[["x", "c", "g"]].assign(x=formula_table["x"] + 4.0)  # rates around 20-60
    whole = formula_post.predict(frame, seed=9, return_draws=True)
    assert (whole.mean > 10).sum() > 100  # most rows take the rejection sampler's path
    for start, stop in ((0, 1), (5, 21), (17, 150)):
        part = formula_post.predict(frame.iloc[start:stop], seed=9, return_draws=True, row_offset=start)
        np.testing.assert_array_equal(part.draws, whole.draws[:, start:stop])


# ----------------------------------------------------------------------------- Dask
def test_dask_gives_identical_results(tiny_frame, table, tmp_path):
    dd = pytest.importorskip("dask.dataframe")
    batch.predict(tiny_frame, table, tmp_path / "ref.parquet", chunk_rows=64, levels=LEVELS, seed=5, keep=["id"],
                  extra="ignore", progress=False)
    reference = pd.read_parquet(tmp_path / "ref.parquet")
    ddf = dd.from_pandas(table, npartitions=4)  # partitions of 75 rows: not aligned to chunks or row blocks
    out = batch.predict_dask(tiny_frame, ddf, levels=LEVELS, seed=5, keep=["id"], extra="ignore",
                             cluster_options={"processes": False, "n_workers": 2})
    assert_frames_equal(out, reference)

    from distributed import Client, LocalCluster

    with LocalCluster(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        sink = batch.predict_dask(tiny_frame, ddf, tmp_path / "dask.csv", levels=LEVELS, seed=5, keep=["id"],
                                  extra="ignore", client=client)
        assert client.status == "running"  # a given client is left open
        deadline = time.monotonic() + 30
        while client.who_has() and time.monotonic() < deadline:  # releasing is asynchronous
            time.sleep(0.05)
        assert not client.who_has()  # the broadcast posterior was released
    got = pd.read_csv(sink)
    assert_frames_equal(got, reference)


# ----------------------------------------------------------------------------- command line
def test_cli_predict_subprocess_and_store(tiny_frame, table, tmp_path):
    tiny_frame.save(tmp_path / "model")
    table.to_csv(tmp_path / "in.csv", index=False)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "bayesinf.cli", "predict", str(tmp_path / "model"), "--input",
                           str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.parquet"), "--levels", "0.5,0.9",
                           "--seed", "5", "--chunk-rows", "100", "--keep", "id", "--ignore-extra", "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "300 rows" in done.stdout
    out = pd.read_parquet(tmp_path / "out.parquet")
    expected = expected_for(tiny_frame, pd.read_csv(tmp_path / "in.csv"))
    expected["id"] = expected["id"].astype(str)
    assert_frames_equal(out, expected)

    from bayesinf.cli import main

    store = bi.ModelStore(tmp_path / "store")
    store.save(tiny_frame, name="lin")
    code = main(["predict", f"{tmp_path / 'store'}/lin", "--input", str(tmp_path / "in.csv"), "--output",
                 str(tmp_path / "out2.parquet"), "--seed", "5", "--keep", "id", "--ignore-extra", "--no-progress",
                 "--version", "1"])
    assert code == 0
    assert_frames_equal(pd.read_parquet(tmp_path / "out2.parquet"), out)
    code = main(["predict", f"{tmp_path / 'store'}/lin", "--input", str(tmp_path / "in.csv"), "--output",
                 str(tmp_path / "out3.parquet"), "--no-progress"])
    assert code == 2  # the 'id' and 'note' columns are not read: an error naming the column
    assert not (tmp_path / "out3.parquet").exists()


def test_cli_predict_names_what_a_directory_lacks(tmp_path, capsys):
    from bayesinf.cli import main

    (tmp_path / "store" / "lin" / "1").mkdir(parents=True)  # neither a saved model nor a store entry
    (tmp_path / "in.csv").write_text("x\n1\n")
    code = main(["predict", str(tmp_path / "store" / "lin" / "1"), "--input", str(tmp_path / "in.csv"),
                 "--output", str(tmp_path / "out.csv"), "--no-progress"])
    assert code == 2
    assert "manifest.json" in capsys.readouterr().err
