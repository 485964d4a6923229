"""Loader processes: how loading scales with them, and what they give a whole ``calm extract``.

Clips are stored as datasets ship them, 44.1 kHz stereo FLAC (5 s of tones in noise), so every
clip is decoded, mixed to mono and resampled with soxr before its inputs are built.

1. Loading alone: clips/s of :class:`calm.engine.BatchRunner` loading every batch (decode,
   resample, pad, build the model inputs: Qwen2-Audio's fast-path inputs, Whisper's 30 s log-mel,
   which the loaders compute) with no forward pass, for 0 (inline), 1, 2 ... loader processes up
   to the cores, and the CPU time per clip of the calling process and of the loaders: the calling
   process's share bounds what more loaders can give, whatever the machine's load.
2. Whole extraction: ``calm extract`` on ``tiny:qwen2_audio`` (a model so small that loading
   dominates) over the FLAC files plus two broken ones, with ``--loaders N`` against
   ``--loaders 0``; checks that both stores hold bit-identical features and the same failures.

3. (``--parts 3``, for a GPU) Whole ``calm.extract`` as a library call on a random model in the
   exact Qwen2-Audio-7B shape (bfloat16, fast path, stopping after the last site; on a CPU its
   1/8-width twin) over the FLAC files, loading inline against ``--loaders`` processes, next to
   the forward rate of the same batches with their inputs built beforehand (what loading must
   keep up with). ``--compile`` compiles the layers first (the forward warm-up pays for it); use a
   clip count that is a multiple of the batch size, so no batch has a new shape.

Settings alternate round by round (so all meet the same load on a shared machine); each figure is
the median of the rounds. Ratios are against inline in the same run.

    python benchmarks/loaders.py                           # 300 clips, rounds of 3
    python benchmarks/loaders.py --clips 96 --rounds 1 --models tiny:qwen2_audio
    python benchmarks/loaders.py --parts 3 --device cuda --clips 640 --batch-size 64 --loaders 15 --compile
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import tempfile
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

PROMPT = "What sound is in this audio clip?"

# torch and calm's model code are imported in the functions: the loader processes, which Python
# starts by importing this script, then need only numpy, soundfile and soxr.


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) used so far by this process and by its finished children."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def mel_cpu(backbone, items, batch_size: int) -> tuple[float, float]:
    """CPU ms per clip of a Whisper backbone's log-mel from decoded clips: its processor's (30 s,
    torch, what calm ran before) and ``build_inputs`` with :mod:`calm.logmel`, alternating by batch."""
    from calm.media import load_audio

    audios = [load_audio(item.media_path, backbone.sample_rate) for item in items]
    extractor = backbone.processor.feature_extractor
    spent = [0.0, 0.0]
    for start in range(0, len(audios), batch_size):
        batch = audios[start:start + batch_size]
        began = time.process_time()
        extractor(batch, sampling_rate=backbone.sample_rate, return_tensors="pt")
        spent[0] += time.process_time() - began
        began = time.process_time()
        backbone.build_inputs(batch, PROMPT)
        spent[1] += time.process_time() - began
    return spent[0] * 1000 / len(audios), spent[1] * 1000 / len(audios)


def loading_rate(backbone, items, loaders: int, batch_size: int) -> tuple[float, float, float]:
    """Clips/s of loading ``items`` (planned as calm.extract plans them) without running the model,
    and the CPU milliseconds per clip of this process and of the loader processes (theirs counted
    once they have ended, which the runner's exit waits for)."""
    from calm.engine import BackboneTraits, BatchRunner, ExtractionConfig, ExtractionEngine

    config = ExtractionConfig(batch_size=batch_size, on_error="record")
    plan = ExtractionEngine(BackboneTraits.of(backbone, PROMPT), PROMPT, config).plan(items)
    cpu = cpu_seconds()
    start = time.perf_counter()
    with BatchRunner(backbone, PROMPT, config, loaders) as runner:
        for _ in runner.batches(plan):
            pass
    rate = plan.clips / (time.perf_counter() - start)
    own, children = (1000 * (after - before) / plan.clips for after, before in zip(cpu_seconds(), cpu))
    return rate, own, children


def extract_rate(data: Path, store: Path, loaders: int, batch_size: int) -> float:
    """Clips/s of a whole ``calm extract`` into a new store, timed from the CLI's start (the tiny
    model builds in a fraction of a second; a warm-up run has paid the imports)."""
    from calm.cli import main as calm_main

    args = ["extract", "--data", str(data), "--out", str(store), "--model", "tiny:qwen2_audio", "--device", "cpu",
            "--batch-size", str(batch_size), "--loaders", str(loaders), "--on-error", "record", "--quiet",
            "--prompt", PROMPT]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert calm_main(args) == 0
    return len(list(data.rglob("*.flac"))) / (time.perf_counter() - start)


def read_store(root: Path, backbone) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Item id -> stored row, and id -> recorded failure, of ``backbone``'s store under ``root``."""
    from calm.engine import feature_fingerprint
    from calm.store import FeatureStore

    with FeatureStore.open(root, feature_fingerprint(backbone, PROMPT), backbone.head_index()) as store:
        features = store.read()
        return dict(zip(features.ids, np.asarray(features.X))), store.failures()


def device_rates(args: argparse.Namespace, items) -> None:
    """Part 3: forward rate on prebuilt inputs, then whole calm.extract inline and with loaders."""
    import torch
    from extract_throughput import QWEN2_AUDIO_7B, QWEN2_AUDIO_CPU, qwen2_audio_backbone

    from calm.backbones.base import compile_layers, resolve_dtype
    from calm.capture import HeadCapture
    from calm.engine import forward_heads
    from calm.heads import extract
    from calm.media import load_audio

    device = torch.device(args.device)
    shape = QWEN2_AUDIO_7B if device.type == "cuda" else QWEN2_AUDIO_CPU
    backbone = qwen2_audio_backbone(shape, device, resolve_dtype(None, device)).with_options(fast=True)
    if args.compile:
        compile_layers(backbone.model)
    size = args.batch_size
    audios = [load_audio(item.media_path, backbone.sample_rate) for item in items]
    batches = [backbone.build_inputs(audios[i:i + size], PROMPT) for i in range(0, len(audios), size)]
    with HeadCapture(backbone, stop_after_last_site=True) as capture:
        warm = time.perf_counter()
        forward_heads(backbone, capture, batches[0])  # CUDA's start, and compilation with --compile
        warm = time.perf_counter() - warm
        start = time.perf_counter()
        for inputs in batches:
            forward_heads(backbone, capture, inputs)  # returns the rows on the CPU: synchronised
        forward = len(audios) / (time.perf_counter() - start)
    rates = {}
    for loaders in (0, args.loaders):
        start = time.perf_counter()
        extract(backbone, items, PROMPT, batch_size=size, loaders=loaders, stop_after_last_site=True)
        rates[loaders] = len(items) / (time.perf_counter() - start)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n3. {backbone.model_id} {'7B' if shape is QWEN2_AUDIO_7B else 'CPU'} shape on {name}, "
          f"{backbone.dtype}, fast path{', compiled' if args.compile else ''}, batch {size}, {len(items)} clips "
          f"(first batch {warm:.1f} s):")
    print(f"   forward on prebuilt inputs: {forward:.1f} clips/s")
    print(f"   whole calm.extract from FLAC: --loaders 0: {rates[0]:.1f}   --loaders {args.loaders}: "
          f"{rates[args.loaders]:.1f} clips/s ({rates[args.loaders] / forward:.2f}x the forward rate)")


def whole_extracts(args: argparse.Namespace, tmp: Path, data: Path) -> None:
    """Part 2: calm extract on tiny:qwen2_audio, inline against --loaders; are the stores the same?"""
    from calm.backbones import load_backbone

    warm = tmp / "warm" / "sounds"  # a first run pays the imports and the model's first build
    warm.mkdir(parents=True)
    (warm / "clip.flac").write_bytes((data / "sounds" / "clip0000.flac").read_bytes())
    extract_rate(warm.parent, tmp / "store-warm", 0, args.batch_size)
    runs: dict[int, list[float]] = {0: [], args.loaders: []}
    for round_ in range(args.rounds):
        for loaders in list(runs)[::1 if round_ % 2 == 0 else -1]:  # the order alternates round by round
            runs[loaders].append(extract_rate(data, tmp / f"store-{loaders}-{round_}", loaders,
                                              args.batch_size))
    inline, parallel = (float(np.median(runs[n])) for n in (0, args.loaders))
    tiny = load_backbone("tiny:qwen2_audio", device="cpu")
    rows0, failed0 = read_store(tmp / "store-0-0", tiny)
    rows, failed = read_store(tmp / f"store-{args.loaders}-0", tiny)
    identical = rows0.keys() == rows.keys() and all(np.array_equal(rows0[k], rows[k]) for k in rows0)
    print(f"\n2. whole calm extract, tiny:qwen2_audio, {args.clips + 2} files (clips/s, median of {args.rounds}):")
    print(f"   --loaders 0: {inline:.1f}   --loaders {args.loaders}: {parallel:.1f}   ratio {parallel / inline:.2f}x")
    print(f"   stored features bit-identical: {identical} ({len(rows)} items); same failures: "
          f"{sorted(failed0) == sorted(failed)} ({len(failed)}: {', '.join(sorted(failed))})")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["tiny:qwen2_audio", "whisper-base"],
                        help="backbones whose inputs are built in part 1")
    parser.add_argument("--loaders", type=int, default=2, help="loader processes of part 2 (against 0)")
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2], choices=[1, 2, 3], help="which parts to run")
    parser.add_argument("--device", default="cpu", help="part 3's device")
    parser.add_argument("--compile", action="store_true", help="part 3: compile the layers first")
    args = parser.parse_args(argv)
    from extract_throughput import cpu_name, make_clips, write_recordings

    from calm.backbones import load_backbone
    from calm.clips import default_loaders

    cores = len(os.sched_getaffinity(0))
    print(f"{cpu_name()}, {cores} cores, load average {os.getloadavg()[0]:.2f} at the start; {args.clips} clips "
          f"of 5 s as 44.1 kHz stereo FLAC, batch {args.batch_size}; default loaders here: {default_loaders()}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        (data / "sounds").mkdir(parents=True)
        items = write_recordings(make_clips(5.0, args.clips, 16000), 16000, data / "sounds", "clip")
        (data / "sounds" / "broken.flac").write_bytes(b"fLaC not really")
        (data / "sounds" / "empty.flac").write_bytes(b"")
        settings = list(range(cores + 1))
        for name in args.models if 1 in args.parts else []:
            backbone = load_backbone(name, device="cpu")
            rates: dict[int, list[tuple[float, float, float]]] = {n: [] for n in settings}
            for _ in range(args.rounds):
                for loaders in settings:
                    rates[loaders].append(loading_rate(backbone, items, loaders, args.batch_size))
            inline = float(np.median([rate for rate, _, _ in rates[0]]))
            print(f"\n1. loading alone, {name} inputs (clips/s, median of {args.rounds}; CPU ms per clip in this "
                  f"process and in the loaders; load average {os.getloadavg()[0]:.2f}):")
            for loaders, values in rates.items():
                median, own, children = (float(np.median(column)) for column in zip(*values))
                print(f"   loaders={loaders}: {median:7.1f}  ({median / inline:.2f}x inline)   CPU ms/clip: "
                      f"this process {own:5.1f}, loaders {children:5.1f}")
            if backbone.family == "whisper":
                processor, ours = mel_cpu(backbone, items, args.batch_size)
                print(f"   log-mel from decoded clips, CPU ms/clip: the processor's {processor:.1f}, "
                      f"calm.logmel's (whole build_inputs) {ours:.1f}")
        if 2 in args.parts:
            whole_extracts(args, Path(tmp), data)
        if 3 in args.parts:
            device_rates(args, items)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
