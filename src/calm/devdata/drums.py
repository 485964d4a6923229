"""Drum dev sets: the drum of a one-shot percussion sample (``calm data prepare drums``, ``drums-shift``).

The classes are the drums a drummer names (DRUM_CLASSES). Sources, all real recordings:

* SoundFont drum kits, read with :mod:`calm.devdata.soundfont`: the kits (bank 128) of FluidR3_GM
  (``fluid-soundfont-gm``, MIT; standard, room, power, jazz, brush kits and recordings of the TR-808
  and an electronic kit; not the orchestra kit), labelled by General MIDI percussion key (GM_KEYS); and the two acoustic kits of
  the AVL Drumkits (``avldrums.lv2-soundfont``, CC BY-SA 3.0, Glen MacArthur), five velocity
  layers per drum, whose key layout is GM's but for a few keys (AVL_KEYS). FluidR3 alone holds only
  2-3 distinct hi-hats and claps. A recording shared by several kits or fonts counts once.
* LMMS one-shots (``lmms-common``, GPL-2+): ``/usr/share/lmms/samples/drums/*.ogg``, labelled by
  file name (LMMS_NAMES), the query side of ``drums-shift``.

Clips are written like the other dev sets (16 kHz mono WAV, peak-normalised); a SoundFont sample is
cut at 1.5 s with a 50 ms fade, an LMMS file kept whole; a one-shot shorter than 0.2 s (closed
hi-hats, rim clicks) is followed by silence up to 0.2 s, as it sounds when played.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np

from calm.devdata.devsets import FLUID, MIN_SECONDS, NOTE_SECONDS, SAMPLE_RATE, SEED, debian_file, read_mono
from calm.devdata.soundfont import PERCUSSION_BANK, Sample, read_samples, sample_audio
from calm.devdata.sources import Clip, DemoDataError
from calm.devdata.speech import build_dataset

__all__ = ["AVL_KEYS", "DRUM_CLASSES", "GM_KEYS", "LMMS_NAMES", "drum_class", "lmms_class", "prepare_drums",
           "prepare_drums_shift"]

DRUM_CLASSES: tuple[str, ...] = ("kick", "snare", "rim", "clap", "closed-hihat", "open-hihat", "tom", "cymbal")

# General MIDI percussion keys -> class; other keys (latin percussion, effects ...) are left out.
GM_KEYS: dict[int, str] = {
    35: "kick", 36: "kick", 37: "rim", 38: "snare", 40: "snare", 39: "clap",
    42: "closed-hihat", 44: "closed-hihat", 46: "open-hihat",
    41: "tom", 43: "tom", 45: "tom", 47: "tom", 48: "tom", 50: "tom",
    49: "cymbal", 51: "cymbal", 52: "cymbal", 53: "cymbal", 55: "cymbal", 57: "cymbal", 59: "cymbal",
}
# The AVL kits play a hi-hat swish at 48, choked crashes and rides at 50, 52 and 58, an unnamed
# "Paiste 2002 22" cymbal at 60 and maracas at 64 (left out).
AVL_KEYS: dict[int, str] = {**GM_KEYS, 48: "open-hihat", 50: "cymbal", 52: "cymbal", 58: "cymbal"}
# FluidR3 kits whose keys do not follow the drum kit: Orchestra (timpani at the tom keys) and SFX.
_NOT_KITS = frozenset({48, 56})
_SNARE_NAME = re.compile(r"snr|snare", re.IGNORECASE)  # a brushed snare hit sits on the clap key

AVL = "avldrums.lv2-soundfont"
# (source column, Debian package and file, bank, key layout)
FONTS: tuple[tuple[str, tuple[str, str], int, dict[int, str]], ...] = (
    ("FluidR3", FLUID, PERCUSSION_BANK, GM_KEYS),
    ("AVL-RedZeppelin", (AVL, "usr/share/sounds/sf2/Red_Zeppelin_4_LV2.sf2"), 0, AVL_KEYS),
    ("AVL-BlackPearl", (AVL, "usr/share/sounds/sf2/Black_Pearl_4_LV2.sf2"), 0, AVL_KEYS),
)
LMMS = ("lmms-common", "usr/share/lmms/samples/drums")
# LMMS file-name patterns -> class, first match wins (rim shots before snares). Left out: clav,
# shaker, wood, zap and nasty_bass files, and kick04.ogg (a WAV with a Vorbis format tag that
# libsndfile cannot read).
LMMS_NAMES: tuple[tuple[str, str], ...] = (
    (r"rim|sidestick", "rim"), (r"^(kick|bassdrum)", "kick"), (r"snare", "snare"), (r"^clap", "clap"),
    (r"^hihat_(closed|foot)", "closed-hihat"), (r"^hihat_open", "open-hihat"), (r"^tom", "tom"),
    (r"^(crash|ride)", "cymbal"),
)
LMMS_UNREADABLE = frozenset({"kick04.ogg"})


def drum_class(sample: Sample, layout: dict[int, str]) -> str | None:
    """The class of a drum-kit sample: that of every key of ``layout`` it sounds at (None when they
    disagree or none is in ``layout``); a sample named as a snare is a snare."""
    if _SNARE_NAME.search(sample.name):
        return "snare"
    classes = {layout[key] for key in sample.keys if key in layout}
    return classes.pop() if len(classes) == 1 else None


def lmms_class(name: str) -> str | None:
    """The class of an LMMS drum file by its name (None: no class fits)."""
    for pattern, label in LMMS_NAMES:
        if re.search(pattern, name):
            return label
    return None


@lru_cache(maxsize=1)
def _kit_samples() -> dict[str, list[tuple[str, Sample, bytes, int]]]:
    """Class -> (source, sample, font bytes, smpl offset) of every distinct recording of the fonts."""
    by_class: dict[str, list] = defaultdict(list)
    seen: set[str] = set()
    for source, (package, relative), bank, layout in FONTS:
        samples, data, smpl = read_samples(debian_file(package, relative), bank)
        for sample in samples:
            if bank == PERCUSSION_BANK and set(sample.programs) <= _NOT_KITS:
                continue
            label = drum_class(sample, layout)
            digest = hashlib.sha1(data[smpl + 2 * sample.start:smpl + 2 * sample.end]).hexdigest()
            if label is not None and digest not in seen:
                seen.add(digest)
                by_class[label].append((source, sample, data, smpl))
    return dict(by_class)


def _padded(audio: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    """``audio`` followed by silence up to MIN_SECONDS."""
    short = int(np.ceil(MIN_SECONDS * rate)) - len(audio)
    return (np.concatenate([audio, np.zeros(short, audio.dtype)]) if short > 0 else audio), rate


def _kit_clips(cap: int, split: str, rng: random.Random) -> list[Clip]:
    """Up to ``cap`` SoundFont recordings per class, drawn at random."""
    by_class = _kit_samples()
    clips = []
    for label in DRUM_CLASSES:
        pool = by_class.get(label, [])
        if len(pool) < 2:
            raise DemoDataError(f"the drum fonts hold {len(pool)} recordings of {label!r}, 2 needed")
        chosen = sorted(rng.sample(pool, min(cap, len(pool))), key=lambda s: (s[0], s[1].index))
        for i, (source, sample, data, smpl) in enumerate(chosen):
            content = f"{source} keys {','.join(map(str, sample.keys))}: {sample.name} (sample {sample.index})"
            clips.append(Clip(f"kit-{split + '-' if split else ''}{label}-{i:02d}", label, split, "", "", content,
                              origin=source, samples=lambda s=sample, d=data, o=smpl: _padded(
                                  sample_audio(s, d, o, NOTE_SECONDS), s.rate)))
    return clips


def lmms_clips() -> list[Clip]:
    """Every LMMS drum file a class fits, as a query clip."""
    folder = debian_file(*LMMS)
    clips = []
    for path in sorted(folder.glob("*.ogg")):
        label = None if path.name in LMMS_UNREADABLE else lmms_class(path.stem)
        if label is not None:
            clips.append(Clip(f"lmms-{path.stem}", label, "query", "", "", path.name, origin="LMMS",
                              samples=lambda p=path: _padded(*read_mono(p))))
    return clips


def drums_clips(cap: int = 30) -> list[Clip]:
    """The plan of ``drums``; see :func:`prepare_drums`."""
    return _kit_clips(cap, "", random.Random(SEED))


def prepare_drums(out_dir: Path, verbose: bool = True) -> Path:
    """Drum of a one-shot, in-domain: 8 classes, up to 30 SoundFont drum recordings each (FluidR3_GM
    kits and the AVL kits; fewer where the fonts hold fewer distinct ones). No split column.
    Returns the path of ``metadata.csv``."""
    return build_dataset("drums", 1, drums_clips, out_dir, verbose, SAMPLE_RATE)


def drums_shift_clips(support: int = 20) -> list[Clip]:
    """The plan of ``drums-shift``; see :func:`prepare_drums_shift`."""
    return _kit_clips(support, "support", random.Random(SEED + 1)) + lmms_clips()


def prepare_drums_shift(out_dir: Path, verbose: bool = True) -> Path:
    """Drum of a one-shot across sample libraries: support from the SoundFont kits (up to 20 per
    class), query every LMMS drum sample a class fits. Returns the path of ``metadata.csv``."""
    return build_dataset("drums-shift", 1, drums_shift_clips, out_dir, verbose, SAMPLE_RATE)
