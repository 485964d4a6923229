"""Loading a backbone by name: a local model folder, a hub id, an offline Whisper or ``tiny:<family>``."""

from __future__ import annotations

from pathlib import Path

from calm.backbones.base import Backbone
from calm.backbones.options import BackboneOptions
from calm.backbones.registry import adapter_class, detect_family
from calm.errors import InputError

OFFLINE_NAMES: tuple[str, ...] = ("whisper-base", "whisper-tiny.en")


class BackboneLoadError(InputError):
    """A model that cannot be loaded; the message names it and says why."""


def load_backbone(
    name_or_path: str | Path,
    options: BackboneOptions | None = None,
    *,
    family: str | None = None,
    **option_values: object,
) -> Backbone:
    """Load a backbone by local path, hub id, offline name or ``tiny:<family>``.

    Args:
        name_or_path: see :mod:`calm.backbones`.
        options: how it runs (:class:`~calm.backbones.options.BackboneOptions`: device, dtype, fast
            path, compile, Whisper's encoder window ...), fixed for the backbone's lifetime.
        family: force an adapter instead of detecting it from the config.
        option_values: options by name, over ``options`` (``load_backbone("whisper-base", dtype="bf16")``).
    """
    options = (options or BackboneOptions()).replace(**option_values)
    name = str(name_or_path)
    if name.startswith("tiny:"):
        from calm.backbones.tiny import tiny_backbone

        return tiny_backbone(name.removeprefix("tiny:"), options=options)
    path = name
    if name in OFFLINE_NAMES:
        from calm.backbones.ct2_whisper import offline_model_dir

        path = str(offline_model_dir(name))
    elif not Path(name).exists() and (name.startswith(("/", ".", "~")) or name.count("/") > 1):
        raise BackboneLoadError(f"{name}: no such model folder (and not a hub id owner/name, an offline name "
                                f"{', '.join(OFFLINE_NAMES)}, or tiny:<family>)")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BackboneLoadError(f"{name}: cannot read the model's config ({first})") from error
    adapter = adapter_class(family or detect_family(config))
    return adapter.from_pretrained(path, config, options=options, model_id=name)
