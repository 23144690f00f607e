"""Monitoring of served models against SQLite: the non-blocking recorder (and how it survives a
database that refuses writes), the feedback and report routes, input drift on shifted and
unshifted inputs, and live calibration against outcomes of known distribution."""

import asyncio
import functools
import json
import sqlite3
import time

import httpx
import numpy as np
import pytest
from scipy import stats

import bayesinf as bi
import models
from bayesinf.errors import InputError
from bayesinf.monitor import Recorder, parse_window, psi, report
from bayesinf.monitor.drift import feature_drift, input_drift, ks_against_grid
from bayesinf.monitor.live import live_calibration
from bayesinf.store import ModelStore

LEVELS = (0.5, 0.9)


@functools.cache
def _z(level: float) -> float:
    return float(stats.norm.ppf((1 + level) / 2))


def normal_row(mean: float, sd: float, levels=LEVELS, site: str = "y") -> dict:
    """The payload the service returns for a row whose predictive is exactly N(mean, sd^2)."""
    return {site: {"mean": mean, "sd": sd, "median": mean,
                   "intervals": {f"{v:g}": {"lower": mean - sd * _z(v), "upper": mean + sd * _z(v)} for v in levels}}}


def exact_normal_crps(y, mean, sd):
    z = (y - mean) / sd
    return sd * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))


@pytest.fixture
def recorder(tmp_path):
    rec = Recorder(tmp_path / "monitor.db")
    yield rec
    rec.close()


class Client:
    """Synchronous requests to an ASGI app through httpx's ASGI transport."""

    def __init__(self, app):
        self.app = app

    def request(self, method, url, **kw):
        async def send():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://test") as c:
                return await c.request(method, url, **kw)
        return asyncio.run(send())

    def get(self, url, **kw):
        return self.request("GET", url, **kw)

    def post(self, url, **kw):
        return self.request("POST", url, **kw)


def monitor_client(recorder, store=None) -> Client:
    from fastapi import FastAPI

    app = FastAPI()
    app.include_router(recorder.router(store=store))
    return Client(app)


@pytest.fixture
def client(recorder):
    return monitor_client(recorder)


# ----------------------------------------------------------------------------- windows and statistics
@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("1h", 3600), ("24h", 86400),
                                           ("7d", 604800), ("2w", 1209600), ("PT30M", 1800), ("P7D", 604800),
                                           ("P1DT12H", 129600), ("pt1.5h", 5400), (120, 120), (None, None)])
def test_parse_window(text, seconds):
    assert parse_window(text) == seconds


@pytest.mark.parametrize("bad", ["", "1y", "P1M", "PT", "-1h", "0h", "soon", True, [1]])
def test_parse_window_refuses_bad_durations(bad):
    with pytest.raises(InputError, match="'window'"):
        parse_window(bad)


def test_ks_against_percentiles_is_within_delta_of_the_exact_two_sample_statistic():
    rng = np.random.default_rng(0)
    train, live = rng.normal(size=2000), rng.normal(0.1, 1.1, size=300)
    grid = np.quantile(train, np.linspace(0, 1, 101))
    d, _ = ks_against_grid(live, grid, train.size)
    exact = stats.ks_2samp(live, train).statistic
    assert abs(d - exact) <= 0.01 + 1 / train.size  # the interpolation bound of the module docstring


def test_ks_against_percentiles_keeps_its_false_positive_rate():
    # 300 null repetitions: the rejection rate at 5% is at most 0.05 + 3 binomial SEs
    # (sqrt(0.05 * 0.95 / 300) = 0.0126), as the corrected test is conservative.
    rng = np.random.default_rng(1)
    p_values = []
    for _ in range(300):
        train, live = rng.normal(size=2000), rng.normal(size=200)
        p_values.append(ks_against_grid(live, np.quantile(train, np.linspace(0, 1, 101)), train.size)[1])
    assert np.mean(np.array(p_values) < 0.05) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 300)


def test_psi():
    assert psi(np.array([100, 100, 100, 100]), np.full(4, 0.25)) == pytest.approx(0.0, abs=1e-12)
    a = (np.array([60, 30, 10]) + 0.5) / 101.5
    e = np.full(3, 1 / 3)
    assert psi(np.array([60, 30, 10]), e) == pytest.approx(np.sum((a - e) * np.log(a / e)))
    assert psi(np.array([0, 0, 100]), e) > 1.0  # empty bins are smoothed, not infinite


def test_stores_saved_without_percentiles_get_a_binned_chi_square_test():
    rng = np.random.default_rng(2)
    train = rng.normal(size=1000)
    q = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
    old = {"count": 1000, "mean": 0.0, "sd": 1.0, "min": float(train.min()), "max": float(train.max()),
           "quantiles": {f"{p:g}": float(v) for p, v in zip(q, np.quantile(train, q))}}
    same = feature_drift("x", old, rng.normal(size=400), alpha=0.01)
    shifted = feature_drift("x", old, rng.normal(1.0, 1.0, size=400), alpha=0.01)
    assert same.test == shifted.test == "chi2-binned"
    assert same.status == "stable" and shifted.status == "drift"


def _training_statistics(x: np.ndarray, discrete: bool = False) -> dict:
    """What the store saves for a column (the fields the drift check reads)."""
    out = {"count": x.size, "mean": float(x.mean()), "percentiles": np.quantile(x, np.linspace(0, 1, 101)).tolist()}
    if discrete:
        values, counts = np.unique(x, return_counts=True)
        out["value_counts"] = {str(int(v)): int(c) for v, c in zip(values, counts)}
    return out


def test_a_report_without_drift_flags_drift_in_at_most_alpha_of_cases():
    # 300 null reports of 3 columns (two continuous, one with 3 categories), 500 live rows against
    # 2000 training rows: the share of reports with any column "drift" stays within alpha = 1%
    # plus 3 binomial SEs (sqrt(0.01 * 0.99 / 300) = 0.0057), and so does the share with any
    # column "watch" (a p-value below alpha / 3, or PSI > 0.1, whose null mean is about 0.02).
    rng = np.random.default_rng(12)
    flagged = {"drift": 0, "watch": 0}
    for _ in range(300):
        train = {"x0": rng.normal(size=2000), "x1": rng.exponential(size=2000), "g": rng.integers(0, 3, 2000)}
        live = {"x0": rng.normal(size=500), "x1": rng.exponential(size=500), "g": rng.integers(0, 3, 500)}
        arguments = {name: {"statistics": {name: _training_statistics(x, discrete=name == "g")}}
                     for name, x in train.items()}
        statuses = {d.status for d in input_drift(arguments, live, alpha=0.01)}
        for status in flagged:
            flagged[status] += status in statuses
    bound = 0.01 + 3 * np.sqrt(0.01 * 0.99 / 300)
    assert flagged["drift"] / 300 <= bound and flagged["watch"] / 300 <= bound, flagged


def test_few_live_rows_over_many_levels_get_a_simulated_p_value():
    # 10 training levels, 6 live rows: the chi-square distribution is wrong for expected counts
    # below 1 (it gave p = 2e-28); the Monte Carlo p-value keeps the test's size. Under the null,
    # 400 tests at alpha = 0.01 flag at most 0.01 + 3 binomial SEs (sqrt(0.01 * 0.99 / 400) = 0.005).
    from bayesinf.monitor.drift import _chi2_two_sample

    train = np.arange(1000, 0, -100)
    rng = np.random.default_rng(5)
    p_values = np.array([_chi2_two_sample(train, rng.multinomial(6, train / train.sum()))[1] for _ in range(400)])
    assert np.mean(p_values < 0.01) <= 0.01 + 3 * 0.005
    assert _chi2_two_sample(train, np.array([0] * 9 + [6]))[1] < 0.001  # all six in the rarest level: drift
    live = np.array([2, 1, 1, 0, 0, 1, 0, 0, 1, 0])
    assert _chi2_two_sample(train, live) == _chi2_two_sample(train, live)  # seeded: reports are reproducible


def test_float_indicator_columns_are_compared_as_categories():
    # Training: 70% zeros of 1000 rows. 400 live rows at 70/30 are stable; at 40/60 the PSI is
    # about 0.38 and the chi-square p-value below 1e-20.
    stats_ = {"count": 1000, "mean": 0.3, "value_counts": {"0": 700, "1": 300}, "percentiles": [0.0] * 70 + [1.0] * 31}
    same = feature_drift("floor", stats_, np.repeat([0.0, 1.0], [280, 120]), alpha=0.01)
    moved = feature_drift("floor", stats_, np.repeat([0.0, 1.0], [160, 240]), alpha=0.01)
    assert same.kind == moved.kind == "categorical" and same.test == "chi2"
    assert same.status == "stable" and same.psi < 1e-3
    assert moved.status == "drift" and moved.p_value < 1e-20 and moved.psi == pytest.approx(0.38, abs=0.02)


# ----------------------------------------------------------------------------- the recorder
def test_recorder_writes_predictions_rows_and_errors(recorder):
    rng = np.random.default_rng(0)
    t0 = time.time()
    for i in range(20):
        X = rng.normal(size=(3, 2))
        recorder.record_prediction(request_id=f"r{i}", model="lin", version=1, received_at=t0 + i,
                                   latency_ms=2.0 + i, inputs={"X": X},
                                   rows=[normal_row(float(x.sum()), 1.0) for x in X], levels=LEVELS, kind="eti")
    recorder.record_error(model="lin", version=None, status=422, received_at=t0, latency_ms=1.0)
    recorder.record_error(model=None, version=None, status=404, received_at=t0, latency_ms=1.0)
    assert recorder.flush()
    s = recorder.stats()
    assert (s["recorded"], s["recorded_rows"], s["dropped"], s["db_errors"], s["queue"]) == (22, 60, 0, 0, 0)
    with sqlite3.connect(recorder.url.removeprefix("sqlite:///")) as conn:
        inputs, outputs = conn.execute("select inputs, outputs from prediction_rows where request_id = 'r3' "
                                       "and row = 1").fetchone()
        summary = json.loads(conn.execute("select input_summary from predictions where request_id = 'r3'").fetchone()[0])
    assert len(json.loads(inputs)["X"]) == 2 and json.loads(outputs)["y"]["intervals"]["0.9"]["upper"] > 0
    assert set(summary) == {"X"} and len(summary["X"]["mean"]) == 2
    assert summary["X"]["min"][0] <= summary["X"]["mean"][0] <= summary["X"]["max"][0]
    rep = report(None, "lin", recorder, end=t0 + 30)
    t = rep.traffic
    assert (t.num_requests, t.num_rows, t.num_errors, t.errors_by_status) == (20, 60, 1, {422: 1})
    assert t.error_rate == pytest.approx(1 / 21) and t.server_error_rate == 0
    assert t.latency_ms["p50"] == pytest.approx(np.percentile(2.0 + np.arange(20), 50))
    assert report(None, "lin", recorder, window="15s", end=t0 + 30).traffic.num_requests == 5  # t0 + 15 .. t0 + 19
    assert sum(t.timeline["requests"]) == 20


def test_record_prediction_costs_well_under_a_fifth_of_a_millisecond(recorder):
    # The request-path cost is a put on a queue (about 10 us); 0.2 ms is the budget of 10% of a
    # 2 ms request, so the bound leaves a 20-fold margin for a noisy shared machine.
    inputs, rows = {"X": np.ones((1, 2))}, [normal_row(0.0, 1.0)]
    start = time.perf_counter()
    for i in range(2000):
        recorder.record_prediction(request_id=f"c{i}", model="lin", version=1, received_at=time.time(),
                                   latency_ms=2.0, inputs=inputs, rows=rows, levels=LEVELS, kind="eti")
    assert (time.perf_counter() - start) / 2000 < 0.2e-3
    assert recorder.flush() and recorder.stats()["recorded"] + recorder.stats()["dropped"] == 2000


def test_a_locked_database_drops_and_counts_records_and_writing_resumes(tmp_path):
    rec = Recorder(tmp_path / "monitor.db", max_queue=50, batch_size=10, timeout=0.2)
    inputs, rows = {"X": np.ones((1, 2))}, [normal_row(0.0, 1.0)]

    def send(prefix, n):
        start = time.perf_counter()
        for i in range(n):
            rec.record_prediction(request_id=f"{prefix}{i}", model="lin", version=1, received_at=time.time(),
                                  latency_ms=2.0, inputs=inputs, rows=rows, levels=LEVELS, kind="eti")
        return time.perf_counter() - start

    try:
        send("before", 5)
        assert rec.flush() and rec.stats()["recorded"] == 5
        blocker = sqlite3.connect(tmp_path / "monitor.db", timeout=0)
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock: every write fails
        elapsed = send("during", 500)
        assert elapsed < 0.5  # the request path never waited for the database (about 5 ms expected)
        time.sleep(0.6)
        down = rec.stats()
        assert down["db_errors"] >= 1 and down["dropped"] >= 450 and "locked" in down["last_error"]
        blocker.rollback()
        blocker.close()
        rec.flush()
        send("after", 20)
        assert rec.flush()
        s = rec.stats()
        assert s["recorded"] + s["dropped"] == 525 and s["writer_alive"]
        with sqlite3.connect(tmp_path / "monitor.db") as conn:
            ids = {r[0] for r in conn.execute("select request_id from predictions")}
        assert {f"after{i}" for i in range(20)} <= ids and len(ids) == s["recorded"]
    finally:
        rec.close()


def test_a_repeated_request_id_is_dropped_alone(recorder):
    inputs, rows = {"X": np.ones((2, 2))}, [normal_row(0.0, 1.0)] * 2
    for rid in ("a", "b", "a", "c"):  # one batch: the repeat fails it, then records go one by one
        recorder.record_prediction(request_id=rid, model="lin", version=1, received_at=time.time(), latency_ms=1.0,
                                   inputs=inputs, rows=rows, levels=LEVELS, kind="eti")
    recorder.record_error(model="lin", version=1, status=500, received_at=time.time(), latency_ms=1.0)
    assert recorder.flush()
    s = recorder.stats()
    assert (s["recorded"], s["recorded_rows"], s["dropped"], s["db_errors"]) == (4, 6, 1, 0)


def test_closing_while_the_database_refuses_writes_returns_and_counts_the_loss(tmp_path):
    rec = Recorder(tmp_path / "monitor.db", timeout=0.2)
    rec.ensure_schema()
    blocker = sqlite3.connect(tmp_path / "monitor.db", timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        for i in range(100):
            rec.record_error(model="lin", version=1, status=500, received_at=time.time(), latency_ms=1.0)
        start = time.perf_counter()
        rec.close(timeout=0.5)
        assert time.perf_counter() - start < 5  # flush gives up after 0.5 s; one more failed write
        s = rec.stats()
        assert not s["writer_alive"] and s["recorded"] == 0 and s["dropped"] == 100 and s["queue"] == 0
    finally:
        blocker.rollback()
        blocker.close()


def _reference_texts(inputs, rows, levels) -> dict:
    """The JSON texts of a prediction as the standard library encodes them from ``tolist``
    values (the reference the writer's faster encoding must read back identically)."""
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    arrays = {name: np.asarray(v) for name, v in inputs.items()}
    summary = {}
    for name, a in arrays.items():
        if a.ndim and a.shape[0] and a.dtype.kind in "biuf":
            flat = a.reshape(a.shape[0], -1)
            summary[name] = {"mean": flat.mean(axis=0, dtype=np.float64).tolist(),
                             "min": flat.min(axis=0).astype(np.float64).tolist(),
                             "max": flat.max(axis=0).astype(np.float64).tolist()}
    per_row = {name: a.tolist() for name, a in arrays.items() if a.ndim}
    return {"levels": dumps([float(v) for v in levels]), "input_summary": dumps(summary),
            "inputs": [dumps({name: v[i] for name, v in per_row.items() if i < len(v)}) for i in range(len(rows))],
            "outputs": [dumps({s: {k: v for k, v in e.items() if k != "draws"} for s, e in r.items()}) for r in rows]}


def _same_json(text, reference) -> bool:
    """Whether two JSON texts load to the same values, types included (``NaN`` equal to itself)."""
    return json.dumps(json.loads(text)) == json.dumps(json.loads(reference))


def test_stored_json_loads_to_the_values_the_standard_library_would_have_written(recorder):
    # float32 inputs must come back as their float64 values (as tolist gives), integers and
    # booleans as such; NaN inputs and None, big-integer and non-ASCII outputs take the
    # standard-library path; draws are not stored.
    rng = np.random.default_rng(13)
    x32 = rng.normal(size=(3, 2)).astype(np.float32)
    x32[0, 0] = np.float32(0.1)
    cases = {
        "f32": ({"X": x32, "k": np.array([1, -2, 3], dtype=np.int32), "flag": np.array([True, False, True])}, 3),
        "one": ({"X": x32[:1], "k": np.array([7], dtype=np.int64)}, 1),
        "cube": ({"Z": rng.normal(size=(2, 2, 3)), "scale": np.float64(2.5)}, 2),
        "nan": ({"X": np.array([[np.nan, 1.0], [2.0, np.inf]])}, 2),
        "big": ({"X": np.array([[1e-7, 1e22]])}, 1),
    }
    texts = {}
    for rid, (inputs, n) in cases.items():
        rows = [normal_row(float(rng.normal()), 1.5) for _ in range(n)]
        rows[0]["y"]["draws"] = [0.5, 1.5]
        rows[-1]["y"]["note"] = "\u00e9t\u00e9 \U0001f600 \"quoted\"\n"  # written by orjson as UTF-8
        if rid == "big":
            rows[0]["y"].update(count=2**70, probs=None)
        recorder.record_prediction(request_id=rid, model="lin", version=1, received_at=time.time(), latency_ms=1.0,
                                   inputs=inputs, rows=rows, levels=(np.float32(0.5), 0.9), kind="eti")
        texts[rid] = _reference_texts(inputs, rows, (np.float32(0.5), 0.9))
    assert recorder.flush() and recorder.stats()["dropped"] == 0
    with sqlite3.connect(recorder.url.removeprefix("sqlite:///")) as conn:
        for rid, ref in texts.items():
            levels, summary = conn.execute("select levels, input_summary from predictions where request_id = ?",
                                           (rid,)).fetchone()
            stored = conn.execute("select inputs, outputs from prediction_rows where request_id = ? order by row",
                                  (rid,)).fetchall()
            assert _same_json(levels, ref["levels"]) and _same_json(summary, ref["input_summary"]), rid
            assert len(stored) == len(ref["inputs"])
            for (inputs, outputs), ref_in, ref_out in zip(stored, ref["inputs"], ref["outputs"]):
                assert _same_json(inputs, ref_in) and _same_json(outputs, ref_out), (rid, inputs, outputs)
    assert json.loads(texts["f32"]["inputs"][0])["X"][0] == float(np.float32(0.1)) != 0.1


def test_an_unwritable_record_is_dropped_alone_and_large_batches_are_written_whole(recorder):
    # 150 requests of 3 rows in one batch: 450 data rows, more than one executemany chunk.
    inputs, rows = {"X": np.ones((3, 2))}, [normal_row(0.0, 1.0)] * 3
    for i in range(150):
        recorder.record_prediction(request_id=f"r{i}", model="lin", version=1, received_at=time.time(),
                                   latency_ms=1.0, inputs=inputs, rows=rows, levels=LEVELS, kind="eti")
        if i == 70:  # neither orjson nor json writes these: dropped, counted, the rest written
            for bad in (object(), np.float32(1.0)):
                recorder.record_prediction(request_id=f"bad{bad!r}", model="lin", version=1,
                                           received_at=time.time(), latency_ms=1.0, inputs=inputs,
                                           rows=[{"y": {"mean": bad}}] * 3, levels=LEVELS, kind="eti")
    assert recorder.flush()
    s = recorder.stats()
    assert (s["recorded"], s["recorded_rows"], s["dropped"], s["db_errors"]) == (150, 450, 2, 0)
    with sqlite3.connect(recorder.url.removeprefix("sqlite:///")) as conn:
        assert conn.execute("select count(*) from prediction_rows").fetchone()[0] == 450


@pytest.fixture(scope="module")
def postgres_url():
    """A database on a throw-away PostgreSQL server (see test_monitor_postgres), or a skip."""
    pytest.importorskip("psycopg", reason="psycopg 3 is needed for PostgreSQL")
    from test_monitor_postgres import PostgresServer, _binaries  # that module imports this one: import late

    bindir = _binaries()
    if bindir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found")
    server = PostgresServer(bindir)
    yield server.new_database()
    server.close()


def test_copy_to_postgresql_stores_the_same_json_and_drops_a_repeated_request_id_alone(postgres_url):
    import sqlalchemy as sa

    rec = Recorder(postgres_url)
    try:
        x = np.array([[0.1, np.nan]], dtype=np.float32)
        rows = [normal_row(0.25, 1.0)]
        rows[0]["y"]["note"] = "tab\there, back\\slash, \u00e9"  # COPY's text format escapes these
        for rid in ("a", "b", "a", "c"):  # one batch: the repeat fails its COPY, then records go one by one
            rec.record_prediction(request_id=rid, model="lin", version=1, received_at=time.time(), latency_ms=1.0,
                                  inputs={"X": x}, rows=rows, levels=LEVELS, kind="eti")
        rec.record_error(model=None, version=None, status=404, received_at=time.time(), latency_ms=1.0)
        assert rec.flush(30)
        s = rec.stats()
        assert (s["recorded"], s["recorded_rows"], s["dropped"], s["db_errors"]) == (4, 3, 1, 0)
        ref = _reference_texts({"X": x}, rows, LEVELS)
        with rec.engine.connect() as conn:
            summary = conn.execute(sa.text("select input_summary from predictions where request_id = 'c'")).scalar()
            inputs, outputs = conn.execute(sa.text("select inputs, outputs from prediction_rows "
                                                   "where request_id = 'c'")).one()
            errors = conn.execute(sa.text("select model, version, status from errors")).all()
        assert _same_json(summary, ref["input_summary"]) and _same_json(inputs, ref["inputs"][0])
        assert _same_json(outputs, ref["outputs"][0]) and [tuple(e) for e in errors] == [(None, None, 404)]
    finally:
        rec.close()


def test_recorder_refuses_bad_settings(tmp_path):
    with pytest.raises(InputError, match="'url'"):
        Recorder("mysql://host/db")
    with pytest.raises(InputError, match="'db'.*does not exist"):
        report(None, "lin", tmp_path / "typo.db")
    with pytest.raises(InputError, match="'max_queue'"):
        Recorder(tmp_path / "m.db", max_queue=0)


# ----------------------------------------------------------------------------- input drift
@pytest.fixture(scope="module")
def drift_store(tmp_path_factory):
    """A grouped model fitted to 2000 rows: X ~ N(0, I_2), g uniform on {0, 1, 2}."""
    rng = np.random.default_rng(3)
    n = 2000
    X, g = rng.normal(size=(n, 2)), rng.integers(0, 3, size=n)
    y = X @ np.array([0.8, -0.6]) + np.array([0.0, 0.5, -0.5])[g] + rng.normal(size=n)
    post = bi.fit(models.grouped, X, g, y, seed=0, method="svi", num_steps=200, check_every=100, draws=200,
                  warn=False, progress=False)
    store = ModelStore(tmp_path_factory.mktemp("monitor") / "models")
    store.save(post, name="grouped")
    return store


def _record_inputs(recorder, X, g, prefix):
    t0 = time.time()
    for start in range(0, len(X), 10):
        rows = [normal_row(0.0, 1.0) for _ in range(len(X[start:start + 10]))]
        recorder.record_prediction(request_id=f"{prefix}{start}", model="grouped", version=1, received_at=t0,
                                   latency_ms=2.0, inputs={"X": X[start:start + 10], "g": g[start:start + 10]},
                                   rows=rows, levels=LEVELS, kind="eti")


def test_drift_is_found_on_shifted_inputs_and_not_on_unshifted_ones(tmp_path, drift_store):
    # 500 live rows against 2000 training rows. Without drift, a report flags any column "drift"
    # with probability at most alpha = 1% (Bonferroni over the 3 columns, conservative KS); the
    # PSI of a column under no drift is about (bins - 1)(1/500 + 1/2000) = 0.02, far below 0.1,
    # so each unshifted column should be "stable". The shifted columns (X[0] by one sd: PSI about
    # 0.8; g from uniform to 60/30/10%: PSI about 0.44) are far past both thresholds.
    rng = np.random.default_rng(4)
    n = 500
    same = Recorder(tmp_path / "same.db", store=drift_store)
    shifted = Recorder(tmp_path / "shifted.db", store=drift_store)
    try:
        _record_inputs(same, rng.normal(size=(n, 2)), rng.integers(0, 3, size=n), "s")
        X = rng.normal(size=(n, 2))
        X[:, 0] += 1.0
        _record_inputs(shifted, X, rng.choice(3, size=n, p=[0.6, 0.3, 0.1]), "d")
        quiet = report(drift_store, "grouped", same, window="1h")
        moved = report(drift_store, "grouped", shifted, window="1h")
    finally:
        same.close()
        shifted.close()
    assert [d.feature for d in quiet.drift] == ["X[0]", "X[1]", "g"]
    assert [d.test for d in quiet.drift] == ["ks", "ks", "chi2"]
    assert all(d.status == "stable" and d.num_rows == n for d in quiet.drift), quiet.drift
    assert quiet.drifted == [] and quiet.ok
    assert moved.drifted == ["X[0]", "g"]
    by_name = {d.feature: d for d in moved.drift}
    assert by_name["X[1]"].status == "stable"
    assert by_name["X[0]"].psi > 0.5 and by_name["g"].psi > 0.3
    assert by_name["X[0]"].live_mean == pytest.approx(1.0, abs=0.15)  # 3.5 SE of a mean of 500 N(1, 1)
    assert any("input drift in 'X[0]'" in p for p in moved.problems)


# ----------------------------------------------------------------------------- feedback and live calibration
def _serve(recorder, rng, num_requests, rows_per_request, served_sd, true_sd, prefix="r"):
    """Record predictions whose served predictive is N(mu, served_sd^2); return the outcomes drawn
    from N(mu, true_sd^2) per request."""
    outcomes = {}
    t0 = time.time()
    for i in range(num_requests):
        mu = rng.normal(size=rows_per_request) * 2
        recorder.record_prediction(request_id=f"{prefix}{i}", model="lin", version=1, received_at=t0,
                                   latency_ms=2.0, inputs={"X": np.column_stack([mu, mu])},
                                   rows=[normal_row(float(m), served_sd) for m in mu], levels=LEVELS, kind="eti")
        outcomes[f"{prefix}{i}"] = (mu, mu + true_sd * rng.normal(size=rows_per_request))
    return outcomes


def test_live_coverage_pit_and_crps_match_a_calibrated_predictive(recorder, client):
    # 400 outcomes of a predictive served exactly: coverage within 3 binomial SEs of nominal at
    # each level (SE = sqrt(0.9 * 0.1 / 400) = 0.015 at 90%), a uniform PIT (KS at alpha 0.01),
    # and the CRPS from the served quantiles within 2% of the exact normal CRPS (the quantile
    # approximation is 0.5% off for levels (0.5, 0.9); 2% leaves room for nothing else: it is
    # deterministic given the outcomes).
    rng = np.random.default_rng(5)
    outcomes = _serve(recorder, rng, 100, 4, served_sd=1.0, true_sd=1.0)
    for rid, (_, y) in outcomes.items():
        r = client.post("/v1/models/lin/feedback", json={"request_id": rid, "outcomes": y.tolist()})
        assert r.status_code == 200 and r.json() == {"recorded": 4}, r.json()
    rep = report(None, "lin", recorder, window="1h")
    cal = rep.calibration["y"]
    assert cal.num_rows == 400 and cal.levels == LEVELS and rep.feedback_rows == {"y": 400}
    assert np.all(np.abs(cal.z) <= 3), cal.z
    assert cal.pit_test.is_uniform
    mu = np.concatenate([m for m, _ in outcomes.values()])
    y = np.concatenate([v for _, v in outcomes.values()])
    assert cal.crps.mean() == pytest.approx(exact_normal_crps(y, mu, 1.0).mean(), rel=0.02)
    assert rep.ok
    body = client.get("/v1/models/lin/monitor", params={"window": "1h"}).json()
    assert body["calibration"]["y"]["num_rows"] == 400 and body["traffic"]["num_rows"] == 400
    assert [lv["level"] for lv in body["calibration"]["y"]["levels"]] == list(LEVELS)


def test_live_calibration_flags_overconfident_intervals(recorder, client):
    # Negative control: intervals served with sd 1 for outcomes of sd 2 cover about 59% at 90%
    # (P(|Z| < 0.82)), 20 SEs below nominal; the PIT piles up at both ends.
    rng = np.random.default_rng(6)
    outcomes = _serve(recorder, rng, 100, 4, served_sd=1.0, true_sd=2.0)
    items = [{"request_id": rid, "row": j, "y": float(y[j])} for rid, (_, y) in outcomes.items() for j in range(4)]
    assert client.post("/v1/models/lin/feedback", json={"feedback": items[:1000]}).json() == {"recorded": 400}
    cal = report(None, "lin", recorder).calibration["y"]
    assert cal.z[1] < -3 and not cal.pit_test.is_uniform
    assert any("under-coverage at 90%" in p for p in cal.problems)


@pytest.mark.parametrize("levels, tolerance", [((0.5, 0.9), 0.01), ((0.9,), 0.015), ((0.5, 0.8, 0.9, 0.95), 0.005)])
def test_crps_from_served_quantiles_is_close_to_the_exact_crps(levels, tolerance):
    # Deterministic given the outcomes: the quantile approximation measured 0.5%, 1.0% and 0.2%
    # off for these levels on 20000 outcomes; the tolerances are about twice that.
    rng = np.random.default_rng(10)
    mu, sd = rng.normal(size=2000), rng.uniform(0.5, 2.0, size=2000)
    y = mu + sd * rng.normal(size=2000)
    records = [("y", yi, normal_row(float(m), float(s), levels), levels, "eti") for yi, m, s in zip(y, mu, sd)]
    cal = live_calibration(records)["y"]
    assert cal.crps.mean() == pytest.approx(exact_normal_crps(y, mu, sd).mean(), rel=tolerance)


def test_hdi_intervals_score_coverage_exactly_and_pit_by_the_normal_approximation():
    rng = np.random.default_rng(11)
    mu = rng.normal(size=600)
    y = mu + rng.normal(size=600)
    records = [("y", yi, normal_row(float(m), 1.0), LEVELS, "hdi") for yi, m in zip(y, mu)]
    cal = live_calibration(records)["y"]
    assert cal.kind == "hdi" and np.all(np.abs(cal.z) <= 3) and cal.pit_test.is_uniform
    np.testing.assert_allclose(cal.pit, stats.norm.cdf(y - mu))


def test_discrete_sites_get_the_randomized_pit_from_class_probabilities():
    rng = np.random.default_rng(7)
    p1 = rng.uniform(0.1, 0.9, size=500)
    y = (rng.uniform(size=500) < p1).astype(float)
    records = [("y", yi, {"y": {"mean": p, "sd": np.sqrt(p * (1 - p)), "median": float(p > 0.5),
                                "intervals": {"0.9": {"lower": 0.0, "upper": 1.0}}, "probs": [1 - p, p]}},
                LEVELS, "eti") for yi, p in zip(y, p1)]
    cal = live_calibration(records)["y"]
    assert cal.pit_test.is_uniform and cal.coverage[0] == 1.0
    # CRPS of a Bernoulli(p) forecast is (p - y)^2 exactly; 200 quantiles resolve p to 1/200.
    assert cal.crps.mean() == pytest.approx(np.mean((p1 - y) ** 2), abs=0.005)


def test_feedback_errors_name_the_field(recorder, client):
    _serve(recorder, np.random.default_rng(8), 2, 3, 1.0, 1.0)
    cases = [
        ({"request_id": "nope", "row": 0, "y": 1.0}, 404, "request_id"),
        ({"request_id": "r0", "row": 3, "y": 1.0}, 422, "row"),
        ({"request_id": "r0", "row": -1, "y": 1.0}, 422, "row"),
        ({"request_id": "r0", "row": 0, "y": "high"}, 422, "y"),
        ({"request_id": "r0", "row": 0, "y": {"z": 1.0}}, 422, "y.z"),
        ({"request_id": "r0", "outcomes": [1.0, 2.0]}, 422, "outcomes"),
        ({"request_id": "r0", "outcomes": [1.0, None, float("inf")]}, 422, "outcomes[2]"),
        ({"request_id": 7, "row": 0, "y": 1.0}, 422, "request_id"),
        ({"request_id": "r0"}, 422, "y"),
        ({"feedback": [{"request_id": "r0", "row": 0, "y": 1.0}, {"request_id": "x", "row": 0, "y": 1}]}, 404,
         "feedback[1].request_id"),
        ([1, 2], 422, "body"),
    ]
    for body, status, field in cases:
        r = client.post("/v1/models/lin/feedback", content=json.dumps(body))  # json.dumps writes inf as Infinity
        assert (r.status_code, r.json()["detail"]["field"]) == (status, field), (body, r.json())
    wrong_model = client.post("/v1/models/other/feedback", json={"request_id": "r0", "row": 0, "y": 1.0})
    assert wrong_model.status_code == 404
    assert client.post("/v1/models/lin/feedback", content=b"{").status_code == 400
    # A second post for the same row replaces the first; nothing of a refused batch is written.
    for y in (1.0, 2.0):
        r = client.post("/v1/models/lin/feedback", json={"request_id": "r0", "row": 0, "y": y})
        assert r.json() == {"recorded": 1}
    with sqlite3.connect(recorder.url.removeprefix("sqlite:///")) as conn:
        assert conn.execute("select request_id, row, site, y from feedback").fetchall() == [("r0", 0, "y", 2.0)]


def test_monitor_route_validates_its_parameters(recorder, client, drift_store, tmp_path):
    assert client.get("/v1/models/lin/monitor", params={"window": "soon"}).json()["detail"]["field"] == "window"
    empty = client.get("/v1/models/lin/monitor").json()
    assert empty["traffic"]["num_requests"] == 0 and empty["version"] is None and empty["drift"] is None
    c = monitor_client(recorder, drift_store)
    r = c.get("/v1/models/unknown/monitor")
    assert (r.status_code, r.json()["detail"]["field"]) == (404, "name")
    r = c.get("/v1/models/grouped/monitor", params={"version": "9"})
    assert (r.status_code, r.json()["detail"]["field"]) == (404, "version")


def test_report_tables_and_plot(recorder, drift_store):
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(9)
    _record_inputs(recorder, rng.normal(size=(40, 2)), rng.integers(0, 3, size=40), "p")
    recorder.record_error(model="grouped", version=1, status=500, received_at=time.time(), latency_ms=3.0)
    rep = report(drift_store, "grouped", recorder, window="P1D")
    tables = rep.to_pandas()
    assert tables["traffic"].loc[0, "requests"] == 4 and tables["traffic"].loc[0, "errors"] == 1
    assert list(tables["drift"].index) == ["X[0]", "X[1]", "g"] and len(tables["timeline"]) == 48
    assert tables["calibration"].empty
    assert any("server errors" in p for p in rep.problems)
    json.dumps(rep.to_dict(), allow_nan=False)
    assert "MonitorReport(model='grouped'" in repr(rep)
    fig = rep.plot()
    assert len(fig.axes) == 4
    plt.close(fig)


# ----------------------------------------------------------------------------- through the service
def test_service_records_predictions_takes_feedback_and_reports(tmp_path, tiny_linreg, small_data):
    from bayesinf.serve import create_app
    from test_serve import AppClient

    store = ModelStore(tmp_path / "models")
    store.save(tiny_linreg, name="lin")
    rec = Recorder(tmp_path / "monitor.db", store=store)
    client = AppClient(create_app(store.root, monitor=rec, max_batch=1, max_rows=8, load_in_background=False))
    try:
        X = small_data["X"]
        ids, ys = [], []
        for i in range(12):
            r = client.post("/v1/models/lin/predict", json={"instances": [{"X": X[i].tolist()}]})
            assert r.status_code == 200, r.text
            ids.append(r.json()["request_id"])
            ys.append(small_data["y"][i])
        many = client.post("/v1/models/lin/predict", json={"instances": [{"X": x.tolist()} for x in X[12:17]]})
        assert many.status_code == 200
        bad = client.post("/v1/models/lin/predict", json={"instances": [{"X": ["a", 1.0]}]})
        assert bad.status_code == 422
        for rid, y in zip(ids, ys):
            r = client.post("/v1/models/lin/feedback", json={"request_id": rid, "row": 0, "y": float(y)})
            assert r.json() == {"recorded": 1}, r.text
        r = client.post("/v1/models/lin/feedback", json={"request_id": many.json()["request_id"],
                                                         "outcomes": small_data["y"][12:17].tolist()})
        assert r.json() == {"recorded": 5}
        body = client.get("/v1/models/lin/monitor", params={"window": "1h"}).json()
        metrics = client.get("/metrics").text  # the recorder's counters, handed over at start-up
    finally:
        client.close()
    assert "bayesinf_monitor_dropped_total 0" in metrics and "bayesinf_monitor_db_errors_total 0" in metrics
    assert "bayesinf_monitor_recorded_total 14" in metrics and "bayesinf_monitor_db_failing 0" in metrics
    assert body["version"] == 1
    assert (body["traffic"]["num_requests"], body["traffic"]["num_rows"]) == (13, 17)
    assert body["traffic"]["errors_by_status"] == {"422": 1}
    assert body["calibration"]["y"]["num_rows"] == 17 and body["feedback_rows"] == {"y": 17}
    assert [d["feature"] for d in body["drift"]] == ["X[0]", "X[1]"]
    assert all(d["num_rows"] == 17 for d in body["drift"])
    assert rec.stats()["dropped"] == 0 and not rec.stats()["writer_alive"]  # closed with the app


# ----------------------------------------------------------------------------- robustness
def _insert_feedback(recorder, rows):
    """Write outcomes straight into the feedback table (what the route refuses, e.g. 1e308)."""
    with sqlite3.connect(recorder.url.removeprefix("sqlite:///")) as conn:
        conn.executemany("insert into feedback (request_id, row, site, y, received_at) values (?, ?, ?, ?, ?)",
                         [(rid, row, "y", y, time.time()) for rid, row, y in rows])


def test_outcomes_beyond_float64_scores_are_left_out_of_the_means_and_reported(recorder, client):
    # 40 outcomes of a served N(mu, 1); two more at +-1e308, whose interval scores (20 * 1e308
    # at 90%, 4 * 1e308 at 50%) exceed float64; their CRPS (about 1e308) does not, and is
    # averaged without overflow. No warnings (pytest turns them into errors); the interval
    # scores are those of the 40 others exactly, and the report says two rows were left out.
    rng = np.random.default_rng(12)
    outcomes = _serve(recorder, rng, 42, 1, served_sd=1.0, true_sd=1.0)
    assert recorder.flush()
    ids = sorted(outcomes, key=lambda rid: int(rid[1:]))
    ys = [float(outcomes[rid][1][0]) for rid in ids[:40]] + [1e308, -1e308]
    _insert_feedback(recorder, [(rid, 0, y) for rid, y in zip(ids, ys)])
    rep = report(None, "lin", recorder)
    cal = rep.calibration["y"]
    assert cal.num_rows == 42 and np.isfinite(cal.crps).all()
    assert cal.info["excluded_scores"] == {"crps": 0, "interval_score": [2, 2]}
    assert cal.info["crps"] == pytest.approx(1e308 * np.mean(cal.crps / 1e308), rel=1e-12)
    assert cal.info["crps"] == pytest.approx(2 * (1e308 / 42), rel=1e-6)
    mu = np.array([outcomes[rid][0][0] for rid in ids[:40]])
    y = np.array(ys[:40])
    z90 = _z(0.9)
    miss = np.maximum(mu - z90 - y, 0) + np.maximum(y - mu - z90, 0)
    assert cal.interval_score[1] == pytest.approx(np.mean(2 * z90 + 2 / 0.1 * miss), rel=1e-9)
    assert cal.coverage[1] == pytest.approx(np.mean(np.abs(y - mu) <= z90) * 40 / 42)  # the two are misses
    assert any("2 of 42 left out of the interval score at 90%" in p for p in rep.problems), rep.problems
    body = rep.to_dict()
    assert body["calibration"]["y"]["crps"] == pytest.approx(cal.info["crps"])
    assert all(lv["interval_score"] is not None for lv in body["calibration"]["y"]["levels"])
    json.dumps(body, allow_nan=False)
    repr(rep), rep.to_pandas()
    # A CRPS beyond float64 (draws at -1e308, outcome at 1e308) is inf, without a warning, and
    # left out of the mean.
    from bayesinf.calibration.report import crps, interval_score

    assert crps(np.full((1, 4), -1e308), np.array([1e308]))[0] == np.inf
    assert interval_score(np.array([1e308]), np.array([-1.0]), np.array([1.0]), 0.9)[0] == np.inf
    from bayesinf.monitor.live import finite_mean

    assert finite_mean(np.array([1.0, np.inf, 3.0, np.nan])) == (2.0, 2)
    assert finite_mean(np.array([1.5e308, 1.7e308])) == (pytest.approx(1.6e308), 0)
    # Huge but finite scores: their mean does not overflow either.
    records = [("y", y, normal_row(0.0, 1.0), LEVELS, "eti") for y in (1e307, 1.5e307, 0.0)]
    big = live_calibration(records)["y"]
    assert big.info["excluded_scores"]["crps"] == 0 and np.isfinite(big.info["crps"])
    assert big.info["crps"] == pytest.approx(np.mean(big.crps[:2]) * 2 / 3 + big.crps[2] / 3, rel=1e-12)


def test_the_feedback_route_refuses_outcomes_beyond_float32(recorder, client):
    _serve(recorder, np.random.default_rng(13), 1, 2, 1.0, 1.0)
    r = client.post("/v1/models/lin/feedback", json={"request_id": "r0", "row": 0, "y": 1e308})
    assert (r.status_code, r.json()["detail"]["field"]) == (422, "y") and "float32" in r.json()["detail"]["message"]
    r = client.post("/v1/models/lin/feedback", json={"request_id": "r0", "outcomes": [1.0, -4e38]})
    assert (r.status_code, r.json()["detail"]["field"]) == (422, "outcomes[1]")
    r = client.post("/v1/models/lin/feedback", content=b'{"request_id": "r0", "row": 0, "y": 1' + b"0" * 400 + b"}")
    assert (r.status_code, r.json()["detail"]["field"]) == (422, "y")  # a 401-digit integer
    assert client.post("/v1/models/lin/feedback", json={"request_id": "r0", "row": 1, "y": 3e38}).status_code == 200


def test_coverage_is_flagged_by_an_exact_binomial_test_not_from_three_outcomes(recorder, client):
    from bayesinf.monitor.live import FLAG_P, coverage_status

    assert FLAG_P == pytest.approx(stats.norm.cdf(-3))
    # 1 of 3 outcomes inside a 90% interval: 3.3 SEs low by the normal approximation, but the
    # exact probability of at most 1 hit is 0.028 (0.1^3 + 3 * 0.9 * 0.1^2).
    assert coverage_status(1, 3, 0.9) == (pytest.approx(0.028), "too few outcomes")
    assert coverage_status(0, 3, 0.9) == (pytest.approx(0.001), "under-coverage")  # 0.1^3 < Phi(-3)
    assert coverage_status(3, 3, 0.9)[1] == "ok"
    # For 400 outcomes the verdict is the 3-SE rule's (SE 0.015 at 90%): 340 hits are 4 SEs low,
    # 348 are 2 SEs low, 354 are 2 SEs high; over-coverage at 50%: 240 of 400 is 4 SEs high.
    for hits, level, status in ((340, 0.9, "under-coverage"), (348, 0.9, "ok"), (354, 0.9, "ok"),
                                (240, 0.5, "over-coverage"), (160, 0.5, "under-coverage")):
        p, got = coverage_status(hits, 400, level)
        assert got == status, (hits, level, p)
        tail = stats.binom.cdf(hits, 400, level) if hits < 400 * level else stats.binom.sf(hits - 1, 400, level)
        assert p == pytest.approx(tail)
    # Through the report: 3 outcomes, one outside the 90% interval (4 sd off) and two inside.
    _serve(recorder, np.random.default_rng(14), 3, 1, 1.0, 1.0)
    assert recorder.flush()
    _insert_feedback(recorder, [("r0", 0, 4.0 + float(json.loads(_output(recorder, "r0"))["y"]["mean"])),
                                ("r1", 0, float(json.loads(_output(recorder, "r1"))["y"]["mean"])),
                                ("r2", 0, float(json.loads(_output(recorder, "r2"))["y"]["mean"]))])
    rep = report(None, "lin", recorder)
    cal = rep.calibration["y"]
    assert cal.coverage[1] == pytest.approx(2 / 3) and cal.info["coverage_status"] == ["ok", "ok"]
    assert rep.ok and not rep.notes
    # 2 of 3 outside at 90%: 3.3 SEs low, exact p = 0.028: a note, not a problem.
    with sqlite3.connect(recorder.url.removeprefix("sqlite:///")) as conn:
        conn.execute("update feedback set y = y + 4 where request_id = 'r1'")
    rep = report(None, "lin", recorder)
    assert rep.calibration["y"].info["coverage_status"][1] == "too few outcomes"
    assert not any("coverage" in p for p in rep.problems)
    assert any("too few outcomes to judge coverage at 90%" in n for n in rep.notes)
    body = client.get("/v1/models/lin/monitor").json()
    assert body["calibration"]["y"]["levels"][1]["status"] == "too few outcomes"
    assert body["calibration"]["y"]["levels"][1]["p_value"] == pytest.approx(0.028)
    assert body["notes"] and "notes:" in repr(rep)
    assert rep.to_pandas()["calibration"]["status"].tolist()[1] == "too few outcomes"


def _output(recorder, rid) -> str:
    with sqlite3.connect(recorder.url.removeprefix("sqlite:///")) as conn:
        return conn.execute("select outputs from prediction_rows where request_id = ?", (rid,)).fetchone()[0]


def test_feedback_refuses_ambiguous_bodies_and_names_an_unknown_model(recorder, client, drift_store):
    _serve(recorder, np.random.default_rng(15), 1, 3, 1.0, 1.0)
    cases = [
        ({"request_id": "r0", "row": 0, "y": 1.0, "outcomes": [1, 2, 3]}, "outcomes"),
        ({"request_id": "r0", "y": 1.0, "outcomes": [1, 2, 3]}, "outcomes"),
        ({"request_id": "r0", "row": 0, "outcomes": [1, 2, 3]}, "outcomes"),
        ({"request_id": "r0", "row": 0, "y": 1.0, "weight": 2}, "weight"),
        ({"feedback": [{"request_id": "r0", "row": 0, "y": 1.0, "outcomes": [1, 2, 3]}]}, "feedback[0].outcomes"),
        ({"feedback": [{"request_id": "r0", "row": 0, "y": 1.0}], "request_id": "r0"}, "request_id"),
    ]
    for body, field in cases:
        r = client.post("/v1/models/lin/feedback", json=body)
        assert (r.status_code, r.json()["detail"]["field"]) == (422, field), (body, r.json())
    r = client.post("/v1/models/lin/feedback", json=cases[0][0])
    assert "give either row and y" in r.json()["detail"]["message"]
    # An unknown model is "name" (like predict), with or without a store; a known model with an
    # unknown request id is "request_id".
    for c in (client, monitor_client(recorder, drift_store)):
        r = c.post("/v1/models/nosuch/feedback", json={"request_id": "r0", "row": 0, "y": 1.0})
        assert (r.status_code, r.json()["detail"]["field"]) == (404, "name"), r.json()
    r = monitor_client(recorder, drift_store).post("/v1/models/grouped/feedback",
                                                   json={"request_id": "r0", "row": 0, "y": 1.0})
    assert (r.status_code, r.json()["detail"]["field"]) == (404, "request_id")
    assert client.post("/v1/models/lin/feedback", json={"request_id": "r0", "row": 0, "y": 1.0}).status_code == 200


def test_metrics_export_dropped_records_database_errors_and_queue_depth(tmp_path):
    from fastapi import FastAPI
    from test_serve import AppClient

    from bayesinf.serve.metrics import Metrics

    rec = Recorder(tmp_path / "monitor.db", timeout=0.2, max_queue=100)
    rec.ensure_schema()
    app = FastAPI()
    app.state.metrics = Metrics()
    app.include_router(rec.router())
    client = AppClient(app)  # runs the lifespan: the router hands rec.stats to the metrics
    blocker = sqlite3.connect(tmp_path / "monitor.db", timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")  # every write fails
    try:
        for _ in range(150):  # 100 queued, 50 dropped at once by the full queue
            rec.record_error(model="lin", version=1, status=500, received_at=time.time(), latency_ms=1.0)
        deadline = time.monotonic() + 10
        while rec.stats()["db_errors"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        text = app.state.metrics.render()
        values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("bayesinf_monitor"))
        assert int(values["bayesinf_monitor_db_errors_total"]) >= 1
        assert int(values["bayesinf_monitor_dropped_total"]) >= 50
        assert values["bayesinf_monitor_db_failing"] == "1" and values["bayesinf_monitor_writer_up"] == "1"
        assert values["bayesinf_monitor_queue_capacity"] == "100"
        assert 0 <= int(values["bayesinf_monitor_queue_records"]) <= 100
        assert "# TYPE bayesinf_monitor_dropped_total counter" in text
        assert "# TYPE bayesinf_monitor_queue_records gauge" in text
    finally:
        blocker.rollback()
        blocker.close()
        client.close()
        rec.close()
    s = rec.stats()
    after = app.state.metrics.render()
    assert f"bayesinf_monitor_dropped_total {s['dropped']}" in after
    assert f"bayesinf_monitor_recorded_total {s['recorded']}" in after
    assert s["recorded"] + s["dropped"] == 150


def test_a_sqlite_file_in_a_missing_directory_is_refused(tmp_path):
    for url in (tmp_path / "nope" / "monitor.db", f"sqlite:///{tmp_path}/nope/monitor.db"):
        with pytest.raises(InputError, match="does not exist") as info:
            Recorder(url)
        assert info.value.field == "url"
    Recorder(f"sqlite:///{tmp_path}/monitor.db").close()
    Recorder("sqlite://").close()  # in memory
