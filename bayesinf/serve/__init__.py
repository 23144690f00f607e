"""HTTP prediction service over a ``ModelStore`` (FastAPI + uvicorn): ``bayesinf serve models/``.

``create_app`` builds the app; ``run`` starts uvicorn on it. See ``docs/serving.md``.
"""

from __future__ import annotations

__all__ = ["create_app", "run", "API_KEY_ENV"]

#: Environment variable read by ``bayesinf serve`` for the API key.
API_KEY_ENV = "BAYESINF_API_KEY"


def create_app(store_path, api_key=None, **options):
    """Build the FastAPI app (see ``bayesinf.serve.app.create_app``)."""
    from .app import create_app as _create_app

    return _create_app(store_path, api_key, **options)


def run(store_path, *, host: str = "127.0.0.1", port: int = 8000, api_key=None, log_level: str = "info",
        **options) -> None:
    """Serve the store at ``store_path`` with uvicorn until interrupted (one process, one event loop).

    uvicorn uses ``uvloop`` and ``httptools`` when they are installed (less CPU per request than
    asyncio's own loop and ``h11``).
    """
    import uvicorn

    app = create_app(store_path, api_key, **options)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, server_header=False)
