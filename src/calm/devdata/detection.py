"""Detection dev benchmark (``calm data prepare detection``): dev-set clips placed into real
background recordings at known times and several SNRs, with the reference events of each file.

For each task (the ``instruments`` and ``drums`` dev sets, :mod:`calm.devdata.devsets`,
:mod:`calm.devdata.drums`), ``<out>/<task>/`` gets:

* ``support.csv`` (``id, path, label, snr``): :data:`SHOTS` clips per class, each added to a stretch
  of the same kind of background at :data:`SNRS` dB in turn (as a user would cut the first events
  of a recording), and :data:`BACKGROUND_CLIPS` clips of the background alone, labelled
  :data:`BACKGROUND_LABEL` (for a named background class);
* ``long/<task>-NN.wav``: :data:`FILES` recordings of :data:`FILE_SECONDS` s each (float WAV,
  16 kHz): a background stream with the task's other clips added at random times, one every
  :data:`GAP` seconds (uniform), at :data:`SNRS` dB in turn;
* ``long/reference.csv`` (``file, onset, offset, label, snr, clip``): where each clip was placed.

The background is real speech: the Asterisk telephone prompts (``asterisk-core-sounds-*-wav``,
CC BY-SA 3.0; five professional speakers, :func:`calm.devdata.sources.asterisk_sounds`) read one
after another with the pauses they were recorded with, resampled to 16 kHz. Support clips, placed
clips and background clips are disjoint (placed clips may repeat, each only after all were placed),
and so are the prompts behind each file, the background clips and the support clips. A clip's SNR is its RMS
level over the RMS level of the whole background file (for support clips, of their stretches together). Everything is seeded (:data:`SEED`).

``calm data prepare detection-ambient`` builds the same benchmark over **ambient** recordings
instead: the day, night, rain and wind loops of MegaGlest's tilesets (``megaglest-data``, CC BY-SA
3.0; birds, insects, rain, wind; :func:`ambient_recordings`), cut into :data:`PIECE`-second pieces
in a seeded order. There is less of it than the long files need, so per task :data:`HELD_OUT`
pieces give the support and background clips (none twice; taken in turn, a block of
:data:`BACKGROUND_SECONDS` from each, so the five background clips hold five different pieces) and
the other pieces, cross-faded over :data:`FADE` s and cycled in a new order on each pass, the long
files: the long files repeat their background (each piece about twice per task), the clips never
come from it.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np
import soundfile as sf

from calm.cache import build_atomically, cache_dir
from calm.devdata import devsets, drums
from calm.devdata.sources import DemoDataError, asterisk_sounds, unpack_debian_packages

__all__ = ["BACKGROUND_LABEL", "Placed", "SNRS", "ambient_recordings", "build_detection", "dev_sources", "place_clips",
           "prepare_detection", "prepare_detection_ambient", "speech_stream"]

RATE = 16000
SEED = 0
SHOTS = 5
BACKGROUND_CLIPS = 5
BACKGROUND_SECONDS = 1.5
FILES = 4
FILE_SECONDS = 300.0
GAP = (3.0, 9.0)
SNRS: tuple[float, ...] = (0.0, 6.0, 12.0)
BACKGROUND_LABEL = "background"
TASKS: dict[str, Callable[..., Path]] = {"instruments": devsets.prepare_instruments, "drums": drums.prepare_drums}
_STAMP = "recipe.json"
_VERSION = 3
_AMBIENT_VERSION = 2
AMBIENT_PACKAGE = "megaglest-data"
AMBIENT_FILES = "./usr/share/games/megaglest/tilesets/*/sounds/*"
PIECE = 15.0
HELD_OUT = 5
FADE = 0.25


class Placed(NamedTuple):
    """A clip placed into a long file: from ``onset`` to ``offset`` seconds, at ``snr`` dB."""

    onset: float
    offset: float
    label: str
    snr: float
    clip: str


class Source(NamedTuple):
    """A dev-set clip: its id, label and audio file."""

    id: str
    label: str
    path: Path


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


def _read(path: Path) -> np.ndarray:
    """A recording as float64 mono at :data:`RATE`."""
    audio, rate = sf.read(path, dtype="float64", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != RATE:
        import soxr

        audio = soxr.resample(audio, rate, RATE)
    return audio


def speech_stream(prompts: Sequence[Path], seconds: float) -> tuple[np.ndarray, int]:
    """The ``prompts`` read one after another, in order, until ``seconds`` are reached (cut there);
    and how many prompts were used. DemoDataError when they run out."""
    needed = round(seconds * RATE)
    parts, total = [], 0
    for used, path in enumerate(prompts, start=1):
        audio = _read(path)
        parts.append(audio)
        total += len(audio)
        if total >= needed:
            return np.concatenate(parts)[:needed], used
    raise DemoDataError(f"{len(prompts)} background prompts hold {total / RATE:.0f} s, {seconds:g} s needed")


def place_clips(background: np.ndarray, clips: Sequence[tuple[Source, np.ndarray]], rng: random.Random,
                snrs: Sequence[float] = SNRS, gap: tuple[float, float] = GAP) -> tuple[np.ndarray, list[Placed]]:
    """``background`` with ``clips`` added in order, each ``gap`` seconds (uniform) after the last
    one ended, at ``snrs`` in turn (its RMS over the whole background's), until the next does not
    fit; the mixture and the placed events."""
    level = _rms(background)
    if level == 0.0:
        raise DemoDataError("the background is silent: no SNR can be set against it")
    mixture = background.copy()
    placed: list[Placed] = []
    start = round(rng.uniform(*gap) * RATE)
    for (source, audio), snr in zip(clips, _cycle(snrs)):
        if start + len(audio) > len(mixture):
            break
        mixture[start:start + len(audio)] += audio * (level * 10 ** (snr / 20) / _rms(audio))
        placed.append(Placed(start / RATE, (start + len(audio)) / RATE, source.label, snr, source.id))
        start += len(audio) + round(rng.uniform(*gap) * RATE)
    return mixture, placed


def _cycle(values: Sequence[float]):
    while True:
        yield from values


def _pool(sources: list[Source], rng: random.Random):
    """The sources in a random order, again in a new order once all were given, for ever."""
    while True:
        order = list(sources)
        rng.shuffle(order)
        yield from order


def _split(sources: list[Source], rng: random.Random) -> tuple[list[Source], list[Source]]:
    """:data:`SHOTS` random support clips per label, and the others."""
    support: list[Source] = []
    for label in sorted({s.label for s in sources}):
        of_label = [s for s in sources if s.label == label]
        if len(of_label) <= SHOTS:
            raise DemoDataError(f"{len(of_label)} clips of class {label!r}, more than {SHOTS} needed")
        support.extend(sorted(rng.sample(of_label, SHOTS)))
    chosen = set(support)
    return support, [s for s in sources if s not in chosen]


class _Prompts:
    """Speech background: the prompts read one after another (:func:`speech_stream`), none twice."""

    def __init__(self, prompts: Sequence[Path]) -> None:
        self.prompts, self.used = prompts, 0

    def __call__(self, seconds: float, held_out: bool = False) -> np.ndarray:
        audio, count = speech_stream(self.prompts[self.used:], seconds)
        self.used += count
        return audio


class _Loops:
    """Ambient background (see the module doc): ``held_out`` stretches read one after another, none
    twice, from the first :data:`HELD_OUT` of the shuffled pieces taken in turn, a
    :data:`BACKGROUND_SECONDS` block of each (so the background clips, read first, come from as
    many pieces), cross-faded; the others from the rest, cross-faded and cycled."""

    def __init__(self, pieces: Sequence[np.ndarray], rng: random.Random) -> None:
        order = list(pieces)
        rng.shuffle(order)
        if len(order) <= HELD_OUT:
            raise DemoDataError(f"{len(order)} ambient pieces of {PIECE:g} s, more than {HELD_OUT} needed")
        block = round((BACKGROUND_SECONDS + FADE) * RATE)  # each adds BACKGROUND_SECONDS once cross-faded
        blocks = [piece[k:k + block] for k in range(0, round(PIECE * RATE) - block + 1, block)
                  for piece in order[:HELD_OUT]]
        self.held, self.used = _crossfaded(iter(blocks), float("inf")), 0
        self.pool = _pool(order[HELD_OUT:], rng)

    def __call__(self, seconds: float, held_out: bool = False) -> np.ndarray:
        if not held_out:
            return _crossfaded(self.pool, seconds)
        needed = round(seconds * RATE)
        if self.used + needed > len(self.held):
            raise DemoDataError(f"the {HELD_OUT} held-out ambient pieces ({len(self.held) / RATE:.0f} s) are too few "
                                "for the support and background clips")
        self.used += needed
        return self.held[self.used - needed:self.used]


def _crossfaded(pieces: Iterator[np.ndarray], seconds: float) -> np.ndarray:
    """The next ``pieces`` joined with :data:`FADE`-second linear cross-fades until ``seconds`` are
    reached (cut there), or until they run out."""
    fade = round(FADE * RATE)
    ramp = np.linspace(0.0, 1.0, fade, endpoint=False)
    audio = next(pieces)
    for piece in pieces:
        audio = np.concatenate([audio[:-fade], audio[-fade:] * (1 - ramp) + piece[:fade] * ramp, piece[fade:]])
        if len(audio) >= seconds * RATE:
            break
    return audio[:round(seconds * RATE)] if np.isfinite(seconds) else audio


def _write_task(root: Path, task: str, sources: list[Source], bed: Callable[[float, bool], np.ndarray],
                rng: random.Random) -> None:
    """One task's support clips, long files and reference under ``root``, their background from ``bed``."""
    support, others = _split(sources, rng)
    (root / "clips").mkdir(parents=True)
    (root / "long").mkdir()
    pool = ((source, _read(source.path)) for source in _pool(others, rng))
    events = []
    for index in range(FILES):
        mixture, placed = place_clips(bed(FILE_SECONDS, False), pool, rng)
        name = f"{task}-{index:02d}.wav"
        sf.write(root / "long" / name, mixture.astype(np.float32), RATE, subtype="FLOAT")
        events.extend((name, *event) for event in placed)
    rows = []
    for index in range(BACKGROUND_CLIPS):
        audio = bed(BACKGROUND_SECONDS, True)
        clip = f"{task}-background-{index:02d}"
        sf.write(root / "clips" / f"{clip}.wav", audio.astype(np.float32), RATE, subtype="FLOAT")
        rows.append((clip, f"clips/{clip}.wav", BACKGROUND_LABEL, ""))
    clean = [(source, _read(source.path)) for source in support]
    stretch = bed(sum(len(audio) for _, audio in clean) / RATE, True)
    level, start = _rms(stretch), 0
    for (source, audio), snr in zip(clean, _cycle(SNRS)):
        mixed = stretch[start:start + len(audio)] + audio * (level * 10 ** (snr / 20) / _rms(audio))
        start += len(audio)
        sf.write(root / "clips" / f"{source.id}.wav", mixed.astype(np.float32), RATE, subtype="FLOAT")
        rows.append((source.id, f"clips/{source.id}.wav", source.label, f"{snr:g}"))
    _write_csv(root / "support.csv", ("id", "path", "label", "snr"), rows)
    _write_csv(root / "long" / "reference.csv", ("file", "onset", "offset", "label", "snr", "clip"),
               [(f, f"{on:.7f}", f"{off:.7f}", label, f"{snr:g}", clip) for f, on, off, label, snr, clip in events])


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def build_detection(out_dir: Path, tasks: dict[str, list[Source]], prompts: Sequence[Path], name: str = "detection",
                    verbose: bool = True, ambient: bool = False) -> Path:
    """Write the benchmark of ``tasks`` (name -> its labelled clips) over the background ``prompts``
    (speech prompts read once each; with ``ambient``, ambient recordings cut into pieces: see the
    module doc) into ``out_dir`` (reused when complete); returns ``tasks.csv`` (``task, support,
    reference``, paths relative to ``out_dir``)."""
    out_dir = Path(out_dir)
    rng = random.Random(SEED)
    order = sorted(prompts)
    rng.shuffle(order)

    def write(staging: Path) -> None:
        speech = _Prompts(order)
        pieces = _pieces(order) if ambient else []
        for task in sorted(tasks):
            bed = _Loops(pieces, rng) if ambient else speech
            _write_task(staging / task, task, sorted(tasks[task]), bed, rng)
        _write_csv(staging / "tasks.csv", ("task", "support", "reference"),
                   [(task, f"{task}/support.csv", f"{task}/long/reference.csv") for task in sorted(tasks)])

    built = build_atomically(out_dir, _STAMP, {"recipe": name, "version": _AMBIENT_VERSION if ambient else _VERSION},
                             write)
    if verbose:
        print(f"{name}: {len(tasks)} tasks x {FILES} files x {FILE_SECONDS / 60:g} min in {built}")
    return built / "tasks.csv"


def _pieces(recordings: Sequence[Path]) -> list[np.ndarray]:
    """Every whole :data:`PIECE`-second piece of the recordings, in order."""
    size = round(PIECE * RATE)
    pieces = []
    for path in recordings:
        audio = _read(path)
        pieces.extend(audio[start:start + size] for start in range(0, len(audio) - size + 1, size))
    return pieces


def dev_sources(task: str) -> list[Source]:
    """The clips of dev set ``task`` (one of :data:`TASKS`), prepared into the calm cache if needed."""
    metadata = TASKS[task](cache_dir("data", task), verbose=False)
    with open(metadata, newline="", encoding="utf-8") as handle:
        return [Source(row["id"], row["label"], metadata.parent / row["path"]) for row in csv.DictReader(handle)]


def prepare_detection(out_dir: Path, verbose: bool = True) -> Path:
    """The detection dev benchmark: ``instruments`` and ``drums`` clips in 20 min of Asterisk speech
    each (4 files of 5 min), at 0, 6 and 12 dB; see the module doc. Returns ``tasks.csv``."""
    sounds = asterisk_sounds()
    prompts = sorted(p for p in sounds.rglob("*.wav"))
    return build_detection(out_dir, {task: dev_sources(task) for task in TASKS}, prompts, verbose=verbose)


def ambient_recordings() -> list[Path]:
    """The ambient loops of MegaGlest's tilesets (day, night, rain, wind) at least :data:`PIECE` s
    long, one of each recording (two tilesets share one, encoded twice), sorted; ``megaglest-data`` (CC BY-SA 3.0) is fetched
    and only these folders unpacked into ``<cache>/debian/megaglest-data`` once."""
    root = cache_dir("debian", AMBIENT_PACKAGE)
    tilesets = root / "usr" / "share" / "games" / "megaglest" / "tilesets"
    if not tilesets.is_dir():
        unpack_debian_packages([AMBIENT_PACKAGE], root, members=(AMBIENT_FILES,))
    unique: dict[tuple[str, int], Path] = {}
    for path in sorted(tilesets.glob("*/sounds/*")):
        info = sf.info(path) if path.is_file() else None
        if info is not None and info.duration >= PIECE:  # one file of a name and length: winter's wind is twice
            unique.setdefault((path.name, info.frames), path)
    if not unique:
        raise DemoDataError(f"{tilesets}: no ambient recordings of {PIECE:g} s or more")
    return sorted(unique.values())


def prepare_detection_ambient(out_dir: Path, verbose: bool = True) -> Path:
    """The detection dev benchmark over ambient recordings (:func:`ambient_recordings`) instead of
    speech: same tasks, clips, times and SNRs; see the module doc. Returns ``tasks.csv``."""
    return build_detection(out_dir, {task: dev_sources(task) for task in TASKS}, ambient_recordings(),
                           name="detection-ambient", verbose=verbose, ambient=True)
