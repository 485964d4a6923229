"""Fingerprints: what determined a set of features, in one canonical JSON form, and their comparison.

A feature fingerprint (model id and revision, dtype, the backbone options that change features,
prompt, sites) keys feature stores and is recorded in every saved classifier, so features from
another backbone or prompt are never mixed. Fingerprints are compared in their JSON form: a
tuple and a list with the same items are equal.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from calm.errors import FingerprintError


def canonical_json(value: Any) -> str:
    """``value`` as compact JSON with sorted keys; TypeError for anything that is not plain JSON
    (str, numbers, bools, None, lists, dicts; no NaN)."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"not plain JSON (str, numbers, lists, dicts): {error}") from None


def as_json(value: Any, what: str) -> Any:
    """``value`` as it reads back from JSON; ValueError naming ``what`` if it is not plain JSON."""
    try:
        return json.loads(canonical_json(value))
    except TypeError as error:
        raise ValueError(f"{what} must be JSON-serialisable: {error}") from None


def differences(expected: Mapping[str, Any], got: Mapping[str, Any]) -> list[str]:
    """One short phrase per field in which two fingerprints differ (compared in their JSON form);
    lists (such as the sites) are summarised by their lengths and first differing entry."""
    expected, got = as_json(dict(expected), "a fingerprint"), as_json(dict(got), "a fingerprint")
    return [f"{key}: {_difference(expected.get(key), got.get(key))}"
            for key in sorted(set(expected) | set(got)) if expected.get(key) != got.get(key)]


def _difference(expected: Any, got: Any) -> str:
    if not (isinstance(expected, list) and isinstance(got, list)):
        return f"expected {expected!r}, got {got!r}"
    first = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
    where = (f"first difference at #{first}: {expected[first]!r} vs {got[first]!r}"
             if first < min(len(expected), len(got)) else f"the same first {first}")
    return f"expected {len(expected)} entries, got {len(got)}; {where}"


def check_fingerprint(expected: Mapping[str, Any], got: Mapping[str, Any], what: str) -> None:
    """FingerprintError (a ValueError), on one line, naming ``what`` and every differing field when
    features come from another backbone, backbone options or prompt."""
    found = differences(expected, got)
    if found:
        raise FingerprintError(f"{what}: features from another backbone, options or prompt than expected ("
                               f"{'; '.join(found)}); refit, or use the same model, options and prompt")
