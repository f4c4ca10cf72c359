"""API-key anonymization."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from alertd.anonymizer import Anonymizer


def test_format_is_prefix_ellipsis_and_twelve_hex_of_hmac() -> None:
    key = "sk-live-0123456789abcdefghijklmnopqrstuv"
    expected_hash = hmac.new(b"pepper", key.encode(), hashlib.sha256).hexdigest()[:12]
    assert Anonymizer("pepper").anonymize(key) == f"sk-live-…{expected_hash}"


def test_short_keys_reveal_a_quarter_at_most() -> None:
    anonymizer = Anonymizer("s")
    assert anonymizer.anonymize("abc").startswith("…")
    assert anonymizer.anonymize("abcdefgh").startswith("ab…")
    assert anonymizer.anonymize("a" * 100).startswith("a" * 8 + "…")


def test_salt_changes_the_hash_and_the_cache_does_not_change_results() -> None:
    key = "sk-0123456789abcdef"
    assert Anonymizer("one").anonymize(key) != Anonymizer("two").anonymize(key)
    cached, uncached = Anonymizer("x"), Anonymizer("x", cache_size=0)
    assert cached.anonymize(key) == cached.anonymize(key) == uncached.anonymize(key)


@given(key=st.text(min_size=8, max_size=200), salt=st.one_of(st.none(), st.text(min_size=1, max_size=20)))
def test_anonymized_key_never_contains_the_raw_key(key: str, salt: str | None) -> None:
    value = Anonymizer(salt).anonymize(key)
    assert key not in value
    assert len(value) == min(8, len(key) // 4) + 1 + 12
