"""The HTTP prediction service: a FastAPI app over a ``ModelStore``.

``create_app(store_path)`` reads the store's metadata (names, versions, aliases, input schemas)
to build the routes and their OpenAPI request schemas; at start-up it loads the served versions
and compiles their predictive function for every row bucket a request can use, then ``/readyz``
turns 200. Only models in the store are served: nothing from a request is imported, evaluated or
unpickled; request bodies are parsed as JSON and checked field by field.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..data import InputSchema, prepare_predict_inputs
from ..errors import BayesinfError, InputError
from ..predictive import bucket_size
from ..runtime import precision
from ..store import ModelStore
from .batching import MicroBatcher
from .metrics import CONTENT_TYPE, Metrics
from .schema import (Limits, PredictOptions, error_schema, generic_request_schema, parse_instances, parse_options,
                     request_schema, response_schema)

__all__ = ["create_app", "Service", "API_KEY_ENV"]

API_KEY_ENV = "BAYESINF_API_KEY"
#: Routes answered without an API key (liveness and readiness probes).
OPEN_PATHS = ("/healthz", "/readyz")
logger = logging.getLogger("bayesinf.serve")


class HTTPError(Exception):
    """An error response ``{"detail": {"field": ..., "message": ...}}``."""

    def __init__(self, status: int, field: str, message: str):
        self.status, self.field, self.message = status, field, message
        super().__init__(message)


def _error_body(field: str, message: str) -> bytes:
    return json.dumps({"detail": {"field": field, "message": message}}).encode()


def _input_error(exc: InputError, status: int = 422) -> HTTPError:
    return HTTPError(status, str(exc.field), str(exc))


@dataclass
class ServedModel:
    """One loaded, compiled version of a stored model."""

    name: str
    version: int
    posterior: Any
    metadata: dict
    schema: InputSchema
    compile_count: int = 0

    def predict(self, arrays: dict, options: PredictOptions):
        # Inputs far outside the training data can overflow; the service turns non-finite
        # summaries into a 422 instead of letting numpy's floating-point warnings escape.
        with np.errstate(all="ignore"):
            return self.posterior.predict(**arrays, levels=options.levels, kind=options.kind, seed=options.seed,
                                          return_draws=options.return_draws > 0)


@dataclass
class Service:
    """State of a running service: the store, the served models and the micro-batcher settings."""

    store: ModelStore
    limits: Limits = field(default_factory=Limits)
    max_batch: int = 32
    max_wait: float = 0.002
    all_versions: bool = False
    catalog: dict = field(default_factory=dict)  # name -> {"versions", "aliases", "serve", "schemas"}
    models: dict = field(default_factory=dict)  # (name, version) -> ServedModel
    failed: dict = field(default_factory=dict)  # "name/version" -> message
    ready: bool = False
    incoming: int = 0

    def read_catalog(self) -> None:
        """Names, versions, aliases and input schemas from the store's metadata (no posterior loaded)."""
        for entry in self.store.list():
            name, versions, aliases = entry["name"], entry["versions"], entry["aliases"]
            serve = versions if self.all_versions else sorted({versions[-1], *aliases.values()})
            schemas = {}
            for v in serve:
                try:
                    schemas[v] = InputSchema.from_json(self.store.metadata(name, v)["inputs"]["schema"])
                except (BayesinfError, KeyError, TypeError, ValueError) as exc:
                    self.failed[f"{name}/{v}"] = str(exc)
            self.catalog[name] = {"versions": versions, "aliases": aliases, "serve": sorted(schemas),
                                  "schemas": schemas}

    def bucket_sizes(self, predictor) -> list[int]:
        """Every row bucket that a request of up to ``max_rows`` rows or a batch can compile."""
        largest = max(predictor.chunk_rows(n) for n in {1, min(self.limits.max_rows, 512), self.limits.max_rows,
                                                         self.max_batch})
        largest = max(largest, bucket_size(self.max_batch, predictor.max_rows))
        return [1 << i for i in range(largest.bit_length()) if 1 << i <= largest]

    def load(self) -> None:
        """Load every served version, check its files and compile its predictive function."""
        for name, entry in self.catalog.items():
            for v in entry["serve"]:
                try:
                    self.models[(name, v)] = self._load_one(name, v)
                except Exception as exc:  # a tampered or unloadable version is reported, not served
                    logger.error("not serving %s version %s: %s", name, v, exc)
                    self.failed[f"{name}/{v}"] = str(exc)
        self.ready = True

    def _load_one(self, name: str, version: int) -> ServedModel:
        t0 = time.perf_counter()
        metadata = self.store.metadata(name, version)
        post = self.store.load(name, version)
        rows = {n: post.data[n][:1] for n in post.schema.names("rows")}
        with precision(post.dtype):
            _, arrays, _ = prepare_predict_inputs(post.model, post.schema, post.data, (), rows)
            predictor = post.predict_fn()
            predictor.warm_up(arrays, buckets=self.bucket_sizes(predictor))
        served = ServedModel(name, version, post, metadata, post.schema)
        served.predict(rows, PredictOptions((0.5, 0.9), "eti", 0, 0))  # the host-side path too
        served.compile_count = predictor.compile_count()
        logger.info("serving %s version %s (%d compiled buckets, %.1f s)", name, version, served.compile_count,
                    time.perf_counter() - t0)
        return served

    def lookup(self, name: str, version: str | None) -> ServedModel:
        if name not in self.catalog:
            raise HTTPError(404, "name", f"model '{name}'"[:200] + f" is not in the store; served: {sorted(self.catalog)}")
        entry = self.catalog[name]
        if version is None or version == "latest":
            number = entry["versions"][-1]
        elif version.isdigit() and len(version) < 10:
            number = int(version)
        elif version in entry["aliases"]:
            number = entry["aliases"][version]
        else:
            raise HTTPError(404, "version", f"'{version}'"[:200] + f" is neither a version nor an alias of '{name}'; "
                            f"versions {entry['versions']}, aliases {sorted(entry['aliases'])}")
        if (name, number) in self.models:
            return self.models[(name, number)]
        if f"{name}/{number}" in self.failed:
            raise HTTPError(503, "version", f"version {number} of '{name}' could not be loaded: "
                            f"{self.failed[f'{name}/{number}']}")
        if not self.ready and number in entry["serve"]:
            raise HTTPError(503, "version", "the service is still loading models")
        if number in entry["versions"]:
            raise HTTPError(404, "version", f"version {number} of '{name}' is in the store but not served "
                            "(the service serves the latest version and aliased ones; start it with --all-versions)")
        raise HTTPError(404, "version", f"version {number} of '{name}' is not in the store; versions {entry['versions']}")


# ----------------------------------------------------------------------------- payloads
def _draw_index(num_draws: int, wanted: int) -> np.ndarray:
    return np.unique(np.linspace(0, num_draws - 1, min(wanted, num_draws)).round().astype(int))


def row_payload(pred, i: int, return_draws: int) -> dict:
    """The summaries of row ``i`` of a ``Prediction``, one entry per observed site."""
    out = {}
    for site, s in pred.sites.items():
        entry = {
            "mean": s.mean[i].tolist(), "sd": s.sd[i].tolist(), "median": s.median[i].tolist(),
            "intervals": {f"{level:g}": {"lower": s.lower[j, i].tolist(), "upper": s.upper[j, i].tolist()}
                          for j, level in enumerate(pred.levels)},
        }
        if s.probs is not None:
            entry["probs"] = s.probs[i].tolist()
        if return_draws and s.row_draws is not None:
            entry["draws"] = s.row_draws[i][..., _draw_index(s.row_draws.shape[-1], return_draws)].tolist()
        out[site] = entry
    return out


# ----------------------------------------------------------------------------- ASGI gate
class Gate:
    """Pure ASGI middleware: API key check, declared body size check, request metrics."""

    def __init__(self, app, *, api_key: str | None, metrics: Metrics, max_body_bytes: int):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    def _authorized(self, headers) -> bool:
        for key, value in headers:
            if key == b"x-api-key" and hmac.compare_digest(value, self.api_key):
                return True
            if key == b"authorization" and value[:7].lower() == b"bearer " and \
                    hmac.compare_digest(value[7:].strip(), self.api_key):
                return True
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        async def reply(code: int, field: str, message: str, headers=()):
            body = _error_body(field, message)
            await send_status({"type": "http.response.start", "status": code,
                               "headers": [(b"content-type", b"application/json"),
                                           (b"content-length", str(len(body)).encode()), *headers]})
            await send_status({"type": "http.response.body", "body": body})

        try:
            headers = scope.get("headers", [])
            length = next((v for k, v in headers if k == b"content-length"), None)
            if self.api_key and scope["path"] not in OPEN_PATHS and not self._authorized(headers):
                await reply(401, "api_key", "a valid API key is required (header 'X-API-Key' or "
                            "'Authorization: Bearer <key>')", [(b"www-authenticate", b"Bearer")])
            elif length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                await reply(413, "body", f"is larger than {self.max_body_bytes} bytes")
            else:
                await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(scope["path"], scope["method"], status, time.perf_counter() - start)


# ----------------------------------------------------------------------------- the app
_ERRORS = {
    400: "Malformed request (invalid JSON)",
    401: "Missing or invalid API key",
    404: "Unknown model or version",
    413: "Request body too large",
    422: "Invalid input; `detail.field` names the field",
    503: "Models still loading, or this version could not be loaded",
}


def _responses(*codes: int, ok: dict | None = None) -> dict:
    out = {code: {"description": _ERRORS[code], "content": {"application/json": {"schema": error_schema()}}}
           for code in codes}
    if ok is not None:
        out[200] = {"description": "Successful response", "content": {"application/json": {"schema": ok}}}
    return out


def create_app(store_path, api_key: str | None = None, *, max_rows: int = 1000, max_return_draws: int = 1000,
               max_body_bytes: int = 1 << 20, max_batch: int = 32, max_wait_ms: float = 2.0,
               all_versions: bool = False, cors_origins=(), threads: int = 2, load_in_background: bool = True):
    """Build the FastAPI app serving the models of the store at ``store_path``.

    Parameters
    ----------
    store_path : str or Path
        Root of a ``ModelStore``.
    api_key : str, optional
        When set, every route but ``/healthz`` and ``/readyz`` needs it, as header ``X-API-Key``
        or ``Authorization: Bearer <key>``.
    max_rows : int
        Most rows per request.
    max_return_draws : int
        Most raw predictive draws returned per row (``return_draws``).
    max_body_bytes : int
        Largest request body.
    max_batch : int
        Most single-row requests predicted in one compiled call.
    max_wait_ms : float
        Longest wait of a micro-batch for requests still being received.
    all_versions : bool
        Serve every version; by default the latest version and aliased ones.
    cors_origins : sequence of str
        Origins allowed by CORS; none by default (CORS off).
    threads : int
        Worker threads running compiled predictive calls.
    load_in_background : bool
        Load and compile models after start-up (``/readyz`` says when done); if False, the
        app's start-up waits for them.
    """
    from .. import __version__

    limits = Limits(max_rows=max_rows, max_return_draws=max_return_draws, max_body_bytes=max_body_bytes)
    service = Service(ModelStore(store_path), limits=limits, max_batch=max_batch, max_wait=max_wait_ms / 1000,
                      all_versions=all_versions)
    service.read_catalog()
    metrics = Metrics()
    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bayesinf-serve")
    incoming_lock = threading.Lock()

    def run_batch(key, arrays, num_rows):
        name, version, options = key
        return service.models[(name, version)].predict(arrays, options)

    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["batcher"] = MicroBatcher(run_batch, max_batch=max_batch, max_wait=max_wait_ms / 1000,
                                        executor=executor, incoming=lambda: service.incoming,
                                        on_batch=metrics.observe_batch)
        loading = asyncio.create_task(asyncio.to_thread(service.load))
        if not load_in_background:
            await loading
        try:
            yield
        finally:
            await state["batcher"].close()
            if not loading.done():
                with contextlib.suppress(Exception):
                    await loading
            executor.shutdown(wait=False)

    app = FastAPI(title="bayesinf prediction service", version=__version__, lifespan=lifespan,
                  description="Posterior predictive summaries of the models in a bayesinf ModelStore.")
    app.state.service = service
    app.state.metrics = metrics

    def json_response(data, status: int = 200) -> Response:
        return Response(json.dumps(data).encode(), status_code=status, media_type="application/json")

    def error_response(exc: HTTPError) -> Response:
        return Response(_error_body(exc.field, exc.message), status_code=exc.status, media_type="application/json")

    @app.exception_handler(StarletteHTTPException)
    async def _http_exception(request, exc):
        return error_response(HTTPError(exc.status_code, "path", str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc):
        first = (exc.errors() or [{}])[0]
        return error_response(HTTPError(422, ".".join(str(p) for p in first.get("loc", ())), first.get("msg", "")))

    async def read_body(request: Request) -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise HTTPError(413, "body", f"is larger than {limits.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def predict(request: Request, name: str, version: str | None) -> Response:
        with incoming_lock:
            service.incoming += 1
        counted = True
        try:
            served = service.lookup(name, version)
            raw = await read_body(request)
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                raise HTTPError(400, "body", f"is not valid JSON ({exc})"[:300]) from None
            try:
                options = parse_options(body, limits)
                num_rows, arrays = parse_instances(served.schema, body["instances"], limits)
                # The core's checks (dtypes, shapes, ranges seen at fit) run per request, so one
                # bad row can never fail a micro-batch of others.
                prepare_predict_inputs(served.posterior.model, served.schema, served.posterior.data, (), arrays)
            except InputError as exc:
                raise _input_error(exc) from None
            with incoming_lock:
                service.incoming -= 1
            counted = False
            loop = asyncio.get_running_loop()
            try:
                if num_rows == 1 and max_batch > 1:
                    pred, index = await state["batcher"].submit((served.name, served.version, options), arrays)
                    rows = [row_payload(pred, index, options.return_draws)]
                else:
                    pred = await loop.run_in_executor(executor, served.predict, arrays, options)
                    rows = [row_payload(pred, i, options.return_draws) for i in range(num_rows)]
            except InputError as exc:
                raise _input_error(exc) from None
            metrics.observe_rows(served.name, served.version, num_rows)
            payload = {"model": served.name, "version": served.version, "kind": options.kind,
                       "levels": list(options.levels), "seed": options.seed, "predictions": rows}
            try:
                content = json.dumps(payload, allow_nan=False).encode()
            except ValueError:
                raise HTTPError(422, "instances", "gave predictions that are not finite numbers (inputs far "
                                "outside the training data?)") from None
            return Response(content, media_type="application/json")
        except HTTPError as exc:
            return error_response(exc)
        finally:
            if counted:
                with incoming_lock:
                    service.incoming -= 1

    # -------------------------------------------------------------- routes
    @app.get("/healthz", tags=["health"], responses=_responses(ok={"type": "object"}))
    async def healthz():
        """Liveness: the process answers."""
        return json_response({"status": "ok"})

    @app.get("/readyz", tags=["health"], responses=_responses(503, ok={"type": "object"}))
    async def readyz():
        """Readiness: 200 once every served model is loaded and compiled."""
        if not service.ready:
            return json_response({"ready": False, "detail": {"field": "service", "message": "loading models"}}, 503)
        return json_response({"ready": True, "models": [f"{n}/{v}" for n, v in sorted(service.models)],
                              "failed": service.failed})

    @app.get("/metrics", tags=["health"], responses=_responses(401),
             response_class=Response)
    async def prometheus():
        """Prometheus metrics (text exposition format)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    def describe(name: str) -> dict:
        entry = service.catalog[name]
        served = {v: service.models[(name, v)].metadata for v in entry["serve"] if (name, v) in service.models}
        latest = entry["serve"][-1] if entry["serve"] else None
        return {"name": name, "versions": entry["versions"], "served_versions": entry["serve"],
                "latest": entry["versions"][-1], "aliases": entry["aliases"],
                "schema": entry["schemas"][latest].to_json() if latest is not None else None,
                "metadata": {str(v): {k: m[k] for k in m if k != "files"} for v, m in served.items()}}

    @app.get("/v1/models", tags=["models"], responses=_responses(401, ok={"type": "object"}))
    async def list_models():
        """Served models: names, versions, aliases and input schemas."""
        return json_response({"models": [{k: v for k, v in describe(n).items() if k != "metadata"}
                                         for n in sorted(service.catalog)]})

    @app.get("/v1/models/{name}", tags=["models"], responses=_responses(401, 404, ok={"type": "object"}))
    async def model_info(name: str):
        """Metadata of a model: versions, aliases, input schema, training statistics."""
        if name not in service.catalog:
            return error_response(HTTPError(404, "name", f"model '{name}'"[:200] + " is not in the store"))
        return json_response(describe(name))

    predict_responses = _responses(400, 401, 404, 413, 422, 503, ok=response_schema())

    def body_spec(schema: dict) -> dict:
        return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}

    # Per-model routes first: their request schemas come from each model's saved input schema.
    for name, entry in service.catalog.items():
        for v in entry["serve"]:
            spec = body_spec(request_schema(entry["schemas"][v], limits, f"PredictRequest_{name}_v{v}"))

            def make(name=name, v=v):
                async def handler(request: Request):
                    return await predict(request, name, str(v))
                return handler

            app.add_api_route(f"/v1/models/{name}/versions/{v}/predict", make(), methods=["POST"],
                              tags=[f"model {name}"], responses=predict_responses, openapi_extra=spec,
                              summary=f"Predict with {name} version {v}", operation_id=f"predict_{name}_v{v}")
        if entry["serve"]:
            latest = entry["versions"][-1]
            if latest in entry["schemas"]:
                spec = body_spec(request_schema(entry["schemas"][latest], limits, f"PredictRequest_{name}"))

                def make_latest(name=name):
                    async def handler(request: Request):
                        return await predict(request, name, None)
                    return handler

                app.add_api_route(f"/v1/models/{name}/predict", make_latest(), methods=["POST"],
                                  tags=[f"model {name}"], responses=predict_responses, openapi_extra=spec,
                                  summary=f"Predict with the latest version of {name}",
                                  operation_id=f"predict_{name}")

    generic = body_spec(generic_request_schema(limits))

    @app.post("/v1/models/{name}/predict", tags=["predict"], responses=predict_responses, openapi_extra=generic)
    async def predict_latest(request: Request, name: str):
        """Predict with the latest version of ``name`` (records or columnar ``instances``)."""
        return await predict(request, name, None)

    @app.post("/v1/models/{name}/versions/{version}/predict", tags=["predict"], responses=predict_responses,
              openapi_extra=generic)
    async def predict_version(request: Request, name: str, version: str):
        """Predict with a version (a number, an alias such as ``production``, or ``latest``)."""
        return await predict(request, name, version)

    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["*"])
    app.add_middleware(Gate, api_key=api_key, metrics=metrics, max_body_bytes=max_body_bytes)
    return app
