"""Loading a backbone by name: a local model folder, a hub id, an offline Whisper or ``tiny:<family>``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from calm.backbones.base import Backbone, local_revision, resolve_device, resolve_dtype
from calm.backbones.options import BackboneOptions
from calm.backbones.registry import adapter_class, detect_family
from calm.errors import InputError
from calm.features import HeadIndex
from calm.fingerprint import as_json, check_fingerprint

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


# ---------------------------------------------------------------------------- deferred weights

STORE_KEY_FILE = "key.json"
"""Each feature store under a root keeps its key (fingerprint) and head index here (see :mod:`calm.store`)."""


def expected_identity(name_or_path: str | Path, options: BackboneOptions | None = None) -> dict[str, Any] | None:
    """The fields of the fingerprint that :func:`load_backbone` would give (model id, revision,
    dtype, the options that change features), told from the name, options, config and files
    alone, without loading weights; None for a hub id (only the hub knows its revision)."""
    options = options or BackboneOptions()
    name = str(name_or_path)
    device = resolve_device(options.device)
    if name.startswith("tiny:"):
        from calm.backbones.tiny import TINY_OPTIONS

        defaults = TINY_OPTIONS.get(name.removeprefix("tiny:"), {})
        options = options.replace(**{k: v for k, v in defaults.items()
                                     if getattr(options, k) == getattr(BackboneOptions(), k)})
        revision = "tiny-seed0"
        dtype = resolve_dtype(options.dtype, device) if options.dtype is not None else "float32"
    else:
        if name in OFFLINE_NAMES:
            from calm.backbones.ct2_whisper import offline_model_dir

            path: str | Path = offline_model_dir(name)
        else:
            path = name
        revision = local_revision(path)
        if revision is None:
            return None
        dtype = resolve_dtype(options.dtype, device)
    return {"model_id": name, "revision": revision, "dtype": str(dtype).removeprefix("torch."),
            **options.fingerprint()}


def load_backbone_deferred(name_or_path: str | Path, options: BackboneOptions | None = None, *,
                           store: str | Path | None, prompt: str) -> Any:
    """:func:`load_backbone`, with the weights loaded only when first needed if the feature store
    root ``store`` already holds features of this model, options and prompt.

    Such a backbone (:class:`DeferredBackbone`) answers ``fingerprint()``, ``site_names()`` and
    ``head_index()`` from the store's key, which were a loaded model's, so extracting items that
    are all stored loads no weights at all. Otherwise the backbone is loaded now."""
    identity = expected_identity(name_or_path, options) if store is not None else None
    match = _stored_key(Path(store), identity, prompt) if identity is not None else None
    if match is None:
        return load_backbone(name_or_path, options)
    return DeferredBackbone(str(name_or_path), options or BackboneOptions(), *match)


def _stored_key(root: Path, identity: dict[str, Any], prompt: str) -> tuple[dict[str, Any], Any] | None:
    """The (key, head index) of the one store under ``root`` for this identity and prompt, if any."""
    wanted = as_json({**identity, "prompt": prompt}, "a fingerprint")
    found = []
    for key_file in sorted(root.glob(f"*/{STORE_KEY_FILE}")):
        try:
            meta = json.loads(key_file.read_text())
            key = meta["key"]
            heads = HeadIndex.from_dict(meta["heads"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a store this run can use: extraction opens (and judges) the one it needs
        if {k: v for k, v in key.items() if k not in ("family", "sites")} == wanted:
            found.append((key, heads))
    return found[0] if len(found) == 1 else None


class DeferredBackbone:
    """A backbone whose weights load on first use: fingerprint, sites and heads come from a feature
    store's key; any other attribute loads the model (:meth:`load`) and is the loaded backbone's."""

    _CLASS_FACTS = ("answers_questions", "supports_video", "has_encoder_window", "min_seconds", "site_kinds")

    def __init__(self, name: str, options: BackboneOptions, key: dict[str, Any], heads: HeadIndex) -> None:
        self._name, self._options, self._key, self._heads = name, options, dict(key), heads
        self._backbone: Backbone | None = None

    @property
    def family(self) -> str:
        return str(self._key["family"])

    @property
    def loaded(self) -> bool:
        """Whether the weights have been loaded."""
        return self._backbone is not None

    def fingerprint(self) -> dict[str, Any]:
        return {k: v for k, v in self._key.items() if k not in ("prompt", "sites")}

    def site_names(self) -> list[str]:
        return list(self._key["sites"])

    def head_index(self) -> HeadIndex:
        return self._heads

    def load(self) -> Backbone:
        """The loaded backbone (loaded on the first call); ValueError if its fingerprint is not the store's."""
        if self._backbone is None:
            backbone = load_backbone(self._name, self._options)
            got = {**backbone.fingerprint(), "prompt": self._key["prompt"], "sites": backbone.site_names()}
            check_fingerprint(self._key, got, f"the stored features of {self._name}")
            self._backbone = backbone
        return self._backbone

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._CLASS_FACTS and self._backbone is None:
            return getattr(adapter_class(self.family), name)
        return getattr(self.load(), name)

    def __repr__(self) -> str:
        return f"DeferredBackbone({self._name!r}, loaded={self.loaded})"
