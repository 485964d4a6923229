"""Phi-4-multimodal, audio only (``Phi4MultimodalForCausalLM``): a conformer speech encoder whose
outputs replace the audio tokens of a Phi-4-mini decoder. Sites: the decoder's ``self_attn.o_proj``
(Phi-4-multimodal-instruct: 32 layers x 24 heads, D = 128; the attention's input projection is
one fused ``qkv_proj``, the output projection a plain linear).

The prompt is one user turn ``<|user|>{audio token}{prompt}<|end|><|assistant|>`` through the
tokenizer's chat template; the audio token (``tokenizer.audio_token``) is expanded to one token per
``audio_compression_rate`` log-mel frames. Inputs are built here from the feature extractor and the
tokenizer (the processor's image processor needs torchvision). In the model's own batched call a
clip's audio embeddings depend on the other clips' lengths (the encoder's convolutions and chunk
masks see the padding), so here each clip's log-mel is computed on its own and the model's
embedding step (speech encoder included) runs clip by clip; only the decoder runs on the padded
batch. Positions are 1-D, counted over real tokens.

The released checkpoint answers speech well only with its speech LoRA adapter loaded (``peft``);
the heads here are those of the base weights.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from calm.backbones.parts import EmbeddingInputsBackbone


class Phi4MultimodalBackbone(EmbeddingInputsBackbone):
    family = "phi4_multimodal"
    model_types = ("phi4_multimodal",)
    model_class = "Phi4MultimodalForCausalLM"

    @property
    def audio_token(self) -> str:
        token = getattr(self.tokenizer, "audio_token", None)
        if not token:
            raise ValueError(f"{self.model_id}: the tokenizer names no audio_token")
        return token

    def prompt_messages(self, prompt: str, with_video: bool = False) -> list[dict[str, Any]]:
        return [{"role": "user", "content": self.audio_token + prompt}]

    def render_prompt(self, prompt: str, with_video: bool = False) -> str:
        return self.tokenizer.apply_chat_template(self.prompt_messages(prompt), add_generation_prompt=True,
                                                  tokenize=False)

    def audio_inputs(self, audios: Sequence[np.ndarray], prompt: str, padding_side: str) -> dict[str, torch.Tensor]:
        fe = self.processor.feature_extractor
        clips = [fe([audio], sampling_rate=self.sample_rate, return_tensors="pt") for audio in audios]
        features = [clip["audio_input_features"][0] for clip in clips]
        sizes = torch.cat([clip["audio_embed_sizes"].reshape(-1) for clip in clips])
        frames = torch.tensor([len(f) for f in features])
        ids, mask = self.prompt_tokens.batch(self.prompt_tokens.ids(prompt),
                                             [{self.audio_token: int(n)} for n in sizes], padding_side)
        return self.to_device({
            "input_ids": ids, "attention_mask": mask,
            "audio_input_features": torch.nn.utils.rnn.pad_sequence(features, batch_first=True),
            "audio_embed_sizes": sizes,
            "audio_frames": frames,
        })

    def input_embeddings(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, T, hidden] decoder inputs from the model's own embedding step, run clip by clip on
        that clip's frames only."""
        inner = self.model.model
        rows = []
        for i, frames in enumerate(inputs["audio_frames"].tolist()):
            ids = inputs["input_ids"][i:i + 1]
            rows.append(inner.embed_tokens_extend(
                ids, inner.embed_tokens(ids), audio_input_features=inputs["audio_input_features"][i:i + 1, :frames],
                audio_embed_sizes=inputs["audio_embed_sizes"][i:i + 1], audio_attention_mask=None,
            ))
        return torch.cat(rows)
