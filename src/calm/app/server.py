"""The local web server of ``calm app``: a static page and a small JSON API over :class:`AppSession`.

Why the standard library's ``http.server`` and a hand-written page rather than Gradio: the page
must load nothing from the internet, and with Gradio that takes turning off its analytics and its
version check, replacing its default theme (Google fonts) and auditing each release's front end
again; it would also bring its own web stack (FastAPI, pydantic, huggingface_hub ...) to an
install that has torch pinned. Here the page is three static files shipped in the package, every
request stays on the server it came from (the browser tests check this), and the app needs no
dependency beyond matplotlib (for the weight map).

API (all JSON unless noted; uploads are the raw file bytes as the request body, the file name
in ``?name=``; errors are ``{"error": message}`` with status 400, 409 while the model is busy,
503 for a fit cancelled as the app stops, 500 for a bug; the server goes on serving). A request
for another ``Host`` than the app's own address, or one that changes something sent from another
site, gets a plain-text 403 (:mod:`calm.app.guard`):

    GET  /api/state                              classes, clips, classifier, progress
    GET  /api/progress                           the running fit's progress
    POST /api/classes         {"name"}           make a class
    POST /api/classes/delete  {"name"}
    POST /api/clips?class=C&name=F   <bytes>     add a clip to class C
    POST /api/clips/delete    {"class","name"}
    POST /api/folder          {"path"}           add a folder of class subfolders (server side)
    POST /api/fit                                fit on every clip (blocks; poll /api/progress)
    POST /api/classify?name=F        <bytes>     label, probabilities, typicality, open-set score,
                                                 90% prediction set, set sizes so far
    GET  /api/threshold?rate=R                   the "unknown" threshold that turns away a share R
                                                 of clips like the support (null: none)
    GET  /api/classifier                         the classifier file (download)
    POST /api/classifier?name=F      <bytes>     load a classifier file
    GET  /api/weights                            head x class weight maps: classes, [class][layer][head] per site
    GET  /api/weights.png                        the same maps drawn by matplotlib (PNG)
    GET  /api/profile                            weight share per layer and site
"""

from __future__ import annotations

import json
import logging
import mimetypes
import socket
import tempfile
import traceback
from dataclasses import asdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlparse

from calm.app.guard import allowed_hosts, content_length, refusal
from calm.app.session import AppSession, BusyError, StoppedError
from calm.classifiers.trust import describe

log = logging.getLogger("calm.app")

MAX_UPLOAD = 512 * 1024 * 1024
"""Largest request body accepted (bytes)."""

STATIC_FILES = ("index.html", "app.js", "plots.js", "app.css", "favicon.svg")

TIMEOUT = 60.0
"""Seconds a connection may stay silent (a request not sent, a body not read) before it is closed."""


class RequestError(ValueError):
    """A request the API cannot serve (unknown path, missing field, body too large)."""


class AppServer(ThreadingHTTPServer):
    """One thread per connection, a listen backlog for bursts of uploads (a page adds many clips at
    once), and the ``Host`` values it answers (:mod:`calm.app.guard`)."""

    daemon_threads = True
    request_queue_size = 128
    allowed: frozenset[str] | None = None


def make_server(session: AppSession, host: str = "127.0.0.1", port: int = 7860,
                timeout: float = TIMEOUT) -> AppServer:
    """A threaded HTTP server for ``session`` bound to ``host:port`` (port 0: any free port; an
    IPv6 address such as ``::1`` binds IPv6); a connection silent for ``timeout`` seconds is closed."""
    handler = type("AppHandler", (AppHandler,), {"session": session, "timeout": timeout})
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("AppServer", (AppServer,), {"address_family": family})
    server = server_class((host, port), handler)
    server.allowed = allowed_hosts(*server.server_address[:2])
    return server


class AppHandler(BaseHTTPRequestHandler):
    """Routes requests to the session; any error becomes a JSON message, never a dead server."""

    session: AppSession
    server: AppServer
    server_version = "calm-app"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._serve(self._post)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # -- routing ----------------------------------------------------------------------------
    def _get(self, path: str, query: dict[str, str]) -> None:
        session = self.session
        if path in ("/", "/index.html", "/favicon.ico") or path.lstrip("/") in STATIC_FILES:
            name = {"/": "index.html", "/favicon.ico": "favicon.svg"}.get(path, path.lstrip("/"))
            body = resources.files("calm.app").joinpath("static", name).read_bytes()
            self._send(body, mimetypes.guess_type(name)[0] or "application/octet-stream")
        elif path == "/api/state":
            self._json(self._state())
        elif path == "/api/progress":
            self._json(asdict(session.progress))
        elif path == "/api/classifier":
            with tempfile.TemporaryDirectory() as tmp:
                body = session.save(Path(tmp) / "classifier.safetensors").read_bytes()
            self._send(body, "application/octet-stream",
                       {"Content-Disposition": 'attachment; filename="calm-classifier.safetensors"'})
        elif path == "/api/weights.png":
            with tempfile.TemporaryDirectory() as tmp:
                body = session.weight_map_png(Path(tmp) / "weights.png").read_bytes()
            self._send(body, "image/png")
        elif path == "/api/profile":
            self._json(session.layer_profile())
        elif path == "/api/weights":
            self._json(session.weight_maps())
        elif path == "/api/threshold":
            self._json({"threshold": session.reject_threshold(_rate(query))})
        else:
            raise RequestError(f"no such page: {path}")

    def _post(self, path: str, query: dict[str, str]) -> None:
        session = self.session
        if path == "/api/classes":
            session.add_class(self._field("name"))
        elif path == "/api/classes/delete":
            session.remove_class(self._field("name"))
        elif path == "/api/clips":
            data = self._body()
            session.add_clip(_param(query, "class"), _param(query, "name"), data)
        elif path == "/api/clips/delete":
            fields = self._fields()
            session.remove_clip(str(fields.get("class", "")), str(fields.get("name", "")))
        elif path == "/api/folder":
            added = session.add_folder(self._field("path"))
            return self._json({**self._state(), "added": added})
        elif path == "/api/fit":
            result = session.fit()
            return self._json({**self._state(), "fit": asdict(result)})
        elif path == "/api/classify":
            data = self._body()
            name = _param(query, "name")
            row = session.classify(name, data)
            top = max(row.probabilities, key=row.probabilities.get)  # the label when "unknown" is off
            return self._json({"name": name, "label": row.label, "top": top, "probabilities": row.probabilities,
                               "typicality": row.typicality, "score": row.score,
                               "set": row.prediction_set, "sets": session.set_summary()})
        elif path == "/api/classifier":
            data = self._body()
            session.load_bytes(_param(query, "name"), data)
        else:
            raise RequestError(f"no such action: {path}")
        self._json(self._state())

    def _state(self) -> dict[str, Any]:
        session = self.session
        classifier = session.classifier
        return {
            "classes": {name: sorted(clips) for name, clips in session.classes.items()},
            "prompt": session.prompt,
            "model": session.backbone.model_id,
            "progress": asdict(session.progress),
            "classifier": None if classifier is None else {
                "method": describe(classifier),
                "classes": [str(c) for c in classifier.classes_],
                "prompt": (getattr(classifier, "fingerprint_", None) or {}).get("prompt"),
                "reject_rate": float(classifier.target_frr) if session.can_reject() else None,
            },
        }

    # -- request and response plumbing -------------------------------------------------------
    def _serve(self, route: Callable[[str, dict[str, str]], None]) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        refused = refusal(self.command, self.headers, self.server.allowed)
        if refused:
            log.warning("%s %s: %s", self.command, url.path[:100], refused.strip())
            self.close_connection = True
            return self._send(refused.encode(), "text/plain; charset=utf-8", status=HTTPStatus.FORBIDDEN)
        try:
            route(url.path, query)
        except BusyError as error:
            self._json({"error": str(error)}, HTTPStatus.CONFLICT)
        except StoppedError as error:  # the terminal already says the app stops
            self._json({"error": str(error)}, HTTPStatus.SERVICE_UNAVAILABLE)
        except (ValueError, OSError, RuntimeError, ImportError) as error:
            log.info("%s %s: %s", self.command, url.path, error)
            self._json({"error": str(error)}, HTTPStatus.BAD_REQUEST)
        except Exception as error:  # the server must outlive any request
            log.error("%s %s failed:\n%s", self.command, url.path, traceback.format_exc())
            self._json({"error": f"internal error ({type(error).__name__}): {error}"},
                       HTTPStatus.INTERNAL_SERVER_ERROR)

    def _body(self) -> bytes:
        """The request body; a bad or too large ``Content-Length`` is refused before reading."""
        try:
            length = content_length(self.headers.get("Content-Length"), MAX_UPLOAD)
        except ValueError as error:
            self.close_connection = True  # the body, if any, is left unread
            raise RequestError(str(error)) from None
        return self.rfile.read(length)

    def _fields(self) -> dict[str, Any]:
        try:
            fields = json.loads(self._body() or b"{}")
        except json.JSONDecodeError as error:
            raise RequestError(f"the request body is not JSON: {error}") from None
        if not isinstance(fields, dict):
            raise RequestError("the request body must be a JSON object")
        return fields

    def _field(self, name: str) -> str:
        value = self._fields().get(name)
        if not isinstance(value, str) or not value.strip():
            raise RequestError(f"missing {name!r}")
        return value

    def _json(self, value: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(json.dumps(value).encode(), "application/json", status=status)

    def _send(self, body: bytes, content_type: str, headers: dict[str, str] | None = None,
              status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


def _rate(query: dict[str, str]) -> float:
    """``?rate=`` as a share in [0, 1)."""
    text = _param(query, "rate")
    try:
        rate = float(text)
    except ValueError:
        raise RequestError(f"?rate= must be a number, got {text!r}") from None
    if not 0 <= rate < 1:
        raise RequestError(f"?rate= must be a share in [0, 1), got {rate}")
    return rate


def _param(query: dict[str, str], name: str) -> str:
    value = query.get(name, "").strip()
    if not value:
        raise RequestError(f"missing ?{name}=")
    return value
