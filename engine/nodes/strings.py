"""String nodes (ComfyUI's utils/string): concatenating, slicing, measuring, case, trimming, replacing,
comparing and regular expressions, with no model involved.

The regular expression nodes run the graph's pattern with Python's `re`, as ComfyUI does; a pattern that
does not compile makes RegexMatch and RegexExtract answer "no match", and RegexReplace fail.
"""

from __future__ import annotations

import re
from typing import Any

MULTILINE = ("STRING", {"multiline": True})
CASE_SENSITIVE = ("BOOLEAN", {"default": True})
CASE_MODES = ["UPPERCASE", "lowercase", "Capitalize", "Title Case"]
TRIM_MODES = ["Both", "Left", "Right"]
COMPARE_MODES = ["Starts With", "Ends With", "Equal"]
EXTRACT_MODES = ["First Match", "All Matches", "First Group", "All Groups"]
EXTRACT_JOIN = "\n"
"""RegexExtract's "All ..." modes join their findings with newlines."""


class _StringNode:
    CATEGORY = "utils/string"
    FUNCTION = "execute"
    RETURN_TYPES: tuple[str, ...] = ("STRING",)
    RETURN_NAMES: tuple[str, ...] = ("STRING",)


REGEX_FLAG_INPUTS = {
    "case_insensitive": ("BOOLEAN", {"default": True}),
    "multiline": ("BOOLEAN", {"default": False}),
    "dotall": ("BOOLEAN", {"default": False}),
}
"""The switches every regular expression node has, in ComfyUI's order."""


def regex_flags(case_insensitive: bool, multiline: bool, dotall: bool) -> int:
    return (
        (re.IGNORECASE if case_insensitive else 0)
        | (re.MULTILINE if multiline else 0)
        | (re.DOTALL if dotall else 0)
    )


def compiled(pattern: str, case_insensitive: bool, multiline: bool, dotall: bool) -> re.Pattern[str] | None:
    """The graph's pattern, or None when it does not compile (the matching nodes then find nothing)."""
    try:
        return re.compile(pattern, regex_flags(case_insensitive, multiline, dotall))
    except re.error:
        return None


class StringConcatenate(_StringNode):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "string_a": MULTILINE,
                "string_b": MULTILINE,
                "delimiter": ("STRING", {"default": "", "multiline": False}),
            }
        }

    def execute(self, string_a: str, string_b: str, delimiter: str) -> tuple[str]:
        return (delimiter.join((string_a, string_b)),)


class StringSubstring(_StringNode):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"string": MULTILINE, "start": ("INT", {}), "end": ("INT", {})}}

    def execute(self, string: str, start: int, end: int) -> tuple[str]:
        """Python's string[start:end]: negative positions count from the end."""
        return (string[start:end],)


class StringLength(_StringNode):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"string": MULTILINE}}

    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("length",)

    def execute(self, string: str) -> tuple[int]:
        """Characters (code points), not bytes."""
        return (len(string),)


class CaseConverter(_StringNode):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"string": MULTILINE, "mode": ("COMBO", {"options": CASE_MODES})}}

    def execute(self, string: str, mode: str) -> tuple[str]:
        convert = {
            "UPPERCASE": str.upper,
            "lowercase": str.lower,
            "Capitalize": str.capitalize,
            "Title Case": str.title,
        }.get(mode)
        return (convert(string) if convert else string,)


class StringTrim(_StringNode):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"string": MULTILINE, "mode": ("COMBO", {"options": TRIM_MODES})}}

    def execute(self, string: str, mode: str) -> tuple[str]:
        trim = {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}.get(mode)
        return (trim(string) if trim else string,)


class StringReplace(_StringNode):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"string": MULTILINE, "find": MULTILINE, "replace": MULTILINE}}

    def execute(self, string: str, find: str, replace: str) -> tuple[str]:
        """Every occurrence of `find`, literally (no patterns)."""
        return (string.replace(find, replace),)


class StringContains(_StringNode):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"string": MULTILINE, "substring": MULTILINE, "case_sensitive": CASE_SENSITIVE}}

    RETURN_TYPES = ("BOOLEAN",)
    RETURN_NAMES = ("contains",)

    def execute(self, string: str, substring: str, case_sensitive: bool) -> tuple[bool]:
        if case_sensitive:
            return (substring in string,)
        return (substring.lower() in string.lower(),)


class StringCompare(_StringNode):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "string_a": MULTILINE,
                "string_b": MULTILINE,
                "mode": ("COMBO", {"options": COMPARE_MODES}),
                "case_sensitive": CASE_SENSITIVE,
            }
        }

    RETURN_TYPES = ("BOOLEAN",)
    RETURN_NAMES = ("BOOLEAN",)

    def execute(self, string_a: str, string_b: str, mode: str, case_sensitive: bool) -> tuple[bool]:
        """Whether string_a starts with, ends with or equals string_b."""
        if not case_sensitive:
            string_a, string_b = string_a.lower(), string_b.lower()
        if mode == "Starts With":
            return (string_a.startswith(string_b),)
        if mode == "Ends With":
            return (string_a.endswith(string_b),)
        return (string_a == string_b,)


class RegexMatch(_StringNode):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"string": MULTILINE, "regex_pattern": MULTILINE, **REGEX_FLAG_INPUTS}}

    RETURN_TYPES = ("BOOLEAN",)
    RETURN_NAMES = ("matches",)

    def execute(
        self, string: str, regex_pattern: str, case_insensitive: bool, multiline: bool, dotall: bool
    ) -> tuple[bool]:
        """Whether the pattern matches anywhere in the string."""
        pattern = compiled(regex_pattern, case_insensitive, multiline, dotall)
        return (pattern is not None and pattern.search(string) is not None,)


class RegexExtract(_StringNode):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "string": MULTILINE,
                "regex_pattern": MULTILINE,
                "mode": ("COMBO", {"options": EXTRACT_MODES}),
                **REGEX_FLAG_INPUTS,
                "group_index": ("INT", {"default": 1, "min": 0, "max": 100}),
            }
        }

    def execute(
        self,
        string: str,
        regex_pattern: str,
        mode: str,
        case_insensitive: bool,
        multiline: bool,
        dotall: bool,
        group_index: int,
    ) -> tuple[str]:
        """The first match, all matches (a pattern with groups gives each match's first group), the first
        match's group `group_index`, or that group of every match having it; "" when nothing matches."""
        pattern = compiled(regex_pattern, case_insensitive, multiline, dotall)
        if pattern is None:
            return ("",)
        if mode == "First Match":
            found = pattern.search(string)
            return (found.group(0) if found else "",)
        if mode == "All Matches":
            matches = pattern.findall(string)
            return (EXTRACT_JOIN.join(m[0] if isinstance(m, tuple) else m for m in matches),)
        if mode == "First Group":
            found = pattern.search(string)
            has_group = found is not None and len(found.groups()) >= group_index
            return (found.group(group_index) or "" if found is not None and has_group else "",)
        if mode == "All Groups":
            groups = [
                m.group(group_index) or ""
                for m in pattern.finditer(string)
                if m.groups() and len(m.groups()) >= group_index
            ]
            return (EXTRACT_JOIN.join(groups),)
        return ("",)


class RegexReplace(_StringNode):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"string": MULTILINE, "regex_pattern": MULTILINE, "replace": MULTILINE},
            "optional": {
                **REGEX_FLAG_INPUTS,
                "dotall": (
                    "BOOLEAN",
                    {
                        "tooltip": "When enabled, the dot (.) character will match any character including "
                        "newline characters. When disabled, dots won't match newlines.",
                        "default": False,
                    },
                ),
                "count": (
                    "INT",
                    {
                        "tooltip": "Maximum number of replacements to make. Set to 0 to replace all "
                        "occurrences (default). Set to 1 to replace only the first match, 2 for the first "
                        "two matches, etc.",
                        "default": 0,
                        "min": 0,
                        "max": 100,
                    },
                ),
            },
        }

    DESCRIPTION = "Find and replace text using regex patterns."

    def execute(
        self,
        string: str,
        regex_pattern: str,
        replace: str,
        case_insensitive: bool = True,
        multiline: bool = False,
        dotall: bool = False,
        count: int = 0,
    ) -> tuple[str]:
        """re.sub: `replace` may refer to groups (\\1, \\g<name>); count 0 replaces every match."""
        flags = regex_flags(case_insensitive, multiline, dotall)
        return (re.sub(regex_pattern, replace, string, count=count, flags=flags),)


NODE_CLASS_MAPPINGS = {
    "StringConcatenate": StringConcatenate,
    "StringSubstring": StringSubstring,
    "StringLength": StringLength,
    "CaseConverter": CaseConverter,
    "StringTrim": StringTrim,
    "StringReplace": StringReplace,
    "StringContains": StringContains,
    "StringCompare": StringCompare,
    "RegexMatch": RegexMatch,
    "RegexExtract": RegexExtract,
    "RegexReplace": RegexReplace,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "StringConcatenate": "Concatenate",
    "StringSubstring": "Substring",
    "StringLength": "Length",
    "CaseConverter": "Case Converter",
    "StringTrim": "Trim",
    "StringReplace": "Replace",
    "StringContains": "Contains",
    "StringCompare": "Compare",
    "RegexMatch": "Regex Match",
    "RegexExtract": "Regex Extract",
    "RegexReplace": "Regex Replace",
}
