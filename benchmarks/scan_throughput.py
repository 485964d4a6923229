"""calm scan: throughput in hours of audio per minute, and memory that does not grow with the file.

    python benchmarks/scan_throughput.py                        # whisper-base, 5 min of audio; tiny model on 2 h
    python benchmarks/scan_throughput.py --minutes 2 --hours 2 --encoder-seconds 5 --device cuda

Throughput: a classifier is fitted (two classes of tones, 1 s clips, so 1 s windows every 0.5 s)
on ``--model`` and scans a ``--minutes`` recording of noise and tones; printed as hours of audio
per minute of wall clock, and windows per second.

Memory: the same scan with the tiny Whisper model (its weights are a few MB, so the process's
growth is the scan's own) over a 10-minute and then a ``--hours`` recording (written to disk in
blocks, 16-bit PCM). Peak RSS is read after each (``ru_maxrss``); the ratio of the growths and the
size the long file would take decoded (float32 at 16 kHz) show that the file is never in memory.
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile
import torch

from calm.backbones import BackboneOptions, load_backbone
from calm.backbones.tiny import tiny_backbone
from calm.data.items import Item
from calm.predict import fit_classifier
from calm.scanning import ScanOptions, scan

RATE = 16000
PROMPT = "What sound is in this audio clip?"


def write_recording(path: Path, seconds: float, seed: int = 0) -> Path:
    """Noise with a 1 s tone every 10 s, written a minute at a time (never whole in memory)."""
    rng = np.random.default_rng(seed)
    with soundfile.SoundFile(str(path), "w", RATE, 1, subtype="PCM_16") as handle:
        done = 0
        while done < seconds * RATE:
            n = int(min(60 * RATE, seconds * RATE - done))
            block = 0.02 * rng.standard_normal(n)
            t = (done + np.arange(n)) / RATE
            on = (t % 10) < 1
            block[on] += 0.3 * np.sin(2 * np.pi * np.where((t[on] // 10) % 2 == 0, 440.0, 2000.0) * t[on])
            handle.write(block.astype(np.float32))
            done += n
    return path


def support(root: Path) -> list[Item]:
    items = []
    for label, hz in (("low", 440.0), ("high", 2000.0)):
        for k in range(3):
            t = np.arange(RATE) / RATE
            path = root / f"{label}{k}.wav"
            soundfile.write(path, (0.3 * np.sin(2 * np.pi * hz * (1 + 0.01 * k) * t)).astype(np.float32), RATE)
            items.append(Item(f"{label}{k}", path, label=label))
    return items


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--encoder-seconds", type=float, default=None)
    parser.add_argument("--minutes", type=float, default=5.0, help="audio for the throughput run (0: none)")
    parser.add_argument("--hours", type=float, default=2.0, help="audio for the memory run (0: none)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    options = ScanOptions(window=1.0, hop=0.5)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        items = support(root)
        print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch "
              f"{torch.__version__}")
        if args.minutes > 0:
            backbone = load_backbone(args.model, BackboneOptions(device=args.device,
                                                                 encoder_seconds=args.encoder_seconds))
            clf = fit_classifier(backbone, items, PROMPT, method="auto")
            short = write_recording(root / "short.wav", args.minutes * 60)
            start = time.perf_counter()
            result = scan(backbone, clf, [short], options, batch_size=args.batch_size)[0]
            minutes = (time.perf_counter() - start) / 60
            print(f"throughput ({args.model}, {args.device}, encoder window {args.encoder_seconds or 'default'} s, "
                  f"1 s windows every 0.5 s, batch {args.batch_size}): {args.minutes:g} min of audio in "
                  f"{minutes * 60:.1f} s = {args.minutes / 60 / minutes:.3f} h of audio per minute, "
                  f"{len(result.windows) / minutes / 60:.1f} windows/s; {len(result.events)} events")
        if args.hours <= 0:
            return
        tiny = tiny_backbone("whisper")
        clf = fit_classifier(tiny, items, PROMPT, method="auto")
        before = peak_rss_mb()
        ten = write_recording(root / "ten.wav", 600, seed=1)
        scan(tiny, clf, [ten], options, batch_size=args.batch_size)
        after_short = peak_rss_mb()
        ten.unlink()
        long = write_recording(root / "long.wav", args.hours * 3600, seed=2)
        start = time.perf_counter()
        result = scan(tiny, clf, [long], options, batch_size=args.batch_size)[0]
        after_long = peak_rss_mb()
        decoded = args.hours * 3600 * RATE * 4 / 2**20
        print(f"memory (tiny Whisper, {len(result.windows)} windows in {time.perf_counter() - start:.0f} s): peak RSS "
              f"{before:.0f} MB before, {after_short:.0f} MB after 10 min of audio, {after_long:.0f} MB after "
              f"{args.hours:g} h ({long.stat().st_size / 2**20:.0f} MB on disk, {decoded:.0f} MB decoded as float32); "
              f"growth over the 10-min scan: {after_long - after_short:.0f} MB "
              f"({(after_long - before) / max(after_short - before, 1):.2f}x the 10-min scan's growth)")


if __name__ == "__main__":
    main()
