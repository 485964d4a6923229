"""Dev-set recipes: the SoundFont reader on hand-made fonts, tiny builds of every recipe, real packages."""

from __future__ import annotations

import csv
import shutil
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from calm.data.episodes import protocol_of
from calm.data.loaders import load_dataset
from calm.devdata import devsets, drums, recipes, sources
from calm.devdata import speech as demo
from calm.devdata.soundfont import GM_FAMILIES, PERCUSSION_BANK, Sample, SoundFontError, read_samples, sample_audio
from calm.errors import InputError

RATE = 8000


def _chunk(cid: bytes, body: bytes) -> bytes:
    return struct.pack("<4sI", cid, len(body)) + body + (b"\0" if len(body) % 2 else b"")


def _list(kind: bytes, *chunks: bytes) -> bytes:
    return _chunk(b"LIST", kind + b"".join(chunks))


def write_sf2(path: Path, presets: list[tuple]) -> Path:
    """A minimal SoundFont: each preset (program, bank, samples[, (low key, high key)]) plays one
    instrument whose zones are its samples (name, int16 audio, loop start, loop end relative to the
    sample, sample type[, (low key, high key)]); a name seen before names the same stored sample."""
    smpl, headers, phdr, pbag, pgen, inst, ibag, igen = b"", [], [], [], [], [], [], []
    stored: dict[str, int] = {}
    for p, (program, bank, samples, *preset_keys) in enumerate(presets):
        phdr.append(struct.pack("<20sHHHIII", f"preset{p}".encode(), program, bank, len(pbag), 0, 0, 0))
        pbag.append(struct.pack("<HH", len(pgen), 0))
        for low, high in preset_keys:
            pgen.append(struct.pack("<HH", 43, low | high << 8))
        pgen.append(struct.pack("<HH", 41, len(inst)))
        inst.append(struct.pack("<20sH", f"inst{p}".encode(), len(ibag)))
        for name, audio, loop_start, loop_end, kind, *keys in samples:
            ibag.append(struct.pack("<HH", len(igen), 0))
            for low, high in keys:
                igen.append(struct.pack("<HH", 43, low | high << 8))
            igen.append(struct.pack("<HH", 53, stored.setdefault(name, len(headers))))
            if stored[name] < len(headers):
                continue
            start = len(smpl) // 2
            smpl += audio.astype("<i2").tobytes() + b"\0" * 92  # 46 zero samples after each, as the spec asks
            headers.append(struct.pack("<20sIIIIIBbHH", name.encode(), start, start + len(audio),
                                       start + loop_start, start + loop_end, RATE, 60, 0, 0, kind))
    phdr.append(struct.pack("<20sHHHIII", b"EOP", 0, 0, len(pbag), 0, 0, 0))
    pbag.append(struct.pack("<HH", len(pgen), 0))
    pgen.append(struct.pack("<HH", 0, 0))
    inst.append(struct.pack("<20sH", b"EOI", len(ibag)))
    ibag.append(struct.pack("<HH", len(igen), 0))
    igen.append(struct.pack("<HH", 0, 0))
    headers.append(struct.pack("<20sIIIIIBbHH", b"EOS", 0, 0, 0, 0, 0, 0, 0, 0, 0))
    pdta = _list(b"pdta", _chunk(b"phdr", b"".join(phdr)), _chunk(b"pbag", b"".join(pbag)),
                 _chunk(b"pmod", b"\0" * 10), _chunk(b"pgen", b"".join(pgen)), _chunk(b"inst", b"".join(inst)),
                 _chunk(b"ibag", b"".join(ibag)), _chunk(b"imod", b"\0" * 10), _chunk(b"igen", b"".join(igen)),
                 _chunk(b"shdr", b"".join(headers)))
    info = _list(b"INFO", _chunk(b"ifil", struct.pack("<HH", 2, 1)))
    body = b"sfbk" + info + _list(b"sdta", _chunk(b"smpl", smpl)) + pdta
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def _tone(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).uniform(-1, 1, n) * 20000).astype(np.int16)


MONO, RIGHT, LEFT = 1, 2, 4


def test_an_unknown_recipe_is_bad_input_naming_the_known_ones(tmp_path):
    with pytest.raises(InputError, match=r"unknown dataset recipe 'nope'; known: \[.*'spoken-numbers'"):
        recipes.prepare("nope", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_read_samples_maps_bank0_programs_and_skips_right_halves(tmp_path):
    a, b, c = _tone(400, 0), _tone(300, 1), _tone(200, 2)
    path = write_sf2(tmp_path / "f.sf2", [
        (0, 0, [("PianoL", a, 100, 300, LEFT), ("PianoR", a, 100, 300, RIGHT)]),
        (40, 0, [("Violin", b, 0, 0, MONO)]),
        (41, 0, [("Violin", b, 0, 0, MONO)]),  # same sample in another program: listed once, both programs
        (0, 128, [("Drum", c, 0, 0, MONO)]),  # a percussion bank: not a GM program
    ])
    samples, data, smpl = read_samples(path)
    assert [(s.name, s.programs) for s in samples] == [("PianoL", (0,)), ("Violin", (40, 41))]
    raw = np.frombuffer(data, "<i2", count=samples[1].end - samples[1].start, offset=smpl + 2 * samples[1].start)
    assert np.array_equal(raw, b)


def test_sample_audio_is_the_recording_cut_and_faded(tmp_path):
    a = _tone(400, 0)
    samples, data, smpl = read_samples(write_sf2(tmp_path / "f.sf2", [(0, 0, [("P", a, 100, 300, MONO)])]))
    x = a.astype(np.float32) / 32768
    whole = sample_audio(samples[0], data, smpl, seconds=1.0, fade=0.005)  # the loop is not repeated
    expected = x.copy()
    expected[-40:] *= np.linspace(1, 0, 40, dtype=np.float32)
    assert whole.dtype == np.float32 and np.array_equal(whole, expected)
    cut = sample_audio(samples[0], data, smpl, seconds=0.02, fade=0.0)  # 160 samples at 8 kHz
    assert np.array_equal(cut, x[:160])
    assert samples[0].seconds == 400 / RATE


def test_a_malformed_soundfont_is_named(tmp_path):
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"RIFF\0\0\0\0WAVEfmt ")
    with pytest.raises(SoundFontError, match="bad.sf2: not a SoundFont"):
        read_samples(bad)
    truncated = tmp_path / "cut.sf2"
    truncated.write_bytes(write_sf2(tmp_path / "f.sf2", [(0, 0, [("P", _tone(50, 0), 0, 0, MONO)])]).read_bytes()[:-30])
    with pytest.raises(SoundFontError, match="cut.sf2"):
        read_samples(truncated)
    raw = bytearray(write_sf2(tmp_path / "g.sf2", [(0, 0, [("P", _tone(50, 0), 0, 0, MONO)])]).read_bytes())
    end = raw.index(b"shdr") + 8 + 24  # the end field of the first sample header
    raw[end:end + 4] = struct.pack("<I", 10**6)
    (tmp_path / "far.sf2").write_bytes(bytes(raw))
    with pytest.raises(SoundFontError, match="far.sf2: sample 0 lies outside"):
        read_samples(tmp_path / "far.sf2")


def test_instrument_families_leave_out_synthesised_samples(tmp_path):
    devsets._soundfont.cache_clear()
    n = int(devsets.MIN_SECONDS * RATE)
    path = write_sf2(tmp_path / "f.sf2", [
        (24, 0, [("Nylon", _tone(n, 0), 0, 0, MONO), ("Click", _tone(n - 1, 7), 0, 0, MONO)]),  # too short
        (38, 0, [("SynthBass", _tone(n, 1), 0, 0, MONO)]),  # Synth Bass 1: synthesised
        (33, 0, [("Finger", _tone(n, 2), 0, 0, MONO), ("Saw Wave", _tone(n, 3), 0, 0, MONO)]),
        (48, 0, [("Cello", _tone(n, 4), 0, 0, MONO)]),  # only an ensemble plays it: no acoustic family
        (42, 0, [("Violin", _tone(n, 5), 0, 0, MONO)]),
        (49, 0, [("Violin", _tone(n, 5), 0, 0, MONO)]),  # strings reused by an ensemble: still strings
        (80, 0, [("Lead", _tone(n, 6), 0, 0, MONO)]),
    ])
    by_family, _, _ = devsets._soundfont(path)
    assert {k: [s.name for s in v] for k, v in by_family.items()} == {
        "guitar": ["Nylon"], "bass": ["Finger"], "strings": ["Violin"]}


def _fake_font(path: Path) -> Path:
    """Per instrument family, 3 samples of one program and 2 of another: the piano's first program
    (0) has more, elsewhere the program in GROUP_PROGRAMS (8i+1) has more than 8i."""
    presets = []
    for i, name in enumerate(GM_FAMILIES):
        if name in devsets.INSTRUMENT_FAMILIES:
            for program, count in ((0, 3), (4, 2)) if i == 0 else ((8 * i, 2), (8 * i + 1, 3)):
                presets.append((program, 0, [(f"{name}{program}-{k}", _tone(2400, 1000 * program + k), 0, 0, MONO)
                                             for k in range(count)]))
    return write_sf2(path, presets)


@pytest.fixture
def fake_packages(tmp_path, monkeypatch):
    """The recipes' Debian files replaced by hand-made fonts and a Tux Paint stamps tree (no network)."""
    devsets._soundfont.cache_clear()
    files = {devsets.FLUID: _fake_font(tmp_path / "fluid.sf2"), devsets.TUXPAINT: tmp_path / "stamps"}
    rng = np.random.default_rng(0)
    for lang in devsets.TUXPAINT_LANGUAGES:
        for k in range(4):
            folder = files[devsets.TUXPAINT] / ("animals" if k % 2 else "food")
            folder.mkdir(parents=True, exist_ok=True)
            seconds = 6.0 if k == 3 else 0.5 + 0.1 * k  # one too long to keep
            sf.write(folder / f"thing{k}_desc_{lang}.ogg", rng.uniform(-0.5, 0.5, int(seconds * 22050)), 22050)
        sf.write(folder / f"thing0_{lang}.ogg", np.zeros(100), 22050)  # not a spoken name
    monkeypatch.setattr(devsets, "debian_file", lambda package, relative: files[(package, relative)])
    yield files
    devsets._soundfont.cache_clear()


def _rows(metadata: Path) -> list[dict[str, str]]:
    with open(metadata, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _check_clips(items, seconds: tuple[float, float]) -> None:
    for item in items:
        info = sf.info(item.audio)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), item.id
        assert seconds[0] <= info.duration <= seconds[1], (item.id, info.duration)


def test_instruments_tiny_build(fake_packages, tmp_path):
    metadata = demo.build_dataset("instruments", 0, lambda: devsets.instruments_clips(per_family=3), tmp_path / "i",
                           False, devsets.SAMPLE_RATE)
    items = load_dataset(metadata)
    assert protocol_of(items) == "random"
    assert Counter(i.label for i in items) == {name: 3 for name in devsets.INSTRUMENT_FAMILIES}
    assert {i.meta["source"] for i in items} == {"FluidR3"}
    _check_clips(items, (0.3, 0.3))  # 2400 samples at 8 kHz
    again = demo.build_dataset("instruments", 0, lambda: devsets.instruments_clips(per_family=3), tmp_path / "j",
                        False, devsets.SAMPLE_RATE)
    assert _rows(metadata) == _rows(again)
    for row in _rows(metadata)[:5]:  # same audio, byte for byte
        assert (tmp_path / "i" / row["path"]).read_bytes() == (tmp_path / "j" / row["path"]).read_bytes()


def test_instruments_shift_tiny_build(fake_packages, tmp_path):
    metadata = demo.build_dataset("instruments-shift", 0, lambda: devsets.instruments_shift_clips(support=3, query=2),
                           tmp_path / "s", False, devsets.SAMPLE_RATE)
    items = load_dataset(metadata)
    assert protocol_of(items) == "split"
    by_split = {split: [i for i in items if i.fold == split] for split in ("support", "query")}
    assert Counter(i.label for i in by_split["support"]) == {name: 3 for name in devsets.INSTRUMENT_FAMILIES}
    assert Counter(i.label for i in by_split["query"]) == {name: 2 for name in devsets.INSTRUMENT_FAMILIES}
    programs = {split: {int(i.meta["content"].split(":")[0].removeprefix("program ")) for i in part}
                for split, part in by_split.items()}
    families = [i for i, name in enumerate(GM_FAMILIES) if name in devsets.INSTRUMENT_FAMILIES][1:]
    assert programs["support"] == {0} | {8 * i + 1 for i in families}  # the larger group of each family
    assert programs["query"] == {4} | {8 * i for i in families}
    with pytest.raises(sources.DemoDataError, match="2 samples of family 'piano', 3 needed"):
        devsets.instruments_shift_clips(support=3, query=3)


def test_languages_tiny_build(fake_packages, tmp_path):
    metadata = demo.build_dataset("languages", 0, lambda: devsets.languages_clips(per_language=3), tmp_path / "l",
                           False, devsets.SAMPLE_RATE)
    items = load_dataset(metadata)
    assert Counter(i.label for i in items) == {lang: 3 for lang in devsets.TUXPAINT_LANGUAGES}
    assert all(i.meta["content"].endswith(f"_desc_{i.label}.ogg") for i in items)
    _check_clips(items, (0.5, 0.8))  # the 6 s recordings are left out
    with pytest.raises(sources.DemoDataError, match="3 spoken names in 'be', 4 needed"):
        devsets.languages_clips(per_language=4)


# ---------------------------------------------------------------------------- drums


def test_read_samples_of_the_percussion_bank_lists_kits_and_keys(tmp_path):
    kick, snare, timpani = _tone(300, 0), _tone(300, 1), _tone(300, 2)
    path = write_sf2(tmp_path / "f.sf2", [
        (0, 0, [("Piano", _tone(300, 3), 0, 0, MONO)]),
        (0, 128, [("Kick", kick, 0, 0, MONO, (35, 36)), ("Snare", snare, 0, 0, MONO, (38, 38))]),
        (8, 128, [("Kick", kick, 0, 0, MONO, (35, 36))], (36, 60)),  # the preset plays keys 36-60 only
        (48, 128, [("Timpani", timpani, 0, 0, MONO, (41, 53))]),
    ])
    samples, _, _ = read_samples(path, PERCUSSION_BANK)
    assert [(s.name, s.programs, s.keys) for s in samples] == [
        ("Kick", (0, 8), (35, 36)), ("Snare", (0,), (38,)), ("Timpani", (48,), tuple(range(41, 54)))]
    assert [(s.name, s.programs) for s in read_samples(path)[0]] == [("Piano", (0,))]


def _drum(name: str, *keys: int) -> Sample:
    return Sample(0, name, 0, 10, RATE, 60, (0,), keys)


def test_drum_class_follows_the_keys_of_the_layout_and_snare_names():
    gm, avl = drums.GM_KEYS, drums.AVL_KEYS
    assert drums.drum_class(_drum("Std Kick", 35, 36), gm) == "kick"
    assert drums.drum_class(_drum("Hi-Hat Closed", 27, 42), gm) == "closed-hihat"  # key 27 has no class
    assert drums.drum_class(_drum("808 Open Hat", 44, 46), gm) is None  # closed and open keys
    assert drums.drum_class(_drum("Timpani", *range(41, 54)), gm) is None
    assert drums.drum_class(_drum("Triangle", 80, 81), gm) is None
    assert drums.drum_class(_drum("Brush Snr 2", 39), gm) == "snare"  # on the clap key of the brush kits
    assert drums.drum_class(_drum("Clap", 39), gm) == "clap"
    assert drums.drum_class(_drum("48-SabianRockHatSwis", 48), avl) == "open-hihat"
    assert drums.drum_class(_drum("MdHi Studio", 48), gm) == "tom"


LMMS_FILES = {
    "bassdrum_acoustic01": "kick", "kick_hiphop01": "kick", "snare05": "snare", "nasty_snare01": "snare",
    "snare_rim01": "rim", "sidestick01": "rim", "nasty_rim01": "rim", "clap03": "clap",
    "hihat_closed02": "closed-hihat", "hihat_foot_pedal01": "closed-hihat", "hihat_opened01": "open-hihat",
    "tom_low01": "tom", "crash02": "cymbal", "ride01": "cymbal",
    "clav01": None, "shaker02": None, "wood01": None, "zap03": None, "nasty_bass01": None,
}


def test_lmms_file_names_map_to_drum_classes():
    assert {name: drums.lmms_class(name) for name in LMMS_FILES} == LMMS_FILES


@pytest.fixture
def fake_drum_packages(tmp_path, monkeypatch):
    """Hand-made drum fonts (two samples per class in the GM kit, one more in each AVL kit; the AVL
    kits share their clap) and an LMMS drums folder, standing in for the Debian files."""
    kit_samples = drums._kit_samples
    kit_samples.cache_clear()
    n = int(0.3 * RATE)
    keys = {"kick": 36, "snare": 38, "rim": 37, "clap": 39, "closed-hihat": 42, "open-hihat": 46, "tom": 45,
            "cymbal": 49}
    gm = [(f"GM {label} {k}", _tone(n if label != "rim" else n // 10, 100 * i + k), 0, 0, MONO, (key, key))
          for i, (label, key) in enumerate(keys.items()) for k in range(2)]
    files = {drums.FLUID: write_sf2(tmp_path / "fluid.sf2", [
        (0, 128, gm),
        (25, 128, gm[:1]),  # the same kick in another kit: counted once
        (48, 128, [("Timpani", _tone(n, 999), 0, 0, MONO, (36, 36))]),  # only in the orchestra kit
    ])}
    for f, (_, font, _, _) in enumerate(drums.FONTS[1:]):
        avl = [(f"AVL{f} {label}", _tone(n, 5000 + 100 * f + i) if label != "clap" else _tone(n, 7777), 0, 0, MONO,
                (key, key)) for i, (label, key) in enumerate(keys.items())]
        files[font] = write_sf2(tmp_path / f"avl{f}.sf2", [(0, 0, avl)])
    folder = files[drums.LMMS] = tmp_path / "lmms"
    folder.mkdir()
    for name in [*LMMS_FILES, "kick04"]:
        sf.write(folder / f"{name}.ogg", np.random.default_rng(len(name)).uniform(-0.5, 0.5, 2205), 22050)
    monkeypatch.setattr(drums, "debian_file", lambda package, relative: files[(package, relative)])
    yield files
    kit_samples.cache_clear()


def test_drums_tiny_build(fake_drum_packages, tmp_path, monkeypatch):
    metadata = demo.build_dataset("drums", 0, lambda: drums.drums_clips(cap=10), tmp_path / "d", False,
                                  devsets.SAMPLE_RATE)
    items = load_dataset(metadata)
    assert protocol_of(items) == "random"
    # 2 GM + 1 per AVL kit, the clap both AVL kits hold once; the orchestra kit's timpani is no kick
    assert Counter(i.label for i in items) == {label: 3 if label == "clap" else 4 for label in drums.DRUM_CLASSES}
    capped = load_dataset(demo.build_dataset("drums", 0, lambda: drums.drums_clips(cap=3), tmp_path / "c", False,
                                             devsets.SAMPLE_RATE))
    assert Counter(i.label for i in capped) == {label: 3 for label in drums.DRUM_CLASSES}
    assert not any("Timpani" in i.meta["content"] for i in items)
    _check_clips([i for i in items if i.label != "rim" or "GM" not in i.meta["content"]], (0.3, 0.3))
    _check_clips([i for i in items if i.label == "rim" and "GM" in i.meta["content"]], (0.2, 0.2))  # padded
    one_kick = drums._kit_samples()["kick"][:1]
    monkeypatch.setattr(drums, "_kit_samples", lambda: {"kick": one_kick})
    with pytest.raises(sources.DemoDataError, match="1 recordings of 'kick', 2 needed"):
        drums.drums_clips(cap=3)


def test_drums_shift_tiny_build(fake_drum_packages, tmp_path):
    metadata = demo.build_dataset("drums-shift", 0, lambda: drums.drums_shift_clips(support=2), tmp_path / "s",
                                  False, devsets.SAMPLE_RATE)
    items = load_dataset(metadata)
    assert protocol_of(items) == "split"
    support = [i for i in items if i.fold == "support"]
    query = [i for i in items if i.fold == "query"]
    assert Counter(i.label for i in support) == {label: 2 for label in drums.DRUM_CLASSES}
    assert {i.meta["source"] for i in support} <= {"FluidR3", "AVL-RedZeppelin", "AVL-BlackPearl"}
    assert {i.meta["content"]: i.label for i in query} == {f"{n}.ogg": c for n, c in LMMS_FILES.items() if c}
    assert {i.meta["source"] for i in query} == {"LMMS"}
    _check_clips(query, (0.2, 0.2))  # 0.1 s files, padded


@pytest.fixture(scope="module")
def fluid() -> Path:
    """The real FluidR3_GM font (installed, or fetched once into the calm cache; 120 MB)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        pytest.skip("needs apt-get and dpkg (Debian) to fetch fluid-soundfont-gm")
    try:
        return devsets.debian_file(*devsets.FLUID)
    except sources.DemoDataError as error:  # no mirror reachable: offline
        pytest.skip(f"cannot fetch fluid-soundfont-gm: {error}")


def test_real_fluidr3_holds_both_instrument_tasks(fluid):
    devsets._soundfont.cache_clear()
    plan = devsets.instruments_shift_clips()  # raises if a family has too few samples on a side
    assert Counter(c.split for c in plan) == {"support": 20 * 9, "query": 16 * 9}
    assert len({c.content for c in plan}) == len(plan)  # no recording on both sides
    clips = devsets.instruments_clips()
    assert Counter(c.label for c in clips) == {name: 40 for name in devsets.INSTRUMENT_FAMILIES}
    audio, rate = clips[0].samples()
    assert rate == 44100 and devsets.MIN_SECONDS * rate <= len(audio) <= devsets.NOTE_SECONDS * rate
    assert np.abs(audio).max() > 0.01


def test_real_fluidr3_drum_kits_by_class(fluid):
    samples, _, _ = read_samples(fluid, PERCUSSION_BANK)
    kits = [s for s in samples if not set(s.programs) <= {48, 56}]  # as drums._kit_samples
    found = Counter(drums.drum_class(s, drums.GM_KEYS) for s in kits)
    assert {label: found[label] for label in drums.DRUM_CLASSES} == {
        "kick": 18, "snare": 21, "rim": 1, "clap": 2, "closed-hihat": 3, "open-hihat": 1, "tom": 17, "cymbal": 8}


def _load_script(monkeypatch):
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "scripts" / "devsets.py"
    spec = importlib.util.spec_from_file_location("devsets_script", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_devsets_script_writes_rows_aligned_with_labels(tmp_path, monkeypatch):
    import json

    import calm

    monkeypatch.setenv("CALM_CACHE", str(tmp_path / "cache"))

    def tiny(out_dir: Path, verbose: bool = True) -> Path:
        (out_dir / "audio").mkdir(parents=True, exist_ok=True)
        lines = ["id,path,label,split,source"]
        for k in range(6):
            t = np.arange(int(0.3 * 16000)) / 16000
            sf.write(out_dir / "audio" / f"c{k}.wav", 0.3 * np.sin(2 * np.pi * (200 + 150 * k) * t), 16000)
            lines.append(f"c{k},audio/c{k}.wav,{'ab'[k % 2]},{'support' if k < 4 else 'query'},{'xy'[k // 3]}")
        (out_dir / "metadata.csv").write_text("\n".join(lines) + "\n")
        return out_dir / "metadata.csv"

    monkeypatch.setitem(recipes.RECIPES, "tiny", tiny)
    script = _load_script(monkeypatch)
    task = script.DevTask("tiny", "shifted", "A sound.", "fixed split")
    backbone = calm.load_backbone("tiny:whisper").with_options(encoder_seconds=1.0)
    summary = script.write_task(task, backbone, tmp_path / "out", tmp_path / "store", batch_size=4)
    saved = np.load(tmp_path / "out" / "tiny.npz")
    rows = {i: k for k, i in enumerate(saved["ids"])}
    assert sorted(rows) == [f"c{k}" for k in range(6)] and saved["X"].dtype == np.float16
    for k in range(6):
        row = rows[f"c{k}"]
        assert (saved["y"][row], saved["split"][row], saved["source"][row]) == (
            "ab"[k % 2], "support" if k < 4 else "query", "xy"[k // 3])
    items = calm.load_dataset(tmp_path / "cache" / "data" / "tiny" / "metadata.csv")
    direct = calm.extract(backbone, items, "A sound.", batch_size=1)
    for item_id, x in zip(direct.ids, direct.X):
        assert np.allclose(saved["X"][rows[item_id]].astype(np.float32), x.astype(np.float32), atol=2e-3)
    written = json.loads((tmp_path / "out" / "tiny.json").read_text())
    assert written == summary and written["n_per_class"] == {"query": {"a": 1, "b": 1}, "support": {"a": 2, "b": 2}}
    assert written["shape"] == list(saved["X"].shape) and written["encoder_seconds"] == 1.0  # the backbone's
