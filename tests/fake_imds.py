"""A real HTTP server on 127.0.0.1 that answers like Azure IMDS, for tests.

It enforces what real IMDS enforces (``Metadata: true``, an ``api-version``
it supports, no ``X-Forwarded-For``) with IMDS's own 400 answers, and serves
a script of answers in order, so a test can say "429, then the document".
Every request is recorded, so tests assert on what the client really sent.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imds_fixtures")
PATH = "/metadata/instance"
# A subset of the versions real IMDS accepts; tests narrow it to force fallback.
SUPPORTED = ("2019-06-01", "2020-09-01", "2021-02-01", "2021-08-01", "2023-07-01")
# How long a "hang" answer holds the connection at most; stop() releases it.
HANG_LIMIT_S = 60.0


def load_fixture(name: str) -> Dict[str, Any]:
    """An instance document from tests/imds_fixtures (name without .json)."""
    with open(os.path.join(FIXTURES, name + ".json"), encoding="utf-8") as handle:
        doc: Dict[str, Any] = json.load(handle)
    return doc


class Answer(NamedTuple):
    """One scripted answer: a status and body, or a hang that never answers."""

    status: int = 200
    body: Optional[bytes] = None
    hang: bool = False


def doc(document: Dict[str, Any]) -> Answer:
    """A 200 carrying ``document`` as JSON."""
    return Answer(200, json.dumps(document).encode())


def error(status: int) -> Answer:
    """An error status with an IMDS-like JSON error body."""
    return Answer(status, json.dumps({"error": f"status {status}"}).encode())


HANG = Answer(hang=True)


class Request(NamedTuple):
    """What the client sent."""

    path: str
    api_version: Optional[str]
    headers: Dict[str, str]


class FakeImds:
    """Serve ``script`` in order, then ``final`` for every later request."""

    def __init__(self, script: Sequence[Answer], final: Optional[Answer] = None,
                 supported: Sequence[str] = SUPPORTED):
        self.script = list(script)
        self.final = final if final is not None else (self.script[-1] if self.script else None)
        self.supported = tuple(supported)
        self.requests: List[Request] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{PATH}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeImds:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Release hung requests, stop serving and close the socket."""
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)

    def next_answer(self, request: Request) -> Answer:
        """IMDS's own 400s first (they do not use up the script), then the script."""
        with self._lock:
            self.requests.append(request)
            if request.path != PATH:
                return Answer(404, b'{"error": "Not found"}')
            if request.headers.get("metadata", "").lower() != "true":
                return Answer(400, b'{"error": "Bad request. Required metadata header '
                                   b'not specified"}')
            if "x-forwarded-for" in request.headers:
                return Answer(400, b'{"error": "Bad request. Request contains '
                                   b'X-Forwarded-For header"}')
            if request.api_version not in self.supported:
                return Answer(400, json.dumps({
                    "error": "Bad request. api-version is invalid or was not specified "
                             "in the request. For more information refer to "
                             "aka.ms/azureimds",
                    "newest-versions": sorted(self.supported, reverse=True)[:3],
                }).encode())
            if self.script:
                return self.script.pop(0)
            assert self.final is not None, "FakeImds ran out of answers"
            return self.final

    def _handler(self) -> type:
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                versions = urllib.parse.parse_qs(parts.query).get("api-version")
                answer = imds.next_answer(Request(
                    parts.path, versions[0] if versions else None,
                    {k.lower(): v for k, v in self.headers.items()}))
                if answer.hang:
                    imds.release.wait(HANG_LIMIT_S)
                    return
                body = answer.body or b""
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                """Quiet: the request log is ``imds.requests``."""

        return Handler
