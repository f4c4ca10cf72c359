"""API-key anonymization: a short readable prefix plus a keyed hash, stable for a given salt."""

from __future__ import annotations

import functools
import hashlib
import hmac

DEFAULT_CACHE_SIZE = 4096


class Anonymizer:
    """Turns an API key into `prefix…hash`, the same value for the same key and salt.

    The prefix is the first min(8, len//4) characters, the hash 12 hex chars of HMAC-SHA256(salt, key).
    """

    def __init__(self, salt: str | None, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._salt = (salt or "").encode()
        # Routers reuse a handful of keys; the bounded cache saves the HMAC on the hot path.
        self.anonymize = functools.lru_cache(maxsize=cache_size)(self.compute) if cache_size else self.compute

    def compute(self, key: str) -> str:
        """Anonymize `key` without the cache."""
        digest = hmac.new(self._salt, key.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return f"{key[: min(8, len(key) // 4)]}…{digest[:12]}"
