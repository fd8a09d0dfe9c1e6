"""Every answer the suite observes is checked against the OpenAPI document it is served with:
status, headers and body (openapi-core). ``conftest.py`` turns this on for every test.

Flask's ``request_finished`` signal reaches this from every app in the process (the ``app``
fixture's, the apps tests build themselves, the threaded live server's), while the request
context is still there. Requests the document cannot describe (a path it does not have, a
method a path does not list: 404 and 405 from routing) are counted, not checked. The e2e tests'
services run in other processes and are not seen here.
"""
from __future__ import annotations

import json
import threading
from typing import Any

from flask import Flask, Response, request, request_finished
from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound

from docnum.api.contract import BASE, openapi_document

DOCUMENTED_PREFIXES = (BASE, "/healthz", "/readyz", "/metrics")
# openapi-core reads application/json itself; a problem document is JSON too.
CONFIG = Config(extra_media_type_deserializers={"application/problem+json": json.loads})


_SPECS: dict[int, tuple[dict, OpenAPI]] = {}  # per document (each app builds its own once)
_SPECS_LOCK = threading.Lock()


def _spec_of(document: dict) -> OpenAPI:
    """openapi-core's reading of a document, built once per process (it takes about a second)."""
    with _SPECS_LOCK:
        known = _SPECS.get(id(document))
        if known is None or known[0] is not document:
            known = _SPECS[id(document)] = (document, OpenAPI.from_dict(document, config=CONFIG))
        return known[1]


def _explain(exc: BaseException) -> str:
    """The error and openapi-core's schema errors, in one line."""
    parts = [f"{type(exc).__name__}"]
    seen: BaseException | None = exc
    while seen is not None:
        schema_errors = getattr(seen, "schema_errors", ()) or ()
        parts += [f"{e.message[:300]} at {list(e.absolute_path)}" for e in schema_errors]
        if seen.__cause__ is None and not schema_errors:
            parts.append(str(seen)[:300])
        seen = seen.__cause__
    return "; ".join(parts)


class _RequestWithoutBody(WerkzeugOpenAPIRequest):
    """What openapi-core needs to find the operation; the body is the request's business (a
    body over the size limit must not be read again here)."""

    @property
    def body(self) -> bytes | None:
        return None


class ContractCheck:
    """Collects the answers that break the document while it is connected."""

    def __init__(self) -> None:
        self.checked = 0
        self.undocumented = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()

    def _spec(self) -> OpenAPI:
        return _spec_of(openapi_document())

    def observe(self, sender: Flask, response: Response, **_: Any) -> None:
        if not request.path.startswith(DOCUMENTED_PREFIXES) or response.is_streamed:
            return
        try:
            self._spec().validate_response(_RequestWithoutBody(request),
                                           WerkzeugOpenAPIResponse(response))
        except (PathNotFound, OperationNotFound):
            with self._lock:
                self.undocumented += 1
            return
        except Exception as exc:  # every kind of mismatch is reported below
            detail = _explain(exc)[:1500]
            body = response.get_data(as_text=True)[:500]
            with self._lock:
                self.failures.append(f"{request.method} {request.full_path} -> "
                                     f"{response.status_code}: {detail}\n    body: {body}")
            return
        with self._lock:
            self.checked += 1

    def __enter__(self) -> ContractCheck:
        request_finished.connect(self.observe)
        return self

    def __exit__(self, *exc_info: object) -> None:
        request_finished.disconnect(self.observe)
