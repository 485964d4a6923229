"""Offline sources of speech for the demo data: human recordings and espeak-ng.

* **Human**: ``asterisk-core-sounds-{en,es,fr,it,ru}-wav`` (CC BY-SA 3.0), the prompt sets of
  the Asterisk PBX read by professional voice talents: Allison Smith (``en_US`` and ``es_MX``),
  June Wallack (``fr_CA``), Carlo (``it_IT``) and IvrvoiceRU (``ru_RU``): four speakers, five
  languages. 8 kHz, 16-bit mono; digits 0-20, letters and a few hundred phrases each. Taken from
  ``/usr/share/asterisk/sounds`` when installed, else fetched with ``apt-get download`` and
  unpacked with ``dpkg -x`` into the calm cache (no root needed).
* **TTS**: ``espeak-ng`` (formant synthesis), regional voices of the same languages, ~60 voice
  variants (``-v lang+variant``), random speed and pitch.

A :class:`Clip` is one planned clip of either kind; :func:`write_clip` renders it as 16-bit mono
WAV at 8 kHz, peak-normalised to -6 dBFS (TTS is resampled from 22.05 kHz so both kinds share the
telephone bandwidth and level).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from calm.cache import cache_dir
from calm.errors import CalmError

SAMPLE_RATE = 8000
MAX_SECONDS = 5.0
PEAK = 10 ** (-6 / 20)
SEED = 0


@dataclass(frozen=True)
class Language:
    """One language: its Asterisk voice folder and speaker, and espeak-ng's voices for it."""

    code: str
    folder: str
    speaker: str
    espeak: tuple[str, ...]


LANGUAGES: tuple[Language, ...] = (
    Language("en", "en_US_f_Allison", "Allison", ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-us-nyc")),
    Language("es", "es_MX_f_Allison", "Allison", ("es", "es-419")),
    Language("fr", "fr_CA_f_June", "June", ("fr-fr", "fr-be", "fr-ch")),
    Language("it", "it_IT_m_Carlo", "Carlo", ("it",)),
    Language("ru", "ru_RU_f_IvrvoiceRU", "IvrvoiceRU", ("ru", "ru-lv")),
)

# espeak-ng 1.51 voice variants (voices/!v) that keep speech intelligible; whispering, robotic
# and joke variants are left out.
VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6",
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "Gene", "Gene2", "Hugo", "Lee", "Marco", "Mario",
    "Michael", "Mike", "adam", "anika", "antonio", "aunty", "belinda", "benjamin", "boris", "caleb",
    "david", "ed", "edward", "edward2", "grandma", "grandpa", "gustave", "iven", "iven2", "iven3",
    "john", "linda", "marcelo", "max", "michel", "miguel", "norbert", "pablo", "paul", "pedro",
    "quincy", "rob", "robert", "sandro", "shelby", "steph", "travis", "victor", "zac",
)
SPEED = (130, 210)  # words per minute (espeak-ng -s; default 175)
PITCH = (25, 75)  # espeak-ng -p, 0-99 (default 50)

class DemoDataError(CalmError, RuntimeError):
    """A demo dataset cannot be built (a missing tool or package); the message says what to install."""


def asterisk_sounds() -> Path:
    """The folder holding the five Asterisk voice folders (``en_US_f_Allison`` ...).

    The system copy when all five are installed, else the packages are fetched with ``apt-get
    download`` and unpacked with ``dpkg -x`` into ``<cache>/asterisk`` once.
    """
    system = Path("/usr/share/asterisk/sounds")
    if all((system / lang.folder / "digits").is_dir() for lang in LANGUAGES):
        return system
    root = cache_dir("asterisk")
    sounds = root / "usr" / "share" / "asterisk" / "sounds"
    if all((sounds / lang.folder / "digits").is_dir() for lang in LANGUAGES):
        return sounds
    unpack_debian_packages([f"asterisk-core-sounds-{lang.code}-wav" for lang in LANGUAGES], root)
    return sounds


def unpack_debian_packages(packages: list[str], root: Path, members: tuple[str, ...] = ()) -> None:
    """Fetch ``packages`` with ``apt-get download`` and unpack them (``dpkg -x``, no root) so that
    their files lie under ``root/usr``, replacing what was there; with ``members`` (tar wildcards
    such as ``./usr/share/x/*``), only the files they match."""
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise DemoDataError(
                f"this dataset needs the Debian packages {' '.join(packages)} and {tool!r} "
                f"is not available: install them, or run on Debian/Ubuntu"
            )
    with tempfile.TemporaryDirectory(dir=root) as work:
        result = subprocess.run(["apt-get", "download", *packages], cwd=work, capture_output=True, text=True)
        if result.returncode != 0:
            raise DemoDataError(
                f"apt-get download {' '.join(packages)} failed (run 'apt-get update' first if the package lists "
                f"are missing): {result.stderr.strip()[-500:]}"
            )
        unpacked = Path(work) / "unpacked"
        for deb in sorted(Path(work).glob("*.deb")):
            if members:
                unpacked.mkdir(exist_ok=True)
                with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as archive:
                    subprocess.run(["tar", "-x", "-C", str(unpacked), "--wildcards", *members], stdin=archive.stdout,
                                   check=True, capture_output=True)
            else:
                subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], check=True, capture_output=True)
        shutil.rmtree(root / "usr", ignore_errors=True)
        (unpacked / "usr").rename(root / "usr")


def espeak_ng() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise DemoDataError("the demo data needs espeak-ng: apt-get install espeak-ng (scripts/setup.sh does it)")
    return path


@dataclass(frozen=True)
class Clip:
    """One planned clip: a human recording to copy, or a text for espeak-ng to say."""

    id: str
    label: str
    split: str
    language: str
    speaker: str
    content: str  # the Asterisk file (e.g. "digits/7") or the text spoken by espeak-ng
    human: Path | None = None
    voice: str = ""  # espeak-ng voice, "lang+variant"
    speed: int = 175
    pitch: int = 50
    origin: str = ""  # the source column when not "asterisk"/"espeak-ng" (recipes of other packages)
    samples: Callable[[], tuple[np.ndarray, int]] | None = None  # (audio, rate) of a recording not in a file

    @property
    def source(self) -> str:
        return self.origin or ("asterisk" if self.human is not None else "espeak-ng")

    @property
    def needs_tts(self) -> bool:
        return self.human is None and self.samples is None

    @property
    def path(self) -> str:
        return f"audio/{self.id}.wav"


def tts_clip(rng: random.Random, id: str, label: str, split: str, lang: Language, text: str,
              variants: tuple[str, ...] = VARIANTS) -> Clip:
    voice = f"{rng.choice(lang.espeak)}+{rng.choice(variants)}"
    return Clip(id, label, split, lang.code, f"espeak-ng:{voice}", text, voice=voice,
                speed=rng.randint(*SPEED), pitch=rng.randint(*PITCH))


def render(clip: Clip, espeak: str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The clip's samples at ``sample_rate``, peak-normalised."""
    import soundfile as sf
    import soxr

    if clip.samples is not None:
        audio, rate = clip.samples()
    elif clip.human is not None:
        audio, rate = sf.read(clip.human, dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
    else:
        speed = clip.speed
        with tempfile.TemporaryDirectory() as work:
            wav = Path(work) / "tts.wav"
            while True:
                subprocess.run(
                    [espeak, "-v", clip.voice, "-s", str(speed), "-p", str(clip.pitch), "-w", str(wav), clip.content],
                    check=True, capture_output=True,
                )
                audio, rate = sf.read(wav, dtype="float32")
                if len(audio) <= MAX_SECONDS * rate or speed >= 400:
                    break
                speed = int(speed * len(audio) / (0.95 * MAX_SECONDS * rate)) + 1  # a long text is said faster
    if rate != sample_rate:
        audio = soxr.resample(audio, rate, sample_rate)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak == 0.0:
        raise DemoDataError(f"clip {clip.id} ({clip.source}: {clip.content!r}) is silent")
    return (audio * (PEAK / peak)).astype(np.float32)


def write_clip(clip: Clip, root: Path, espeak: str, sample_rate: int = SAMPLE_RATE) -> float:
    """Write one clip under ``root`` at ``sample_rate``; returns its duration in seconds."""
    import soundfile as sf

    audio = render(clip, espeak, sample_rate)
    sf.write(root / clip.path, audio, sample_rate, subtype="PCM_16")
    return len(audio) / sample_rate
