"""The string nodes: Python's string semantics, as ComfyUI's nodes_string uses them."""

from __future__ import annotations

import pytest

from engine.nodes.strings import (
    CaseConverter,
    RegexExtract,
    RegexMatch,
    RegexReplace,
    StringCompare,
    StringConcatenate,
    StringContains,
    StringLength,
    StringReplace,
    StringSubstring,
    StringTrim,
)


def test_concatenate_substring_length() -> None:
    assert StringConcatenate().execute("a cat", "a hat", ", ") == ("a cat, a hat",)
    assert StringSubstring().execute("photograph", 2, -3) == ("otogr",)
    assert StringLength().execute("naïve ☃") == (7,)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("UPPERCASE", "A BIG CAT"),
        ("lowercase", "a big cat"),
        ("Capitalize", "A big cat"),
        ("Title Case", "A Big Cat"),
    ],
)
def test_case_converter(mode: str, expected: str) -> None:
    assert CaseConverter().execute("a bIG cat", mode) == (expected,)


@pytest.mark.parametrize(("mode", "expected"), [("Both", "x y"), ("Left", "x y \n"), ("Right", "\t x y")])
def test_trim(mode: str, expected: str) -> None:
    assert StringTrim().execute("\t x y \n", mode) == (expected,)


def test_replace_is_literal() -> None:
    assert StringReplace().execute("a.b.c", ".", "+") == ("a+b+c",)


def test_contains_and_compare() -> None:
    assert StringContains().execute("A Red Fox", "red", True) == (False,)
    assert StringContains().execute("A Red Fox", "red", False) == (True,)
    assert StringCompare().execute("Sunset", "sun", "Starts With", False) == (True,)
    assert StringCompare().execute("Sunset", "sun", "Starts With", True) == (False,)
    assert StringCompare().execute("Sunset", "SET", "Ends With", False) == (True,)
    assert StringCompare().execute("Sunset", "sunset", "Equal", True) == (False,)


def test_regex_match_and_a_broken_pattern() -> None:
    assert RegexMatch().execute("Model: FLUX.1", r"flux\.\d", True, False, False) == (True,)
    assert RegexMatch().execute("Model: FLUX.1", r"flux\.\d", False, False, False) == (False,)
    assert RegexMatch().execute("a\nb", "^b", False, True, False) == (True,)
    assert RegexMatch().execute("a\nb", "a.b", False, False, True) == (True,)
    assert RegexMatch().execute("anything", "(unclosed", True, False, False) == (False,)


@pytest.mark.parametrize(
    ("mode", "group", "expected"),
    [
        ("First Match", 1, "w=512"),
        ("All Matches", 1, "w\nh"),
        ("First Group", 2, "512"),
        ("All Groups", 2, "512\n768"),
        ("First Group", 3, ""),
    ],
)
def test_regex_extract(mode: str, group: int, expected: str) -> None:
    text = "w=512, h=768"
    assert RegexExtract().execute(text, r"(\w)=(\d+)", mode, True, False, False, group) == (expected,)


def test_regex_extract_of_a_broken_pattern_is_empty() -> None:
    assert RegexExtract().execute("x", "[", "First Match", True, False, False, 1) == ("",)


def test_regex_replace_with_groups_and_a_count() -> None:
    assert RegexReplace().execute("a1 b2 c3", r"(\w)(\d)", r"\2\1") == ("1a 2b 3c",)
    assert RegexReplace().execute("a1 b2 c3", r"\d", "#", count=2) == ("a# b# c3",)
    assert RegexReplace().execute("A a", "a", "x", case_insensitive=False) == ("A x",)
