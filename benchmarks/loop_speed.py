"""The user's loop on stored features: ``calm fit`` with and without loading the weights, and
``calm evaluate`` with one worker and with one per core, each measured in this one run.

Every feature must already be in the store (run ``calm extract`` first with the same model,
options and prompt). Each command runs as its own process, start-up included, as a user runs it.

    PYTHONPATH=src python benchmarks/loop_speed.py --fit-data fit5.csv --eval-data dev8.csv \\
        --store store --encoder-seconds 5 [--seeds 10] [--shots 1 3 5 10]

Prints wall and CPU seconds per command, the ratios and the load average (1 minute) after each
figure; the two evaluate reports must be identical (but for the seconds each fit took), which it checks.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EAGER = ("import sys, calm.backbones.loading as loading; "
         "loading.load_backbone_deferred = lambda name, options, store, prompt: loading.load_backbone(name, options); "
         "from calm.cli import main; sys.exit(main(sys.argv[1:]))")
"""``calm`` as before deferred weights: the model is loaded even when every feature is stored."""


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env={**os.environ})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f}"


def results(report: Path) -> str:
    data = json.loads(report.read_text())
    for row in data["results"]:
        row.pop("seconds", None)
    data.pop("config", None)
    return json.dumps(data, sort_keys=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit-data", required=True)
    parser.add_argument("--eval-data", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--encoder-seconds", default=None)
    parser.add_argument("--shots", nargs="+", default=["1", "3", "5", "10"])
    parser.add_argument("--seeds", default="10")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fit-only", action="store_true", help="measure calm fit only")
    args = parser.parse_args()
    window = ["--encoder-seconds", args.encoder_seconds] if args.encoder_seconds else []
    common = ["--model", args.model, "--store", args.store, "--quiet", *window]
    calm = [sys.executable, "-m", "calm"]
    print(f"start: {load()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        fit = ["fit", "--data", args.fit_data, "--out", f"{tmp}/clf.safetensors", *common]
        deferred = min(timed([*calm, *fit]) for _ in range(args.repeats))
        eager = min(timed([sys.executable, "-c", EAGER, *fit]) for _ in range(args.repeats))
        print(f"calm fit, every feature stored (best of {args.repeats}): without loading weights {deferred[0]:.2f} s "
              f"wall, {deferred[1]:.2f} s CPU; loading them {eager[0]:.2f} s wall, {eager[1]:.2f} s CPU "
              f"({eager[0] / deferred[0]:.2f}x wall, {eager[1] / deferred[1]:.2f}x CPU); {load()}")
        if args.fit_only:
            return
        evaluate = ["evaluate", "--data", args.eval_data, "--shots", *args.shots, "--seeds", args.seeds, *common]
        one, one_cpu = timed([*calm, *evaluate, "--workers", "1", "--out", f"{tmp}/one"])
        print(f"calm evaluate, shots {' '.join(args.shots)}, {args.seeds} seeds: {one:.1f} s wall ({one_cpu:.1f} s CPU) "
              f"with one worker; {load()}", flush=True)
        auto, auto_cpu = timed([*calm, *evaluate, "--out", f"{tmp}/auto"])
        same = results(Path(tmp, "one", "report.json")) == results(Path(tmp, "auto", "report.json"))
        print(f"calm evaluate: {auto:.1f} s wall ({auto_cpu:.1f} s CPU) with one worker per core ({os.cpu_count()} "
              f"cores; {one / auto:.2f}x); reports identical: {same}; {load()}")


if __name__ == "__main__":
    main()
