"""Azure IMDS client: the only HTTP in the package.

``fetch_instance`` GETs the instance document the way Azure's guidance asks
(``Metadata: true``, no proxy, no ``X-Forwarded-For``, api-version fallback on
400, bounded retries with back-off, one overall deadline) and returns it as a
dict, or raises ``ImdsError`` with a line fit for a user.

A refused connection fails at once: something on this host actively said no
to the IMDS address, which is what a machine that is not on Azure (or a test
pointing at a closed port) does.  Retrying it for the whole deadline would only
delay the answer; real IMDS never refuses, it answers (even 429/5xx) or times
out.  Unreachable networks and timeouts keep being retried: at early boot the
route to IMDS may still be coming.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any, Dict, List, Sequence

LOG = logging.getLogger(__name__)

DEFAULT_IMDS_URL = "http://169.254.169.254/metadata/instance"
# Pinned first, older second: cloud-init does the same, and a 400 from IMDS
# means "bad or unsupported api-version" (or a missing header, which we send).
API_VERSIONS = ("2021-08-01", "2019-06-01")
# IMDS allows about 5 requests/s; a first back-off of 0.25 s doubling to 2 s
# stays under that even when every answer is an instant 429.
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 2.0
MAX_ATTEMPTS = 10
MAX_BODY_BYTES = 1 << 20
RETRY_STATUSES = frozenset({404, 410, 429}) | frozenset(range(500, 600))


class ImdsError(Exception):
    """IMDS could not give us a usable instance document; ``str()`` says why."""


def _refused(err: BaseException) -> bool:
    """Whether ``err`` (urllib wraps it in URLError.reason) is a refused connection."""
    return isinstance(getattr(err, "reason", err), ConnectionRefusedError)


def _with_api_version(url: str, version: str) -> str:
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "api-version"]
    query.append(("api-version", version))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _read_body(response: Any, stop_at: float) -> bytes:
    """Read at most MAX_BODY_BYTES, checking the deadline between chunks.

    The socket timeout bounds each recv; checking between chunks stops a
    server that trickles bytes from stretching one attempt past the deadline.
    """
    chunks: List[bytes] = []
    size = 0
    while True:
        chunk = response.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ImdsError(f"IMDS answer is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if time.monotonic() >= stop_at:
            raise socket.timeout("deadline reached while reading the answer")


def fetch_instance(
    url: str = DEFAULT_IMDS_URL,
    deadline: float = 10.0,
    *,
    api_versions: Sequence[str] = API_VERSIONS,
    max_attempts: int = MAX_ATTEMPTS,
    backoff: float = BACKOFF_FIRST_S,
) -> Dict[str, Any]:
    """GET the IMDS instance document and return it as a dict, or raise ImdsError.

    ``deadline`` is the number of seconds the whole call may take, retries
    included: each attempt's socket timeout is what remains, and no back-off
    sleeps past it.  Behaviour follows Azure's IMDS guidance:

    * ``Metadata: true`` is sent; proxies are bypassed whatever ``http_proxy``
      says (IMDS is link-local; a proxy would either fail or answer for the
      wrong host), and no ``X-Forwarded-For`` is ever sent;
    * a 400 means the api-version is not supported there, so the next, older
      version in ``api_versions`` is tried at once (no back-off);
    * 404, 410, 429, 5xx, connection errors and timeouts are retried with
      exponential back-off, at most ``max_attempts`` requests in all, except a
      refused connection, which fails at once (see the module docstring);
    * other 4xx answers and a body that is not a JSON object fail at once:
      something that is not IMDS is answering, and retrying will not help.
    """
    # Imported here, not at the top: the CLI registers azure-suggest in every
    # process, including the boot-path units, which must not pay ~80 ms for HTTP.
    import http.client
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    stop_at = time.monotonic() + deadline
    versions = list(api_versions)
    wait = backoff
    last = "no attempt made"
    unreachable = False
    attempts = 0
    while attempts < max_attempts:
        remaining = stop_at - time.monotonic()
        if remaining <= 0:
            break
        attempts += 1
        request = urllib.request.Request(
            _with_api_version(url, versions[0]),
            headers={"Metadata": "true", "User-Agent": "cloudinit-hostrouting"},
        )
        try:
            with opener.open(request, timeout=remaining) as response:
                body = _read_body(response, stop_at)
            return _decode(body, url)
        except urllib.error.HTTPError as err:
            try:
                detail = err.read(500).decode("utf-8", "replace").strip()
            except OSError:
                detail = ""
            err.close()
            last = f"HTTP {err.code} {err.reason}" + (f": {detail}" if detail else "")
            unreachable = False
            if err.code == 400 and len(versions) > 1:
                LOG.info("IMDS refused api-version %s (%s); trying %s",
                         versions[0], last, versions[1])
                versions.pop(0)
                continue
            if err.code not in RETRY_STATUSES:
                raise ImdsError(f"IMDS at {url} refused the request "
                                f"(api-version {versions[0]}): {last}") from err
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            reason = getattr(err, "reason", err)
            last = f"{type(reason).__name__}: {reason}"
            if _refused(err):
                raise ImdsError(f"IMDS unreachable at URL: {url} ({last}) "
                                "(not on Azure?)") from err
            unreachable = True
        LOG.debug("IMDS attempt %d failed: %s", attempts, last)
        pause = min(wait, stop_at - time.monotonic())
        if attempts == max_attempts or pause <= 0:
            break
        time.sleep(pause)
        wait = min(wait * 2, BACKOFF_MAX_S)
    if unreachable:
        raise ImdsError(f"IMDS unreachable at URL: {url} ({last}) (not on Azure?)")
    raise ImdsError(f"IMDS at {url} gave no instance document in {attempts} attempt(s) "
                    f"within {deadline:g} s; last answer: {last}")


def _decode(body: bytes, url: str) -> Dict[str, Any]:
    try:
        doc = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as err:  # RecursionError: "[[[[..." a MiB deep
        raise ImdsError(f"IMDS at {url} returned malformed JSON: {err}") from err
    if not isinstance(doc, dict):
        raise ImdsError(f"IMDS at {url} returned JSON that is not an object")
    return doc
