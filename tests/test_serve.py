"""The HTTP service, in process: httpx against the ASGI app (lifespan included), solo requests equal
to in-process ``Posterior.predict``, strict input errors naming the field, micro-batching without
recompiling, request ids and the monitoring hook, API keys, limits, metrics, and a bounded
schemathesis run against the OpenAPI schema."""

import asyncio
import json
import threading
import time

import httpx
import numpy as np
import pytest

from bayesinf.serve import create_app
from bayesinf.store import ModelStore

API_KEY = "test-key"
MAX_ROWS = 64


class AppClient:
    """Runs the app's lifespan and an ``httpx.AsyncClient`` over ``ASGITransport`` on an event loop
    in a background thread; ``get``/``post`` are synchronous, ``gather`` sends requests at once."""

    def __init__(self, app, headers=None):
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.lifespan = app.router.lifespan_context(app)
        self._run(self.lifespan.__aenter__())
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test",
                                        headers=headers or {})

    def _run(self, coro, timeout=120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def get(self, url, **kw):
        return self._run(self.client.get(url, **kw))

    def post(self, url, **kw):
        return self._run(self.client.post(url, **kw))

    def gather(self, requests):
        async def send():
            return await asyncio.gather(*[self.client.request(m, u, **kw) for m, u, kw in requests])
        return self._run(send())

    def wait_ready(self, timeout=120):
        async def wait():
            for _ in range(int(timeout / 0.05)):
                if (await self.client.get("/readyz")).status_code == 200:
                    return
                await asyncio.sleep(0.05)
            raise TimeoutError("not ready")
        self._run(wait(), timeout + 5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._run(self.client.aclose())
        self._run(self.lifespan.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def logistic_svi(glm_data):
    import bayesinf as bi
    import models

    return bi.fit(models.logistic, glm_data["X"], glm_data["bernoulli"], seed=0, method="svi", num_steps=200,
                  check_every=100, draws=200, warn=False, progress=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_linreg, tiny_grouped, tiny_frame, logistic_svi):
    store = ModelStore(tmp_path_factory.mktemp("serve") / "models")
    store.save(tiny_linreg, name="lin")
    store.save(tiny_linreg, name="lin")
    store.set_alias("lin", "production", 1)
    store.save(tiny_grouped, name="grouped")
    store.save(tiny_frame, name="frame")
    store.save(logistic_svi, name="logistic")
    return store


class FakeMonitor:
    """Stands in for ``bayesinf.monitor.Recorder``: keeps what the service hands it, serves a route."""

    def __init__(self, fail: bool = False):
        self.predictions, self.errors, self.closed, self.fail = [], [], False, fail

    def record_prediction(self, **record):
        if self.fail:
            raise RuntimeError("the monitoring database is down")
        self.predictions.append(record)

    def record_error(self, **record):
        if self.fail:
            raise RuntimeError("the monitoring database is down")
        self.errors.append(record)

    def router(self):
        from fastapi import APIRouter

        router = APIRouter()

        @router.get("/v1/models/{name}/monitor")
        async def monitor(name: str):
            return {"name": name, "predictions": len(self.predictions)}

        return router

    def close(self):
        self.closed = True


@pytest.fixture(scope="module")
def monitor():
    return FakeMonitor()


@pytest.fixture(scope="module")
def client(store, monitor):
    c = AppClient(create_app(store.root, max_rows=MAX_ROWS, max_return_draws=50, max_body_bytes=64_000,
                             max_batch=16, monitor=monitor))
    c.wait_ready()
    yield c
    c.close()
    assert monitor.closed


def served(client, name, version):
    return client.app.state.service.models[(name, version)]


# ----------------------------------------------------------------------------- health and catalog
def test_health_ready_and_catalog(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["ready"] and sorted(ready["models"]) == ["frame/1", "grouped/1", "lin/1", "lin/2", "logistic/1"]
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert models["lin"]["versions"] == [1, 2] and models["lin"]["aliases"] == {"production": 1}
    assert models["grouped"]["schema"]["specs"][1]["int_range"] == [0, 2]
    info = client.get("/v1/models/grouped").json()
    assert info["metadata"]["1"]["inputs"]["arguments"]["g"]["categories"] == [0, 1, 2]
    assert client.get("/v1/models/nope").status_code == 404


def test_openapi_request_schema_comes_from_the_saved_input_schema(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/models/grouped/predict"]["post"]["requestBody"]["content"]["application/json"]
    record = body["schema"]["properties"]["instances"]["oneOf"][0]["items"]
    assert record["required"] == ["X", "g"] and record["additionalProperties"] is False
    assert record["properties"]["g"] == {"type": "integer", "minimum": 0, "maximum": 2}
    assert record["properties"]["X"]["minItems"] == record["properties"]["X"]["maxItems"] == 2
    assert "/v1/models/{name}/versions/{version}/predict" in spec["paths"]


# ----------------------------------------------------------------------------- predictions
def intervals_of(pred, i):
    """``{"0.9": {"lower": ..., "upper": ...}}`` of row ``i``, as the service answers."""
    return {f"{lv:g}": {"lower": float(pred.interval(lv)[0][i]), "upper": float(pred.interval(lv)[1][i])}
            for lv in pred.levels}


def test_solo_requests_equal_in_process_predict(client, tiny_grouped, small_data):
    x, g = small_data["X"][:3], small_data["g"][:3]
    for i in range(3):  # one row per request, sent one after another: never micro-batched
        r = client.post("/v1/models/grouped/predict", json={"instances": [{"X": x[i].tolist(), "g": int(g[i])}],
                                                            "seed": 5, "levels": [0.5, 0.8]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["model"], body["version"], body["seed"]) == ("grouped", 1, 5)
        expected = tiny_grouped.predict(x[i:i + 1], g[i:i + 1], seed=5, levels=(0.5, 0.8))
        got = body["predictions"][0]["y"]  # same seed, same numbers: exactly equal
        assert got["mean"] == float(expected.mean[0]) and got["sd"] == float(expected.sd[0])
        assert got["intervals"] == intervals_of(expected, 0)


def test_multi_row_records_and_columnar_equal_in_process_predict(client, tiny_grouped, small_data):
    x, g = small_data["X"][:6], small_data["g"][:6]
    expected = tiny_grouped.predict(x, g, seed=2, kind="hdi")
    records = [{"X": x[i].tolist(), "g": int(g[i])} for i in range(6)]
    columnar = {"X": x.tolist(), "g": g.tolist()}
    for instances in (records, columnar):
        r = client.post("/v1/models/grouped/versions/1/predict",
                        json={"instances": instances, "seed": 2, "kind": "hdi"})
        assert r.status_code == 200, r.text
        rows = r.json()["predictions"]
        for i in range(6):
            assert rows[i]["y"]["median"] == float(expected.median[i])
            assert rows[i]["y"]["intervals"] == intervals_of(expected, i)


def test_dataframe_columns_and_aliases(client, tiny_frame, tiny_linreg, small_data):
    x = small_data["X"][:2]
    by_columns = client.post("/v1/models/frame/predict",
                             json={"instances": [{"a": x[0, 0], "b": x[0, 1]}, {"a": x[1, 0], "b": x[1, 1]}]})
    by_name = client.post("/v1/models/frame/predict", json={"instances": {"X": x.tolist()}})
    assert by_columns.status_code == by_name.status_code == 200
    assert by_columns.json()["predictions"] == by_name.json()["predictions"]
    production = client.post("/v1/models/lin/versions/production/predict", json={"instances": [{"X": [0.1, 0.2]}]})
    assert production.json()["version"] == 1
    assert client.post("/v1/models/lin/predict", json={"instances": [{"X": [0.1, 0.2]}]}).json()["version"] == 2


def test_discrete_outcomes_get_probabilities_and_draws(client, logistic_svi):
    r = client.post("/v1/models/logistic/predict", json={"instances": [{"X": [0.3, -0.2]}, {"X": [2.0, -2.0]}],
                                                         "return_draws": 10, "seed": 1})
    assert r.status_code == 200, r.text
    rows = r.json()["predictions"]
    expected = logistic_svi.predict(np.array([[0.3, -0.2], [2.0, -2.0]]), seed=1)
    for i, row in enumerate(rows):
        assert row["y"]["probs"] == pytest.approx(expected.probs[i].tolist())
        assert len(row["y"]["draws"]) == 10 and set(row["y"]["draws"]) <= {0, 1}


# ----------------------------------------------------------------------------- bad input
BAD = [
    ("/v1/models/nope/predict", {"instances": [{"X": [0, 0]}]}, 404, "name"),
    ("/v1/models/lin/versions/9/predict", {"instances": [{"X": [0, 0]}]}, 404, "version"),
    ("/v1/models/lin/versions/staging/predict", {"instances": [{"X": [0, 0]}]}, 404, "version"),
    ("/v1/models/grouped/predict", {"instances": [{"X": [0, 0]}]}, 422, "instances[0].g"),
    ("/v1/models/grouped/predict", {"instances": [{"X": [0, 0], "g": 1, "z": 2}]}, 422, "instances[0].z"),
    ("/v1/models/grouped/predict", {"instances": [{"X": [0, "a"], "g": 1}]}, 422, "instances[0].X[1]"),
    ("/v1/models/grouped/predict", {"instances": [{"X": [0, 0], "g": 1.5}]}, 422, "instances[0].g"),
    ("/v1/models/grouped/predict", {"instances": [{"X": [0, 0], "g": 3}]}, 422, "instances[0].g"),  # unseen
    ("/v1/models/grouped/predict", {"instances": [{"X": [0, 0], "g": True}]}, 422, "instances[0].g"),
    ("/v1/models/grouped/predict", {"instances": {"X": [[0, 0]], "g": [1, 2]}}, 422, "instances.g"),
    ("/v1/models/grouped/predict", {"instances": [{"X": [0], "g": 1}]}, 422, "instances[0].X"),
    ("/v1/models/lin/predict", {"instances": [{"X": [0, 0]}] * (MAX_ROWS + 1)}, 422, "instances"),
    ("/v1/models/lin/predict", {"instances": []}, 422, "instances"),
    ("/v1/models/lin/predict", {"instances": [{"X": [0, 0]}], "return_draws": 51}, 422, "return_draws"),
    ("/v1/models/lin/predict", {"instances": [{"X": [0, 0]}], "levels": [1.5]}, 422, "levels"),
    ("/v1/models/lin/predict", {"instances": [{"X": [0, 0]}], "kind": "mode"}, 422, "kind"),
    ("/v1/models/lin/predict", {"instances": [{"X": [0, 0]}], "seed": -1}, 422, "seed"),
    ("/v1/models/lin/predict", {"instances": [{"X": [0, 0]}], "extra": 1}, 422, "extra"),
    ("/v1/models/lin/predict", {"rows": []}, 422, "rows"),
    ("/v1/models/lin/predict", [1, 2], 422, "body"),
    ("/v1/models/lin/predict", {"instances": [{"X": [1e39, 0]}]}, 422, "instances[0].X[0]"),
]


@pytest.mark.parametrize("url, body, status, field", BAD)
def test_bad_input_is_a_4xx_naming_the_field(client, url, body, status, field):
    r = client.post(url, json=body)
    assert r.status_code == status, r.text
    assert r.json()["detail"]["field"] == field, r.text


@pytest.mark.parametrize("content, status, field", [
    (b"{bad json", 400, "body"),
    (b'{"instances": [{"X": [NaN, 1]}]}', 422, "instances[0].X[0]"),
    (b'{"instances": [{"X": [Infinity, 1]}]}', 422, "instances[0].X[0]"),
    (b"\xff\xfe", 400, "body"),
    (b'{"instances": [{"X": [0, 0]}], "pad": "' + b"x" * 70_000 + b'"}', 413, "body"),
])
def test_bad_bodies(client, content, status, field):
    r = client.post("/v1/models/lin/predict", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["detail"]["field"] == field
    assert client.get("/healthz").status_code == 200  # still serving


# ----------------------------------------------------------------------------- batching, compiling
def test_concurrent_single_rows_are_micro_batched_without_recompiling(client, tiny_linreg, small_data):
    model = served(client, "lin", 2)
    compiled = model.posterior.predict_fn().compile_count()
    assert compiled == model.compile_count > 0
    before = client.app.state.metrics.batches.count
    x = small_data["X"][:40]
    responses = client.gather([("POST", "/v1/models/lin/predict", {"json": {"instances": [{"X": row.tolist()}]}})
                               for row in x])
    assert [r.status_code for r in responses] == [200] * 40
    batches = client.app.state.metrics.batches.count - before
    assert batches < 40, "no request was batched"
    # a micro-batched row keeps its own row number: exactly the numbers of a solo request
    for row, r in zip(x, responses):
        solo = tiny_linreg.predict(row[None], seed=0)
        got = r.json()["predictions"][0]["y"]
        assert got["mean"] == float(solo.mean[0])
        assert got["intervals"]["0.9"] == {"lower": float(solo.interval(0.9)[0][0]),
                                           "upper": float(solo.interval(0.9)[1][0])}
    for rows in (1, 3, 17, MAX_ROWS):  # multi-row requests up to the limit
        r = client.post("/v1/models/lin/predict", json={"instances": {"X": small_data["X"][:rows].tolist()}})
        assert r.status_code == 200
    assert model.posterior.predict_fn().compile_count() == compiled


# ----------------------------------------------------------------------------- request ids, monitoring
def test_predict_responses_carry_a_request_id(client):
    ok = client.post("/v1/models/lin/predict", json={"instances": [{"X": [0.1, 0.2]}]})
    bad = client.post("/v1/models/lin/predict", json={"instances": [{"X": [0.1]}]})
    unknown = client.post("/v1/models/nope/versions/1/predict", json={"instances": [{"X": [0.1, 0.2]}]})
    ids = []
    for r in (ok, bad, unknown):
        rid = r.headers["x-request-id"]
        assert len(rid) == 32 and int(rid, 16) >= 0 and r.json()["request_id"] == rid
        ids.append(rid)
    assert len(set(ids)) == 3
    assert "x-request-id" not in client.get("/healthz").headers
    assert "x-request-id" not in client.get("/v1/models").headers


def test_monitor_sees_every_predict_request(client, monitor, small_data):
    before_ok, before_errors = len(monitor.predictions), len(monitor.errors)
    x = small_data["X"][:3]
    r = client.post("/v1/models/lin/versions/production/predict",
                    json={"instances": {"X": x.tolist()}, "levels": [0.8], "kind": "hdi", "seed": 3})
    assert r.status_code == 200
    (record,) = monitor.predictions[before_ok:]
    assert record["request_id"] == r.headers["x-request-id"]
    assert (record["model"], record["version"], record["levels"], record["kind"]) == ("lin", 1, (0.8,), "hdi")
    assert record["rows"] == r.json()["predictions"]  # exactly what the caller got
    assert list(record["inputs"]) == ["X"] and record["inputs"]["X"].shape == (3, 2)
    np.testing.assert_array_equal(record["inputs"]["X"], x.astype(record["inputs"]["X"].dtype))
    assert 0 < record["latency_ms"] < 60_000 and abs(record["received_at"] - time.time()) < 60
    # failures: resolved model and version when known, the status code
    assert client.post("/v1/models/grouped/predict", json={"instances": [{"X": [0, 0], "g": 7}]}).status_code == 422
    assert client.post("/v1/models/nope/predict", json={"instances": []}).status_code == 404
    assert client.post("/v1/models/lin/predict", content=b"{", headers={"content-type": "application/json"}
                       ).status_code == 400
    errors = monitor.errors[before_errors:]
    assert [(e["model"], e["version"], e["status"]) for e in errors] == [("grouped", 1, 422), (None, None, 404),
                                                                         ("lin", 2, 400)]
    assert all(e["latency_ms"] > 0 and e["received_at"] > 0 for e in errors)
    assert len(monitor.predictions) == before_ok + 1  # failures are not predictions
    client.get("/v1/models")  # other routes are not predict requests
    assert len(monitor.errors) == before_errors + 3
    # the recorder's own routes are served
    assert client.get("/v1/models/lin/monitor").json() == {"name": "lin", "predictions": len(monitor.predictions)}


def test_micro_batched_requests_each_reach_the_monitor(client, monitor, small_data):
    before = len(monitor.predictions)
    x = small_data["X"][:12]
    responses = client.gather([("POST", "/v1/models/lin/predict", {"json": {"instances": [{"X": row.tolist()}]}})
                               for row in x])
    by_id = {r.headers["x-request-id"]: r.json()["predictions"] for r in responses}
    recorded = {p["request_id"]: p for p in monitor.predictions[before:]}
    assert recorded.keys() == by_id.keys()
    for rid, record in recorded.items():
        assert record["rows"] == by_id[rid] and record["inputs"]["X"].shape == (1, 2)


def test_a_failing_monitor_never_fails_a_request_and_cors(tmp_path, tiny_linreg):
    """Also the predict routes as FastAPI routes: with CORS on, requests go through the framework."""
    store = ModelStore(tmp_path / "models")
    store.save(tiny_linreg, name="lin")
    monitor = FakeMonitor(fail=True)
    origin = "https://example.com"
    c = AppClient(create_app(store.root, max_rows=8, monitor=monitor, cors_origins=(origin,)))
    try:
        c.wait_ready()
        r = c.post("/v1/models/lin/predict", json={"instances": [{"X": [0.5, -1.0]}], "seed": 4},
                   headers={"origin": origin})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
        assert r.headers["x-request-id"] == r.json()["request_id"]
        expected = tiny_linreg.predict(np.array([[0.5, -1.0]]), seed=4)
        assert r.json()["predictions"][0]["y"]["intervals"] == intervals_of(expected, 0)
        r = c.post("/v1/models/lin/versions/1/predict", json={"instances": [{"X": [0]}]})
        assert r.status_code == 422 and r.json()["detail"]["field"] == "instances[0].X"
        assert "bayesinf_monitor_failures_total 2" in c.get("/metrics").text
    finally:
        c.close()


def test_monitor_must_have_the_record_methods(store):
    with pytest.raises(TypeError, match="record_prediction"):
        create_app(store.root, monitor=object())


# ----------------------------------------------------------------------------- metrics, security
def test_metrics_are_prometheus_text(client):
    client.post("/v1/models/lin/predict", json={"instances": [{"X": [0, 0]}]})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'bayesinf_requests_total{route="/v1/models/{name}/predict",method="POST",code="200"}' in text
    assert 'bayesinf_request_errors_total{code="422"}' in text
    assert 'bayesinf_request_duration_seconds_bucket{route="/v1/models/{name}/predict",le="+Inf"}' in text
    assert 'bayesinf_rows_predicted_total{model="lin",version="2"}' in text


def test_api_key_and_cors_off(store):
    monitor = FakeMonitor()
    c = AppClient(create_app(store.root, api_key=API_KEY, max_rows=8, max_batch=1, monitor=monitor))
    try:
        c.wait_ready()
        assert c.get("/healthz").status_code == 200
        for url in ("/v1/models", "/metrics", "/openapi.json", "/v1/models/lin", "/v1/models/lin/monitor"):
            r = c.get(url)
            assert r.status_code == 401 and r.json()["detail"]["field"] == "api_key"
        body = {"instances": [{"X": [0, 0]}]}
        assert c.post("/v1/models/lin/predict", json=body).status_code == 401
        assert c.post("/v1/models/lin/predict", json=body, headers={"x-api-key": "wrong"}).status_code == 401
        assert c.post("/v1/models/lin/predict", json=body, headers={"x-api-key": API_KEY}).status_code == 200
        r = c.post("/v1/models/lin/predict", json=body, headers={"authorization": f"Bearer {API_KEY}"})
        assert r.status_code == 200
        r = c.get("/v1/models", headers={"origin": "https://example.com", "x-api-key": API_KEY})
        assert "access-control-allow-origin" not in r.headers
        assert c.get("/v1/models/lin/monitor", headers={"x-api-key": API_KEY}).status_code == 200
        # refused requests reach the monitor as errors, with no model resolved
        assert [(e["model"], e["status"]) for e in monitor.errors] == [(None, 401), (None, 401)]
    finally:
        c.close()


def test_tampered_version_is_not_served(tmp_path, tiny_linreg):
    store = ModelStore(tmp_path / "models")
    store.save(tiny_linreg, name="lin")
    manifest = store.path("lin", 1) / "model" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"svi"', '"nuts"'))
    with AppClient(create_app(store.root, max_rows=4)) as c:
        c.wait_ready()
        assert "checksum mismatch" in c.get("/readyz").json()["failed"]["lin/1"]
        r = c.post("/v1/models/lin/predict", json={"instances": [{"X": [0, 0]}]})
        assert r.status_code == 503 and "checksum mismatch" in r.json()["detail"]["message"]


def test_version_saved_after_start_up_says_to_restart(tmp_path, tiny_linreg):
    store = ModelStore(tmp_path / "models")
    store.save(tiny_linreg, name="lin")
    with AppClient(create_app(store.root, max_rows=4)) as c:
        c.wait_ready()
        store.save(tiny_linreg, name="lin")
        r = c.post("/v1/models/lin/versions/2/predict", json={"instances": [{"X": [0, 0]}]})
        assert r.status_code == 404 and "saved after the service started" in r.json()["detail"]["message"]
        r = c.post("/v1/models/lin/versions/3/predict", json={"instances": [{"X": [0, 0]}]})
        assert r.status_code == 404 and "is not in the store" in r.json()["detail"]["message"]


def test_corrupt_alias_file_fails_only_that_models_aliases(tmp_path, tiny_linreg):
    store = ModelStore(tmp_path / "models")
    store.save(tiny_linreg, name="lin")
    store.save(tiny_linreg, name="other")
    store.set_alias("other", "production", 1)
    (store.root / "lin" / "aliases.json").write_text("garbage{")
    with AppClient(create_app(store.root, max_rows=4)) as c:
        c.wait_ready()
        assert "corrupt alias file" in c.get("/readyz").json()["failed"]["lin/aliases"]
        body = {"instances": [{"X": [0, 0]}]}
        assert c.post("/v1/models/lin/predict", json=body).status_code == 200  # latest is served
        r = c.post("/v1/models/lin/versions/production/predict", json=body)
        assert r.status_code == 503 and "corrupt alias file" in r.json()["detail"]["message"]
        assert c.post("/v1/models/other/versions/production/predict", json=body).status_code == 200


# ----------------------------------------------------------------------------- property-based
def test_openapi_fuzzing_finds_no_server_errors(client):
    """schemathesis generates requests from the OpenAPI schema (15 per operation): no 5xx, and the
    service keeps answering."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
    failures = []

    async def send(case):
        kwargs = case.as_transport_kwargs(base_url="http://test")
        body = kwargs.get("json")
        content = json.dumps(body).encode() if "json" in kwargs else kwargs.get("content", kwargs.get("data"))
        return await client.client.request(kwargs["method"], kwargs["url"], headers=kwargs.get("headers"),
                                           params=kwargs.get("params"), content=content)

    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(operation.as_strategy())
        def check(case):
            r = client._run(send(case))
            if r.status_code >= 500:
                failures.append((case.method, case.formatted_path, r.status_code, r.text[:200]))

        check()
    assert not failures, failures[:5]
    assert client.get("/healthz").status_code == 200


def test_return_draws_above_the_posterior_draws_is_refused(tmp_path, tiny_linreg):
    """A model with 20 posterior draws: ``return_draws`` up to 20 gives that many distinct draws
    per row; 21 is a 422 naming ``return_draws`` and the maximum, not fewer draws than asked."""
    from bayesinf.errors import InputError
    from bayesinf.serve.schema import Limits, parse_options

    with pytest.raises(InputError, match="only 20 posterior draws") as info:
        parse_options({"instances": [], "return_draws": 21}, Limits(), num_draws=20)
    assert info.value.field == "return_draws" and "[0, 20]" in str(info.value)
    assert parse_options({"instances": [], "return_draws": 20}, Limits(), num_draws=20).return_draws == 20

    store = ModelStore(tmp_path / "models")
    store.save(tiny_linreg.compress(num_draws=20, method="thin"), name="small")
    c = AppClient(create_app(store.root, max_return_draws=1000, max_batch=1))
    try:
        c.wait_ready()
        r = c.post("/v1/models/small/predict", json={"instances": [{"X": [0.1, 0.2]}], "return_draws": 21})
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert detail["field"] == "return_draws"
        assert "only 20 posterior draws" in detail["message"] and "[0, 20]" in detail["message"]
        r = c.post("/v1/models/small/predict", json={"instances": [{"X": [0.1, 0.2]}], "return_draws": 20})
        assert r.status_code == 200, r.text
        draws = r.json()["predictions"][0]["y"]["draws"]
        assert len(draws) == 20 and len(set(draws)) == 20
    finally:
        c.close()
