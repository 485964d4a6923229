"""Any transformers audio-language model whose text decoder is made of ``self_attn`` blocks with a
linear output projection (``o_proj`` ...): the decoder and its sites are found by walking the
model (:func:`calm.backbones.base.discover_sites`), the model class is the checkpoint's own
(``config.architectures[0]``), and inputs come from its processor called as
``processor(text=..., audio=...)`` on the chat-templated prompt.

Proved by tests on tiny models of further families (see :data:`calm.backbones.tiny.TINY_FAMILIES`).
"""

from __future__ import annotations

from calm.backbones.base import Backbone


class GenericBackbone(Backbone):
    family = "generic"
