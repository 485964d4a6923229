"""The evaluation report: every number and the configuration behind it, as JSON, Markdown and PNGs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calm import methods as registry
from calm.classifiers.plots import plot_layer_profile
from calm.evaluation import plots
from calm.evaluation.metrics import mean_interval
from calm.evaluation.trust import TRUST_METRICS
from calm.features import HeadIndex

HEADLINE: dict[str, tuple[str, ...]] = {
    "multiclass": ("accuracy", "macro_f1", "balanced_accuracy"),
    "spoof": ("accuracy", "macro_f1", "balanced_accuracy", "eer"),
    "multilabel": ("map", "macro_f1"),
}
"""Task -> the metrics a report's table shows (the first is the one plotted against shots)."""

METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "balanced_accuracy": "balanced acc.",
                "eer": "EER", "map": "mAP"}


@dataclass
class EvaluationReport:
    """Results of :func:`calm.evaluation.protocol.evaluate` / ``evaluate_features``.

    Attributes:
        task: ``multiclass``, ``spoof`` or ``multilabel``.
        classes: class names, sorted (the order of confusion matrices and weight columns).
        heads: the head index of the features.
        config: everything that produced the numbers (model fingerprint, prompts, shots, seeds,
            methods and their parameters, split protocol and episodes, counts, failed items,
            constant heads).
        results: one row per method x shots x seed: ``metrics`` and counts (plus ``unmapped`` for
            zero-shot, ``pseudo`` for pseudo-label, ``seconds`` to fit and predict).
        confusion: method -> shots -> [C, C] counts summed over seeds (single-label tasks).
        calm_weights: (shots, CALM's weights [K, C] averaged over seeds) at the largest shot count.
        zero_shot: the question, how answers mapped, unmappable examples.
        notes: warnings raised while evaluating (each once).
        reliability: method -> reliability bins at its largest shot count, before and after
            calibration (:meth:`calm.evaluation.trust.TrustRecorder.largest_shot_bins`).
    """

    task: str
    classes: list[str]
    heads: HeadIndex
    config: dict[str, Any]
    results: list[dict[str, Any]]
    confusion: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    calm_weights: tuple[int, np.ndarray] | None = None
    zero_shot: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    reliability: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The headline metrics of this task."""
        return HEADLINE[self.task]

    def summary_rows(self) -> list[dict[str, Any]]:
        """Per method and shot count: ``seeds`` and, per headline metric, the mean over seeds and
        ``<metric>_ci``, the half-width of its 95% interval (None where undefined)."""
        groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for row in self.results:
            groups.setdefault((row["method"], row["shots"]), []).append(row)
        out = []
        for (method, shots), rows in groups.items():
            summary: dict[str, Any] = {"method": method, "shots": shots, "seeds": len(rows)}
            for name in self.metrics:
                values = [r["metrics"][name] for r in rows if _finite(r["metrics"].get(name))]
                mean, half = mean_interval(values) if values else (None, None)
                summary[name], summary[f"{name}_ci"] = mean, half if _finite(half) else None
            pseudo = [r["pseudo"] for r in rows if "pseudo" in r]
            if pseudo:
                summary["pseudo_kept"] = float(np.mean([p["kept"] / p["support"] for p in pseudo]))
                accuracy = [p["label_accuracy"] for p in pseudo if p["label_accuracy"] is not None]
                summary["pseudo_label_accuracy"] = float(np.mean(accuracy)) if accuracy else None
            if "unmapped" in rows[0]:
                summary["unmapped"] = float(np.mean([r["unmapped"] / r["n_query"] for r in rows]))
            out.append(summary)
        return out

    def trust_rows(self) -> list[dict[str, Any]]:
        """Per method and shot count, the mean over seeds of each trust metric (None where none applied)."""
        groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for row in self.results:
            if "trust" in row:
                groups.setdefault((row["method"], row["shots"]), []).append(row["trust"])
        out = []
        for (method, shots), rows in groups.items():
            summary: dict[str, Any] = {"method": method, "shots": shots}
            for name in TRUST_METRICS:
                values = [r[name] for r in rows if _finite(r.get(name))]
                summary[name] = float(np.mean(values)) if values else None
            out.append(summary)
        return out

    def _trust_markdown(self) -> list[str]:
        rows = self.trust_rows()
        if not rows:
            return []
        columns = [("calibrated", "calibrated"), ("ece_uncalibrated", "ECE raw"), ("ece", "ECE"),
                   ("nll_uncalibrated", "NLL raw"), ("nll", "NLL"), ("brier", "Brier"), ("coverage_90", "coverage@90"),
                   ("set_size_90", "set size"),
                   ("auroc", "open-set AUROC"), ("fpr_at_95_tpr", "FPR@95TPR"), ("atypical", "atypical"),
                   ("shifted", "shift flagged")]
        caption = ("Trust (mean over seeds; calibrated: share of seeds whose probabilities were calibrated, 0 "
                   "where they stay raw, as at one shot; ECE/NLL/Brier of the calibrated probabilities, raw = before "
                   "calibration; 90% conformal sets; open set: a quarter of the classes left out of the support, "
                   "their queries unknown, the classifier's open-set score; atypical: share of queries with typicality <= 0.1; "
                   "shift "
                   "flagged: share of seeds whose queries were flagged as unlike the support, where the "
                   "calibrated numbers may not hold):")
        lines = ["", caption, "",
                 "| method | shots | " + " | ".join(label for _, label in columns) + " |",
                 "|" + "---|" * (len(columns) + 2)]
        for row in rows:
            cells = ["—" if row[key] is None else f"{row[key]:.3f}" for key, _ in columns]
            lines.append(f"| {row['method']} | {row['shots']} | " + " | ".join(cells) + " |")
        return lines

    def markdown(self) -> str:
        """A Markdown table (method x shots, mean ± 95% interval over seeds, in %) and notes."""
        seeds = len(self.config.get("seeds", ()))
        header = ["method", "shots"] + [f"{METRIC_NAMES[m]} (%)" for m in self.metrics]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.summary_rows():
            cells = [row["method"], str(row["shots"])]
            cells += [_percent(row[m], row[f"{m}_ci"]) for m in self.metrics]
            lines.append("| " + " | ".join(cells) + " |")
        protocol = self.config.get("protocol", {})
        fingerprint = self.config.get("fingerprint", {})
        lines += ["", f"Task: {self.task}; {len(self.classes)} classes; {self.config['counts']['evaluated']} items "
                  f"({self.config['counts']['failed']} failed); protocol: {protocol.get('name')}, support and query "
                  f"disjoint: {protocol.get('support_query_disjoint')}; mean ± 95% t-interval over {seeds} seed(s).",
                  f"Model: {fingerprint.get('model_id')} ({fingerprint.get('dtype')}); "
                  f"prompt: {self.config.get('prompt')!r}."]
        constant = self.config.get("heads", {}).get("constant", [])
        if constant:
            lines.append(f"Constant heads (carry nothing, left out of votes): {len(constant)} of "
                         f"{self.config['heads']['count']}, e.g. {', '.join(constant[:4])}.")
        lines += self._answer_notes()
        lines += self._trust_markdown()
        if self.notes:
            lines += ["", "Notes:"] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def _answer_notes(self) -> list[str]:
        lines = []
        if self.zero_shot is not None:
            z = self.zero_shot
            lines.append(f"Zero-shot question: {z['prompt']!r}; {z['unmapped']} of {z['answered']} answers named no "
                         f"class (counted wrong)" + (f", e.g. {z['unmapped_examples'][0]['answer']!r}." if
                                                     z["unmapped_examples"] else "."))
        for row in self.summary_rows():
            if "pseudo_kept" in row:
                accuracy = row["pseudo_label_accuracy"]
                lines.append(f"Pseudo-labels at {row['shots']}-shot: {100 * row['pseudo_kept']:.0f}% of the support "
                             "kept, " + (f"{100 * accuracy:.1f}% of them correct." if accuracy is not None
                                         else "none kept."))
        return lines

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (NaN as null)."""
        weights = None
        if self.calm_weights is not None:
            shots, matrix = self.calm_weights
            weights = {"shots": shots, "classes": self.classes, "weights": matrix.round(6).tolist(),
                       "heads": [self.heads.label(k) for k in range(len(self.heads))]}
        return _json_ready({
            "task": self.task, "classes": self.classes, "metrics": list(self.metrics), "config": self.config,
            "summary": self.summary_rows(), "results": self.results,
            "confusion": {m: {str(k): v.tolist() for k, v in by.items()} for m, by in self.confusion.items()},
            "calm_weights": weights, "zero_shot": self.zero_shot, "notes": self.notes,
            "trust": self.trust_rows(), "reliability": self.reliability,
        })

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write report.json, report.md and the PNGs (metric vs shots; where CALM ran, its weight
        heatmap, its weight mass per layer and its confusion matrix at the largest shot count; the
        reliability diagram where trust ran) into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "report.json", "markdown": out / "report.md"}
        paths["json"].write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        paths["markdown"].write_text(f"# Evaluation: {self.config.get('fingerprint', {}).get('model_id')}\n\n"
                                     + self.markdown(), errors="surrogateescape")  # non-UTF-8 names as their bytes
        metric = self.metrics[0]
        chat = [name for name in registry.names() if registry.get(name).needs_chat_model]
        paths["shots_plot"] = plots.plot_metric_vs_shots(self.summary_rows(), metric, out / f"{metric}_vs_shots.png",
                                                         label=METRIC_NAMES[metric], dashed=chat)
        if self.calm_weights is not None:
            shots, weights = self.calm_weights
            paths["weights_plot"] = plots.plot_class_weights(weights, self.classes, self.heads,
                                                             out / "calm_weights.png",
                                                             title=f"CALM head weights, {shots}-shot, mean over seeds")
            paths["layer_profile_plot"] = plot_layer_profile(weights, out / "calm_layer_profile.png", heads=self.heads,
                                                             title=f"CALM weight mass per layer, {shots}-shot")
        if self.reliability:
            paths["reliability_plot"] = plots.plot_reliability(self.reliability, out / "reliability.png")
        shown = registry.FIGURE_METHOD
        if shown in self.confusion:
            shots = max(self.confusion[shown])
            paths["confusion_plot"] = plots.plot_confusion(self.confusion[shown][shots], self.classes,
                                                           out / f"confusion_{shown}.png",
                                                           title=f"{shown.upper()}, {shots}-shot, summed over seeds")
        return paths


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _percent(mean: float | None, half: float | None) -> str:
    if mean is None:
        return "—"
    return f"{100 * mean:.1f}" + (f" ± {100 * half:.1f}" if half is not None else "")


def _json_ready(value: Any) -> Any:
    """Numpy scalars and arrays as Python values, non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
