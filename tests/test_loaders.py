"""Each loader reads a tiny fixture in its real layout; malformed rows and missing files are named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from calm.data.loaders import DatasetError, detect_layout, load_csv, load_dataset, load_folder


def write_audio(path: Path, seconds: float = 0.05, sample_rate: int = 8000) -> Path:
    """A short sine tone at ``path`` (format from the suffix: .wav or .flac)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    sf.write(path, 0.1 * np.sin(2 * np.pi * 440 * t), sample_rate)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------- folder of classes


def test_folder_of_classes(tmp_path: Path) -> None:
    for name in ("dog/a.wav", "dog/b.flac", "cat/c.wav", "cat/sub/d.wav"):
        write_audio(tmp_path / name)
    write_text(tmp_path / "cat/notes.txt", "not audio")
    write_audio(tmp_path / "stray.wav")  # files at the root carry no class
    items = load_folder(tmp_path)
    assert {i.id: i.label for i in items} == {"cat/c.wav": "cat", "cat/sub/d.wav": "cat", "dog/a.wav": "dog", "dog/b.flac": "dog"}
    assert all(i.fold is None and i.audio.is_file() for i in items)
    assert load_dataset(tmp_path) == items
    assert load_dataset(f"folder:{tmp_path}") == items


def test_folder_with_split_level(tmp_path: Path) -> None:
    for name in ("train/dog/a.wav", "train/cat/b.wav", "test/dog/c.wav"):
        write_audio(tmp_path / name)
    items = load_folder(tmp_path)
    assert {(i.id, i.label, i.fold) for i in items} == {
        ("train/dog/a.wav", "dog", "train"),
        ("train/cat/b.wav", "cat", "train"),
        ("test/dog/c.wav", "dog", "test"),
    }


def test_folder_without_audio_is_an_error(tmp_path: Path) -> None:
    write_text(tmp_path / "dog/readme.txt", "x")
    with pytest.raises(DatasetError, match="no audio files"):
        load_folder(tmp_path)


# ---------------------------------------------------------------------------- CSV


def test_csv(tmp_path: Path) -> None:
    write_audio(tmp_path / "clips/a.wav")
    write_audio(tmp_path / "clips/b.wav")
    write_audio(tmp_path / "clips/c.wav")
    csv_path = write_text(
        tmp_path / "data.csv",
        "path,label,split,speaker\nclips/a.wav,dog,support,s1\nclips/b.wav,cat,query,s2\n\nclips/c.wav,,query,s3\n",
    )
    items = load_csv(csv_path)
    assert [(i.id, i.label, i.fold, i.meta) for i in items] == [
        ("clips/a.wav", "dog", "support", {"speaker": "s1"}),
        ("clips/b.wav", "cat", "query", {"speaker": "s2"}),
        ("clips/c.wav", None, "query", {"speaker": "s3"}),
    ]
    assert items[0].audio == tmp_path / "clips/a.wav"
    assert load_dataset(csv_path) == items
    assert load_dataset(tmp_path) == items  # a folder holding one CSV is that CSV
    assert detect_layout(csv_path) == ("csv", csv_path)
    tsv = write_text(tmp_path / "unlabelled.tsv", "path\tnote\nclips/a.wav\tx\n")
    assert [(i.label, i.meta) for i in load_dataset(tsv)] == [(None, {"note": "x"})]


def test_csv_errors_name_file_and_line(tmp_path: Path) -> None:
    write_audio(tmp_path / "a.wav")
    bad = write_text(tmp_path / "bad.csv", "path,label\na.wav,dog\nmissing.wav,cat\n")
    with pytest.raises(DatasetError, match=r"bad\.csv:3: .*missing\.wav: no such file"):
        load_csv(bad)
    short = write_text(tmp_path / "short.csv", "path,label\na.wav,dog\na.wav\n")
    with pytest.raises(DatasetError, match=r"short\.csv:3: 1 field"):
        load_csv(short)
    nopath = write_text(tmp_path / "nopath.csv", "name,label\na.wav,dog\n")
    with pytest.raises(DatasetError, match=r"nopath\.csv:1: no path column"):
        load_csv(nopath)
    dup = write_text(tmp_path / "dup.csv", "path,label\na.wav,dog\na.wav,cat\n")
    with pytest.raises(DatasetError, match="duplicate item id 'a.wav'"):
        load_csv(dup)


def test_load_dataset_unknown_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file or folder"):
        load_dataset(tmp_path / "nowhere")


# ---------------------------------------------------------------------------- ESC-50

ESC50_HEADER = "filename,fold,target,category,esc10,src_file,take\n"


def make_esc50(root: Path) -> Path:
    rows = [("1-100-A-0.wav", 1, 0, "dog", "True"), ("2-101-A-1.wav", 2, 1, "rooster", "False"),
            ("5-102-B-0.wav", 5, 0, "dog", "True")]
    for name, *_ in rows:
        write_audio(root / "audio" / name)
    body = "".join(f"{n},{f},{t},{c},{e},{n.split('-')[1]},{n.split('-')[2]}\n" for n, f, t, c, e in rows)
    return write_text(root / "meta/esc50.csv", ESC50_HEADER + body)


def test_esc50(tmp_path: Path) -> None:
    meta = make_esc50(tmp_path)
    items = load_dataset(tmp_path)
    assert [(i.id, i.label, i.fold) for i in items] == [
        ("1-100-A-0", "dog", "1"), ("2-101-A-1", "rooster", "2"), ("5-102-B-0", "dog", "5")]
    assert items[0].meta == {"target": 0, "esc10": True, "src_file": "100", "take": "A"}
    assert load_dataset(meta) == items and load_dataset(f"esc50:{tmp_path}") == items
    assert [i.id for i in load_dataset(tmp_path, esc10=True)] == ["1-100-A-0", "5-102-B-0"]


def test_esc50_errors(tmp_path: Path) -> None:
    meta = make_esc50(tmp_path)
    meta.write_text(meta.read_text() + "3-103-A-2.wav,3,2,pig,False,103,A\n")
    with pytest.raises(DatasetError, match=r"esc50\.csv:5: .*3-103-A-2\.wav: no such file"):
        load_dataset(tmp_path)
    meta.write_text(ESC50_HEADER + "1-100-A-0.wav,six,0,dog,True,100,A\n")
    with pytest.raises(DatasetError, match=r"esc50\.csv:2: column 'fold': expected int, got 'six'"):
        load_dataset(tmp_path)
    meta.write_text("filename,fold,target,category\n1-100-A-0.wav,1,0,dog\n")
    with pytest.raises(DatasetError, match=r"esc50\.csv:1: missing column\(s\) \['esc10', 'src_file', 'take'\]"):
        load_dataset(tmp_path)


# ---------------------------------------------------------------------------- UrbanSound8K

US8K_HEADER = "slice_file_name,fsID,start,end,salience,fold,classID,class\n"


def test_urbansound8k(tmp_path: Path) -> None:
    write_audio(tmp_path / "audio/fold1/100032-3-0-0.wav", sample_rate=44100)
    write_audio(tmp_path / "audio/fold10/100263-2-0-117.wav", sample_rate=22050)
    meta = write_text(
        tmp_path / "metadata/UrbanSound8K.csv",
        US8K_HEADER + "100032-3-0-0.wav,100032,0.0,0.317551,1,1,3,dog_bark\n"
        "100263-2-0-117.wav,100263,58.5,62.5,1,10,2,children_playing\n",
    )
    items = load_dataset(tmp_path)
    assert [(i.id, i.label, i.fold) for i in items] == [
        ("100032-3-0-0", "dog_bark", "1"), ("100263-2-0-117", "children_playing", "10")]
    assert items[1].meta == {"fs_id": "100263", "start": 58.5, "end": 62.5, "salience": 1, "class_id": 2}
    meta.write_text(meta.read_text() + "1-1-1-1.wav,1,0,1,1,11,3,dog_bark\n")
    with pytest.raises(DatasetError, match=r"UrbanSound8K\.csv:4: column 'fold': expected 1\.\.10, got 11"):
        load_dataset(tmp_path)


# ---------------------------------------------------------------------------- VGGSound


def test_vggsound(tmp_path: Path) -> None:
    write_audio(tmp_path / "audio/---g-f_I2yQ_000001.wav")
    (tmp_path / "video").mkdir()
    (tmp_path / "video/--0PQM4-hqg_000030.mp4").write_bytes(b"")  # loaders only check that clips exist
    meta = write_text(
        tmp_path / "vggsound.csv",
        '---g-f_I2yQ,1,"people marching",test\n--0PQM4-hqg,30,"male speech, man speaking",train\n',
    )
    items = load_dataset(tmp_path)
    assert [(i.id, i.label, i.fold) for i in items] == [
        ("---g-f_I2yQ_000001", "people marching", "test"), ("--0PQM4-hqg_000030", "male speech, man speaking", "train")]
    assert items[0].video is None and items[1].video == items[1].audio
    meta.write_text(meta.read_text() + "abcdefghijk,40,dog barking,train\n")
    with pytest.raises(DatasetError, match=r"vggsound\.csv:3: no clip named abcdefghijk_000040"):
        load_dataset(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 of 3 rows"):
        assert len(load_dataset(tmp_path, missing="skip")) == 2
    meta.write_text("abcdefghijk,forty,dog barking,train\n")
    with pytest.raises(DatasetError, match=r"vggsound\.csv:1: column 'start': expected int"):
        load_dataset(meta)


# ---------------------------------------------------------------------------- ASVspoof 2019 LA


def test_asvspoof2019_la(tmp_path: Path) -> None:
    root = tmp_path / "LA"
    write_audio(root / "ASVspoof2019_LA_train/flac/LA_T_1138215.flac")
    write_audio(root / "ASVspoof2019_LA_train/flac/LA_T_1271820.flac")
    write_audio(root / "ASVspoof2019_LA_eval/flac/LA_E_2834763.flac")
    protocols = root / "ASVspoof2019_LA_cm_protocols"
    write_text(protocols / "ASVspoof2019.LA.cm.train.trn.txt",
               "LA_0079 LA_T_1138215 - - bonafide\nLA_0079 LA_T_1271820 - A01 spoof\n")
    eval_protocol = write_text(protocols / "ASVspoof2019.LA.cm.eval.trl.txt", "LA_0039 LA_E_2834763 - A11 spoof\n")
    items = load_dataset(tmp_path)  # the LA/ folder is found below the given one
    assert [(i.id, i.label, i.fold, i.meta["attack"]) for i in items] == [
        ("LA_T_1138215", "bonafide", "train", None), ("LA_T_1271820", "spoof", "train", "A01"),
        ("LA_E_2834763", "spoof", "eval", "A11")]
    assert [i.id for i in load_dataset(root, parts=["eval"])] == ["LA_E_2834763"]
    eval_protocol.write_text("LA_0039 LA_E_2834763 - A11 spoof\nLA_0039 LA_E_0000001 - A11 fake\n")
    with pytest.raises(DatasetError, match=r"eval\.trl\.txt:2: label must be one of"):
        load_dataset(root)
    eval_protocol.write_text("LA_0039 LA_E_2834763 - A11 spoof\nLA_0039 LA_E_0000001 - A11 spoof\n")
    with pytest.raises(DatasetError, match=r"eval\.trl\.txt:2: .*LA_E_0000001\.flac: no such file"):
        load_dataset(root)


# ---------------------------------------------------------------------------- AudioSet

AUDIOSET_HEADER = (
    "# Segments csv created Sun Mar  5 10:54:31 2017\n"
    "# num_ytids=2, num_segs=2, num_unique_labels=3, num_positive_labels=4\n"
    "# YTID, start_seconds, end_seconds, positive_labels\n"
)


def test_audioset(tmp_path: Path) -> None:
    write_text(tmp_path / "class_labels_indices.csv",
               'index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/05zppz,"Male speech, man speaking"\n2,/m/0bt9lr,Dog\n')
    write_audio(tmp_path / "audios/balanced/Y--PJHxphWEs.wav")
    write_audio(tmp_path / "audios/eval/--4gqARaEJE_0.000.wav")
    balanced = write_text(tmp_path / "balanced_train_segments.csv",
                          AUDIOSET_HEADER + '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/m/05zppz"\n')
    write_text(tmp_path / "eval_segments.csv", AUDIOSET_HEADER + '--4gqARaEJE, 0.000, 10.000, "/m/0bt9lr"\n')
    items = load_dataset(tmp_path)
    assert [(i.id, i.label, i.fold) for i in items] == [
        ("--PJHxphWEs", ("Speech", "Male speech, man speaking"), "balanced_train"), ("--4gqARaEJE", ("Dog",), "eval")]
    assert [i.id for i in load_dataset(tmp_path / "class_labels_indices.csv", segments=["eval"])] == ["--4gqARaEJE"]
    balanced.write_text(balanced.read_text() + 'zzzzzzzzzzz, 0.000, 10.000, "/m/nope"\n')
    with pytest.raises(DatasetError, match=r"balanced_train_segments\.csv:5: .*\['/m/nope'\]"):
        load_dataset(tmp_path)
    balanced.write_text(AUDIOSET_HEADER + 'zzzzzzzzzzz, 0.000, 10.000, "/m/0bt9lr"\n')
    with pytest.raises(DatasetError, match=r"balanced_train_segments\.csv:4: no clip named zzzzzzzzzzz"):
        load_dataset(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 of 2"):
        assert [i.id for i in load_dataset(tmp_path, missing="skip")] == ["--4gqARaEJE"]


# ---------------------------------------------------------------------------- calm data


def test_cli_data_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from calm.cli import main

    make_esc50(tmp_path)
    assert main(["data", "info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "layout: esc50" in out and "items: 3" in out and "protocol: folds" in out and "dog\t2" in out
    assert main(["data", "info", str(tmp_path / "nowhere")]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_cli_data_prepare_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    from calm.cli import main
    from calm.data import recipes

    def tiny(out: Path) -> Path:
        """A one-clip dataset."""
        write_audio(out / "dog/a.wav")
        return write_text(out / "tiny.csv", "path,label\ndog/a.wav,dog\n")

    monkeypatch.setattr(recipes, "RECIPES", {"tiny": tiny})
    assert main(["data", "list"]) == 0
    assert capsys.readouterr().out == "tiny\tA one-clip dataset.\n"
    assert main(["data", "prepare", "tiny", "--out", str(tmp_path / "t")]) == 0
    csv_path = Path(capsys.readouterr().out.strip())
    assert [i.label for i in load_dataset(csv_path)] == ["dog"]
    assert main(["data", "prepare", "nope", "--out", str(tmp_path)]) == 1
    assert "unknown recipe 'nope'" in capsys.readouterr().err
