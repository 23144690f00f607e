"""The HTTP service with a formula model: requests keyed by the formula's data columns (records and
columnar), numbers equal to in-process ``Posterior.predict(df)``, the OpenAPI schema and model
description listing the columns and levels, 4xx errors naming ``instances[i].column``, micro-batching
and the monitoring hook on columns, and the store's training statistics of the columns."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from test_serve import AppClient, FakeMonitor

from bayesinf.formula import InputColumn, Model, build_model
from bayesinf.monitor.drift import input_drift
from bayesinf.serve import create_app
from bayesinf.store import ModelStore, describe_inputs

FORMULA = "y ~ x + floor + c + (1 | g) + (1 | county)"
TINY_SVI = dict(method="svi", num_steps=300, check_every=100, draws=200, warn=False, progress=False)
URL = "/v1/models/radon/predict"


@pytest.fixture(scope="module")
def frame():
    """Numeric ``x`` and ``floor`` (int), a string fixed factor ``c``, a string group factor ``g``
    and an integer-coded group factor ``county`` (as in the radon data)."""
    rng = np.random.default_rng(0)
    n = 120
    df = pd.DataFrame({
        "x": rng.normal(2.0, 3.0, size=n),
        "floor": rng.integers(0, 2, size=n),
        "c": rng.choice(["lo", "mid", "hi"], size=n),
        "g": rng.choice([f"g{i}" for i in range(4)], size=n),
        "county": rng.integers(0, 5, size=n),
    })
    df["y"] = 1.0 + 0.5 * df["x"] - 0.7 * df["floor"] + (df["c"] == "hi") + 0.3 * df["county"] + rng.normal(size=n)
    return df


@pytest.fixture(scope="module")
def served(tmp_path_factory, frame):
    """The store, the served posterior (as loaded from the store), the client and its monitor."""
    post = Model.from_formula(FORMULA, data=frame).fit(seed=0, **TINY_SVI)
    store = ModelStore(tmp_path_factory.mktemp("serve_formula") / "models")
    store.save(post, name="radon")
    monitor = FakeMonitor()
    client = AppClient(create_app(store.root, max_rows=16, max_batch=8, monitor=monitor))
    client.wait_ready()
    yield store, store.load("radon"), client, monitor
    client.close()


def new_rows():
    """Rows with seen and unseen group levels (county 9 and g 'g9' are new groups)."""
    return pd.DataFrame({"x": [0.5, -1.0, 3.0], "floor": [0, 1, 0], "c": ["hi", "lo", "mid"],
                         "g": ["g1", "g9", "g0"], "county": [3, 9, 0]})


def records(df):
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in df.to_dict("records")]


def assert_equal_to(prediction, payloads):
    s = prediction.sites["y"]
    assert len(payloads) == len(s.mean)
    for i, row in enumerate(payloads):
        assert row["y"]["mean"] == s.mean[i].item() and row["y"]["sd"] == s.sd[i].item()
        for j, level in enumerate(prediction.levels):
            assert row["y"]["intervals"][f"{level:g}"] == {"lower": s.lower[j, i].item(), "upper": s.upper[j, i].item()}


# ----------------------------------------------------------------------------- the formula layer
def test_input_columns_name_types_and_levels(served, frame):
    _, post, _, _ = served
    columns = {c.name: c for c in post.model.input_columns()}  # as rebuilt from the saved model
    assert list(columns) == ["c", "floor", "x", "g", "county"]
    assert columns["x"] == InputColumn("x", "numeric", "number")
    assert columns["floor"] == InputColumn("floor", "numeric", "integer")
    assert columns["c"] == InputColumn("c", "categorical", "string", ("hi", "lo", "mid"), new_levels=False)
    assert columns["g"] == InputColumn("g", "categorical", "string", ("g0", "g1", "g2", "g3"), new_levels=True)
    assert columns["county"] == InputColumn("county", "categorical", "integer", (0, 1, 2, 3, 4), new_levels=True)
    assert InputColumn.from_json(json.loads(json.dumps(columns["county"].to_json()))) == columns["county"]
    # designs saved without their input columns: recovered from the design's own state
    spec = post.model.__bayesinf_spec__()["spec"]
    del spec["design"]["inputs"]
    recovered = {c.name: c for c in build_model(spec).input_columns()}
    assert list(recovered) == list(columns)
    assert {n: (c.kind, c.levels, c.new_levels) for n, c in recovered.items()} == \
        {n: (c.kind, c.levels, c.new_levels) for n, c in columns.items()}


# ----------------------------------------------------------------------------- predictions
def test_records_and_columns_equal_in_process_predict(served):
    _, post, client, _ = served
    df = new_rows()
    for new_groups in ("sample", "population"):
        expected = post.predict(df, seed=5, new_groups=new_groups)
        by_records = client.post(URL, json={"instances": records(df), "seed": 5, "new_groups": new_groups})
        by_columns = client.post(URL, json={"instances": {k: v.tolist() for k, v in df.items()}, "seed": 5,
                                            "new_groups": new_groups})
        assert by_records.status_code == by_columns.status_code == 200, by_records.text
        assert_equal_to(expected, by_records.json()["predictions"])
        assert by_columns.json()["predictions"] == by_records.json()["predictions"]
    # a single-row request (through the micro-batcher) equals in-process predict of that row
    one = client.post(URL, json={"instances": records(df.iloc[1:2]), "seed": 2})
    assert one.status_code == 200
    assert_equal_to(post.predict(df.iloc[1:2], seed=2), one.json()["predictions"])
    # the default is new_groups="sample": the new groups' effects widen the interval
    sampled, population = (post.predict(df, seed=5, new_groups=ng).sites["y"].sd for ng in ("sample", "population"))
    assert sampled[1] > population[1] and sampled[0] == population[0]


def test_micro_batched_rows_reach_the_monitor_by_column(served):
    _, post, client, monitor = served
    model = client.app.state.service.models[("radon", 1)]
    compiled = model.predictor.compile_count()
    df = new_rows()
    before, batches = len(monitor.predictions), client.app.state.metrics.batches.count
    responses = client.gather([("POST", URL, {"json": {"instances": [row]}}) for row in records(df) * 4])
    assert [r.status_code for r in responses] == [200] * 12
    assert client.app.state.metrics.batches.count - batches < 12, "no request was batched"
    assert model.predictor.compile_count() == compiled
    # a micro-batched row keeps its own row number: exactly the numbers of a solo request
    solo = [post.predict(df.iloc[[j]], seed=0).sites["y"] for j in range(3)]
    for i, r in enumerate(responses):
        assert r.json()["predictions"][0]["y"]["mean"] == float(solo[i % 3].mean[0])
    recorded = monitor.predictions[before:]
    assert len(recorded) == 12
    for record in recorded:  # the columns as the caller sent them, not the design arrays
        assert set(record["inputs"]) == {"x", "floor", "c", "g", "county"}
        assert all(v.shape == (1,) for v in record["inputs"].values())
    by_id = {r.headers["x-request-id"]: r.json()["predictions"] for r in responses}
    assert all(record["rows"] == by_id[record["request_id"]] for record in recorded)
    sent = sorted((r["inputs"]["g"][0], int(r["inputs"]["county"][0])) for r in recorded)
    assert sent == sorted([("g1", 3), ("g9", 9), ("g0", 0)] * 4)


# ----------------------------------------------------------------------------- schemas
def test_openapi_and_model_description_list_the_columns(served):
    _, _, client, _ = served
    spec = client.get("/openapi.json").json()
    body = spec["paths"][URL]["post"]["requestBody"]["content"]["application/json"]["schema"]
    record = body["properties"]["instances"]["oneOf"][0]["items"]
    assert set(record["required"]) == {"x", "floor", "c", "g", "county"} and not record["additionalProperties"]
    props = record["properties"]
    assert props["x"] == {"type": "number"} and props["floor"] == {"type": "integer"}
    assert props["c"] == {"type": "string", "enum": ["hi", "lo", "mid"]}
    # group factors: new levels are allowed (new_groups), so the levels seen are documented, not enforced
    assert props["county"]["type"] == "integer" and "enum" not in props["county"]
    assert props["g"]["type"] == "string" and "g3" in props["g"]["description"]
    columnar = body["properties"]["instances"]["oneOf"][1]["properties"]
    assert columnar["c"]["items"]["enum"] == ["hi", "lo", "mid"]
    assert body["properties"]["new_groups"]["enum"] == ["sample", "population", "error"]
    assert "X" not in props and "groups" not in props
    info = client.get("/v1/models/radon").json()["schema"]
    columns = {c["name"]: c for c in info["columns"]}
    assert columns["c"]["levels"] == ["hi", "lo", "mid"] and columns["c"]["type"] == "string"
    assert columns["county"]["levels"] == [0, 1, 2, 3, 4] and columns["county"]["new_levels"]
    assert columns["x"]["kind"] == "numeric" and columns["x"]["levels"] is None


# ----------------------------------------------------------------------------- errors
def _good():
    return records(new_rows())


def _with(i, **changes):
    rows = _good()
    rows[i].update(changes)
    return rows


def _without(i, column):
    rows = _good()
    del rows[i][column]
    return rows


BAD = [
    ({"instances": _without(1, "c")}, "instances[1].c", "is missing"),
    ({"instances": _with(2, z=1.0)}, "instances[2].z", "is not a column"),
    ({"instances": _with(0, x="1.5")}, "instances[0].x", "must be a number"),
    ({"instances": _with(1, floor=None)}, "instances[1].floor", "must be a number"),
    ({"instances": _with(1, c=1)}, "instances[1].c", "must be a string"),
    ({"instances": _with(2, county="3")}, "instances[2].county", "must be an integer"),
    ({"instances": _with(2, county=2.5)}, "instances[2].county", "must be an integer"),
    ({"instances": _with(1, c="zzz")}, "instances[1].c", "level 'zzz'"),
    ({"instances": _with(2, c="zzz")[:3]}, "instances[2].c", "level 'zzz'"),
    ({"instances": _good(), "new_groups": "error"}, "instances[1].g", "level 'g9'"),
    ({"instances": _with(1, g="g2"), "new_groups": "error"}, "instances[1].county", "level '9'"),
    ({"instances": {"x": [1.0, 2.0], "floor": [0, 1], "c": ["hi", "nope"], "g": ["g0", "g1"], "county": [0, 1]}},
     "instances.c[1]", "level 'nope'"),
    ({"instances": {"x": [1.0], "floor": [0], "c": ["hi"], "g": ["g0"]}}, "instances.county", "is missing"),
    ({"instances": {"x": [1.0, 2.0], "floor": [0], "c": ["hi"], "g": ["g0"], "county": [0]}}, "instances.x",
     "has 2 rows but other columns have 1"),
    ({"instances": _good(), "new_groups": "never"}, "new_groups", "must be one of"),
    ({"instances": [{"X": [1.0]}]}, "instances[0].X", "is not a column"),
]


@pytest.mark.parametrize("body, field, problem", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_input_is_a_422_naming_the_field(served, body, field, problem):
    _, _, client, _ = served
    r = client.post(URL, json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["field"] == field and problem in detail["message"], detail
    assert client.post(URL, json={"instances": _good()}).status_code == 200  # still serving


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_a_422(served, literal):
    _, _, client, _ = served
    text = json.dumps({"instances": _good()}).replace('"x": 3.0', f'"x": {literal}')
    assert literal in text
    r = client.post(URL, content=text.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"]["field"] == "instances[2].x"
    assert "finite" in r.json()["detail"]["message"]


# ----------------------------------------------------------------------------- training statistics
def test_store_describes_the_formula_columns(served, frame):
    store, _, _, _ = served
    inputs = store.metadata("radon")["inputs"]
    assert [c["name"] for c in inputs["columns"]] == ["c", "floor", "x", "g", "county"]
    arguments = inputs["arguments"]
    assert set(arguments) == {"c", "floor", "x", "g", "county"}
    c = arguments["c"]["statistics"]["c"]
    assert c["value_counts"] == frame["c"].value_counts().to_dict() and c["count"] == len(frame)
    x = arguments["x"]["statistics"]["x"]
    assert math.isclose(x["mean"], frame["x"].mean()) and len(x["percentiles"]) == 101
    county = arguments["county"]["statistics"]["county"]
    assert county["value_counts"] == {str(k): int(v) for k, v in frame["county"].value_counts().items()}
    assert arguments["county"]["levels"] == [0, 1, 2, 3, 4]
    # kept by the posterior (settings), so they survive save and load
    assert describe_inputs(store.load("radon")) == inputs


def test_drift_reads_the_formula_columns_text_levels_included(served, frame):
    """Live rows resampled from the training rows are not flagged "drift" (the family-wise chance
    of a false flag is at most alpha = 1%, see ``bayesinf.monitor.drift``); rows whose string
    factor is always one level are."""
    store, _, _, _ = served
    arguments = store.metadata("radon")["inputs"]["arguments"]
    rng = np.random.default_rng(1)
    same = frame.iloc[rng.integers(0, len(frame), size=300)]
    live = {k: same[k].to_numpy() for k in arguments}
    report = {d.feature: d for d in input_drift(arguments, live)}
    assert set(report) == set(arguments) and all(d.status != "drift" for d in report.values())
    assert report["c"].kind == "categorical" and report["c"].num_rows == 300
    shifted = dict(live, c=np.array(["hi"] * 300, dtype=object))
    assert {d.feature: d for d in input_drift(arguments, shifted)}["c"].status == "drift"
