"""A file's scan drawn over time: each class's probability per window, the threshold, the events."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calm.scanning.run import FileScan


def plot_timeline(result: FileScan, path: str | Path, threshold: float | None = None) -> Path:
    """Draw ``result`` to a PNG at ``path``: one step line per class (probability of the window
    whose span covers that time), events as shaded bands in their class's colour with the label,
    rejected windows as grey ticks along the bottom, and the threshold as a dashed line."""
    if result.windows is None:
        raise ValueError(f"{result.path}: nothing to draw, the file could not be read ({result.error})")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spans = result.windows.spans
    minutes = result.seconds > 600
    scale = 60.0 if minutes else 1.0
    x = spans / scale
    fig, ax = plt.subplots(figsize=(12, 3.6))
    colours = {c: plt.get_cmap("tab10")(k % 10) for k, c in enumerate(result.classes)}
    for k, name in enumerate(result.classes):
        p = result.probabilities[:, k]
        ax.stairs(p, x, color=colours[name], linewidth=1.0, label=name)
    for event in result.events:
        ax.axvspan(event.onset / scale, event.offset / scale, color=colours[event.label], alpha=0.18, linewidth=0)
        ax.text((event.onset + event.offset) / 2 / scale, 1.02, event.label, ha="center", va="bottom", fontsize=7,
                color=colours[event.label], clip_on=False)
    if result.rejected is not None and result.rejected.any():
        centres = (x[:-1] + x[1:])[result.rejected] / 2
        ax.plot(centres, np.full(len(centres), -0.03), "|", color="grey", markersize=6, label="rejected")
    if threshold is not None:
        ax.axhline(threshold, color="black", linestyle="--", linewidth=0.8, label="threshold")
    ax.set_xlim(0, x[-1])
    ax.set_ylim(-0.06, 1.0)
    ax.set_xlabel("time (min)" if minutes else "time (s)")
    ax.set_ylabel("probability")
    ax.set_title(f"{Path(result.path).name}: {len(result.events)} event(s)", fontsize=10, pad=14)
    ax.legend(loc="upper right", fontsize=7, ncol=min(6, len(result.classes) + 2), framealpha=0.8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
