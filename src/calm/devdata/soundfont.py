"""Read the recorded samples of a SoundFont 2 (``.sf2``) file.

A General MIDI SoundFont holds real recordings of instruments (one sample per few keys) and
presets that map each GM program to them. :func:`read_samples` lists each sample with the GM
programs (bank 0) that use it, or with the drum kits (bank 128) and MIDI keys that play it;
:func:`sample_audio` gives one as recorded, cut to a few seconds with a short fade out. Nothing is synthesised: loops and envelopes of the font are not applied.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calm.errors import InputError

__all__ = ["GM_FAMILIES", "PERCUSSION_BANK", "Sample", "SoundFontError", "family", "read_samples", "sample_audio"]

# General MIDI program families: programs 8*i ... 8*i+7 belong to GM_FAMILIES[i].
GM_FAMILIES: tuple[str, ...] = (
    "piano", "chromatic-percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass",
    "reed", "pipe", "synth-lead", "synth-pad", "synth-effects", "ethnic", "percussive", "sound-effects",
)
_KEY_RANGE, _INSTRUMENT, _SAMPLE_ID = 43, 41, 53  # generator operators
PERCUSSION_BANK = 128
_ROM_SAMPLE = 0x8000
_RIGHT_SAMPLE = 0x2  # the right half of a stereo pair (its left half is kept)


class SoundFontError(InputError):
    """A malformed SoundFont; the message names the file."""


@dataclass(frozen=True)
class Sample:
    """One recorded sample: where its data lies, the programs of the bank read that play it, and at which keys."""

    index: int
    name: str
    start: int  # in samples from the start of the smpl chunk
    end: int
    rate: int
    pitch: int  # MIDI key of the recording
    programs: tuple[int, ...]
    keys: tuple[int, ...] = ()  # MIDI keys at which those presets play it (the drum of a kit)

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / self.rate


def family(program: int) -> str:
    """The GM family of a program number 0-127."""
    return GM_FAMILIES[program // 8]


def _chunks(data: bytes, offset: int, end: int, path: Path) -> dict[str, tuple[int, int]]:
    """Chunk id (or LIST type) -> (start, size) of the chunks between ``offset`` and ``end``."""
    found = {}
    while offset + 8 <= end:
        cid, size = struct.unpack_from("<4sI", data, offset)
        body = offset + 8
        if body + size > end:
            raise SoundFontError(f"{path}: chunk {cid!r} runs past the end of the file")
        if cid == b"LIST":
            found[data[body:body + 4].decode("latin-1")] = (body + 4, size - 4)
        else:
            found[cid.decode("latin-1")] = (body, size)
        offset = body + size + (size & 1)
    return found


def _records(data: bytes, chunk: tuple[int, int], fmt: str) -> list[tuple]:
    start, size = chunk
    return list(struct.iter_unpack(fmt, data[start:start + size - size % struct.calcsize(fmt)]))


def _zones(bags: list[tuple], gens: list[tuple], first: int, last: int, operator: int) -> list[tuple[int, set[int]]]:
    """(value of generator ``operator``, keys the zone covers) of the zones in bags first..last-1 that
    set it; a zone setting only a key range (a global zone) gives the others' default range."""
    zones, default = [], set(range(128))
    for bag in range(first, last):
        found = dict(gens[bags[bag][0]:bags[bag + 1][0]])
        span = found.get(_KEY_RANGE)
        keys = set(range(span & 0xFF, (span >> 8) + 1)) if span is not None else None
        if operator in found:
            zones.append((found[operator], default if keys is None else keys))
        elif keys is not None and not zones:
            default = keys
    return zones


def read_samples(path: str | Path, bank: int = 0) -> tuple[list[Sample], bytes, int]:
    """The samples of a SoundFont that the presets of ``bank`` play (0: the GM programs;
    PERCUSSION_BANK: the drum kits, each sample with the keys it sounds at), the file's bytes and
    where ``smpl`` starts.

    ROM samples and the right halves of stereo pairs (near copies of their left halves) are left out.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"sfbk":
        raise SoundFontError(f"{path}: not a SoundFont (RIFF sfbk) file")
    top = _chunks(data, 12, len(data), path)
    if "sdta" not in top or "pdta" not in top:
        raise SoundFontError(f"{path}: missing the sdta or pdta list")
    sdta = _chunks(data, top["sdta"][0], sum(top["sdta"]), path)
    pdta = _chunks(data, top["pdta"][0], sum(top["pdta"]), path)
    missing = [c for c in ("phdr", "pbag", "pgen", "inst", "ibag", "igen", "shdr") if c not in pdta]
    if "smpl" not in sdta or missing:
        raise SoundFontError(f"{path}: missing chunks {['smpl'] if 'smpl' not in sdta else []}{missing}")
    presets = _records(data, pdta["phdr"], "<20sHHHIII")
    pbag, pgen = _records(data, pdta["pbag"], "<HH"), _records(data, pdta["pgen"], "<HH")
    insts = _records(data, pdta["inst"], "<20sH")
    ibag, igen = _records(data, pdta["ibag"], "<HH"), _records(data, pdta["igen"], "<HH")
    headers = _records(data, pdta["shdr"], "<20sIIIIIBbHH")[:-1]  # the last is the EOS terminal
    users: dict[int, set[int]] = {}
    keys: dict[int, set[int]] = {}
    for p, (_, program, preset_bank, bag, *_rest) in enumerate(presets[:-1]):
        if preset_bank != bank:
            continue
        for inst, preset_keys in _zones(pbag, pgen, bag, presets[p + 1][3], _INSTRUMENT):
            if inst + 1 >= len(insts):
                raise SoundFontError(f"{path}: preset {program} names instrument {inst} of {len(insts) - 1}")
            for sample, zone_keys in _zones(ibag, igen, insts[inst][1], insts[inst + 1][1], _SAMPLE_ID):
                users.setdefault(sample, set()).add(program)
                keys.setdefault(sample, set()).update(preset_keys & zone_keys)
    samples = []
    smpl_start, smpl_size = sdta["smpl"]
    for i, (name, start, end, _ls, _le, rate, pitch, _corr, _link, kind) in enumerate(headers):
        if kind & (_ROM_SAMPLE | _RIGHT_SAMPLE) or i not in users:
            continue
        if not start < end <= smpl_size // 2 or rate == 0:
            raise SoundFontError(f"{path}: sample {i} lies outside the sample data or has no rate")
        samples.append(Sample(i, name.split(b"\0")[0].decode("latin-1").strip(), start, end, rate, pitch,
                              tuple(sorted(users[i])), tuple(sorted(keys[i]))))
    return samples, data, smpl_start


def sample_audio(sample: Sample, data: bytes, smpl: int, seconds: float = 1.5, fade: float = 0.05) -> np.ndarray:
    """One sample as recorded (float32 at ``sample.rate``), cut to ``seconds``, its last ``fade`` s faded out."""
    count = min(sample.end - sample.start, int(seconds * sample.rate))
    raw = np.frombuffer(data, dtype="<i2", count=count, offset=smpl + 2 * sample.start)
    audio = raw.astype(np.float32) / 32768.0
    ramp = min(count, int(fade * sample.rate))
    audio[count - ramp:] *= np.linspace(1.0, 0.0, ramp, dtype=np.float32)
    return audio
