"""How many loader threads ``calm.extract`` should use: whole extraction runs over the same clips
stored as datasets ship them (44.1 kHz stereo FLAC), with ``loader_threads`` 0 (inline), 1, 2 and
4; runs of the settings alternate (so all meet the same load on a shared machine) and the median
wall-clock clips/s of each is printed.

    python benchmarks/loader_threads.py                      # whisper-base, the demo's 5 s window
    python benchmarks/loader_threads.py --rounds 5 --clips 64
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from extract_throughput import PROMPT, cpu_name, make_clips, write_recordings

from calm.backbones import load_backbone
from calm.heads import default_loader_threads, extract


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--encoder-seconds", type=float, default=5.0, help="Whisper window (the demo's 5)")
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settings", type=int, nargs="+", default=[0, 1, 2, 4])
    args = parser.parse_args(argv)
    backbone = load_backbone(args.model, device="cpu", encoder_seconds=args.encoder_seconds)
    print(f"{backbone.model_id} (window {args.encoder_seconds:g} s): {cpu_name()}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads; {args.clips} clips of 5 s as 44.1 kHz stereo FLAC, "
          f"batch {args.batch_size}; default loader_threads here: {default_loader_threads()}")
    rates: dict[int, list[float]] = {n: [] for n in args.settings}
    with tempfile.TemporaryDirectory() as tmp:
        items = write_recordings(make_clips(5.0, args.clips, backbone.sample_rate), backbone.sample_rate,
                                 Path(tmp), "r")
        extract(backbone, items[: args.batch_size], PROMPT, batch_size=args.batch_size, loader_threads=0)  # warm-up
        for _ in range(args.rounds):
            for threads in args.settings:
                start = time.perf_counter()
                extract(backbone, items, PROMPT, batch_size=args.batch_size, loader_threads=threads,
                        stop_after_last_site=True)
                rates[threads].append(len(items) / (time.perf_counter() - start))
    for threads, values in rates.items():
        print(f"loader_threads={threads}: median {np.median(values):.2f} clips/s  "
              f"(runs: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
