"""Demo datasets made offline from Debian packages: human recordings and espeak-ng speech.

Sources:

* **Human**: ``asterisk-core-sounds-{en,es,fr,it,ru}-wav`` (CC BY-SA 3.0), the prompt sets of
  the Asterisk PBX read by professional voice talents: Allison Smith (``en_US`` and ``es_MX``),
  June Wallack (``fr_CA``), Carlo (``it_IT``) and IvrvoiceRU (``ru_RU``): four speakers, five
  languages. 8 kHz, 16-bit mono; digits 0-20, letters and a few hundred phrases each. Taken from
  ``/usr/share/asterisk/sounds`` when installed, else fetched with ``apt-get download`` and
  unpacked with ``dpkg -x`` into the calm cache (no root needed).
* **TTS**: ``espeak-ng`` (formant synthesis), regional voices of the same languages, ~60 voice
  variants (``-v lang+variant``), random speed and pitch.

Every clip is written as 16-bit mono WAV at 8 kHz, peak-normalised to -6 dBFS: TTS is resampled
from 22.05 kHz so both kinds share the telephone bandwidth and level (otherwise bandwidth or
loudness alone would tell them apart). Clips last 0.2-5 s. Everything is seeded: the same
packages give the same files. A dataset folder holds ``audio/`` and ``metadata.csv``
(``id,path,label,split,source,speaker,language,content``; paths relative to the CSV), readable
with :func:`calm.data.loaders.load_dataset`; an existing complete folder is reused.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from calm.cache import cache_dir
from calm.data import devsets

__all__ = ["RECIPES", "asterisk_sounds", "prepare", "prepare_spoken_numbers", "prepare_spoof", "summarize"]

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

# Short telephone-prompt phrases, the kind the Asterisk speakers read, for the TTS side of `spoof`.
PHRASES: dict[str, tuple[str, ...]] = {
    "en": (
        "please try again later", "thank you for calling", "goodbye",
        "the number you have dialed is not in service", "please enter your password followed by the pound key",
        "you have two new messages", "your call is important to us", "please hold while I try that extension",
        "press one to continue", "that extension is busy", "invalid option, please try again",
        "please leave a message after the tone", "the conference is now locked",
        "you are the only person in this conference", "I am sorry, I did not understand",
        "welcome, please say your name",
    ),
    "es": (
        "por favor, inténtelo más tarde", "gracias por llamar", "adiós",
        "el número que usted marcó no está en servicio",
        "por favor, introduzca su contraseña seguida de la tecla numeral", "usted tiene dos mensajes nuevos",
        "su llamada es importante para nosotros", "por favor, espere mientras transfiero su llamada",
        "oprima uno para continuar", "la extensión está ocupada", "opción no válida, inténtelo de nuevo",
        "por favor, deje un mensaje después del tono", "la conferencia está bloqueada",
        "usted es la única persona en esta conferencia", "lo siento, no le entendí",
        "bienvenido, por favor diga su nombre",
    ),
    "fr": (
        "veuillez réessayer plus tard", "merci de votre appel", "au revoir",
        "le numéro que vous avez composé n'est pas en service",
        "veuillez entrer votre mot de passe suivi du carré", "vous avez deux nouveaux messages",
        "votre appel est important pour nous", "veuillez patienter pendant que nous transférons votre appel",
        "appuyez sur un pour continuer", "ce poste est occupé", "option invalide, veuillez réessayer",
        "veuillez laisser un message après le signal sonore", "la conférence est maintenant verrouillée",
        "vous êtes la seule personne dans cette conférence", "désolé, je n'ai pas compris",
        "bienvenue, veuillez dire votre nom",
    ),
    "it": (
        "per favore riprova più tardi", "grazie per aver chiamato", "arrivederci",
        "il numero selezionato è inesistente", "inserisci la tua password seguita dal tasto cancelletto",
        "hai due nuovi messaggi", "la tua chiamata è importante per noi",
        "attendere prego, stiamo trasferendo la chiamata", "premi uno per continuare", "l'interno è occupato",
        "opzione non valida, riprova", "per favore lascia un messaggio dopo il segnale acustico",
        "la conferenza è ora bloccata", "sei l'unica persona in questa conferenza",
        "mi dispiace, non ho capito", "benvenuto, per favore di' il tuo nome",
    ),
    "ru": (
        "пожалуйста, повторите попытку позже", "спасибо за звонок", "до свидания",
        "набранный вами номер не обслуживается", "пожалуйста, введите пароль и нажмите решётку",
        "у вас два новых сообщения", "ваш звонок очень важен для нас", "пожалуйста, подождите, я соединяю вас",
        "нажмите один, чтобы продолжить", "этот номер занят", "неверный выбор, попробуйте ещё раз",
        "пожалуйста, оставьте сообщение после сигнала", "конференция заблокирована",
        "вы единственный участник этой конференции", "извините, я вас не поняла",
        "добро пожаловать, пожалуйста, назовите своё имя",
    ),
}

# Asterisk files that are not (only) speech.
_NOT_SPEECH = re.compile(r"(^|/)(silence/.*|beep|beeperr|ascending-2tone|descending-2tone|tt-monkeys|"
                         r"confbridge-begin-glorious-[abc])\.wav$")


class DemoDataError(RuntimeError):
    """A demo dataset cannot be built (a missing tool or package); the message says what to install."""


# ---------------------------------------------------------------------------- sources


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


def unpack_debian_packages(packages: list[str], root: Path) -> None:
    """Fetch ``packages`` with ``apt-get download`` and unpack them (``dpkg -x``, no root) so that
    their files lie under ``root/usr``, replacing what was there."""
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
            subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], check=True, capture_output=True)
        shutil.rmtree(root / "usr", ignore_errors=True)
        (unpacked / "usr").rename(root / "usr")


def _espeak_ng() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise DemoDataError("the demo data needs espeak-ng: apt-get install espeak-ng (scripts/setup.sh does it)")
    return path


# ---------------------------------------------------------------------------- clips


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


def _tts_clip(rng: random.Random, id: str, label: str, split: str, lang: Language, text: str,
              variants: tuple[str, ...] = VARIANTS) -> Clip:
    voice = f"{rng.choice(lang.espeak)}+{rng.choice(variants)}"
    return Clip(id, label, split, lang.code, f"espeak-ng:{voice}", text, voice=voice,
                speed=rng.randint(*SPEED), pitch=rng.randint(*PITCH))


def _render(clip: Clip, espeak: str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
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


def _write(clip: Clip, root: Path, espeak: str, sample_rate: int = SAMPLE_RATE) -> float:
    """Write one clip under ``root``; returns its duration in seconds."""
    import soundfile as sf

    audio = _render(clip, espeak, sample_rate)
    sf.write(root / clip.path, audio, sample_rate, subtype="PCM_16")
    return len(audio) / sample_rate


_COLUMNS = ("id", "path", "label", "split", "source", "speaker", "language", "content")
_STAMP = "recipe.json"


def _is_complete(out_dir: Path, stamp: dict) -> bool:
    stamp_file = out_dir / _STAMP
    return stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp and (out_dir / "metadata.csv").is_file()


def _build(name: str, version: int, plan: Callable[[], list[Clip]], out_dir: Path, verbose: bool,
           sample_rate: int = SAMPLE_RATE) -> Path:
    """Write the planned clips and ``metadata.csv`` into ``out_dir``, or reuse a complete earlier build.

    Clips are written at ``sample_rate``; espeak-ng is needed only when a clip is to be spoken by it.

    The dataset is built in a temporary sibling folder and renamed into place, so ``out_dir``
    is either complete or absent; an older or partial build of the same recipe is replaced.
    """
    out_dir = Path(out_dir)
    stamp = {"recipe": name, "version": version}
    if _is_complete(out_dir, stamp):
        if verbose:
            print(f"{name}: reusing {out_dir}")
        return out_dir / "metadata.csv"
    if out_dir.exists() and any(out_dir.iterdir()):
        previous = out_dir / _STAMP
        if not (previous.is_file() and json.loads(previous.read_text()).get("recipe") == name):
            raise DemoDataError(f"{out_dir}: exists and is not a {name!r} demo dataset; choose an empty folder")
    start = time.perf_counter()
    clips = plan()
    espeak = _espeak_ng() if any(clip.needs_tts for clip in clips) else ""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (staging / "audio").mkdir()
        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
            durations = list(pool.map(lambda clip: _write(clip, staging, espeak, sample_rate), clips))
        too_long = [c.id for c, d in zip(clips, durations) if d > MAX_SECONDS]
        if too_long:
            raise DemoDataError(f"{name}: clips longer than {MAX_SECONDS:g} s: {too_long[:5]}")
        with open(staging / "metadata.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(_COLUMNS)
            for clip in clips:
                writer.writerow([clip.id, clip.path, clip.label, clip.split, clip.source, clip.speaker,
                                 clip.language, clip.content])
        (staging / _STAMP).write_text(json.dumps(stamp))
        staging.chmod(0o755)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    metadata = out_dir / "metadata.csv"
    if verbose:
        print(f"{name}: wrote {len(clips)} clips ({sum(durations):.0f} s of audio) to {out_dir} "
              f"in {time.perf_counter() - start:.1f} s")
        print(summarize(metadata))
    return metadata


def summarize(metadata: Path) -> str:
    """Counts of a demo dataset's clips by split, source and label, as text."""
    with open(metadata, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    lines = []
    for split in sorted({r["split"] for r in rows}):
        part = [r for r in rows if r["split"] == split]
        sources = Counter(r["source"] for r in part)
        labels = Counter(r["label"] for r in part)
        lines.append(
            f"  {split}: {len(part)} clips ({', '.join(f'{n} {s}' for s, n in sorted(sources.items()))}); "
            f"{len(labels)} labels, {min(labels.values())}-{max(labels.values())} per label"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- recipes

NUMBERS = tuple(range(11))
TTS_PER_NUMBER_AND_LANGUAGE = 6


def spoken_numbers_clips() -> list[Clip]:
    """The plan of ``spoken-numbers``; see :func:`prepare_spoken_numbers`."""
    sounds = asterisk_sounds()
    rng = random.Random(SEED)
    clips = []
    for lang in LANGUAGES:
        for n in NUMBERS:
            label = str(n)
            clips.append(Clip(f"human-{lang.code}-{n:02d}", label, "query", lang.code, lang.speaker, f"digits/{n}",
                              human=sounds / lang.folder / "digits" / f"{n}.wav"))
            for k in range(TTS_PER_NUMBER_AND_LANGUAGE):
                clips.append(_tts_clip(rng, f"tts-{lang.code}-{n:02d}-{k}", label, "support", lang, str(n)))
    return clips


def prepare_spoken_numbers(out_dir: Path, verbose: bool = True) -> Path:
    """Spoken numbers 0-10 in English, Spanish, French, Italian and Russian; 11 classes.

    * ``query`` (55 clips): the human recordings, one per number and language (Asterisk
      ``digits/<n>.wav``; four speakers, five languages).
    * ``support`` (330 clips, 30 per class): espeak-ng saying the numeral in the same five
      languages, 6 per number and language, each with a random regional voice, variant, speed
      and pitch.

    Few-shot classifiers fit on TTS speech and are scored on human speech. Labels are ``"0"`` ...
    ``"10"``. Returns the path of ``metadata.csv``.
    """
    return _build("spoken-numbers", 1, spoken_numbers_clips, out_dir, verbose)


SPOOF_PER_LANGUAGE_AND_SPLIT = 20
# Kinds of content of the Asterisk prompt sets, and how often the TTS side draws each.
_SPOOF_TEXT_KINDS = (("phrase", 0.65), ("number", 0.2), ("letter", 0.15))


def _bonafide_candidates(sounds: Path, lang: Language) -> list[tuple[Path, str]]:
    import soundfile as sf

    folder = sounds / lang.folder
    found = []
    for path in sorted(folder.rglob("*.wav")):
        rel = path.relative_to(folder).as_posix()
        if _NOT_SPEECH.search(rel):
            continue
        if 0.5 <= sf.info(path).duration <= MAX_SECONDS:
            found.append((path, rel.removesuffix(".wav")))
    return found


def _spoof_text(rng: random.Random, lang: Language) -> str:
    kind = rng.choices([k for k, _ in _SPOOF_TEXT_KINDS], weights=[w for _, w in _SPOOF_TEXT_KINDS])[0]
    if kind == "phrase":
        return rng.choice(PHRASES[lang.code])
    if kind == "number":
        return str(rng.choice([rng.randint(0, 20), rng.randint(21, 999)]))
    return rng.choice("abcdefghijklmnopqrstuvwxyz")


def spoof_clips() -> list[Clip]:
    """The plan of ``spoof``; see :func:`prepare_spoof`."""
    sounds = asterisk_sounds()
    rng = random.Random(SEED)
    variants = list(VARIANTS)
    rng.shuffle(variants)
    half = len(variants) // 2
    split_variants = {"support": tuple(variants[:half]), "query": tuple(variants[half:])}
    n = SPOOF_PER_LANGUAGE_AND_SPLIT
    clips = []
    for lang in LANGUAGES:
        chosen = rng.sample(_bonafide_candidates(sounds, lang), 2 * n)
        for i, (path, rel) in enumerate(chosen):
            split = "support" if i < n else "query"
            clips.append(Clip(f"bonafide-{lang.code}-{i:02d}", "bonafide", split, lang.code, lang.speaker, rel,
                              human=path))
        for i in range(2 * n):
            split = "support" if i < n else "query"
            clips.append(_tts_clip(rng, f"spoof-{lang.code}-{i:02d}", "spoof", split, lang, _spoof_text(rng, lang),
                                   split_variants[split]))
    return clips


def prepare_spoof(out_dir: Path, verbose: bool = True) -> Path:
    """Spoofing detection: bona fide human speech vs espeak-ng speech; labels ``bonafide``/``spoof``.

    400 clips, balanced: per language (en, es, fr, it, ru) 40 Asterisk recordings drawn from its
    prompts, digits and letters of 0.5-5 s, and 40 espeak-ng clips of similar texts (telephone
    prompts 65%, numbers 20%, letters 15%). Splits: ``support`` 200 (100 + 100) and ``query``
    200 (100 + 100), 20 + 20 per language each; the TTS voice variants of the query split are
    disjoint from those of the support split (unseen attacks). Score with EER on the query split.
    Returns the path of ``metadata.csv``.
    """
    return _build("spoof", 1, spoof_clips, out_dir, verbose)


RECIPES: dict[str, Callable[..., Path]] = {
    "spoken-numbers": prepare_spoken_numbers,
    "spoof": prepare_spoof,
    "instruments": devsets.prepare_instruments,
    "instruments-shift": devsets.prepare_instruments_shift,
    "languages": devsets.prepare_languages,
    "languages-shift": devsets.prepare_languages_shift,
}
"""Recipe name -> function(out_dir) that builds the dataset there and returns its metadata CSV."""


def prepare(name: str, out_dir: Path | None = None, verbose: bool = True) -> Path:
    """Build demo dataset ``name`` into ``out_dir`` (default ``<cache>/data/<name>``); its metadata CSV."""
    if name not in RECIPES:
        raise KeyError(f"unknown demo dataset {name!r}; known: {sorted(RECIPES)}")
    return RECIPES[name](out_dir if out_dir is not None else cache_dir("data", name), verbose=verbose)
