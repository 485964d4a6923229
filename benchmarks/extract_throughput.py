"""Extraction throughput: the plain (reference) path against the fast path, in one run, on the
same clips; prints clips/s for each, their ratio and the minimum per-head cosine between the two
paths' features.

    python benchmarks/extract_throughput.py --device cuda          # Qwen2-Audio-7B shape, bf16, batch 64
    python benchmarks/extract_throughput.py --device cuda --compile  # then also the compiled fast path
    python benchmarks/extract_throughput.py --device cpu           # same proportions: 1/8 width, 4+4 layers
    python benchmarks/extract_throughput.py --device cpu --threads 1 --clock cpu   # on a shared CPU
    python benchmarks/extract_throughput.py --device cpu --threads 1 --loaders 4  # + background loading
    python benchmarks/extract_throughput.py --model whisper-base [--demo-accuracy]  # is trimming exact?

The Qwen2-Audio model has random weights in the exact Qwen2-Audio-7B shape (text: 32 layers,
hidden 4096, 32 heads, 32 kv heads, MLP 11008, vocab 156032; audio encoder: 32 layers, d_model
1280, 20 heads, 128 mels), built directly on the device in its dtype, SDPA attention. Its
tokenizer is calm.backbones.tiny's byte-level one with the real special tokens, plus the chat template's
words as single tokens, so prompts have about as many tokens as with the real tokenizer.

Two timings per path; batches of the paths alternate (so both meet the same load on a shared
machine) and clips/s comes from the median batch time, warm-up batches excluded:

* ``forward``: inputs built beforehand; one forward pass with hooks on every site and the copy of
  the features to the CPU (what the GPU anchor figures in docs/benchmarks.md measure).
* ``e2e``: ``calm.extract`` end to end from WAV files: decoding, input building (the plain
  path's processor computes 30 s of log-mel on the CPU; the fast path only the needed frames, on
  the device), forward, copy.

With ``--loaders N``, then whole ``calm.extract`` runs (several batches, wall clock) over the same
clips stored as datasets store them, 44.1 kHz stereo FLAC, with decoding and input building
inline (``loaders=0``) and with N loader processes: how much of the loading the overlap with the
model hides.

Plain: the model's own call on the processor's inputs (``BackboneOptions(fast=False)``, the
reference path). Fast: ``fast=True``, calm's default (trimmed log-mel and encoder,
:mod:`calm.backbones.qwen2_audio_fast`) with ``stop_after_last_site``. For Whisper the "fast"
column is the opt-in fixed encoder window (``encoder_seconds=5``, the demo's setting);
Whisper has no padding mask, so this is not exact: the columns show how much the features change,
and ``--demo-accuracy`` what it does to the demo's spoken-numbers task.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import soundfile
import soxr
import torch

from calm.backbones.base import Backbone, BackboneOptions, compile_layers, resolve_dtype
from calm.backbones.qwen2_audio import Qwen2AudioBackbone
from calm.backbones.tiny import QWEN_SPECIALS, tiny_tokenizer
from calm.backbones.whisper import WhisperBackbone
from calm.capture import HeadCapture
from calm.data.items import Item
from calm.heads import extract

PROMPT = "What is the sound in this recording? Answer in one word."

QWEN2_AUDIO_7B: dict[str, dict[str, Any]] = {
    "text": dict(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=32,
                 intermediate_size=11008, vocab_size=156032),
    "audio": dict(encoder_layers=32, d_model=1280, encoder_attention_heads=20, encoder_ffn_dim=5120),
}
"""The Qwen2-Audio-7B(-Instruct) shape."""

QWEN2_AUDIO_CPU: dict[str, dict[str, Any]] = {
    "text": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=4, num_key_value_heads=4,
                 intermediate_size=1376, vocab_size=156032),
    "audio": dict(encoder_layers=4, d_model=160, encoder_attention_heads=4, encoder_ffn_dim=640),
}
"""1/8 of the width (head size 128 in the decoder), 4 layers each: the 7B's proportions, CPU-sized."""

TEMPLATE_WORDS = ("system", "You", " are", " a", " helpful", " assistant", "user", "assistant", "Audio", " 1",
                  "What", " is", " the", " sound", " in", " this", " recording", " Answer", " in", " one", " word")
"""Words of the chat template and prompt made single tokens, as Qwen's BPE has them."""


def qwen2_audio_backbone(shape: dict[str, dict[str, Any]], device: torch.device, dtype: torch.dtype) -> Backbone:
    """A random Qwen2-Audio of ``shape``, built on ``device`` in ``dtype`` (no download)."""
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    audio_specials = ("<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")
    tokenizer = tiny_tokenizer(QWEN_SPECIALS + audio_specials + TEMPLATE_WORDS, eos="<|im_end|>",
                               pad="<|endoftext|>")
    processor = Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tokenizer)
    config = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=128, **shape["audio"]),
        text_config=dict(model_type="qwen2", max_position_embeddings=8192, rms_norm_eps=1e-6, **shape["text"]),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    with torch.device(device):
        model = Qwen2AudioForConditionalGeneration._from_config(config, attn_implementation="sdpa", dtype=dtype)
    options = BackboneOptions(device=str(device), fast=False)  # the plain path; fast_twin gives the fast one
    return Qwen2AudioBackbone(model, processor, model_id="random:qwen2-audio", options=options)


def make_clips(seconds: float, count: int, rate: int, seed: int = 0) -> list[np.ndarray]:
    """Distinct clips: a few tones with a random envelope in noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    clips = []
    for _ in range(count):
        tones = sum(np.sin(2 * np.pi * rng.uniform(100, 4000) * t + rng.uniform(0, 6)) for _ in range(3))
        envelope = np.interp(t, np.linspace(0, seconds, 8), rng.uniform(0.1, 1.0, 8))
        clips.append((0.1 * tones * envelope + 0.02 * rng.standard_normal(t.size)).astype(np.float32))
    return clips


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


Step = Callable[[int], np.ndarray]
"""One path's work on batch i, returning its [B, K, D] features."""


def interleaved(steps: dict[str, Step], batches: int, warmup: int, device: torch.device,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Run the paths' steps batch by batch, alternating paths so that both meet the same machine
    load; per path: clips/s from the median batch time (warm-up batches excluded) and the features."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    features: dict[str, list[np.ndarray]] = {name: [] for name in steps}
    for index in range(batches):
        for name, step in steps.items():
            synchronize(device)
            start = clock()
            X = step(index)
            synchronize(device)
            if index >= warmup:
                times[name].append(clock() - start)
                features[name].append(X)
    return {name: (len(features[name][0]) / float(np.median(times[name])), np.concatenate(features[name]))
            for name in steps}


def forward_step(backbone: Backbone, prepared: Sequence[dict[str, Any]], stop: bool) -> Step:
    """A forward pass with hooks on every site, on prebuilt inputs."""
    def step(index: int) -> np.ndarray:
        inputs = prepared[index]
        with HeadCapture(backbone, stop_after_last_site=stop) as capture, torch.inference_mode():
            capture.expect(backbone.token_mask(inputs))
            backbone.forward(inputs)
            return capture.collect().numpy()

    return step


def extract_step(backbone: Backbone, chunks: Sequence[Sequence[Item]], stop: bool) -> Step:
    """``calm.extract`` of one batch of files, end to end."""
    def step(index: int) -> np.ndarray:
        chunk = chunks[index]
        return extract(backbone, chunk, PROMPT, batch_size=len(chunk), stop_after_last_site=stop,
                       dtype=np.float32).X

    return step


RECORDING_RATE = 44100
"""The rate of the FLAC files for ``--loaders`` (ESC-50's and many recordings')."""


def write_recordings(clips: Sequence[np.ndarray], rate: int, root: Path, prefix: str) -> list[Item]:
    """The clips as dataset files usually are: 44.1 kHz stereo FLAC (decoded and resampled on load)."""
    items = []
    for i, clip in enumerate(clips):
        path = root / f"{prefix}{i:04d}.flac"
        wide = soxr.resample(clip, rate, RECORDING_RATE)
        soundfile.write(path, np.stack([wide, wide], axis=1), RECORDING_RATE)
        items.append(Item(path.stem, path))
    return items


def loader_rates(backbone: Backbone, fast: Backbone, items: Sequence[Item], batch_size: int, stop: bool,
                 threads: int) -> dict[str, list[float]]:
    """Wall-clock clips/s of whole ``calm.extract`` runs over ``items`` (several batches): per path,
    [everything inline (``loaders=0``), ``threads`` loader processes]; runs alternate, best of two
    each."""
    best = {"plain": [0.0, 0.0], "fast": [0.0, 0.0]}
    for _ in range(2):
        for name, model, path_stop in (("plain", backbone, False), ("fast", fast, stop)):
            for slot, loaders in enumerate((0, threads)):
                synchronize(backbone.device)
                start = time.perf_counter()
                extract(model, items, PROMPT, batch_size=batch_size, stop_after_last_site=path_stop,
                        loaders=loaders)
                synchronize(backbone.device)
                best[name][slot] = max(best[name][slot], len(items) / (time.perf_counter() - start))
    return best


def min_head_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest cosine between matching head vectors of two [N, K, D] arrays."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    dots = (a * b).sum(-1)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return float((dots / np.maximum(norms, 1e-30)).min())


def write_items(clips: Sequence[np.ndarray], rate: int, root: Path, prefix: str) -> list[Item]:
    items = []
    for i, clip in enumerate(clips):
        path = root / f"{prefix}{i:04d}.wav"
        soundfile.write(path, clip, rate, subtype="FLOAT")
        items.append(Item(f"{prefix}{i:04d}", path))
    return items


WHISPER_WINDOW_SECONDS = 5.0
"""The trimmed Whisper window measured here: the demo's (its clips last at most 5 s)."""


def fast_twin(backbone: Backbone) -> Backbone:
    """The fast path on the same model: Qwen2-Audio with ``fast=True``; Whisper with the
    encoder window of :data:`WHISPER_WINDOW_SECONDS` (``encoder_seconds``, not exact)."""
    if isinstance(backbone, WhisperBackbone):
        return backbone.with_options(encoder_seconds=WHISPER_WINDOW_SECONDS, fast=True)
    return backbone.with_options(fast=True)


def benchmark(backbone: Backbone, fast: Backbone, seconds: float, args: argparse.Namespace,
              root: Path) -> dict[str, Any]:
    """Both paths on the same clips of one duration; a row of the table."""
    rate, size = backbone.sample_rate, args.batch_size
    batches = args.batches + args.warmup
    clips = make_clips(seconds, size * batches, rate, seed=int(seconds * 1000))
    chunks = [clips[i * size:(i + 1) * size] for i in range(batches)]
    plain_inputs = [backbone.build_inputs(chunk, PROMPT) for chunk in chunks]
    fast_inputs = [fast.build_inputs(chunk, PROMPT) for chunk in chunks]
    stop = not isinstance(fast, WhisperBackbone)
    steps = {"plain": forward_step(backbone, plain_inputs, stop=False),
             "fast": forward_step(fast, fast_inputs, stop=stop)}
    if args.extract:
        items = write_items(clips, rate, root, f"s{seconds:g}-")
        files = [items[i * size:(i + 1) * size] for i in range(batches)]
        steps["plain e2e"] = extract_step(backbone, files, stop=False)
        steps["fast e2e"] = extract_step(fast, files, stop=stop)
    results = interleaved(steps, batches, args.warmup, backbone.device, args.clock)
    tokens = backbone.token_mask(fast_inputs[0]).shape[1]
    row: dict[str, Any] = {"seconds": seconds, "tokens": tokens, "clips": size * args.batches,
                           "_steps": steps, "_reference": results["plain"][1]}
    for kind in ("", " e2e"):
        if "plain" + kind in results:
            (plain_rate, X_plain), (fast_rate, X_fast) = results["plain" + kind], results["fast" + kind]
            row["plain" + kind], row["fast" + kind] = plain_rate, fast_rate
            row["cos" + kind] = min_head_cosine(X_plain, X_fast)
            row["maxdiff" + kind] = float(np.abs(X_plain - X_fast).max())
    if args.loaders:
        recordings = write_recordings(clips, rate, root, f"r{seconds:g}-")
        row["loaders"] = loader_rates(backbone, fast, recordings, size, stop, args.loaders)
        row["loader processes"] = args.loaders
    return row


def benchmark_compiled(backbone: Backbone, row: dict[str, Any], args: argparse.Namespace) -> None:
    """The fast path again, on the same inputs, after :func:`compile_layers` (run last, as it
    changes the layers in place); the warm-up batch absorbs the compilation."""
    step = row["_steps"]["fast"]
    batches = args.batches + args.warmup
    rate, X = interleaved({"compiled": step}, batches, args.warmup, backbone.device, args.clock)["compiled"]
    row["compiled"], row["cos compiled"] = rate, min_head_cosine(row["_reference"], X)


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    """clips/s per path, ratio and agreement, one line per clip duration."""
    kinds = [kind for kind in ("", " e2e") if "plain" + kind in rows[0]]
    header = f"{'clip s':>6} {'tokens':>6} {'clips':>5}"
    for kind in kinds:
        header += f" | {'plain' + kind:>9} {'fast' + kind:>8} {'ratio':>6} {'min cos':>9} {'max|diff|':>9}"
    if "compiled" in rows[0]:
        header += f" | {'fast+compile':>12} {'ratio':>6} {'min cos':>9}"
    print(header)
    print("-" * len(header))
    for row in rows:
        line = f"{row['seconds']:>6g} {row['tokens']:>6d} {row['clips']:>5d}"
        for kind in kinds:
            plain, fast = row["plain" + kind], row["fast" + kind]
            line += (f" | {plain:>9.2f} {fast:>8.2f} {fast / plain:>5.2f}x {row['cos' + kind]:>9.6f} "
                     f"{row['maxdiff' + kind]:>9.2e}")
        if "compiled" in row:
            line += f" | {row['compiled']:>12.2f} {row['compiled'] / row['plain']:>5.2f}x {row['cos compiled']:>9.6f}"
        print(line)
    print("clips/s from the median batch time; min cos: smallest per-head cosine between the paths' features")
    if "loaders" in rows[0]:
        print(f"\nwhole calm.extract runs over the clips as 44.1 kHz stereo FLAC (wall clock, best of 2): clips/s "
              f"with loading inline -> with {rows[0]['loader processes']} loader processes")
        for row in rows:
            print(f"{row['seconds']:>6g} s: " + "; ".join(
                f"{name} {inline:.2f} -> {threaded:.2f} ({threaded / inline:.2f}x)"
                for name, (inline, threaded) in row["loaders"].items()))


def cpu_name() -> str:
    """The CPU model (Linux), else what the platform module knows."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    return name or platform.processor() or "cpu"


def demo_accuracy(backbone: Backbone, trimmed: Backbone, batch_size: int) -> None:
    """Accuracy of the demo's methods on its spoken-numbers task, on Whisper's features and on the
    trimmed encoder's (features in the calm cache's store, so a finished ``calm demo`` run is
    reused for the plain side)."""
    from calm.cache import cache_dir
    from calm.devdata.recipes import prepare
    from calm.data.loaders import load_dataset
    from calm.demo import DEMO_TASKS
    from calm.evaluation.protocol import evaluate_features

    task = DEMO_TASKS[0]
    items = load_dataset(prepare(task.recipe))
    accuracy = {}
    for name, model in (("plain", backbone), ("trimmed", trimmed)):
        features = extract(model, items, task.prompt, batch_size=batch_size, store=cache_dir("features"),
                           progress=True)
        report = evaluate_features(features, items, shots=task.shots, seeds=5)
        accuracy[name] = {(r["method"], r["shots"]): r["accuracy"] for r in report.summary_rows()}
    print(f"\n{task.recipe}: accuracy (%), mean over 5 seeds")
    print(f"{'method':>12} {'shots':>5} {'plain':>7} {'trimmed':>8}")
    for (method, shots), value in accuracy["plain"].items():
        cells = [value, accuracy["trimmed"].get((method, shots))]
        plain, trimmed = ("-" if v is None else f"{100 * v:.1f}" for v in cells)  # None: not evaluated
        print(f"{method:>12} {shots:>5d} {plain:>7} {trimmed:>8}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="qwen2-audio", choices=["qwen2-audio", "whisper-base"])
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on a GPU, float32 on the CPU")
    parser.add_argument("--seconds", type=float, nargs="+", default=[5.0, 10.0, 2.0])
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 on a GPU, 4 on the CPU")
    parser.add_argument("--batches", type=int, default=3, help="timed batches per path")
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches before timing")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: time batches by the process's CPU time (for a CPU shared with other jobs)")
    parser.add_argument("--no-extract", dest="extract", action="store_false", help="skip the end-to-end timing")
    parser.add_argument("--loaders", type=int, default=0, metavar="N",
                        help="then also whole calm.extract runs over FLAC files, loading inline and with N "
                             "loader processes (each run starts its own; they import this script, torch included)")
    parser.add_argument("--compile", action="store_true",
                        help="Qwen2-Audio: then also time the fast path with every encoder and decoder layer compiled")
    parser.add_argument("--demo-accuracy", action="store_true",
                        help="whisper-base: then also the demo's spoken-numbers accuracy, plain vs trimmed")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.clock = time.process_time if args.clock == "cpu" else time.perf_counter
    device = torch.device(args.device)
    gpu = device.type != "cpu"
    args.batch_size = args.batch_size or (64 if gpu else 4)
    dtype = resolve_dtype(args.dtype, device)
    started = time.perf_counter()
    whisper = args.model == "whisper-base"
    if whisper:
        from calm.backbones import load_backbone

        backbone = load_backbone("whisper-base", device=str(device), dtype=str(dtype).removeprefix("torch."),
                                 fast=False)  # the plain loop; benchmarks/whisper_cpu.py times the exact fast path
    else:
        backbone = qwen2_audio_backbone(QWEN2_AUDIO_7B if gpu else QWEN2_AUDIO_CPU, device, dtype)
    fast = fast_twin(backbone)
    built = time.perf_counter() - started
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_name()}, " \
        f"{torch.get_num_threads()} threads"
    params = sum(p.numel() for p in backbone.model.parameters()) / 1e9
    print(f"{backbone.model_id}: {params:.2f}B parameters, {dtype}, {len(backbone.head_index())} heads; "
          f"{name}; torch {torch.__version__}, transformers {__import__('transformers').__version__}; "
          f"batch {args.batch_size}, {args.batches} timed + {args.warmup} warm-up batches, "
          f"{'CPU' if args.clock is time.process_time else 'wall'} clock; built in {built:.1f} s")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seconds in args.seconds:
            row = benchmark(backbone, fast, seconds, args, Path(tmp))
            rows.append(row)
            print(f"  {seconds:g} s clips: plain {row['plain']:.2f}, fast {row['fast']:.2f} clips/s "
                  f"({row['fast'] / row['plain']:.2f}x), min cos {row['cos']:.6f}", flush=True)
    print_table(rows)
    if args.compile and not whisper:
        started = time.perf_counter()
        compile_layers(backbone.model)
        for row in rows:
            benchmark_compiled(backbone, row, args)
            print(f"  {row['seconds']:g} s clips compiled: {row['compiled']:.2f} clips/s", flush=True)
        print(f"compiled runs: {time.perf_counter() - started:.0f} s with compilation")
        print_table(rows)
    if args.demo_accuracy and whisper:
        demo_accuracy(backbone, fast, args.batch_size)


if __name__ == "__main__":
    main()
