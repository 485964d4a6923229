"""Voxtral (``VoxtralForConditionalGeneration``): a Whisper encoder on 30 s chunks and a projector
that merges 4 encoder frames per token, feeding a Llama/Mistral decoder. Sites: the decoder's
``self_attn.o_proj`` (Voxtral-Mini-3B: 30 layers x 32 heads, D = 128).

The prompt is what ``mistral_common`` (Voxtral's tokenizer, the optional extra ``voxtral``) makes
of one user turn with the audio then the text: ``<s>[INST][BEGIN_AUDIO][AUDIO]...[AUDIO]{prompt}[/INST]``,
built here from token ids (the tokenizer's own chat template takes audio files, not arrays).
Each clip is padded to a multiple of 30 s (the processor's ``pad_to_multiple_of``), its log-mel
computed on its own and cut into 30 s chunks, so a clip gets ``tokens_per_chunk`` ``[AUDIO]``
tokens per chunk (375 for the released models) and batching changes nothing. Positions are 1-D,
counted over real tokens.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from calm.backbones.parts import AudioPartsBackbone
from calm.backbones.tokens import pad_sequences

PROMPT_TOKENS = ("[INST]", "[BEGIN_AUDIO]", "[AUDIO]", "[/INST]")


class VoxtralBackbone(AudioPartsBackbone):
    family = "voxtral"
    model_types = ("voxtral",)
    model_class = "VoxtralForConditionalGeneration"

    @property
    def chunk_samples(self) -> int:
        """Audio samples per encoder chunk (30 s for the released models)."""
        fe = self.processor.feature_extractor
        return int(fe.nb_max_frames) * int(fe.hop_length)

    @property
    def tokens_per_chunk(self) -> int:
        """``[AUDIO]`` tokens per chunk: encoder frames x encoder width / projector input width."""
        audio = self.model.config.audio_config
        return int(audio.max_source_positions) * int(audio.hidden_size) // int(audio.intermediate_size)

    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"{self.model_id}: the tokenizer has no {token} token")
        return int(token_id)

    def prompt_ids(self, prompt: str, chunks: int = 1) -> list[int]:
        """Token ids of the user turn for a clip of ``chunks`` 30 s chunks."""
        inst, begin_audio, audio, end_inst = (self._token_id(t) for t in PROMPT_TOKENS)
        text = self.prompt_tokens.encode(prompt, special_tokens=False) if prompt else ()
        return [self.tokenizer.bos_token_id, inst, begin_audio, *[audio] * (chunks * self.tokens_per_chunk),
                *text, end_inst]

    def render_prompt(self, prompt: str, with_video: bool = False) -> str:
        """The user turn with one ``[AUDIO]`` standing for the clip's audio tokens."""
        ids = self.prompt_ids(prompt)
        audio = self._token_id("[AUDIO]")
        ids = [token for i, token in enumerate(ids) if token != audio or ids[i - 1] != audio]
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def audio_inputs(self, audios: Sequence[np.ndarray], prompt: str, padding_side: str) -> dict[str, torch.Tensor]:
        fe, chunk = self.processor.feature_extractor, self.chunk_samples
        features, sequences = [], []
        for audio in audios:
            chunks = max(1, math.ceil(len(audio) / chunk))
            padded = np.zeros(chunks * chunk, dtype=np.float32)
            padded[:len(audio)] = audio
            mel = fe(padded, sampling_rate=self.sample_rate, padding=False, truncation=False,
                     return_tensors="pt")["input_features"][0]  # [mels, chunks * frames]
            features.append(mel.reshape(mel.shape[0], chunks, -1).transpose(0, 1))
            sequences.append(self.prompt_ids(prompt, chunks))
        input_ids, mask = pad_sequences(sequences, self.tokenizer.pad_token_id, padding_side)
        return self.to_device({"input_ids": input_ids, "attention_mask": mask, "input_features": torch.cat(features)})
