"""Head features: the [N, K, D] array of per-head vectors and the index that names each head."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np


@dataclass(frozen=True)
class HeadIndex:
    """Names the K heads of a feature array: for head k, its site kind, decoder layer and head.

    ``sites`` are short site kinds such as ``"self_attn"`` or ``"cross_attn"``; the K heads are
    ordered site by site in the order the backbone reports its sites, then by head.
    """

    sites: tuple[str, ...]
    layers: tuple[int, ...]
    heads: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (len(self.sites) == len(self.layers) == len(self.heads)):
            raise ValueError("HeadIndex: sites, layers and heads must have the same length")

    @classmethod
    def from_tuples(cls, triples: Iterable[tuple[str, int, int]]) -> "HeadIndex":
        triples = list(triples)
        return cls(
            tuple(str(s) for s, _, _ in triples),
            tuple(int(l) for _, l, _ in triples),
            tuple(int(h) for _, _, h in triples),
        )

    def __len__(self) -> int:
        return len(self.sites)

    def __getitem__(self, k: int) -> tuple[str, int, int]:
        return self.sites[k], self.layers[k], self.heads[k]

    def __iter__(self):
        return zip(self.sites, self.layers, self.heads)

    def label(self, k: int) -> str:
        """A short human name for head k, e.g. ``"self_attn L3 H7"``."""
        site, layer, head = self[k]
        return f"{site} L{layer} H{head}"

    def to_dict(self) -> dict[str, list]:
        return {"sites": list(self.sites), "layers": list(self.layers), "heads": list(self.heads)}

    @classmethod
    def from_dict(cls, data: dict[str, Sequence]) -> "HeadIndex":
        return cls(tuple(data["sites"]), tuple(int(x) for x in data["layers"]), tuple(int(x) for x in data["heads"]))


@dataclass
class HeadFeatures:
    """Per-head vectors at the last prompt token for N items.

    Attributes:
        X: array of shape [N, K, D] (float16 when read from a store, possibly memory-mapped).
        heads: which (site, layer, head) each of the K vectors comes from.
        ids: the item ids, in the order of X's rows.
        fingerprint: what determined the features (model, revision, dtype, prompt, sites);
            classifiers keep it to refuse features from another backbone or prompt.
        failed: item id -> reason, for items that could not be processed.
        content: item id -> SHA-256 of the file whose audio was used, where extraction read it
            (with a store, whose keys rest on it), so evaluation need not read the files again.
    """

    X: np.ndarray
    heads: HeadIndex
    ids: list[str]
    fingerprint: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    content: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.X.ndim != 3:
            raise ValueError(f"HeadFeatures.X must be [N, K, D], got shape {self.X.shape}")
        if self.X.shape[0] != len(self.ids):
            raise ValueError(f"HeadFeatures: {self.X.shape[0]} rows but {len(self.ids)} ids")
        if self.X.shape[1] != len(self.heads):
            raise ValueError(f"HeadFeatures: {self.X.shape[1]} heads in X but {len(self.heads)} in the index")

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, ids: Sequence[str]) -> "HeadFeatures":
        """The rows of the given ids, in that order; a missing id raises KeyError naming it."""
        position = {item_id: i for i, item_id in enumerate(self.ids)}
        missing = [i for i in ids if i not in position]
        if missing:
            raise KeyError(f"no features for {len(missing)} item(s), e.g. {missing[:3]}")
        rows = np.fromiter((position[i] for i in ids), dtype=np.int64, count=len(ids))
        return HeadFeatures(np.asarray(self.X[rows]), self.heads, list(ids), dict(self.fingerprint), {})
