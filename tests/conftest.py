"""Shared fixtures: the anyio backend, a loopback Sentry and its Web API, and the CI rule that nothing skips."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator

import pytest

from tests.support.sentry_api import LoopbackSentryApi, loopback_sentry_api
from tests.support.sentry_server import LoopbackSentry, loopback_sentry


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def sentry() -> AsyncIterator[LoopbackSentry]:
    async with loopback_sentry() as server:
        yield server


@pytest.fixture
async def api() -> AsyncIterator[LoopbackSentryApi]:
    """The loopback stand-in of Sentry's one Web API endpoint alertd calls (issue resolution)."""
    async with loopback_sentry_api() as server:
        yield server


def require_tool(name: str) -> str:
    """The path of an external tool; under CI a missing tool fails the test instead of skipping it."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is required under CI=true but is not installed")
        pytest.skip(f"{name} is not installed (make setup installs it)")
    return path
