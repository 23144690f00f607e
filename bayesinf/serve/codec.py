"""JSON bodies of the prediction service: ``orjson`` when installed (several times faster on
predict payloads), else the standard library, with the standard library's semantics either way.

``loads`` accepts what ``json.loads`` accepts (orjson is stricter: it rejects ``NaN`` literals and
integers beyond 64 bits, which then go through ``json.loads`` so the request parser can name the
field at fault). ``dumps`` never writes ``NaN`` or ``Infinity``: callers check finiteness first.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["loads", "dumps", "DecodeError"]

#: Errors of ``loads`` for a body that is not JSON.
DecodeError = (UnicodeDecodeError, json.JSONDecodeError, RecursionError)

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is optional
    orjson = None


def loads(body: bytes) -> Any:
    """Parse a request body; raises one of ``DecodeError`` when it is not JSON."""
    if orjson is not None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # maybe NaN, Infinity or a big integer, which json accepts
    return json.loads(body)


def dumps(data: Any) -> bytes:
    """Encode a response body (finite numbers only)."""
    if orjson is not None:
        return orjson.dumps(data)
    return json.dumps(data, allow_nan=False, separators=(",", ":")).encode()
