"""``calm app`` as a process: bad arguments are one line before the model loads; SIGTERM removes
the temporary folder of uploads; Ctrl+C during a fit stops the server, cancels the fit and exits
130 with one line (it used to abort with ``terminate called without an active exception``)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import soundfile

from calm.cli import main

SRC = Path(__file__).resolve().parents[1] / "src"


def test_a_port_out_of_range_is_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["app", "--model", "tiny:qwen2_audio", "--port", "70000"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "calm app: error: argument --port: a port is 0..65535, got 70000"
    assert "Traceback" not in err


def test_a_workdir_or_root_that_cannot_be_used_is_one_line_before_the_model_loads(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("calm.cli.app.load_model", lambda args: pytest.fail("the model loaded"))
    (tmp_path / "file").write_text("")
    assert main(["app", "--workdir", str(tmp_path / "file" / "work")]) == 1
    workdir = tmp_path / "file" / "work"
    assert capsys.readouterr().err == f"calm app: --workdir {workdir}: cannot write there (Not a directory)\n"
    assert main(["app", "--root", str(tmp_path / "nothing")]) == 1
    assert capsys.readouterr().err == f"calm app: --root {tmp_path / 'nothing'}: no such folder\n"


def tone(path: Path, hz: float, seconds: float = 0.4) -> bytes:
    t = np.arange(int(16000 * seconds)) / 16000
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), 16000)
    return path.read_bytes()


class App:
    """``calm app`` on a tiny model in a child process with its own temporary folder."""

    def __init__(self, tmp_path: Path, *options: str) -> None:
        self.tmp = tmp_path / "tmp"
        self.tmp.mkdir()
        env = {**os.environ, "PYTHONPATH": str(SRC), "TMPDIR": str(self.tmp)}
        command = [sys.executable, "-c", "import sys, calm.cli; sys.exit(calm.cli.main())", "app",
                   "--model", "tiny:qwen2_audio", "--port", "0", "--root", str(tmp_path), *options]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
        self.lines: list[str] = []
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            found = re.search(r"open (http://localhost:\d+/)", line)
            if found:
                self.url = found.group(1)
                return
        raise AssertionError(f"calm app did not start: {self.lines}")

    def call(self, path: str, body: bytes | None = None) -> Any:
        with urllib.request.urlopen(urllib.request.Request(self.url + path, data=body), timeout=120) as reply:
            return json.loads(reply.read())

    def stop(self, signum: int) -> tuple[int, list[str]]:
        self.process.send_signal(signum)
        _, rest = self.process.communicate(timeout=60)  # an app that does not stop fails, not hangs, the test
        return self.process.returncode, self.lines + rest.splitlines()


@pytest.fixture()
def app(tmp_path) -> Iterator[App]:
    started = App(tmp_path, "--batch-size", "1")
    yield started
    if started.process.poll() is None:
        started.process.kill()
        started.process.wait()


def test_sigterm_removes_the_uploaded_clips(app, tmp_path):
    app.call("api/classes", b'{"name": "low"}')
    app.call("api/clips?class=low&name=a.wav", tone(tmp_path / "a.wav", 300.0))
    assert [p.name for p in app.tmp.glob("calm-app-*/clips/low/*")] != []
    status, lines = app.stop(signal.SIGTERM)
    assert status == 143 and lines[-1] == "calm app: stopped (SIGTERM)"
    assert list(app.tmp.glob("calm-app-*")) == []


def test_ctrl_c_during_a_fit_cancels_it_and_exits_130_in_one_line(app, tmp_path):
    for name, hz in (("low", 300.0), ("high", 3000.0)):
        app.call("api/classes", json.dumps({"name": name}).encode())
        for k in range(12):
            app.call(f"api/clips?class={name}&name={name}{k}.wav", tone(tmp_path / f"{name}{k}.wav", hz + k, 3.0))
    replies: list[Any] = []

    def fit() -> None:
        try:
            replies.append(app.call("api/fit", b""))
        except (urllib.error.URLError, ConnectionError) as error:
            replies.append(error)

    threading.Thread(target=fit, daemon=True).start()
    while app.call("api/progress")["done"] < 1:  # extracting: the model is running
        pass
    status, lines = app.stop(signal.SIGINT)
    assert status == 130 and lines[-1] == "calm app: stopped (Ctrl+C)"
    assert not [line for line in lines if "terminate called" in line or "Traceback" in line]
    assert list(app.tmp.glob("calm-app-*")) == []
