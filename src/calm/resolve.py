"""The one way calm names code by a string: ``"package.module:attribute"``, imported on first use.

Registries (methods, backbone families, dataset layouts) name the classes and functions they
register this way, so that a registry does not import every entry (and its heavy dependencies)
up front, and a registered module can import its registry without a cycle. Every such string is
resolved here; ``tests/test_architecture.py`` resolves every registered entry and checks that no
other module imports by name.
"""

from __future__ import annotations

import importlib
from typing import Any


def resolve(spec: str) -> Any:
    """The attribute named by ``"package.module:attribute"``; ValueError for a malformed name,
    ImportError naming ``spec`` when the module or the attribute does not exist."""
    module, sep, name = spec.partition(":")
    if not (sep and module and name.isidentifier()):
        raise ValueError(f"{spec!r} is not a 'package.module:attribute' name")
    try:
        return getattr(importlib.import_module(module), name)
    except AttributeError:
        raise ImportError(f"{spec}: module {module} has no attribute {name!r}") from None
