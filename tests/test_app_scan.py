"""The "scan a long file" panel of ``calm app``, through its HTTP API on a tiny model: an uploaded or
picked recording is scanned with the app's classifier exactly as ``calm.scan`` scans it, the events
download in calm scan's formats, a second scan reads the windows from the store; paths outside the
root, other sites, truncated or too large uploads and bad settings are refused without echoing a
file, and a stopping app cancels the scan."""

from __future__ import annotations

import csv
import http.client
import io
import json
import re
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import soundfile

import calm.app.server as server_module
import calm.scanning.features as scan_features
from calm.app import AppSession, make_server
from calm.app.longscan import timeline
from calm.backbones import load_backbone
from calm.scanning import ScanOptions, scan
from calm.scanning.outputs import RAVEN_COLUMNS

RATE = 16000
PROMPT = "What sound is this?"


def tone(hz: float, seconds: float, seed: int) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.3 * np.sin(2 * np.pi * hz * t) + 0.01 * np.random.default_rng(seed).standard_normal(len(t))
            ).astype(np.float32)


@pytest.fixture(scope="module")
def backbone() -> Any:
    return load_backbone("tiny:qwen2_audio")


@pytest.fixture(scope="module")
def fitted(backbone, tmp_path_factory) -> AppSession:
    """A session under a root folder, fitted on three 0.5 s tones per class; the root holds a long
    recording (noise, low tone at 1-2 s, noise, high tone at 3-4 s, noise) and a text file."""
    root = tmp_path_factory.mktemp("root")
    session = AppSession(backbone, root / "work", PROMPT, root=root)
    for name, hz in (("low", 300.0), ("high", 2500.0)):
        session.add_class(name)
        for k in range(3):
            buffer = io.BytesIO()
            soundfile.write(buffer, tone(hz * (1 + 0.02 * k), 0.5, k), RATE, format="WAV")
            session.add_clip(name, f"{name}{k}.wav", buffer.getvalue())
    session.fit()
    noise = lambda s, seed: (0.01 * np.random.default_rng(seed).standard_normal(int(RATE * s))).astype(np.float32)
    audio = np.concatenate([noise(1, 1), tone(300, 1, 2), noise(1, 3), tone(2500, 1, 4), noise(1.3, 5)])
    (root / "recordings").mkdir()
    soundfile.write(root / "recordings" / "night.wav", audio, RATE, subtype="FLOAT")
    (root / "recordings" / "notes.wav").write_text("SECRET-LINE: not audio at all\n")
    return session


@contextmanager
def serve(session: AppSession) -> Iterator[tuple[str, int]]:
    server = make_server(session, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield "127.0.0.1", server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def address(fitted) -> Iterator[tuple[str, int]]:
    with serve(fitted) as bound:
        yield bound


def ask(address: tuple[str, int], method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request; (status, headers, body)."""
    connection = http.client.HTTPConnection(*address, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        reply = connection.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        connection.close()


def post_json(address: tuple[str, int], path: str, fields: dict[str, Any]) -> tuple[int, Any]:
    status, _, body = ask(address, "POST", path, json.dumps(fields).encode(), {"Content-Type": "application/json"})
    return status, json.loads(body)


def test_an_uploaded_recording_is_scanned_as_calm_scan_does_and_its_events_download(fitted, address):
    recording = fitted.root / "recordings" / "night.wav"
    status, _, body = ask(address, "POST", "/api/scan/file?name=night.wav", recording.read_bytes())
    assert status == 200 and json.loads(body) == {"name": "night.wav", "seconds": pytest.approx(5.3)}
    stored = list((fitted.workdir / "long").iterdir())
    assert [p.name.split("-", 1)[1] for p in stored] == ["night.wav"]  # no partial file left

    status, shown = post_json(address, "/api/scan", {"threshold": 0.0, "background": None, "window": 0.5, "hop": 0.25})
    assert status == 200
    expected = scan(fitted.backbone, fitted.classifier, [recording], ScanOptions(window=0.5, hop=0.25, threshold=0.0))[0]
    assert shown["file"] == "night.wav" and shown["windows"] == len(expected.windows) == 21
    assert (shown["window"], shown["hop"], shown["threshold"], shown["rejected"]) == (0.5, 0.25, 0.0, None)
    assert shown["timeline"]["times"] == pytest.approx(expected.windows.spans.tolist(), abs=1e-3)
    for k, name in enumerate(expected.classes):
        assert shown["timeline"]["probabilities"][name] == pytest.approx(expected.probabilities[:, k], abs=1e-4)
    events = [(e.onset, e.offset, e.label) for e in expected.events]
    assert [(e["onset"], e["offset"], e["label"]) for e in shown["events"]] == events and events

    status, headers, body = ask(address, "GET", "/api/scan/events.csv")
    assert status == 200 and headers["Content-Disposition"] == 'attachment; filename="night.events.csv"'
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0] == ["file", "onset", "offset", "label", "peak", "mean"]
    assert [(r[0], float(r[1]), float(r[2]), r[3]) for r in rows[1:]] == [
        ("night.wav", round(a, 3), round(b, 3), c) for a, b, c in events]
    status, headers, body = ask(address, "GET", "/api/scan/audacity.txt")
    assert headers["Content-Disposition"] == 'attachment; filename="night.audacity.txt"'
    assert body.decode() == "".join(f"{a:.6f}\t{b:.6f}\t{c}\n" for a, b, c in events)
    status, headers, body = ask(address, "GET", "/api/scan/selections.txt")
    lines = body.decode().splitlines()
    assert headers["Content-Disposition"] == 'attachment; filename="night.Table.1.selections.txt"'
    assert lines[0].split("\t") == list(RAVEN_COLUMNS) and len(lines) == len(events) + 1
    status, headers, body = ask(address, "GET", "/api/scan/timeline.png")
    assert status == 200 and headers["Content-Type"] == "image/png" and body.startswith(b"\x89PNG\r\n\x1a\n")


def test_a_picked_file_under_the_root_is_scanned_again_from_the_store(fitted, address, monkeypatch):
    status, chosen = post_json(address, "/api/scan/pick", {"path": "recordings/night.wav"})
    assert status == 200 and chosen == {"name": "recordings/night.wav", "seconds": pytest.approx(5.3)}
    status, first = post_json(address, "/api/scan", {"threshold": 0.5, "background": "low"})
    assert status == 200 and all(e["label"] == "high" for e in first["events"])  # "low" is the background now
    assert first["window"] == 0.5 and first["hop"] == 0.25  # the support's clip length, half of it
    status, reply = post_json(address, "/api/scan", {"background": "cat"})
    assert status == 400 and reply["error"] == "background class 'cat' is not one of the classifier's classes " \
                                               "['high', 'low']"

    def no_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model ran although every window is stored")

    monkeypatch.setattr(scan_features, "forward_heads", no_model)
    status, again = post_json(address, "/api/scan", {"threshold": 0.9, "reject": True})
    assert status == 200 and again["timeline"] == first["timeline"] and again["rejected"] is not None
    assert fitted.progress.stage == "idle"


def test_paths_outside_the_root_folders_and_non_audio_files_are_refused_without_echo(fitted, address):
    outside = fitted.root.parent / "outside.wav"
    soundfile.write(outside, tone(300, 1, 0), RATE)
    for spec, reason in ((str(outside), "outside"), ("../outside.wav", "outside"), ("/etc/passwd", "outside"),
                         ("recordings", "a folder; pick one audio file"), ("missing.wav", "no such folder or file"),
                         ("recordings/notes.wav", "recordings/notes.wav: ")):
        status, reply = post_json(address, "/api/scan/pick", {"path": spec})
        assert status == 400 and reason in reply["error"], spec
        assert "SECRET" not in reply["error"] and "root:" not in reply["error"]
    status, _, body = ask(address, "POST", "/api/scan/file?name=notes.wav", b"SECRET-LINE: not audio\n" * 100)
    assert status == 400 and json.loads(body)["error"].startswith("notes.wav: ") and b"SECRET" not in body
    assert [p for p in (fitted.workdir / "long").glob("*notes*")] == []


def test_other_sites_truncated_and_too_large_uploads_are_refused(fitted, address, monkeypatch):
    before = sorted((fitted.workdir / "long").iterdir()) if (fitted.workdir / "long").exists() else []
    recording = (fitted.root / "recordings" / "night.wav").read_bytes()
    status, _, body = ask(address, "POST", "/api/scan/file?name=evil.wav", recording,
                          {"Origin": "http://evil.example"})
    assert status == 403 and body.startswith(b"refused: a request from 'http://evil.example'")
    status, _, _ = ask(address, "POST", "/api/scan/pick", b'{"path": "recordings/night.wav"}',
                       {"Host": "evil.example"})
    assert status == 403

    monkeypatch.setattr(server_module, "MAX_LONG_UPLOAD", 1000)
    status, _, body = ask(address, "POST", "/api/scan/file?name=big.wav", recording)
    assert status == 400 and json.loads(body)["error"] == f"upload too large: {len(recording)} bytes (at most 1000)"

    with socket.create_connection(address, timeout=30) as raw:  # declares 1000 bytes, sends 10, stops
        raw.sendall(f"POST /api/scan/file?name=cut.wav HTTP/1.1\r\nHost: 127.0.0.1:{address[1]}\r\n"
                    "Content-Length: 1000\r\n\r\n".encode() + recording[:10])
        raw.shutdown(socket.SHUT_WR)
        reply = b"".join(iter(lambda: raw.recv(65536), b""))
    assert reply.startswith(b"HTTP/1.0 400") and b"the upload ended after 10 of 1000 bytes" in reply
    assert sorted((fitted.workdir / "long").iterdir()) == before  # nothing kept, no partial file


def test_bad_settings_and_out_of_order_requests_get_clear_errors(backbone, tmp_path):
    session = AppSession(backbone, tmp_path / "work", PROMPT, root=tmp_path)
    with serve(session) as bound:
        status, _, body = ask(bound, "GET", "/api/scan/events.csv")
        assert status == 400 and json.loads(body)["error"] == "no scan yet: scan a file first"
        status, reply = post_json(bound, "/api/scan", {})
        assert status == 400 and reply["error"] == "no classifier yet: fit one or load a classifier file"
    for fields, error in (({"threshold": 2}, "threshold must be a probability in [0, 1], got '2'"),
                          ({"threshold": "high"}, "threshold must be a probability in [0, 1], got 'high'"),
                          ({"window": -1}, "window must be a positive number of seconds, got '-1'"),
                          ({"reject": "yes"}, "reject must be true or false"),
                          ({"background": 3}, "background must be a class name or null")):
        with pytest.raises(server_module.RequestError, match=f"^{re.escape(error)}$"):
            server_module._scan_settings(fields)


def test_a_scan_of_a_stopping_app_is_cancelled_and_another_request_is_busy(fitted, address):
    assert post_json(address, "/api/scan/pick", {"path": "recordings/night.wav"})[0] == 200
    with fitted.running():
        status, reply = post_json(address, "/api/scan", {"window": 0.4})
        assert status == 409 and reply["error"].startswith("busy")
    fitted.stopping.set()
    try:
        status, reply = post_json(address, "/api/scan", {"window": 0.4, "hop": 0.2})  # windows not in the store
        assert status == 503 and reply["error"] == "the app is stopping: the scan was cancelled"
    finally:
        fitted.stopping.clear()
    assert fitted.progress.stage == "idle"


def test_a_long_timeline_is_binned_keeping_each_class_peak():
    spans = np.arange(7, dtype=float)
    p = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.2, 0.1], [0.6, 0.4], [0.5, 0.5]])
    edges, peaks = timeline(spans, p, points=3)
    assert edges.tolist() == [0, 2, 4, 6]
    assert peaks.tolist() == [[0.8, 0.9], [0.3, 0.7], [0.6, 0.5]]
    same = timeline(spans, p, points=6)
    assert same[0] is spans and same[1] is p
