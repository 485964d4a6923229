"""Zero-shot answer mapping, class-list prompts and label-leak warnings."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from calm.data.items import Item
from calm.evaluation.answers import class_list_prompt, map_answer, match_answer, normalize, warn_label_leaks

ESC = ["dog", "rooster", "glass_breaking", "car_horn", "church_bells", "clock_alarm", "clock_tick", "crickets", "engine"]


def test_normalize() -> None:
    assert normalize("  Glass_Breaking!! ") == normalize("glass-breaking") == "glass breaking"
    assert normalize("Dogs.") == "dog" and normalize("church bells") == "church bell"
    assert normalize("glasses") == "glass" and normalize("puppies") == "puppy" and normalize("bus") == "bus"


@pytest.mark.parametrize(
    "answer, label, rule",
    [
        ("Dog", "dog", "exact"),
        ("DOGS.", "dog", "exact"),
        ("glass breaking", "glass_breaking", "exact"),
        ("Glass-breaking", "glass_breaking", "exact"),
        ("cricket", "crickets", "exact"),
        ("The sound is a dog barking.", "dog", "contained"),
        ("I hear a car horn honking", "car_horn", "contained"),
        ("Rooster", "rooster", "exact"),
        ("bells", "church_bells", "contained"),  # the answer is part of exactly one class name
        ("roostr", "rooster", "fuzzy"),
        ("It sounds like glass brekaing to me", "glass_breaking", "fuzzy"),
    ],
)
def test_answers_that_map(answer: str, label: str, rule: str) -> None:
    match = match_answer(answer, ESC)
    assert (match.label, match.rule) == (label, rule)
    assert map_answer(answer, ESC) == label


def test_answers_that_do_not_map() -> None:
    assert match_answer("A violin solo.", ESC).rule == "none"
    assert map_answer("", ESC) is None and map_answer("...", ESC) is None
    clock = match_answer("a clock", ESC)
    assert (clock.label, clock.rule, clock.candidates) == (None, "ambiguous", ("clock_alarm", "clock_tick"))
    assert match_answer("either a dog or a rooster", ESC).rule == "ambiguous"
    with pytest.raises(ValueError, match="same after normalisation"):
        map_answer("dog", ["dog", "dogs"])


def test_class_list_prompt() -> None:
    prompt = class_list_prompt(["rooster", "glass_breaking", "dog"], "Classes: {classes}.")
    assert prompt == "Classes: dog, glass breaking, rooster."
    assert class_list_prompt(["b", "a"]) == class_list_prompt(["a", "b"])
    with pytest.raises(ValueError, match="placeholder"):
        class_list_prompt(["a"], "no slot")


def test_warn_label_leaks() -> None:
    items = [Item("1", Path("1.wav"), "dog"), Item("2", Path("2.wav"), "glass_breaking"), Item("3", Path("3.wav"), "rooster")]
    full = class_list_prompt([i.label for i in items])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_label_leaks(full, items) == []  # names every class: nothing leaks
        assert warn_label_leaks("What is this sound?", items) == []
    options = {"1": "Is it a dog or a rooster?", "2": "Is it glass breaking or a dog?", "3": "Is it a dog or glass breaking?"}
    with pytest.warns(UserWarning, match="2 item prompt"):
        assert warn_label_leaks(lambda item: options[item.id], items) == ["1", "2"]


def test_single_letter_classes() -> None:
    letters = ["a", "b", "c"]
    assert map_answer("A", letters) == "a" and map_answer("The letter b.", letters) == "b"
