"""Answers the model writes: the zero-shot baseline and the pseudo-labels of the self-supervised variant.

Both ask the model one fixed question that names every class in a fixed order
(:func:`calm.evaluation.answers.class_list_prompt`), never per-item options:

* zero-shot: one greedy answer per clip, mapped to a class by
  :func:`calm.evaluation.answers.match_answer`; an answer that maps to no class counts as wrong.
* pseudo-labels: ``samples`` sampled answers per clip; the clip's pseudo-label is the class most
  of them name, kept when that class's share of all samples (unmappable ones included) reaches
  ``threshold`` and no other class ties it.

:func:`generate_answers` runs the model; everything else here is pure and works on its output.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch
from tqdm.auto import tqdm

from calm.data.items import Item
from calm.evaluation.answers import DEFAULT_TEMPLATE, class_list_prompt, match_answer
from calm.heads import media_path
from calm.media import duration, load_audio, load_video

if TYPE_CHECKING:
    from calm.backbones.base import Backbone

SPOOF_TEMPLATE = ("Is the speech in this audio genuine human speech or a spoof (synthetic or converted)? "
                  "Answer with one of these: {classes}.")
"""The question for the spoofing task (classes ``bonafide`` and ``spoof``)."""


def answer_prompt(classes: Sequence[str], task: str = "multiclass", template: str | None = None) -> str:
    """The one question asked of every clip: ``template`` (default: by task) naming all classes, sorted."""
    return class_list_prompt(classes, template or (SPOOF_TEMPLATE if task == "spoof" else DEFAULT_TEMPLATE))


@dataclass
class ModelAnswers:
    """What the model answered, by item id.

    Attributes:
        prompt: the question asked (see :func:`answer_prompt`).
        greedy: item id -> the greedy answer (zero-shot).
        sampled: item id -> the sampled answers (pseudo-labels).
        failed: item id -> why no answer could be generated.
        params: the generation settings (recorded in reports).
    """

    prompt: str
    greedy: dict[str, str] = field(default_factory=dict)
    sampled: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerationConfig:
    """How answers are generated.

    Attributes:
        samples: answers per item.
        do_sample: sample (else greedy).
        temperature: the sampling temperature.
        max_new_tokens: answer length limit.
        seed: sampling is seeded with it, without touching the caller's random state.
    """

    samples: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    max_new_tokens: int = 16
    seed: int = 0


def generate_answers(backbone: Backbone, items: Sequence[Item], prompt: str,
                     config: GenerationConfig = GenerationConfig(), *, batch_size: int = 8,
                     progress: bool = False) -> tuple[dict[str, list[str]], dict[str, str]]:
    """``config.samples`` answers per item (greedy unless ``config.do_sample``), and item id ->
    reason for items whose audio or video could not be loaded (recorded, never dropped silently).
    Video items and audio-only items go in separate batches.
    """
    answers: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    loaded: list[tuple[Item, Any, Any]] = []
    for item in items:
        try:
            loaded.append((item, *_load(backbone, item)))
        except ValueError as error:  # MediaLoadError
            failed[item.id] = str(error)
    bar = tqdm(total=len(loaded), unit="clip", desc="sample" if config.do_sample else "answer", disable=not progress)
    devices = [backbone.device] if backbone.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        for with_video in (False, True):
            group = [entry for entry in loaded if (entry[2] is not None) == with_video]
            for start in range(0, len(group), batch_size):
                batch = group[start:start + batch_size]
                texts = backbone.generate(
                    [audio for _, audio, _ in batch], prompt, max_new_tokens=config.max_new_tokens,
                    do_sample=config.do_sample, temperature=config.temperature, num_return_sequences=config.samples,
                    videos=[video for _, _, video in batch] if with_video else None,
                )
                answers.update((item.id, list(text)) for (item, _, _), text in zip(batch, texts))
                bar.update(len(batch))
    bar.close()
    return answers, failed


def _load(backbone: Backbone, item: Item) -> tuple[Any, Any]:
    """The item's audio at the backbone's rate, and its video frames where the backbone takes video."""
    path = media_path(item)
    audio = load_audio(path, backbone.sample_rate)
    if item.video is None or not backbone.supports_video:
        return audio, None
    return audio, load_video(item.video, backbone.video_frames(duration(path)))


@dataclass(frozen=True)
class PseudoLabel:
    """A clip's majority answer: ``label`` (None when no class has a strict majority among the
    mapped answers) and ``agreement``, the share of all samples that name it."""

    label: str | None
    agreement: float

    def confident(self, threshold: float) -> bool:
        return self.label is not None and self.agreement >= threshold


def pseudo_label(answers: Sequence[str], classes: Sequence[str]) -> PseudoLabel:
    """The majority class named by sampled ``answers`` (see the module docstring)."""
    if not answers:
        return PseudoLabel(None, 0.0)
    votes = Counter(label for label in (match_answer(a, classes).label for a in answers) if label is not None)
    ranked = votes.most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return PseudoLabel(None, ranked[0][1] / len(answers) if ranked else 0.0)
    return PseudoLabel(ranked[0][0], ranked[0][1] / len(answers))
