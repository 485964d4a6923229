"""A backbone's prompt as token ids, rendered and tokenised once per prompt.

Every clip of an extraction has the same prompt; only the number of audio (and video) tokens in
it depends on the clip. So the chat template is rendered and the result tokenised once, and each
batch splices each clip's own number of placeholder tokens into those ids
(:meth:`PromptTokens.batch`). The ids equal those of tokenising each clip's expanded text, because
the placeholders are special tokens, which tokenizers split out before anything else (a test
checks every family against the ids it built before).
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping, Sequence, TypeVar

import torch

T = TypeVar("T")


class PromptTokens:
    """Rendered prompts and token ids of one backbone, each computed once and kept."""

    def __init__(self, backbone: Any) -> None:
        self.backbone = backbone
        self._kept: dict[Hashable, Any] = {}

    def kept(self, key: Hashable, make: Callable[[], T]) -> T:
        """``make()``, computed the first time ``key`` is asked for."""
        if key not in self._kept:
            self._kept[key] = make()
        return self._kept[key]

    def rendered(self, prompt: str, with_video: bool = False) -> str:
        """:meth:`~calm.backbones.base.Backbone.render_prompt`, rendered once."""
        return self.kept(("rendered", prompt, with_video), lambda: self.backbone.render_prompt(prompt, with_video))

    def encode(self, text: str, special_tokens: bool = True) -> tuple[int, ...]:
        """The tokenizer's ids of ``text`` (with its special tokens, e.g. a BOS, if ``special_tokens``)."""
        tokenizer = self.backbone.tokenizer
        return self.kept(("encoded", text, special_tokens),
                         lambda: tuple(tokenizer(text, add_special_tokens=special_tokens)["input_ids"]))

    def ids(self, prompt: str, with_video: bool = False, special_tokens: bool = True) -> tuple[int, ...]:
        """Token ids of the rendered prompt (one placeholder token per audio or video part)."""
        return self.encode(self.rendered(prompt, with_video), special_tokens)

    def batch(self, template: Sequence[int], counts: Sequence[Mapping[str, int]], padding_side: str,
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T] token ids and attention mask: for each clip, ``template`` with each placeholder
        token named in its ``counts`` repeated that many times (each must occur once in it)."""
        tokenizer = self.backbone.tokenizer
        sequences = []
        for clip in counts:
            ids = list(template)
            for token, count in clip.items():
                token_id = tokenizer.convert_tokens_to_ids(token)
                if ids.count(token_id) != 1:
                    raise ValueError(f"the rendered prompt has {ids.count(token_id)} {token} tokens; expected 1")
                at = ids.index(token_id)
                ids[at:at + 1] = [token_id] * int(count)
            sequences.append(ids)
        return pad_sequences(sequences, tokenizer.pad_token_id, padding_side)


def pad_sequences(
    sequences: Sequence[Sequence[int]], pad_id: int | None, side: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] token ids and attention mask of sequences padded on ``side`` with ``pad_id``."""
    if pad_id is None:
        raise ValueError("the tokenizer has no padding token")
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        span = slice(length - len(sequence), length) if side == "left" else slice(0, len(sequence))
        ids[row, span] = torch.tensor(list(sequence), dtype=torch.long)
        mask[row, span] = 1
    return ids, mask
