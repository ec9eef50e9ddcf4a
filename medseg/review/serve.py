"""``medseg review --serve``: the review site on a local web server, and the one place that writes
reviewer marks.

* Binds to 127.0.0.1 only, on the port asked for or a free one (port 0).
* ``GET /...``: files of the site folder (``<out>/review/``) and nothing outside it
  (:class:`http.server.SimpleHTTPRequestHandler` with that directory); ``GET /api/marks``: the
  current marks document.
* ``POST /api/marks``: a whole marks document (``Content-Type: application/json``, at most
  :data:`MAX_BODY` bytes), validated (:func:`medseg.io.review_marks.parse_marks`, only scans of this
  site) and written atomically to the one path claimed at start (``<out>/review_marks.json``). A
  request whose ``Host`` is not this server's own address is refused, so a web page elsewhere
  cannot post marks through the browser (a JSON post from another origin needs a CORS preflight,
  which is never granted).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from medseg.errors import MedsegError
from medseg.io.review_marks import MARKS_FORMAT, marks_document, parse_marks, read_marks, write_marks

MAX_BODY = 8 * 2**20  # bytes of one marks document
API = "/api/marks"


@dataclass(frozen=True)
class MarksStore:
    """Where marks are kept (``path``, claimed by the caller) and the scans they may name."""

    path: Path
    cases: frozenset[str]
    lock: threading.Lock = field(default_factory=threading.Lock)


class ReviewHandler(SimpleHTTPRequestHandler):
    """The site's files, and the marks API (module docstring)."""

    store: MarksStore

    def __init__(self, *args: Any, store: MarksStore, **kwargs: Any) -> None:
        self.store = store
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: one line per request would drown the URL the user needs."""

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _own_host(self) -> bool:
        port = self.server.server_address[1]
        return self.headers.get("Host", "") in (f"127.0.0.1:{port}", f"localhost:{port}")

    def do_GET(self) -> None:
        """The marks document at :data:`API`, else a file of the site."""
        if self.path.split("?")[0] != API:
            return super().do_GET()
        if not self._own_host():
            return self._reply(403, {"error": "requests must name this server (127.0.0.1) as their host"})
        with self.store.lock:
            try:
                marks = read_marks(self.store.path, self.store.cases)
            except MedsegError as err:
                return self._reply(500, {"error": str(err)})
        return self._reply(200, marks_document(marks))

    def do_POST(self) -> None:
        """Replace the marks with the posted document (validated), written atomically."""
        if self.path.split("?")[0] != API:
            return self._reply(404, {"error": f"only {API} takes a POST"})
        problem = self._refusal()
        if problem:
            return self._reply(problem[0], {"error": problem[1]})
        try:
            data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            marks = parse_marks(data, self.store.cases, "the posted marks")
        except (ValueError, MedsegError) as err:
            return self._reply(400, {"error": str(err)})
        with self.store.lock:
            write_marks(marks, self.store.path)
        return self._reply(200, {"saved": len(marks), "file": str(self.store.path), "format": MARKS_FORMAT})

    def _refusal(self) -> tuple[int, str] | None:
        """(status, reason) when a POST is refused before its body is read, else None."""
        if not self._own_host():
            return 403, "requests must name this server (127.0.0.1) as their host"
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return 415, "send the marks as application/json"
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_BODY:
            return 413, f"a marks document is at most {MAX_BODY} bytes, with its Content-Length"
        return None


def make_server(site: Path, marks: Path, cases: Collection[str], port: int = 0) -> ThreadingHTTPServer:
    """A server (not yet serving) of the site folder ``site`` that keeps marks in ``marks``.

    Raises:
        MedsegError: the site folder has no index.html, or the port cannot be bound.
    """
    if not (site / "index.html").is_file():
        raise MedsegError(f"{site}: no review site here (index.html missing); write it with medseg review first")
    handler = partial(ReviewHandler, directory=str(site), store=MarksStore(marks, frozenset(cases)))
    try:
        return ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as err:
        raise MedsegError(
            f"--port {port}: cannot listen on 127.0.0.1 ({err.strerror}); use another port, or 0"
        ) from None


def url_of(server: ThreadingHTTPServer) -> str:
    """``http://127.0.0.1:<port>/index.html``."""
    return f"http://127.0.0.1:{server.server_address[1]}/index.html"
