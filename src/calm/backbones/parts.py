"""Bases for adapters that build their own inputs from the parts of a processor (the feature
extractor, for the sample rate and features, and the tokenizer): such adapters need neither the
processor's ``__call__`` nor its image and video processors (which would need torchvision)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from calm.backbones.base import Backbone


@dataclass
class ProcessorParts:
    """A feature extractor and a tokenizer."""

    feature_extractor: Any
    tokenizer: Any

    @classmethod
    def from_pretrained(cls, transformers: Any, name_or_path: str) -> "ProcessorParts":
        """The checkpoint's own feature extractor and tokenizer."""
        return cls(transformers.AutoFeatureExtractor.from_pretrained(name_or_path),
                   transformers.AutoTokenizer.from_pretrained(name_or_path))


class AudioPartsBackbone(Backbone):
    """An audio-only adapter that builds its inputs itself (:meth:`audio_inputs`) from
    :class:`ProcessorParts`."""

    @classmethod
    def load_processor(cls, transformers: Any, name_or_path: str) -> Any:
        return ProcessorParts.from_pretrained(transformers, name_or_path)

    def build_inputs(
        self, audios: Sequence[np.ndarray], prompt: str, videos: Sequence[np.ndarray] | None = None,
        padding_side: str | None = None,
    ) -> dict[str, torch.Tensor]:
        if videos is not None:
            raise ValueError(f"{self.family} backbones take no video")
        return self.audio_inputs(audios, prompt, padding_side or self.padding_side)

    def audio_inputs(self, audios: Sequence[np.ndarray], prompt: str, padding_side: str) -> dict[str, torch.Tensor]:
        """The model inputs of a batch of clips (see :meth:`Backbone.build_inputs`)."""
        raise NotImplementedError


class EmbeddingInputsBackbone(AudioPartsBackbone):
    """An adapter whose model runs on input embeddings it makes itself (:meth:`input_embeddings`,
    e.g. each clip's audio encoded on its own), with 1-D positions over real tokens."""

    def input_embeddings(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, T, hidden] decoder inputs for the batch."""
        raise NotImplementedError

    def forward_kwargs(self, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        mask = inputs["attention_mask"]
        return {"inputs_embeds": self.input_embeddings(inputs), "attention_mask": mask,
                "position_ids": self.positions(mask), "use_cache": False}

    def run_generate(self, inputs: dict[str, torch.Tensor], options: dict[str, Any]) -> torch.Tensor:
        # From embeddings, generate returns the new tokens only (see prompt_length).
        return self.model.generate(inputs_embeds=self.input_embeddings(inputs), attention_mask=inputs["attention_mask"],
                                   pad_token_id=self.tokenizer.pad_token_id, **options)

    def prompt_length(self, inputs: dict[str, torch.Tensor]) -> int:
        return 0
