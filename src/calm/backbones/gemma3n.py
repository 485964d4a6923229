"""Gemma 3n, audio only (``Gemma3nForConditionalGeneration``): the USM-style conformer audio
encoder feeding the Gemma 3n decoder. Sites: the decoder's ``self_attn.o_proj`` (gemma-3n-E4B:
35 layers x 8 heads, D = 256; E2B: 30 x 8).

The prompt is one user turn through the tokenizer's chat template, ``<bos><start_of_turn>user\\n
<audio_soft_token>{prompt}<end_of_turn>\\n<start_of_turn>model\\n``, and the audio token is then
expanded as the processor does: ``\\n\\n<start_of_audio>`` + ``audio_soft_tokens_per_image``
(188) soft tokens + ``<end_of_audio>\\n\\n``, so every clip has the same number of tokens (clips
shorter than 30 s fill the rest with the model's audio padding embedding; longer ones are cut to
:attr:`Gemma3nBackbone.max_seconds`). Each clip's log-mel is computed on its own and padded to the
batch's longest. In the model's own batched call a clip's audio embeddings change with the other
clips' lengths, so here the model's own embedding step (audio encoder included) runs clip by clip
on that clip's frames, stopped where it calls the language model, and the language model then
runs once on the batch of those inputs. Positions are 1-D, counted over real tokens.

The checkpoint's vision tower (MobileNetV5) is built through ``timm``, which needs torchvision:
loading the released model needs both (``pip install timm torchvision`` matching your torch).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from calm.backbones.base import StopForward
from calm.backbones.sites import find_decoder
from calm.backbones.parts import AudioPartsBackbone


class Gemma3nBackbone(AudioPartsBackbone):
    family = "gemma3n"
    model_types = ("gemma3n",)
    model_class = "Gemma3nForConditionalGeneration"

    @property
    def max_seconds(self) -> float:
        """Audio beyond this is cut: what the soft tokens cover (16 mel frames of 10 ms per token; the
        released models' 188 cover 30 s), at most 30 s."""
        return min(30.0, int(self.model.config.audio_soft_tokens_per_image) * 0.16)

    @property
    def window_seconds(self) -> float | None:
        return self.max_seconds

    def render_prompt(self, prompt: str, with_video: bool = False) -> str:
        return self.tokenizer.apply_chat_template(self.prompt_messages(prompt), add_generation_prompt=True,
                                                  tokenize=False)

    def audio_sequence(self) -> str:
        """What one audio token becomes: the begin/end markers around the soft tokens."""
        tokenizer = self.tokenizer
        soft = tokenizer.audio_token * int(self.model.config.audio_soft_tokens_per_image)
        return f"\n\n{tokenizer.boa_token}{soft}{tokenizer.eoa_token}\n\n"

    def audio_inputs(self, audios: Sequence[np.ndarray], prompt: str, padding_side: str) -> dict[str, torch.Tensor]:
        fe, limit = self.processor.feature_extractor, int(self.max_seconds * self.sample_rate)
        clips = [fe([audio[:limit]], sampling_rate=self.sample_rate, max_length=limit, return_tensors="pt")
                 for audio in audios]
        features = [clip["input_features"][0] for clip in clips]
        masks = [clip["input_features_mask"][0] for clip in clips]
        text = self.prompt_tokens.kept(("expanded", prompt), lambda: self.prompt_tokens.rendered(prompt).replace(
            self.tokenizer.audio_token, self.audio_sequence(), 1))
        ids, mask = self.prompt_tokens.batch(self.prompt_tokens.encode(text, special_tokens=False),
                                             [{}] * len(audios), padding_side)  # the same tokens for every clip
        return self.to_device({
            "input_ids": ids, "attention_mask": mask,
            "input_features": torch.nn.utils.rnn.pad_sequence(features, batch_first=True),
            "input_features_mask": torch.nn.utils.rnn.pad_sequence(masks, batch_first=True),
            "audio_frames": torch.tensor([len(f) for f in features]),
        })

    def decoder_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The language model's call for the batch: its embedding inputs made clip by clip by the
        model's own forward (on that clip's frames only), stopped as it calls the language model."""
        decoder = find_decoder(self.model)[1]
        rows: list[dict[str, Any]] = []

        def grab(module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
            rows.append(kwargs)
            raise StopForward

        handle = decoder.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            for i, frames in enumerate(inputs["audio_frames"].tolist()):
                try:
                    self.model(input_ids=inputs["input_ids"][i:i + 1], attention_mask=inputs["attention_mask"][i:i + 1],
                               input_features=inputs["input_features"][i:i + 1, :frames],
                               input_features_mask=inputs["input_features_mask"][i:i + 1, :frames], use_cache=False)
                except StopForward:
                    pass
        finally:
            handle.remove()
        mask = inputs["attention_mask"]
        return {"inputs_embeds": torch.cat([row["inputs_embeds"] for row in rows]),
                "per_layer_inputs": torch.cat([row["per_layer_inputs"] for row in rows]),
                "attention_mask": mask, "position_ids": self.positions(mask), "use_cache": False}

    def forward(self, inputs: dict[str, torch.Tensor]) -> None:
        try:
            find_decoder(self.model)[1](**self.decoder_inputs(inputs))
        except StopForward:  # raised after the last site (``stop_after_last_site``)
            pass

    def run_generate(self, inputs: dict[str, torch.Tensor], options: dict[str, Any]) -> torch.Tensor:
        batch = {key: value for key, value in inputs.items() if key != "audio_frames"}
        return self.model.generate(**batch, pad_token_id=self.tokenizer.pad_token_id, **options)
