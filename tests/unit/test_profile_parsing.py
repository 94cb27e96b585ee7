"""Parsing and repairing LLM profile output."""

import pytest

from ml.profiles.parsing import Profile, ProfileFailure, parse_profile


@pytest.mark.parametrize(
    ("raw", "summary", "repaired"),
    [
        ('{"summarization": "Likes bold lipstick.", "reasoning": "Reviews say so."}', "Likes bold lipstick.", False),
        ('Sure! Here it is:\n```json\n{"summarization": "Likes lipstick.", "reasoning": "r"}\n```', "Likes lipstick.", True),
        ('{"summarization": "Trailing comma.", "reasoning": "r",}', "Trailing comma.", True),
        ('{"summarization": "Line one\nline two", "reasoning": "r"}', "Line one line two", True),
        ('{"summarization": "Cut off by the length cap", "reasoning": "because the mod', "Cut off by the length cap", True),
        ("{'summarization': 'Single quotes.', 'reasoning': 'r'}", "Single quotes.", True),
        ('{"summarization": "No reasoning."}', "No reasoning.", False),
        ('{"summarization": "Kept writing."}\n{\n  "description": {"name": "x", "tags": ["pro', "Kept writing.", True),
    ],
)
def test_good_and_repairable_outputs(raw: str, summary: str, repaired: bool) -> None:
    result = parse_profile(raw)
    assert isinstance(result, Profile)
    assert result.summarization == summary and result.repaired == repaired


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty output"),
        ("I cannot help with that.", "no JSON object in output"),
        ('{"summary": "wrong key"}', "missing or empty 'summarization'"),
        ('{"summarization": "   "}', "missing or empty 'summarization'"),
        ('{"summarization": [1, 2]}', "missing or empty 'summarization'"),
        ('{"summarization": "a" "b" :: }', "unrepairable JSON"),
    ],
)
def test_hopeless_outputs_are_failures_with_a_reason(raw: str, reason: str) -> None:
    assert parse_profile(raw) == ProfileFailure(reason)
