"""The server of ``calm app`` against a hostile page or client: a forged ``Host`` (DNS rebinding)
or another site's ``Origin`` / ``Referer`` is refused with a 403 and changes nothing, the app's
own are served (IPv4 and IPv6); ``Content-Length`` cannot bypass the upload cap; a silent
connection is closed; a burst of uploads is served; the favicon is served."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import numpy as np
import pytest
import soundfile

from calm.app import AppSession, make_server
from calm.app.guard import allowed_hosts, content_length, is_loopback
from calm.backbones import load_backbone


@pytest.fixture(scope="module")
def backbone() -> Any:
    return load_backbone("tiny:qwen2_audio")


@contextmanager
def serve(session: AppSession, host: str = "127.0.0.1", **options: Any) -> Iterator[tuple[str, int]]:
    server = make_server(session, host, 0, **options)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield host, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def session(backbone, tmp_path) -> AppSession:
    return AppSession(backbone, tmp_path / "work", "What sound is this?", root=tmp_path)


@pytest.fixture()
def address(session) -> Iterator[tuple[str, int]]:
    with serve(session) as bound:
        yield bound


def ask(address: tuple[str, int], method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    """Send one request with exactly these headers (``Host`` included when given); (status, type, body)."""
    host, port = address
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host="Host" in (headers or {}), skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            connection.putheader(key, value)
        if body is not None and "Content-Length" not in (headers or {}):
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        reply = connection.getresponse()
        return reply.status, reply.getheader("Content-Type", ""), reply.read()
    finally:
        connection.close()


def test_a_forged_host_is_refused_and_the_apps_own_are_served(session, address):
    port = address[1]
    for forged in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1", ""):
        status, kind, body = ask(address, "GET", "/api/state", headers={"Host": forged})
        assert (status, kind) == (403, "text/plain; charset=utf-8"), forged
        assert body.decode().startswith(f"refused: Host {forged!r} is not this app's address; open http://127.0.0.1:"
                                        ) or forged == ""
        status, _, _ = ask(address, "POST", "/api/classes", b'{"name": "x"}', {"Host": forged})
        assert status == 403
    assert session.classes == {}
    for own in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        status, _, body = ask(address, "GET", "/api/state", headers={"Host": own})
        assert status == 200 and json.loads(body)["classes"] == {}


def test_a_request_from_another_site_is_refused_and_the_apps_own_page_is_served(session, address):
    own = f"127.0.0.1:{address[1]}"
    for sender in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": f"http://localhost:{address[1]}"},
                   {"Referer": "http://evil.example/page.html"}):
        status, _, body = ask(address, "POST", "/api/classes", b'{"name": "x"}', {"Host": own, **sender})
        assert status == 403 and body.decode().startswith("refused: a request from "), sender
    assert ask(address, "POST", "/api/folder", b'{"path": "."}', {"Host": own, "Origin": "http://evil.example"}
               )[0] == 403
    assert session.classes == {}
    for sender in ({"Origin": f"http://{own}"}, {"Referer": f"http://{own}/"}, {}):
        status, _, body = ask(address, "POST", "/api/classes", b'{"name": "x"}', {"Host": own, **sender})
        assert status == 200 and json.loads(body)["classes"] == {"x": []}
    # reading is not changing: a link from another site may open the page
    assert ask(address, "GET", "/", headers={"Host": own, "Referer": "http://evil.example/"})[0] == 200


def test_the_allowed_hosts_of_each_bind():
    assert allowed_hosts("127.0.0.1", 7860) == {"127.0.0.1:7860", "localhost:7860"}
    assert allowed_hosts("::1", 8000) == {"[::1]:8000", "localhost:8000"}
    assert allowed_hosts("127.0.0.1", 80) == {"127.0.0.1:80", "localhost:80", "127.0.0.1", "localhost"}
    assert allowed_hosts("0.0.0.0", 7860) is None and allowed_hosts("192.168.1.2", 7860) is None
    assert [is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost", "0.0.0.0", "::", "10.0.0.1")] == [
        True, True, True, True, False, False, False]


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_ipv6_bind_serves_its_own_address_only(session):
    with serve(session, "::1") as (host, port):
        assert ask((host, port), "GET", "/api/state", headers={"Host": f"[::1]:{port}"})[0] == 200
        assert ask((host, port), "GET", "/api/state", headers={"Host": f"evil.example:{port}"})[0] == 403


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", "99999999999999999999999"])
def test_a_bad_content_length_is_refused_before_reading(session, address, length):
    own = {"Host": f"127.0.0.1:{address[1]}"}
    session.add_class("low")
    headers = {**own, "Content-Length": length}
    status, _, body = ask(address, "POST", "/api/clips?class=low&name=a.wav", b"RIFF", headers)
    assert status == 400
    message = json.loads(body)["error"]
    assert message.startswith("bad Content-Length") or message.startswith("upload too large: ")
    assert session.classes["low"] == {}


def test_content_length_rule():
    assert content_length(None, 10) == 0 and content_length("7", 10) == 7
    with pytest.raises(ValueError, match="bad Content-Length '-1': expected a number of bytes"):
        content_length("-1", 10)
    with pytest.raises(ValueError, match=r"upload too large: 11 bytes \(at most 10\)"):
        content_length("11", 10)


def test_a_silent_connection_is_closed(session):
    with serve(session, timeout=0.2) as (host, port):
        with socket.create_connection((host, port), timeout=30) as silent:
            assert silent.recv(1024) == b""  # the server hung up; before, it waited forever
        assert ask((host, port), "GET", "/api/state", headers={"Host": f"127.0.0.1:{port}"})[0] == 200


def test_a_burst_of_uploads_is_served(session, address, tmp_path):
    own = {"Host": f"127.0.0.1:{address[1]}"}
    session.add_class("low")
    clip = tmp_path / "tone.wav"
    soundfile.write(clip, 0.1 * np.sin(np.arange(3200) / 10).astype(np.float32), 16000)
    data = clip.read_bytes()
    with ThreadPoolExecutor(40) as pool:
        statuses = list(pool.map(lambda k: ask(address, "POST", f"/api/clips?class=low&name=t{k}.wav", data, own)[0],
                                 range(40)))
    assert statuses == [200] * 40 and len(session.classes["low"]) == 40


def test_the_favicon_is_served(address):
    status, kind, body = ask(address, "GET", "/favicon.ico", headers={"Host": f"localhost:{address[1]}"})
    assert (status, kind) == (200, "image/svg+xml") and body.startswith(b"<svg")
    page = ask(address, "GET", "/", headers={"Host": f"localhost:{address[1]}"})[2].decode()
    assert '<link rel="icon" href="favicon.svg"' in page


def test_a_folder_outside_the_root_is_refused_without_reading_it(session, address, tmp_path):
    """``POST /api/folder {"path": "csv:/any/readable/file"}`` echoed the file's first line."""
    own = {"Host": f"127.0.0.1:{address[1]}"}
    secret = tmp_path.parent / f"{tmp_path.name}-secret.csv"
    secret.write_text("machine example.com login me password hunter2\n")
    try:
        for spec in (f"csv:{secret}", str(secret), f"../{secret.name}", f"csv:../{secret.name}"):
            status, _, body = ask(address, "POST", "/api/folder", json.dumps({"path": spec}).encode(), own)
            message = json.loads(body)["error"]
            assert status == 400 and message == (f"{spec}: outside {tmp_path.resolve()}, the folder the app may read "
                                                 "(start calm app with --root to choose another)")
        (tmp_path / "link.csv").symlink_to(secret)
        status, _, body = ask(address, "POST", "/api/folder", b'{"path": "csv:link.csv"}', own)
        assert status == 400 and "outside" in json.loads(body)["error"] and b"hunter2" not in body
    finally:
        secret.unlink()
    assert session.classes == {}


def test_a_dataset_under_the_root_loads_and_a_bad_one_is_refused_quoting_nothing(session, tmp_path):
    for name in ("dog", "cat"):
        (tmp_path / "clips" / name).mkdir(parents=True)
        soundfile.write(tmp_path / "clips" / name / f"{name}.wav", np.zeros(1600, np.float32), 16000)
    assert session.add_folder("clips") == 2 and sorted(session.classes) == ["cat", "dog"]
    (tmp_path / "notes.csv").write_text("machine password hunter2\n1,2\n")
    with pytest.raises(ValueError) as refused:
        session.add_folder("csv:notes.csv")
    assert str(refused.value) == ("csv:notes.csv: not a dataset the app can read (a folder of class subfolders, or a "
                                  "CSV with path and label columns); the reason is in the terminal running calm app")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.wav"
    soundfile.write(outside, np.zeros(1600, np.float32), 16000)
    try:
        (tmp_path / "list.csv").write_text(f"path,label\n{outside},dog\nclips/dog/dog.wav,dog\n")
        with pytest.raises(ValueError, match=rf"^list.csv: 1 of its 2 clip\(s\) lie outside {tmp_path.resolve()}, "
                                             "the folder the app may read; nothing was added$"):
            session.add_folder("list.csv")
    finally:
        outside.unlink()
    with pytest.raises(ValueError, match="^hf:user/set: the app reads folders and files under "):
        session.add_folder("hf:user/set")
    with pytest.raises(ValueError, match=f"^nothing: no such folder or file under {tmp_path.resolve()}$"):
        session.add_folder("nothing")
    assert sorted(session.classes) == ["cat", "dog"] and len(session.items()) == 2
