"""Zero-shot answers: class-list prompts, mapping generated text to a class, and label leaks.

Text is compared in a normal form: lower case, underscores, hyphens, slashes and punctuation as
spaces, single spaces, and every word made singular by simple English rules (``dogs`` -> ``dog``,
``glasses`` -> ``glass``, ``puppies`` -> ``puppy``). A generated answer maps to a class by these
rules, in order; the first that decides wins:

1. ``exact``: the answer's normal form is a class's.
2. ``contained``: class names appear in the answer as whole words (a name inside a longer matched
   name does not count: ``car horn`` beats ``car``); or else the answer, less a leading article,
   appears as whole words in the names of classes. One class decides it; several make the answer ``ambiguous``.
3. ``fuzzy``: the best :class:`difflib.SequenceMatcher` ratio between a class name and the answer,
   or a run of as many answer words as the name has, is at least ``cutoff`` and beats every other
   class's.

Otherwise the answer maps to no class (``none``, or ``ambiguous``) and counts as wrong.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

from calm.data.items import Item
from calm.errors import InputError

DEFAULT_TEMPLATE = "Which of these sounds is in the audio: {classes}? Answer with one of them only."

_SEPARATORS = re.compile(r"[\W_]+", re.UNICODE)
_ES_ENDINGS = ("sses", "shes", "ches", "xes", "zes")
_LEADING_ARTICLE = re.compile(r"^(?:a|an|the) (?=\S)")


def _singular(word: str) -> str:
    if len(word) <= 3 or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(_ES_ENDINGS):
        return word[:-2]
    return word[:-1] if word.endswith("s") else word


def normalize(text: str) -> str:
    """The normal form used for matching (see the module docstring)."""
    words = _SEPARATORS.sub(" ", unicodedata.normalize("NFKC", text).lower()).split()
    return " ".join(_singular(w) for w in words)


def display_name(name: str) -> str:
    """A class name as a prompt shows it: underscores as spaces (``glass_breaking`` -> ``glass breaking``)."""
    return " ".join(name.replace("_", " ").split())


def _contains(text: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``text`` as whole words (both in normal form)."""
    return f" {phrase} " in f" {text} "


def _forms(classes: Sequence[str]) -> dict[str, str]:
    forms: dict[str, str] = {}
    for name in classes:
        form = normalize(name)
        clash = next((other for other, f in forms.items() if f == form), None)
        if clash is not None or not form:
            raise InputError(f"class names {clash!r} and {name!r} are the same after normalisation" if clash
                             else f"class name {name!r} has no letters or digits")
        forms[name] = form
    return forms


@dataclass(frozen=True)
class AnswerMatch:
    """How an answer mapped: ``label`` (None when it did not) and the ``rule`` that decided
    (``exact``, ``contained``, ``fuzzy``, ``ambiguous`` or ``none``), with the ``candidates``
    of an ambiguous answer."""

    label: str | None
    rule: str
    candidates: tuple[str, ...] = ()


def match_answer(answer: str, classes: Sequence[str], *, cutoff: float = 0.8) -> AnswerMatch:
    """Map a generated ``answer`` to one of ``classes`` (see the module docstring for the rules)."""
    forms = _forms(classes)
    text = normalize(answer)
    if not text:
        return AnswerMatch(None, "none")
    exact = [name for name, form in forms.items() if form == text]
    if exact:
        return AnswerMatch(exact[0], "exact")
    named = [name for name, form in forms.items() if _contains(text, form)]
    named = [n for n in named if not any(o != n and _contains(forms[o], forms[n]) for o in named)]
    if not named:
        bare = _LEADING_ARTICLE.sub("", text)
        named = [name for name, form in forms.items() if _contains(form, bare)]
    if len(named) == 1:
        return AnswerMatch(named[0], "contained")
    if named:
        return AnswerMatch(None, "ambiguous", tuple(sorted(named)))
    scores = {name: _fuzzy(text, form) for name, form in forms.items()}
    best = max(scores.values())
    top = sorted(name for name, score in scores.items() if score == best)
    if best < cutoff:
        return AnswerMatch(None, "none")
    if len(top) > 1:
        return AnswerMatch(None, "ambiguous", tuple(top))
    return AnswerMatch(top[0], "fuzzy")


def _fuzzy(text: str, form: str) -> float:
    """Best ratio of ``form`` against the whole text or any run of as many words as it has."""
    words, width = text.split(), len(form.split())
    runs = [text] + [" ".join(words[i:i + width]) for i in range(max(len(words) - width + 1, 0))]
    return max(difflib.SequenceMatcher(None, run, form).ratio() for run in runs)


def map_answer(answer: str, classes: Sequence[str], *, cutoff: float = 0.8) -> str | None:
    """The class a generated answer names, or None (no class, or ambiguous)."""
    return match_answer(answer, classes, cutoff=cutoff).label


def class_list_prompt(classes: Sequence[str], template: str = DEFAULT_TEMPLATE, separator: str = ", ") -> str:
    """``template`` with ``{classes}`` replaced by every class, sorted, as :func:`display_name` shows it.

    The same prompt for every item: it names all classes in a fixed order and no per-item options.
    """
    if "{classes}" not in template:
        raise InputError(f"the template has no {{classes}} placeholder: {template!r}")
    _forms(classes)
    return template.replace("{classes}", separator.join(display_name(c) for c in sorted(classes)))


def warn_label_leaks(prompt: str | Callable[[Item], str], items: Sequence[Item]) -> list[str]:
    """Ids of items whose prompt names their own label without naming every class; warns if any.

    ``prompt`` is one prompt for all items or a function of the item. A prompt that names every
    class (as :func:`class_list_prompt` does) reveals nothing; one that names a subset including
    the item's own label (e.g. per-item answer options) leaks it.
    """
    labelled = [i for i in items if i.label is not None]
    labels = {i.id: i.label if isinstance(i.label, tuple) else (i.label,) for i in labelled}
    forms = {name: normalize(name) for names in labels.values() for name in names}
    leaks: list[str] = []
    cache: dict[str, set[str]] = {}
    for item in labelled:
        text = prompt(item) if callable(prompt) else prompt
        if text not in cache:
            normal = normalize(text)
            cache[text] = {name for name, form in forms.items() if _contains(normal, form)}
        named = cache[text]
        if named != set(forms) and named & set(labels[item.id]):
            leaks.append(item.id)
    if leaks:
        warnings.warn(
            f"{len(leaks)} item prompt(s) name the item's own label but not every class (e.g. {leaks[0]!r}): "
            "the prompt leaks the answer",
            stacklevel=2,
        )
    return leaks
