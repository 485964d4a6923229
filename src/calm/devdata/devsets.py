"""Dev sets: few-shot tasks from real recordings that Debian packages ship (``calm data prepare``).

calm chooses its methods and defaults on these tasks and on the two demo tasks (docs/devsets.md).
Every clip is a human-made recording, written as 16-bit mono WAV at 16 kHz, peak-normalised,
0.2-5 s long; everything is seeded. Sources:

* ``fluid-soundfont-gm`` (FluidR3_GM, MIT): a SoundFont, i.e. multi-sampled recordings of real
  instruments (:mod:`calm.devdata.soundfont`). A clip is one recorded sample as recorded (at most
  1.5 s); synthesised sounds are left out.
* ``tuxpaint-stamps-default`` (GPL-2): the Tux Paint stamps' spoken names, recorded by volunteer
  speakers of each language (``<stamp>_desc_<lang>.ogg``).
* ``asterisk-core-sounds-{es,fr,ru}-wav`` (CC BY-SA 3.0): telephone prompts read by professional
  speakers (:mod:`calm.devdata.speech`), the query side of ``languages-shift``.

Packages are taken from the system when installed, else fetched with ``apt-get download`` and
unpacked into ``<cache>/debian/<package>`` (no root needed). The recipes are registered in
``calm.devdata.recipes.RECIPES`` and build with the demo's helpers (:func:`calm.devdata.speech.build_dataset`).
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np

from calm.cache import cache_dir
from calm.devdata.soundfont import Sample, family, read_samples, sample_audio
from calm.devdata.sources import LANGUAGES, Clip, DemoDataError, asterisk_sounds, unpack_debian_packages
from calm.devdata.speech import bonafide_candidates, build_dataset

__all__ = ["INSTRUMENT_FAMILIES", "TUXPAINT_LANGUAGES", "debian_file", "prepare_instruments",
           "prepare_instruments_shift", "prepare_languages", "prepare_languages_shift"]

SAMPLE_RATE = 16000
SEED = 0
MIN_SECONDS, MAX_SECONDS = 0.2, 5.0
NOTE_SECONDS = 1.5

# GM families played by acoustic (or electro-acoustic) instruments; synth, ensemble (choirs and
# string sections overlap "strings"), ethnic and effects families are left out.
INSTRUMENT_FAMILIES: tuple[str, ...] = (
    "piano", "chromatic-percussion", "organ", "guitar", "bass", "strings", "brass", "reed", "pipe",
)
_REUSING_FAMILIES = frozenset({"ensemble", "synth-lead", "synth-pad", "synth-effects"})
# Programs of those families whose samples are synthesised: Electric Piano 2 (FM), Synth Bass 1-2,
# Synth Brass 1-2; and sample names of plain waveforms.
_SYNTH_PROGRAMS = frozenset({5, 38, 39, 62, 63})
_WAVEFORM = re.compile(r"wave|saw|square|sine|pulse", re.IGNORECASE)
FLUID = ("fluid-soundfont-gm", "usr/share/sounds/sf2/FluidR3_GM.sf2")
# instruments-shift splits each family's instruments in two groups: the samples whose first program
# in the family is one of these (the odd GM programs; for pianos Electric Piano 1 and Harpsichord,
# as the odd piano programs reuse the grand piano's recordings), and the others. The larger group
# of each family is the support side, the other one the query side.
GROUP_PROGRAMS = frozenset(range(9, 80, 2)) | {4, 6}
TUXPAINT = ("tuxpaint-stamps-default", "usr/share/tuxpaint/stamps")
# Tux Paint stamp languages with 300+ spoken names (most have 650-930).
TUXPAINT_LANGUAGES: tuple[str, ...] = ("be", "bg", "ca", "da", "el", "es", "fr", "ro", "ru")


def debian_file(package: str, relative: str) -> Path:
    """``/<relative>`` from the installed package, else from ``package`` unpacked into the calm cache."""
    system = Path("/") / relative
    if system.exists():
        return system
    root = cache_dir("debian", package)
    local = root / relative
    if not local.exists():
        unpack_debian_packages([package], root)
        if not local.exists():
            raise DemoDataError(f"package {package} holds no {relative}")
    return local


# ---------------------------------------------------------------------------- instruments


@lru_cache(maxsize=2)
def _soundfont(path: Path) -> tuple[dict[str, list], bytes, int]:
    """Family -> the font's samples of that family.

    A sample counts when the presets playing it belong to one of INSTRUMENT_FAMILIES, apart from
    ensemble and synth presets that reuse it (a violin recording in "String Ensemble" is strings),
    it is not a synthesised sound (``_SYNTH_PROGRAMS``, waveform names) and it lasts MIN_SECONDS.
    """
    samples, data, smpl = read_samples(path)
    by_family: dict[str, list] = defaultdict(list)
    for sample in samples:
        acoustic = {p for p in sample.programs if family(p) in INSTRUMENT_FAMILIES and p not in _SYNTH_PROGRAMS}
        others = {family(p) for p in set(sample.programs) - acoustic - _SYNTH_PROGRAMS}
        families = {family(p) for p in acoustic}
        if (len(families) == 1 and others <= _REUSING_FAMILIES and not _WAVEFORM.search(sample.name)
                and sample.seconds >= MIN_SECONDS):
            by_family[families.pop()].append(sample)
    return dict(by_family), data, smpl


def _main_program(sample: Sample, name: str) -> int:
    """The first program of family ``name`` that plays ``sample``."""
    return min(p for p in sample.programs if family(p) == name)


def _side(samples: list[Sample], name: str, split: str) -> list[Sample]:
    """The samples of family ``name`` on the ``split`` side of instruments-shift (see GROUP_PROGRAMS)."""
    grouped = [s for s in samples if _main_program(s, name) in GROUP_PROGRAMS]
    others = [s for s in samples if _main_program(s, name) not in GROUP_PROGRAMS]
    larger, smaller = (grouped, others) if len(grouped) > len(others) else (others, grouped)
    return larger if split == "support" else smaller


def _note_clips(per_family: int, split: str, rng: random.Random) -> list[Clip]:
    """``per_family`` FluidR3 notes per instrument family: of any instrument (no ``split``), or of the
    instruments of the ``split`` side of instruments-shift."""
    path = debian_file(*FLUID)
    by_family, data, smpl = _soundfont(path)
    clips = []
    for name in INSTRUMENT_FAMILIES:
        pool = by_family.get(name, [])
        pool = _side(pool, name, split) if split else pool
        if len(pool) < per_family:
            raise DemoDataError(f"{path}: {len(pool)} samples of family {name!r}, {per_family} needed")
        for i, sample in enumerate(sorted(rng.sample(pool, per_family), key=lambda s: s.index)):
            content = f"program {_main_program(sample, name)}: {sample.name} (sample {sample.index})"
            clips.append(Clip(f"fluidr3-{split + '-' if split else ''}{name}-{i:02d}", name, split, "", "", content,
                              origin="FluidR3",
                              samples=lambda s=sample: (sample_audio(s, data, smpl, NOTE_SECONDS), s.rate)))
    return clips


def instruments_clips(per_family: int = 40) -> list[Clip]:
    """The plan of ``instruments``; see :func:`prepare_instruments`."""
    return _note_clips(per_family, "", random.Random(SEED))


def prepare_instruments(out_dir: Path, verbose: bool = True) -> Path:
    """Instrument family of a note, in-domain: 9 GM families x 40 notes from FluidR3_GM (360 clips).

    Each clip is one recorded sample of the font (a pitch, instrument or velocity layer), as
    recorded, 0.2-1.5 s; no split column (support and query drawn at random per seed). Returns
    the path of ``metadata.csv``.
    """
    return build_dataset("instruments", 4, instruments_clips, out_dir, verbose, SAMPLE_RATE)


def instruments_shift_clips(support: int = 20, query: int = 16) -> list[Clip]:
    """The plan of ``instruments-shift``; see :func:`prepare_instruments_shift`."""
    rng = random.Random(SEED + 1)
    return _note_clips(support, "support", rng) + _note_clips(query, "query", rng)


def prepare_instruments_shift(out_dir: Path, verbose: bool = True) -> Path:
    """Instrument family of a note played by instruments the support set never heard (FluidR3_GM).

    The same 9 GM families as ``instruments``; each family's instruments are split in two groups
    (odd and even GM programs, see GROUP_PROGRAMS), the larger group giving the support side
    and the other the query side, e.g. brass: support trombone, muted trumpet, brass section;
    query trumpet, tuba, horn. 20 support and 16 query notes per family (324 clips).
    Returns the path of ``metadata.csv``.
    """
    return build_dataset("instruments-shift", 5, instruments_shift_clips, out_dir, verbose, SAMPLE_RATE)


# ---------------------------------------------------------------------------- languages

_DESCRIPTION = re.compile(r"_desc_([a-z]{2})\.ogg$")


def read_mono(path: Path) -> tuple[np.ndarray, int]:
    """A recording as float32 mono (channels averaged) at its own sample rate, and that rate."""
    import soundfile as sf

    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


def _tuxpaint_names(stamps: Path, languages: tuple[str, ...]) -> dict[str, list[Path]]:
    """Language -> its spoken stamp names of MIN_SECONDS-MAX_SECONDS, sorted."""
    import soundfile as sf

    found: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(stamps.rglob("*_desc_*.ogg")):
        match = _DESCRIPTION.search(path.name)
        if match and match.group(1) in languages and MIN_SECONDS <= sf.info(path).duration <= MAX_SECONDS:
            found[match.group(1)].append(path)
    return found


def _tuxpaint_clips(languages: tuple[str, ...], per_language: int, split: str, rng: random.Random) -> list[Clip]:
    stamps = debian_file(*TUXPAINT)
    found = _tuxpaint_names(stamps, languages)
    clips = []
    for lang in languages:
        if len(found[lang]) < per_language:
            raise DemoDataError(f"{stamps}: {len(found[lang])} spoken names in {lang!r}, {per_language} needed")
        for i, path in enumerate(sorted(rng.sample(found[lang], per_language))):
            content = path.relative_to(stamps).as_posix()
            clips.append(Clip(f"tuxpaint-{lang}-{i:02d}", lang, split, lang, "", content, origin="tuxpaint",
                              samples=lambda p=path: read_mono(p)))
    return clips


def languages_clips(per_language: int = 40) -> list[Clip]:
    """The plan of ``languages``; see :func:`prepare_languages`."""
    return _tuxpaint_clips(TUXPAINT_LANGUAGES, per_language, "", random.Random(SEED))


def prepare_languages(out_dir: Path, verbose: bool = True) -> Path:
    """Spoken language, in-domain: 9 languages x 40 spoken Tux Paint stamp names (360 clips, ~1 s each).

    Labels are ISO 639-1 codes (be bg ca da el es fr ro ru). Each language was recorded by its
    own volunteer(s), so speaker and language go together. No split column. Returns the path of
    ``metadata.csv``.
    """
    return build_dataset("languages", 1, languages_clips, out_dir, verbose, SAMPLE_RATE)


SHIFT_LANGUAGES: tuple[str, ...] = ("es", "fr", "ru")


def languages_shift_clips(per_language: int = 40) -> list[Clip]:
    """The plan of ``languages-shift``; see :func:`prepare_languages_shift`."""
    rng = random.Random(SEED + 1)
    clips = _tuxpaint_clips(SHIFT_LANGUAGES, per_language, "support", rng)
    sounds = asterisk_sounds()
    for lang in (lang for lang in LANGUAGES if lang.code in SHIFT_LANGUAGES):
        chosen = rng.sample(bonafide_candidates(sounds, lang), per_language)
        for i, (path, rel) in enumerate(sorted(chosen)):
            clips.append(Clip(f"asterisk-{lang.code}-{i:02d}", lang.code, "query", lang.code, lang.speaker, rel,
                              human=path))
    return clips


def prepare_languages_shift(out_dir: Path, verbose: bool = True) -> Path:
    """Spoken language across speakers and channels: support from Tux Paint, query from Asterisk.

    Support: spoken stamp names (volunteers, 44.1 kHz, ~1 s); query: telephone prompts (8 kHz,
    professional speakers, 0.5-5 s). Spanish, French, Russian; 40 clips per language and side
    (240 clips). Returns the path of ``metadata.csv``.
    """
    return build_dataset("languages-shift", 1, languages_shift_clips, out_dir, verbose, SAMPLE_RATE)
