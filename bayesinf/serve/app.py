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
import logging
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..errors import InputError
from . import codec
from .batching import MicroBatcher
from .columns import describe_columns, parse_column_instances
from .hooks import RECORD_KEY, MonitorHook, PredictRecord
from .metrics import CONTENT_TYPE, Metrics
from .schema import (Limits, error_schema, generic_request_schema, parse_instances, parse_options, request_schema,
                     response_schema)
from ..store import ModelStore
from .service import HTTPError, ServedModel, Service, row_payload

__all__ = ["create_app", "Service", "ServedModel", "row_payload", "API_KEY_ENV"]

API_KEY_ENV = "BAYESINF_API_KEY"
#: Routes answered without an API key (liveness and readiness probes).
OPEN_PATHS = ("/healthz", "/readyz")
#: Predict routes: their responses carry a request id, and the monitoring hook sees them.
PREDICT_PATH = re.compile(r"^/v1/models/([^/]+)/(?:versions/([^/]+)/)?predict$")
logger = logging.getLogger("bayesinf.serve")


def _error_body(field: str, message: str, request_id: str | None = None) -> bytes:
    body = {"detail": {"field": field, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return codec.dumps(body)


def _input_error(exc: InputError, status: int = 422) -> HTTPError:
    return HTTPError(status, str(exc.field), str(exc))


# ----------------------------------------------------------------------------- ASGI gate
class Gate:
    """Pure ASGI middleware: API key check, declared body size check, request metrics, and for
    predict routes a request id (``X-Request-ID``) and the monitoring hook.

    ``predict(scope, receive, send, name, version)``, when given, answers the predict routes
    directly; the app's own predict routes then only document them (OpenAPI).
    """

    def __init__(self, app, *, api_key: str | None, metrics: Metrics, max_body_bytes: int,
                 hook: MonitorHook | None = None, predict=None):
        self.app = app
        self.predict = predict
        self.api_key = api_key.encode() if api_key else None
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.hook = hook

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
        record = None
        route = PREDICT_PATH.match(scope["path"]) if scope["method"] == "POST" else None
        if route is not None:
            record = scope[RECORD_KEY] = PredictRecord(uuid.uuid4().hex, time.time())
            request_id = (b"x-request-id", record.request_id.encode())

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if record is not None:
                    message = {**message, "headers": [*message.get("headers", ()), request_id]}
            await send(message)

        async def reply(code: int, field: str, message: str, headers=()):
            body = _error_body(field, message, record.request_id if record is not None else None)
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
            elif route is not None and self.predict is not None:
                await self.predict(scope, receive, send_status, *route.groups())
            else:
                await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - start
            self.metrics.observe_request(scope["path"], scope["method"], status, seconds)
            if record is not None and self.hook is not None:
                self.hook.finished(record, status, seconds * 1e3)


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
               max_body_bytes: int = 1 << 20, max_batch: int = 32, max_wait_ms: float = 0.5,
               all_versions: bool = False, cors_origins=(), threads: int = 2, load_in_background: bool = True,
               monitor=None):
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
        Most single-row requests predicted in one compiled call; requests of up to this many
        rows, and micro-batches, are predicted on the event loop (about a millisecond each), larger
        ones in worker threads.
    max_wait_ms : float
        Longest wait of a micro-batch for requests still being received.
    all_versions : bool
        Serve every version; by default the latest version and aliased ones.
    cors_origins : sequence of str
        Origins allowed by CORS; none by default (CORS off).
    threads : int
        Worker threads predicting requests of more than ``max_batch`` rows.
    load_in_background : bool
        Load and compile models after start-up (``/readyz`` says when done); if False, the
        app's start-up waits for them.
    monitor : object, optional
        Prediction recorder (see ``bayesinf.serve.hooks``): ``record_prediction(...)`` after each
        successful predict request, ``record_error(...)`` after each failed one, its
        ``router()`` served behind the API key, ``close()`` at shutdown.
    """
    from .. import __version__

    limits = Limits(max_rows=max_rows, max_return_draws=max_return_draws, max_body_bytes=max_body_bytes)
    service = Service(ModelStore(store_path), limits=limits, max_batch=max_batch, all_versions=all_versions)
    service.read_catalog()
    metrics = Metrics()
    hook = MonitorHook(monitor, on_failure=metrics.observe_monitor_failure) if monitor is not None else None
    executor = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="bayesinf-serve")

    def run_batch(key, items):
        name, version, options = key
        return service.models[(name, version)].predict(items, options)

    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["batcher"] = MicroBatcher(run_batch, max_batch=max_batch, max_wait=max_wait_ms / 1000,
                                        incoming=lambda: service.incoming, on_batch=metrics.observe_batch)
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
            if hook is not None:
                hook.close()

    app = FastAPI(title="bayesinf prediction service", version=__version__, lifespan=lifespan,
                  description="Posterior predictive summaries of the models in a bayesinf ModelStore.")
    app.state.service = service
    app.state.metrics = metrics

    def json_response(data, status: int = 200) -> Response:
        return Response(codec.dumps(data), status_code=status, media_type="application/json")

    def error_response(exc: HTTPError) -> Response:
        return Response(_error_body(exc.field, exc.message), status_code=exc.status, media_type="application/json")

    @app.exception_handler(StarletteHTTPException)
    async def _http_exception(request, exc):
        return error_response(HTTPError(exc.status_code, "path", str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc):
        first = (exc.errors() or [{}])[0]
        return error_response(HTTPError(422, ".".join(str(p) for p in first.get("loc", ())), first.get("msg", "")))

    def check_size(size: int) -> None:
        if size > limits.max_body_bytes:
            raise HTTPError(413, "body", f"is larger than {limits.max_body_bytes} bytes")

    async def request_body(request: Request) -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            check_size(size)
            chunks.append(chunk)
        return b"".join(chunks)

    async def asgi_body(receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            check_size(size)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def parse(served: ServedModel, raw: bytes):
        """Options, row count, checked row arrays and model arguments of a request body."""
        try:
            body = codec.loads(raw)
        except codec.DecodeError as exc:
            raise HTTPError(400, "body", f"is not valid JSON ({exc})"[:300]) from None
        try:
            options = parse_options(body, limits, served.predictor.num_draws)
            # The core's checks (dtypes, shapes, ranges seen at fit) run per request, so one
            # bad row can never fail a micro-batch of others.
            if served.columns is not None:  # a formula model: rows by data column, as a DataFrame
                num_rows, rows = parse_column_instances(served.columns, body["instances"], limits.max_rows)
                arguments = served.check_columns(rows, options.new_groups, isinstance(body["instances"], dict))
            else:
                if "new_groups" in body:
                    raise InputError("new_groups", "applies to formula models only (bayesinf.formula)",
                                     "no 'new_groups' for this model")
                num_rows, rows = parse_instances(served.schema, body["instances"], limits)
                arguments = served.check(rows)
        except InputError as exc:
            raise _input_error(exc) from None
        return options, num_rows, rows, arguments

    async def predict(read_body, name: str, version: str | None, record: PredictRecord) -> tuple[int, bytes]:
        """Answer a predict request: ``(status, JSON body)``; ``read_body()`` returns its bytes (awaitable)."""
        service.incoming += 1  # event-loop state: only coroutines on the loop touch it
        counted = True
        try:
            served = service.lookup(name, version)
            record.model, record.version = served.name, served.version
            options, num_rows, rows, arguments = parse(served, await read_body())
            service.incoming -= 1
            counted = False
            if num_rows == 1 and max_batch > 1:
                payloads = await state["batcher"].submit((served.name, served.version, options), (1, arguments))
            elif num_rows <= max_batch:
                (payloads,) = served.predict([(num_rows, arguments)], options)
            else:
                loop = asyncio.get_running_loop()
                (payloads,) = await loop.run_in_executor(executor, served.predict, [(num_rows, arguments)], options)
            if payloads is None:
                raise HTTPError(422, "instances", "gave predictions that are not finite numbers (inputs far "
                                "outside the training data?)")
            metrics.observe_rows(served.name, served.version, num_rows)
            record.inputs, record.rows, record.levels, record.kind = rows, payloads, options.levels, options.kind
            return 200, codec.dumps({"model": served.name, "version": served.version, "kind": options.kind,
                                     "levels": list(options.levels), "seed": options.seed,
                                     "request_id": record.request_id, "predictions": payloads})
        except HTTPError as exc:
            return exc.status, _error_body(exc.field, exc.message, record.request_id)
        except InputError as exc:
            return 422, _error_body(str(exc.field), str(exc), record.request_id)
        except ClientDisconnect:
            raise
        except Exception:  # a bug, not bad input: log it, answer 500 with the request id
            logger.exception("predict request %s failed", record.request_id)
            return 500, _error_body("server", "internal error; see the server log for request "
                                    f"{record.request_id}", record.request_id)
        finally:
            if counted:
                service.incoming -= 1

    async def predict_route(request: Request, name: str, version: str | None) -> Response:
        record = request.scope.get(RECORD_KEY) or PredictRecord(uuid.uuid4().hex, time.time())
        status, content = await predict(lambda: request_body(request), name, version, record)
        return Response(content, status_code=status, media_type="application/json")

    async def predict_asgi(scope, receive, send, name: str, version: str | None) -> None:
        """The predict routes without the framework's routing and request objects (the hot path)."""
        try:
            status, content = await predict(lambda: asgi_body(receive), name, version, scope[RECORD_KEY])
        except ClientDisconnect:
            return
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(content)).encode())]})
        await send({"type": "http.response.body", "body": content})

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

    def input_description(entry: dict, version) -> dict | None:
        """Request fields of a version: a formula model's data columns, else its input schema."""
        if version is None:
            return None
        if version in entry["columns"]:
            return describe_columns(entry["columns"][version])
        return entry["schemas"][version].to_json()

    def describe(name: str) -> dict:
        entry = service.catalog[name]
        served = {v: service.models[(name, v)].metadata for v in entry["serve"] if (name, v) in service.models}
        latest = entry["serve"][-1] if entry["serve"] else None
        return {"name": name, "versions": entry["versions"], "served_versions": entry["serve"],
                "latest": entry["versions"][-1], "aliases": entry["aliases"],
                "schema": input_description(entry, latest),
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
            spec = body_spec(request_schema(entry["schemas"][v], limits, f"PredictRequest_{name}_v{v}",
                                            entry["columns"].get(v)))

            def make(name=name, v=v):
                async def handler(request: Request):
                    return await predict_route(request, name, str(v))
                return handler

            app.add_api_route(f"/v1/models/{name}/versions/{v}/predict", make(), methods=["POST"],
                              tags=[f"model {name}"], responses=predict_responses, openapi_extra=spec,
                              summary=f"Predict with {name} version {v}", operation_id=f"predict_{name}_v{v}")
        if entry["serve"]:
            latest = entry["versions"][-1]
            if latest in entry["schemas"]:
                spec = body_spec(request_schema(entry["schemas"][latest], limits, f"PredictRequest_{name}",
                                                entry["columns"].get(latest)))

                def make_latest(name=name):
                    async def handler(request: Request):
                        return await predict_route(request, name, None)
                    return handler

                app.add_api_route(f"/v1/models/{name}/predict", make_latest(), methods=["POST"],
                                  tags=[f"model {name}"], responses=predict_responses, openapi_extra=spec,
                                  summary=f"Predict with the latest version of {name}",
                                  operation_id=f"predict_{name}")

    generic = body_spec(generic_request_schema(limits))

    @app.post("/v1/models/{name}/predict", tags=["predict"], responses=predict_responses, openapi_extra=generic)
    async def predict_latest(request: Request, name: str):
        """Predict with the latest version of ``name`` (records or columnar ``instances``)."""
        return await predict_route(request, name, None)

    @app.post("/v1/models/{name}/versions/{version}/predict", tags=["predict"], responses=predict_responses,
              openapi_extra=generic)
    async def predict_version(request: Request, name: str, version: str):
        """Predict with a version (a number, an alias such as ``production``, or ``latest``)."""
        return await predict_route(request, name, version)

    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["*"])
    if hook is not None:
        router = hook.router()
        if router is not None:  # behind the same API-key gate as every other route
            app.include_router(router)
    # With CORS on, predict requests go through FastAPI so the CORS middleware sees them.
    app.add_middleware(Gate, api_key=api_key, metrics=metrics, max_body_bytes=max_body_bytes, hook=hook,
                       predict=None if cors_origins else predict_asgi)
    return app
