"""The offline Whisper on the CPU: the plain transformers loop against calm's default path and the
bfloat16 mode, in one run, on the same clips; clips/s, ratio, smallest per-head cosine with the
plain loop's features, and the achieved GFLOP/s against the CPU's float32 peak.

    python benchmarks/whisper_cpu.py --threads 1 --clock cpu              # on a shared CPU
    python benchmarks/whisper_cpu.py --threads 1 --clock cpu --demo-accuracy

* ``plain``: the model's own call (``WhisperForConditionalGeneration``, SDPA) on the processor's
  inputs (30 s of log-mel), forward hooks on every site, the LM head never run
  (``BackboneOptions(fast=False)``, float32).
* ``default``: ``calm.load_backbone("whisper-base")`` as it comes (the exact fast path of
  :mod:`calm.backbones.whisper_fast`, float32) with ``stop_after_last_site``.
* ``bf16``: ``dtype="bfloat16"``: float32 weights, the encoder under bfloat16 autocast, the decoder
  in float32 (see :mod:`calm.backbones.whisper`).

Each step builds the batch's inputs from decoded clips (the log-mel is part of the work) and runs
one forward pass; batches of the paths alternate, so all meet the same load on a shared machine,
and clips/s comes from the median batch time. Clips: the spoken-numbers demo's recordings (real
speech, built offline; ``--synthetic`` for tones in noise). GFLOP/s counts the multiply-adds of
each path (the default path skips the cross-attention key/value projections) over the batch
time; the peak is cores x 32 float32 FLOP/cycle (two 512-bit FMA pipes) x the clock.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from extract_throughput import cpu_name, interleaved, make_clips, min_head_cosine

from calm.backbones import load_backbone
from calm.backbones.base import Backbone
from calm.capture import HeadCapture
from calm.heads import extract

FLOAT32_FLOPS_PER_CYCLE = 32
"""Zen 4: two 256-bit FMA pipes (AVX-512 runs double-pumped): 2 x 8 float32 lanes x 2 FLOP per FMA."""


def whisper_flops(config: Any, tokens: int, folded: bool, mel_frames: int = 3000) -> float:
    """Multiply-add FLOPs (x2) of one clip's pass up to the last site: the encoder on ``mel_frames``
    frames and the decoder on ``tokens`` prefix tokens; ``folded``: cross-attention keys and values
    folded into the queries (calm's fast path) instead of projected."""
    d, P, T = int(config.d_model), mel_frames // 2, tokens
    flops = 2 * mel_frames * int(config.num_mel_bins) * 3 * d + 2 * P * d * 3 * d  # conv1, conv2
    per_encoder_layer = 2 * P * 4 * d * d + 2 * 2 * P * d * int(config.encoder_ffn_dim) + 2 * 2 * P * P * d
    flops += int(config.encoder_layers) * per_encoder_layer
    heads = int(config.decoder_attention_heads)
    self_attention = 2 * T * 4 * d * d + 2 * 2 * T * T * d
    cross = 2 * T * 2 * d * d + (2 * 2 * heads * T * P * d + 2 * T * d * d if folded else 2 * 2 * P * d * d
                                 + 2 * 2 * T * P * d)
    mlp = 2 * 2 * T * d * int(config.decoder_ffn_dim)
    flops += int(config.decoder_layers) * (self_attention + cross + mlp)
    return float(flops)


def clock_ghz() -> float:
    """The CPU clock the kernel reports (Linux), in GHz."""
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.exists() else []:
        if line.startswith("cpu MHz"):
            return float(line.split(":", 1)[1]) / 1000
    return float("nan")


def demo_clips(count: int, rate: int) -> list[np.ndarray]:
    """``count`` clips spread over the spoken-numbers demo (built offline if missing)."""
    from calm.devdata.recipes import prepare
    from calm.data.loaders import load_dataset
    from calm.media import load_audio

    items = load_dataset(prepare("spoken-numbers", verbose=False))
    if len(items) < count:
        raise ValueError(f"the demo has {len(items)} clips; asked for {count}")
    spread = items[:: max(1, len(items) // count)][:count]  # both sources: recorded and synthesised speech
    return [load_audio(item.audio, rate) for item in spread]


def forward(backbone: Backbone, clips: Sequence[np.ndarray], prompt: str, stop: bool) -> np.ndarray:
    """Inputs built from the clips, one pass with hooks on every site: [B, K, D] float32."""
    inputs = backbone.build_inputs(clips, prompt)
    with HeadCapture(backbone, stop_after_last_site=stop) as capture, torch.inference_mode():
        capture.expect(backbone.token_mask(inputs))
        backbone.forward(inputs)
        return capture.collect().numpy()


def demo_accuracy(models: dict[str, Backbone], batch_size: int, encoder_seconds: float | None) -> None:
    """The demo's spoken-numbers accuracy for each model (features kept in calm's cache)."""
    from calm.cache import cache_dir
    from calm.devdata.recipes import prepare
    from calm.data.loaders import load_dataset
    from calm.demo import DEMO_TASKS
    from calm.evaluation.protocol import evaluate_features

    task = DEMO_TASKS[0]
    items = load_dataset(prepare(task.recipe, verbose=False))
    accuracy: dict[str, dict[tuple[str, int], float]] = {}
    for name, model in models.items():
        model = model.with_options(encoder_seconds=encoder_seconds)
        features = extract(model, items, task.prompt, batch_size=batch_size, store=cache_dir("features"),
                           stop_after_last_site=True, progress=False)
        with warnings.catch_warnings():  # 1-shot methods that cannot leave one out say so, for every seed
            warnings.simplefilter("ignore")
            report = evaluate_features(features, items, shots=task.shots, seeds=5)
        accuracy[name] = {(r["method"], r["shots"]): 100 * r["accuracy"] for r in report.summary_rows()
                          if r["accuracy"] is not None}
    window = "30 s (reference)" if encoder_seconds is None else f"{encoder_seconds:g} s (the demo's)"
    names = list(models)
    print(f"\n{task.recipe}, encoder window {window}: accuracy (%), mean over 5 seeds")
    print(f"{'method':>12} {'shots':>5} " + " ".join(f"{n:>9}" for n in names) + "  difference")
    gaps = []
    for key, first in accuracy[names[0]].items():
        values = [accuracy[n].get(key) for n in names]
        cells = " ".join("        -" if v is None else f"{v:>9.1f}" for v in values)
        gap = None if None in values else values[-1] - values[0]
        gaps += [] if gap is None else [abs(gap)]
        print(f"{key[0]:>12} {key[1]:>5d} {cells}  {'' if gap is None else f'{gap:+.1f}'}")
    print(f"largest difference: {max(gaps):.1f} points; mean {np.mean(gaps):.2f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=3, help="timed batches per path (0: only --demo-accuracy)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: time by the process's CPU time (for a CPU shared with other jobs)")
    parser.add_argument("--ghz", type=float, default=None, help="clock for the peak (default: /proc/cpuinfo)")
    parser.add_argument("--synthetic", action="store_true", help="tones in noise instead of the demo's speech")
    parser.add_argument("--prompt", default="Someone says a number.")
    parser.add_argument("--demo-accuracy", action="store_true",
                        help="then the demo's spoken-numbers accuracy, float32 default vs bfloat16")
    parser.add_argument("--demo-window", type=float, default=5.0,
                        help="encoder seconds for --demo-accuracy (the demo's 5; 30 = the reference window)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    default = load_backbone(args.model, device="cpu", dtype="float32")
    paths = {"plain": (default.with_options(fast=False), False), "default": (default, True),
             "bf16": (load_backbone(args.model, device="cpu", dtype="bfloat16"), True)}
    if args.batches == 0:  # accuracy only
        demo_accuracy({"float32": default, "bfloat16": paths["bf16"][0]}, 16,
                      None if args.demo_window >= 30 else args.demo_window)
        return
    size, batches = args.batch_size, args.batches + args.warmup
    rate = default.sample_rate
    clips = make_clips(5.0, size * batches, rate) if args.synthetic else demo_clips(size * batches, rate)
    chunks = [clips[i * size:(i + 1) * size] for i in range(batches)]
    steps = {name: (lambda i, m=model, s=stop: forward(m, chunks[i], args.prompt, s))
             for name, (model, stop) in paths.items()}
    threads = torch.get_num_threads()
    ghz = args.ghz or clock_ghz()
    peak = threads * FLOAT32_FLOPS_PER_CYCLE * ghz
    print(f"{default.model_id}: {cpu_name()}, {threads} threads at {ghz:.2f} GHz (float32 peak {peak:.0f} GFLOP/s); "
          f"torch {torch.__version__}; {'demo speech' if not args.synthetic else 'synthetic'} clips, batch {size}, "
          f"{args.batches} timed + {args.warmup} warm-up batches, {args.clock} clock")
    results = interleaved(steps, batches, args.warmup, torch.device("cpu"), clock)
    tokens = len(default.decoder_prefix(args.prompt))
    flops = {"plain": whisper_flops(default.model.config, tokens, folded=False)}
    flops["default"] = flops["bf16"] = whisper_flops(default.model.config, tokens, folded=True)
    plain_rate, reference = results["plain"]
    print(f"\n{'path':>8} {'clips/s':>8} {'ratio':>6} {'min cos':>9} {'GFLOP/clip':>10} {'GFLOP/s':>8} {'of peak':>7}")
    for name, (rate_, X) in results.items():
        achieved = rate_ * flops[name] / 1e9
        print(f"{name:>8} {rate_:>8.3f} {rate_ / plain_rate:>5.2f}x {min_head_cosine(reference, X):>9.6f} "
              f"{flops[name] / 1e9:>10.1f} {achieved:>8.1f} {achieved / peak:>7.0%}")
    print("ratio and min cos against plain (float32); bf16 runs its matrix products at up to twice the float32 peak")
    if args.demo_accuracy:
        demo_accuracy({"float32": default, "bfloat16": paths["bf16"][0]}, 16,
                      None if args.demo_window >= 30 else args.demo_window)


if __name__ == "__main__":
    main()
