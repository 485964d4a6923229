"""The parts of a processor that adapters building their own inputs use: the feature extractor
(for the sample rate and features) and the tokenizer. Such adapters need neither the processor's
``__call__`` nor its image and video processors (which would need torchvision)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
