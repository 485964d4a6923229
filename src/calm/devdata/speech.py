"""The demo's speech datasets, made offline from Debian packages: human recordings and espeak-ng speech
(:mod:`calm.devdata.sources`), built by the recipes of ``calm data prepare``.

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
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from calm.cache import build_atomically, is_built
from calm.devdata.sources import (LANGUAGES, MAX_SECONDS, SAMPLE_RATE, SEED, VARIANTS, Clip, DemoDataError, Language,
                               asterisk_sounds, espeak_ng, tts_clip, write_clip)

__all__ = ["bonafide_candidates", "build_dataset", "prepare_spoken_numbers", "prepare_spoof", "summarize"]

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



_COLUMNS = ("id", "path", "label", "split", "source", "speaker", "language", "content")
_STAMP = "recipe.json"


def build_dataset(name: str, version: int, plan: Callable[[], list[Clip]], out_dir: Path, verbose: bool,
                  sample_rate: int = SAMPLE_RATE) -> Path:
    """Write the planned clips at ``sample_rate`` and ``metadata.csv`` into ``out_dir``, or reuse a
    complete earlier build (built in a temporary sibling folder and renamed into place: ``out_dir`` is
    complete or absent; an older or partial build of the same recipe is replaced); espeak-ng is
    needed only when a clip is to be spoken by it. Returns the metadata CSV."""
    out_dir = Path(out_dir)
    stamp = {"recipe": name, "version": version}
    if is_built(out_dir, _STAMP, stamp):
        if verbose:
            print(f"{name}: reusing {out_dir}")
        return out_dir / "metadata.csv"
    if out_dir.exists() and any(out_dir.iterdir()):
        previous = out_dir / _STAMP
        if not (previous.is_file() and json.loads(previous.read_text()).get("recipe") == name):
            raise DemoDataError(f"{out_dir}: exists and is not a {name!r} demo dataset; choose an empty folder")
    start = time.perf_counter()
    clips = plan()
    espeak = espeak_ng() if any(clip.needs_tts for clip in clips) else ""
    durations: list[float] = []

    def write(staging: Path) -> None:
        (staging / "audio").mkdir()
        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
            durations.extend(pool.map(lambda clip: write_clip(clip, staging, espeak, sample_rate), clips))
        too_long = [c.id for c, d in zip(clips, durations) if d > MAX_SECONDS]
        if too_long:
            raise DemoDataError(f"{name}: clips longer than {MAX_SECONDS:g} s: {too_long[:5]}")
        with open(staging / "metadata.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(_COLUMNS)
            for clip in clips:
                writer.writerow([clip.id, clip.path, clip.label, clip.split, clip.source, clip.speaker,
                                 clip.language, clip.content])

    metadata = build_atomically(out_dir, _STAMP, stamp, write) / "metadata.csv"
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
                clips.append(tts_clip(rng, f"tts-{lang.code}-{n:02d}-{k}", label, "support", lang, str(n)))
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
    return build_dataset("spoken-numbers", 1, spoken_numbers_clips, out_dir, verbose)


SPOOF_PER_LANGUAGE_AND_SPLIT = 20
# Kinds of content of the Asterisk prompt sets, and how often the TTS side draws each.
_SPOOF_TEXT_KINDS = (("phrase", 0.65), ("number", 0.2), ("letter", 0.15))


def bonafide_candidates(sounds: Path, lang: Language) -> list[tuple[Path, str]]:
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
        chosen = rng.sample(bonafide_candidates(sounds, lang), 2 * n)
        for i, (path, rel) in enumerate(chosen):
            split = "support" if i < n else "query"
            clips.append(Clip(f"bonafide-{lang.code}-{i:02d}", "bonafide", split, lang.code, lang.speaker, rel,
                              human=path))
        for i in range(2 * n):
            split = "support" if i < n else "query"
            clips.append(tts_clip(rng, f"spoof-{lang.code}-{i:02d}", "spoof", split, lang, _spoof_text(rng, lang),
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
    return build_dataset("spoof", 1, spoof_clips, out_dir, verbose)
