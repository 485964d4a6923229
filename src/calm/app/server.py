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
    POST /api/scan/file?name=F       <bytes>     a long recording to scan (streamed to disk, up to
                                                 MAX_LONG_UPLOAD bytes): its name and seconds
    POST /api/scan/pick       {"path"}           a long recording under --root to scan
    POST /api/scan            {"threshold", "background", "reject", "window", "hop"}
                                                 scan it with the classifier (blocks; poll
                                                 /api/progress): timeline and events
    GET  /api/scan/events.csv                    the last scan's events (calm scan's events.csv);
         /api/scan/audacity.txt, /api/scan/selections.txt (Raven), /api/scan/timeline.png
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
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlparse

from calm.app.guard import allowed_hosts, content_length, refusal
from calm.app.longscan import LongFile, ScanPanel
from calm.app.session import AppSession, BusyError, StoppedError
from calm.classifiers.trust import describe
from calm.errors import InputError

log = logging.getLogger("calm.app")

MAX_UPLOAD = 512 * 1024 * 1024
"""Largest request body accepted (bytes), but for a long recording to scan."""
MAX_LONG_UPLOAD = 4 * 1024 ** 3
"""Largest long recording accepted for the scan panel (bytes); it is written to disk as it arrives."""
CHUNK = 1024 * 1024

STATIC_FILES = ("index.html", "app.js", "plots.js", "scan.js", "app.css", "favicon.svg")

TIMEOUT = 60.0
"""Seconds a connection may stay silent (a request not sent, a body not read) before it is closed."""


class RequestError(InputError):
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
    handler = type("AppHandler", (AppHandler,), {"session": session, "panel": ScanPanel(session), "timeout": timeout})
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("AppServer", (AppServer,), {"address_family": family})
    server = server_class((host, port), handler)
    server.allowed = allowed_hosts(*server.server_address[:2])
    return server


class AppHandler(BaseHTTPRequestHandler):
    """Routes requests to the session; any error becomes a JSON message, never a dead server."""

    session: AppSession
    panel: ScanPanel
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
        elif path.startswith("/api/scan/"):
            self._scan_download(path.removeprefix("/api/scan/"))
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
        elif path == "/api/scan/file":
            name = _param(query, "name")
            try:
                chosen = self.panel.upload(name, self._chunks())
            except BaseException:
                self.close_connection = True  # the rest of the body, if any, is left unread
                raise
            return self._json(_shown(chosen))
        elif path == "/api/scan/pick":
            return self._json(_shown(self.panel.pick(self._field("path"))))
        elif path == "/api/scan":
            return self._json(self.panel.scan(**_scan_settings(self._fields())))
        else:
            raise RequestError(f"no such action: {path}")
        self._json(self._state())

    def _scan_download(self, name: str) -> None:
        """The last scan's events as a file to save, or its timeline PNG."""
        panel = self.panel
        texts = {"events.csv": (panel.events_csv, "text/csv", "events.csv"),
                 "audacity.txt": (panel.audacity_labels, "text/plain", "audacity.txt"),
                 "selections.txt": (panel.raven_table, "text/plain", "Table.1.selections.txt")}
        if name == "timeline.png":
            with tempfile.TemporaryDirectory() as tmp:
                return self._send(panel.timeline_png(Path(tmp) / "timeline.png").read_bytes(), "image/png")
        if name not in texts:
            raise RequestError(f"no such page: /api/scan/{name}")
        make, kind, suffix = texts[name]
        self._send(make().encode(), f"{kind}; charset=utf-8",
                   {"Content-Disposition": f'attachment; filename="{panel.stem()}.{suffix}"'})

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

    def _chunks(self) -> Iterator[bytes]:
        """The request body in pieces, up to :data:`MAX_LONG_UPLOAD` bytes; RequestError if the
        client stops sending before the ``Content-Length`` it declared."""
        try:
            length = content_length(self.headers.get("Content-Length"), MAX_LONG_UPLOAD)
        except ValueError as error:
            self.close_connection = True
            raise RequestError(str(error)) from None
        if length == 0:
            raise RequestError("an empty upload: no file to scan")
        left = length
        while left:
            chunk = self.rfile.read(min(CHUNK, left))
            if not chunk:
                self.close_connection = True
                raise RequestError(f"the upload ended after {length - left} of {length} bytes")
            left -= len(chunk)
            yield chunk

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


def _shown(file: LongFile) -> dict[str, Any]:
    """A chosen long file as the page sees it: its name and seconds, not where it is stored."""
    return {"name": file.name, "seconds": file.seconds}


def _scan_settings(fields: dict[str, Any]) -> dict[str, Any]:
    """The scan request's settings, checked: threshold in [0, 1] (default 0.5), window and hop
    positive seconds or null, reject a boolean, background a class name or null."""
    def number(name: str, default: float | None, ok: Callable[[float], bool], wanted: str) -> float | None:
        value = fields.get(name, default)
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(float(value)):
            raise RequestError(f"{name} must be {wanted}, got {str(value)[:30]!r}")
        return float(value)

    background = fields.get("background")
    if background is not None and not isinstance(background, str):
        raise RequestError("background must be a class name or null")
    if not isinstance(fields.get("reject", False), bool):
        raise RequestError("reject must be true or false")
    return {"threshold": number("threshold", 0.5, lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
            "window": number("window", None, lambda v: v > 0, "a positive number of seconds"),
            "hop": number("hop", None, lambda v: v > 0, "a positive number of seconds"),
            "reject": fields.get("reject", False), "background": background or None}


def _param(query: dict[str, str], name: str) -> str:
    value = query.get(name, "").strip()
    if not value:
        raise RequestError(f"missing ?{name}=")
    return value
