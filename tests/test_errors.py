"""Messages of jailhouse.errors: one line of bounded length, the whole value kept aside."""

from __future__ import annotations

import pytest

from jailhouse.config.validate import Finding
from jailhouse.errors import (
    ConfigError,
    InvalidConfigError,
    StatusParseError,
    TranslationError,
)

LIMIT = 2000
"""Longest message accepted, as the reliability suite bounds it (MESSAGE_LIMIT)."""
HUGE = "A" * 900_000


def test_short_values_are_quoted_whole() -> None:
    """A short string is quoted whole and an address in hex, as before."""
    assert str(ConfigError("name", "linux-demo", "taken")) == "name = 'linux-demo': taken"
    assert str(ConfigError("size", 0x1000, "odd")) == "size = 0x1000: odd"
    assert str(ConfigError("count", -5000, "negative")) == "count = -5000: negative"


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("name", HUGE, "too long"),
        InvalidConfigError("name", HUGE, "too long", offset=8),
        TranslationError("/domain/name", HUGE, "too long"),
    ],
    ids=["config", "invalid-config", "translation"],
)
def test_long_values_are_shortened_in_the_message_only(error: ConfigError) -> None:
    """A 900,000-character value shows its first characters and its length; .value keeps it."""
    text = str(error)
    assert len(text) <= 200
    assert f"'{'A' * 60}...' (900000 characters)" in text
    assert error.value == HUGE


def test_long_bytes_are_shortened_with_their_length() -> None:
    """A long bytes value is cut after 60 bytes and gives its length in bytes."""
    text = str(ConfigError("trailing", b"\x00" * 5000, "junk"))
    assert text.endswith("...' (5000 bytes): junk")
    assert len(text) <= 400


def test_huge_integers_render_without_conversion_errors() -> None:
    """An integer of 5,000 decimal digits renders (in hex, shortened), never a ValueError."""
    for value in (10**5000, -(10**5000)):
        text = str(ConfigError("size", value, "too large"))
        assert len(text) <= 400
        assert "digits)" in text


def test_other_long_values_are_cut() -> None:
    """A long tuple is cut after 200 characters of its repr."""
    text = str(ConfigError("cpus", tuple(range(10_000)), "too many"))
    assert len(text) <= 300
    assert text.startswith("cpus = (0, 1, 2, ")


def test_multi_line_reasons_become_one_line() -> None:
    """libxml2's reason with its line breaks reads as one line, punctuation kept in place."""
    error = TranslationError("/", None, "Char 0x0 out of allowed range\n, line 1, column 16")
    assert str(error) == "/: Char 0x0 out of allowed range, line 1, column 16"
    assert "\n" not in str(ConfigError("f", "a\nb", "one\ntwo"))


def test_long_element_paths_are_shortened() -> None:
    """An XPath with a 40,000-character element name or 500 steps stays bounded."""
    long_step = TranslationError(f"/domain/devices/{'x' * 40_000}", None, "unknown")
    assert len(str(long_step)) <= 400
    assert str(long_step).startswith("/domain/devices/xxx")
    deep = TranslationError("/domain" + "/a" * 500, "v", "too deep")
    assert len(str(deep)) <= 400
    assert str(deep).startswith("/domain/a/a")


def test_long_reasons_are_cut() -> None:
    """A reason that embeds a long text is cut, so the whole message stays bounded."""
    assert len(str(TranslationError("/domain", None, HUGE))) <= LIMIT


def test_findings_and_status_errors_shorten_values() -> None:
    """Findings and sysfs parse errors use the same shortened rendering."""
    assert len(str(Finding("name", HUGE, "too long"))) <= 200
    status = StatusParseError("/sys/devices/jailhouse/enabled", HUGE, "not 0 or 1")
    assert len(str(status)) <= 200
    assert status.text == HUGE
