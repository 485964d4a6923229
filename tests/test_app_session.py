"""The library side of ``calm app`` (no browser): the session is the public API's fit / predict /
save / load with a feature store that extracts only new clips; the layer profile is exact; bad input
is refused naming the file; the server answers errors as JSON and refuses other sites' requests;
``calm app`` warns off loopback."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from calm.app import AppSession, BusyError, StoppedError, make_server
from calm.media import MediaLoadError
from calm.backbones import load_backbone
from calm.classifiers.trust import describe
from calm.classifiers import save
from calm.classifiers.plots import layer_profile, weight_maps
from calm.cli import build_parser, main
from calm.app.guard import is_loopback
from calm.predict import fit_classifier, predict_files
from calm.heads import feature_fingerprint
from calm.store import FeatureStore

PROMPT = "What sound is this?"


def tone_bytes(path: Path, hz: float, seed: int = 0) -> bytes:
    t = np.arange(6400) / 16000
    noise = 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * hz * t) + noise).astype(np.float32), 16000)
    return path.read_bytes()


@pytest.fixture(scope="module")
def backbone() -> Any:
    return load_backbone("tiny:qwen2_audio")


@pytest.fixture()
def session(backbone, tmp_path) -> AppSession:
    """Two classes of two tones each."""
    session = AppSession(backbone, tmp_path / "work", PROMPT, batch_size=3, root=tmp_path)
    for name, hz in (("low", 250.0), ("high", 3000.0)):
        session.add_class(name)
        for k in range(2):
            session.add_clip(name, f"{name}{k}.wav", tone_bytes(tmp_path / f"{name}{k}.wav", hz * (1 + 0.03 * k), k))
    return session


def quiet_fit(session: AppSession, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return session.fit(**kwargs)


def count_forwarded_clips(backbone: Any, monkeypatch) -> list[int]:
    """Patch the backbone's forward pass to record each batch's size."""
    sizes: list[int] = []
    original = backbone.forward

    def forward(inputs: dict[str, Any]) -> None:
        sizes.append(int(inputs["attention_mask"].shape[0]))
        original(inputs)

    monkeypatch.setattr(backbone, "forward", forward)
    return sizes


def test_fit_is_fit_classifier_and_a_new_clip_is_the_only_one_extracted(session, backbone, tmp_path, monkeypatch):
    sizes = count_forwarded_clips(backbone, monkeypatch)
    seen = []
    result = quiet_fit(session, on_progress=lambda p: seen.append((p.stage, p.done, p.total)))
    assert sum(sizes) == 4 and result.clips == 4 and result.classes == ["high", "low"]
    assert seen == [("extracting", 0, 4), ("extracting", 3, 4), ("extracting", 4, 4), ("fitting", 4, 4),
                    ("idle", 4, 4)]

    session.add_clip("low", "low2.wav", tone_bytes(tmp_path / "low2.wav", 260.0, 2))
    sizes.clear()
    quiet_fit(session)
    assert sizes == [1]
    store = FeatureStore.open(session.workdir / "store", feature_fingerprint(backbone, PROMPT), backbone.head_index())
    assert len(store) == 5
    store.close()
    direct = fit_classifier(backbone, session.items(), PROMPT)
    assert result.method == describe(direct)
    assert np.allclose(session.classifier.weights_, direct.weights_, atol=1e-6)


def test_classify_is_predict_files_and_save_load_keeps_predictions(session, backbone, tmp_path):
    quiet_fit(session)
    query = tmp_path / "query.wav"
    data = tone_bytes(query, 2900.0, 7)
    shown = session.classify("query.wav", data)
    direct = predict_files(backbone, session.classifier, [query])[0]
    assert (shown.label, shown.probabilities, shown.typicality) == (direct.label, direct.probabilities,
                                                                    direct.typicality)
    assert 0 < shown.typicality <= 1  # the page notes a clip unlike the support (<= 0.1)

    saved = session.save(tmp_path / "clf.safetensors")
    fresh = AppSession(backbone, tmp_path / "other", "another prompt")
    fresh.load_bytes("clf.safetensors", saved.read_bytes())
    again = fresh.classify("query.wav", data)
    assert (again.label, again.probabilities) == (shown.label, shown.probabilities)


def test_a_classifier_of_another_model_is_refused_on_load(session, tmp_path):
    quiet_fit(session)
    fitted = getattr(session.classifier, "estimator_", session.classifier)  # calibrated: its estimator's file
    fitted.fingerprint_ = {**fitted.fingerprint_, "model_id": "tiny:whisper"}
    path = save(session.classifier, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="model_id: expected 'tiny:whisper', got 'tiny:qwen2_audio'"):
        session.load(path)


def test_bad_input_is_refused_naming_the_file_and_changes_nothing(session, tmp_path):
    with pytest.raises(MediaLoadError, match=r"^broken\.wav: not a decodable audio file"):
        session.add_clip("low", "broken.wav", b"RIFF\x00\x00\x00\x00WAVEjunk")
    assert sorted(session.classes["low"]) == ["low0.wav", "low1.wav"]
    assert not list((session.workdir / "clips").rglob("*broken*"))
    with pytest.raises(ValueError, match="no class 'cat'; make it first"):
        session.add_clip("cat", "a.wav", b"")
    with pytest.raises(ValueError, match="class name '../x'"):
        session.add_class("../x")
    with pytest.raises(ValueError, match="no classifier yet"):
        session.classify("q.wav", b"")
    with pytest.raises(ValueError, match="c.safetensors: not a readable safetensors file"):
        session.load_bytes("c.safetensors", b"garbage")
    session.add_class("empty")
    with pytest.raises(ValueError, match="at least two classes, each with at least one clip; no clips in 'empty'"):
        session.fit()


def test_a_folder_of_class_subfolders_is_added_once(session, tmp_path):
    for name in ("dog", "cat"):
        (tmp_path / "folder" / name).mkdir(parents=True)
        tone_bytes(tmp_path / "folder" / name / f"{name}.wav", 500.0)
    assert session.add_folder(tmp_path / "folder") == 2
    assert session.add_folder(tmp_path / "folder") == 0
    assert session.classes["dog"] == {"dog.wav": tmp_path / "folder" / "dog" / "dog.wav"}


def test_a_request_while_the_model_runs_is_told_busy(session, tmp_path):
    started, release = threading.Event(), threading.Event()

    def hold(progress: Any) -> None:
        started.set()
        release.wait(30)

    worker = threading.Thread(target=quiet_fit, args=(session,), kwargs={"on_progress": hold})
    worker.start()
    started.wait(30)
    with pytest.raises(BusyError, match="busy"):
        session.fit()
    release.set()
    worker.join(60)
    assert session.classifier is not None and session.progress.stage == "idle"


def test_layer_profile_is_each_layers_share_of_the_weight(session):
    clf = quiet_fit(session) and session.classifier
    profile = layer_profile(clf)
    heads = clf.head_index_
    for site, shares in profile.items():
        for layer, share in enumerate(shares):
            rows = [k for k, (s, l, _) in enumerate(heads) if s == site and l == layer]
            assert share == pytest.approx(clf.weights_[rows].sum() / len(clf.classes_), abs=1e-12)
    assert sum(s.sum() for s in profile.values()) == pytest.approx(1.0)
    assert session.layer_profile() == {site: list(shares) for site, shares in profile.items()}


def request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers or {})) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_server_answers_errors_as_json_and_refuses_other_sites(session, monkeypatch):
    server = make_server(session, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert request(url + "/api/nothing") == (400, {"error": "no such page: /api/nothing"})
        with pytest.raises(urllib.error.HTTPError) as refused:  # more in tests/test_app_guard.py
            urllib.request.urlopen(urllib.request.Request(url + "/api/classes", b'{"name": "x"}',
                                                          {"Origin": "http://evil.example"}))
        assert refused.value.code == 403 and refused.value.read() == (
            b"refused: a request from 'http://evil.example', another site than this app\n")
        assert "x" not in session.classes
        monkeypatch.setattr(session, "layer_profile", lambda: 1 / 0)
        assert request(url + "/api/profile") == (500, {"error": "internal error (ZeroDivisionError): division by zero"})
        status, state = request(url + "/api/classes", b'{"name": "x"}', {"Origin": url})
        assert status == 200 and state["classes"]["x"] == []
    finally:
        server.shutdown()
        server.server_close()


def test_cli_defaults_and_the_warning_off_loopback(capsys):
    args = build_parser().parse_args(["app"])
    assert (args.model, args.host, args.port, args.classifier) == ("whisper-base", "127.0.0.1", 7860, None)
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "192.168.1.2")] == [
        True, True, True, False, False]
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["app", "--model", "tiny:qwen2_audio", "--host", "0.0.0.0", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert "WARNING: listening on 0.0.0.0: the page has no authentication" in err
    assert "Address already in use" in err


def test_classify_says_unknown_and_gives_sets_as_predict_does_and_the_threshold_moves(session, backbone, tmp_path):
    quiet_fit(session)
    clf = session.classifier
    assert session.can_reject() and session.set_summary() is None
    # rejection_threshold's rule: the floor((n + 1) rate)-th smallest out-of-fold score of the 4 support clips
    assert session.reject_threshold(0.5) == clf.open_scores_[1] and session.reject_threshold(0.2) == clf.open_scores_[0]
    assert session.reject_threshold(0.05) is None  # 4 clips turn none away at 5%
    sizes = []
    for k, hz in enumerate((2900.0, 700.0)):
        query = tmp_path / f"q{k}.wav"
        shown = session.classify(query.name, tone_bytes(query, hz, 7))
        direct = predict_files(backbone, clf, [query], reject=True, sets=0.9)[0]
        assert (shown.label, shown.score, shown.prediction_set) == (direct.label, direct.score, direct.prediction_set)
        assert shown.score is not None and set(shown.prediction_set) <= {"low", "high"}
        sizes.append(len(shown.prediction_set))
    assert session.set_summary() == {"coverage": 0.9, "mean_size": sum(sizes) / 2, "clips": 2, "classes": 2,
                                     "shots": (2, 2)}
    session.add_clip("low", "low2.wav", tone_bytes(tmp_path / "low2.wav", 260.0, 2))
    quiet_fit(session)
    assert session.set_summary() is None and session.shots == (2, 3)


def test_a_classifier_that_cannot_reject_says_so(session, tmp_path):
    session.remove_clip("low", "low1.wav")
    session.remove_clip("high", "high1.wav")
    quiet_fit(session)  # one clip a class: nothing scored out of fold
    assert not session.can_reject()
    with pytest.raises(ValueError, match="this classifier cannot say unknown: fit it with at least 2 clips per class"):
        session.reject_threshold(0.05)
    row = session.classify("q.wav", tone_bytes(tmp_path / "q.wav", 2900.0, 7))
    assert row.label in ("low", "high") and row.score is None and row.prediction_set is None
    assert session.set_summary() is None


def test_stop_cancels_a_fit_before_its_next_batch_and_refuses_new_model_steps(session, backbone, monkeypatch):
    sizes = count_forwarded_clips(backbone, monkeypatch)
    started, release = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def hold(progress: Any) -> None:
        started.set()
        release.wait(30)

    def fit() -> None:
        try:
            quiet_fit(session, on_progress=hold)
        except StoppedError as error:
            failures.append(error)

    worker = threading.Thread(target=fit)
    worker.start()
    started.wait(30)
    assert session.stop(timeout=0) is False  # the fit holds the model
    release.set()
    worker.join(60)
    assert [str(e) for e in failures] == ["the app is stopping: the fit was cancelled"] and sizes == []
    assert session.stop(timeout=30) is True and session.progress.stage == "idle"
    with pytest.raises(BusyError):
        session.fit()


def test_the_weight_maps_and_thresholds_served_to_the_page(session):
    quiet_fit(session)
    maps = weight_maps(session.classifier)
    shown = session.weight_maps()
    assert shown["classes"] == ["high", "low"] and list(shown["sites"]) == list(maps)
    for site, grid in maps.items():
        assert np.array_equal(np.array(shown["sites"][site], dtype=float), grid, equal_nan=True)
    server = make_server(session, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/threshold"
    try:
        assert request(url + "?rate=0.5") == (200, {"threshold": session.reject_threshold(0.5)})
        assert request(url + "?rate=0.01") == (200, {"threshold": None})
        assert request(url + "?rate=1") == (400, {"error": "?rate= must be a share in [0, 1), got 1.0"})
        assert request(url + "?rate=x") == (400, {"error": "?rate= must be a number, got 'x'"})
        assert request(url) == (400, {"error": "missing ?rate="})
    finally:
        server.shutdown()
        server.server_close()
