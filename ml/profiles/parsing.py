"""Turn raw LLM output into a profile: parse the JSON, repair common breakage, or say why it failed.

Small models wrap JSON in prose or code fences, use single quotes, leave trailing commas, put raw
newlines inside strings, keep writing after the object, or stop mid-object at the length cap.
Each repair below is tried in turn on the first object-like span; what still fails is reported
with a reason, never raised.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


@dataclass(frozen=True)
class Profile:
    """A parsed profile: the summary that gets embedded, and the model's reasoning."""

    summarization: str
    reasoning: str
    repaired: bool


@dataclass(frozen=True)
class ProfileFailure:
    """Why an output could not be turned into a profile."""

    reason: str


def _object_span(text: str) -> str | None:
    """The text from the first '{' to the last '}' (or to the end when the object was cut off)."""
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    start = text.find("{")
    if start < 0:
        return None
    end = text.rfind("}")
    return text[start : end + 1] if end > start else text[start:]


def _escape_newlines_in_strings(text: str) -> str:
    """Escape raw newlines and tabs that occur inside JSON strings."""
    out, in_string, escaped = [], False, False
    for char in text:
        if in_string and not escaped and char in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[char])
            continue
        if char == '"' and not escaped:
            in_string = not in_string
        escaped = char == "\\" and not escaped
        out.append(char)
    return "".join(out)


def _close_truncated(text: str) -> str:
    """Close an object cut off by the length cap: end the open string, then the open brackets."""
    stack, in_string, escaped = [], False, False
    for char in text:
        if char == '"' and not escaped:
            in_string = not in_string
        elif not in_string and char in "{[":
            stack.append("}" if char == "{" else "]")
        elif not in_string and char in "}]" and stack:
            stack.pop()
        escaped = char == "\\" and not escaped
    closed = text + ('"' if in_string else "")
    closed = re.sub(r",\s*$", "", closed.rstrip())
    return closed + "".join(reversed(stack))


def _single_to_double_quotes(text: str) -> str:
    """Python-dict style quoting to JSON quoting, when the text has no double quotes at all."""
    return text.replace("'", '"') if '"' not in text else text


def _first_object(text: str) -> str:
    """Only the first complete JSON object, when the model kept writing after it (e.g. a second object)."""
    try:
        _, end = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError:
        return text
    return text[:end]


_REPAIRS = (
    lambda text: text,
    _first_object,
    lambda text: _TRAILING_COMMA.sub(r"\1", text),
    _escape_newlines_in_strings,
    lambda text: _close_truncated(_escape_newlines_in_strings(text)),
    lambda text: _TRAILING_COMMA.sub(r"\1", _close_truncated(_escape_newlines_in_strings(
        _single_to_double_quotes(text)))),
)


def parse_profile(raw: str) -> Profile | ProfileFailure:
    """Parse `{"summarization": ..., "reasoning": ...}` from raw model output, repairing if needed."""
    if not raw or not raw.strip():
        return ProfileFailure("empty output")
    span = _object_span(raw)
    if span is None:
        return ProfileFailure("no JSON object in output")
    for attempt, repair in enumerate(_REPAIRS):
        try:
            value = json.loads(repair(span))
        except json.JSONDecodeError:
            continue
        if not isinstance(value, dict):
            return ProfileFailure("JSON value is not an object")
        summary = value.get("summarization")
        if not isinstance(summary, str) or not summary.strip():
            return ProfileFailure("missing or empty 'summarization'")
        reasoning = value.get("reasoning")
        return Profile(
            summarization=" ".join(summary.split()),
            reasoning=" ".join(reasoning.split()) if isinstance(reasoning, str) else "",
            repaired=attempt > 0 or span.strip() != raw.strip(),
        )
    return ProfileFailure("unrepairable JSON")
