"""docs/openapi.yaml is a valid OpenAPI 3.1 document, and a live alertd answers exactly as it says.

schemathesis generates requests from the document (valid and invalid ones) against a real `alertd serve`
on 127.0.0.1: every answer must be documented and match its schema, and no input may cause a 5xx.
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename
from prometheus_client import CollectorRegistry
from schemathesis.core.failures import Failure
from schemathesis.specs.openapi.checks import positive_data_acceptance

from alertd.anonymizer import Anonymizer
from alertd.api import Health, make_app, make_metrics_app
from alertd.config import Address, Config, parse_listen
from alertd.daemon import build_service
from alertd.logs import make_logger
from tests.support.process import COMMAND, child_env

SPEC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
METRICS_PATHS = ("/metrics", "/healthz", "/readyz")
TOKEN = "openapi-test-token"
# The document's pattern for `provider` cannot say all of Python's str.isprintable() (unassigned and
# private-use code points, every format character): the description says so, and alertd's rule is the
# exact one. A schema-valid request may be refused for that reason only, with this detail.
PROVIDER_RULE = "provider must not contain whitespace, control or invisible format characters"


def test_the_document_is_valid_openapi_3_1() -> None:
    document, _ = read_from_filename(str(SPEC))
    assert document["openapi"] == "3.1.0"
    validate(document)


def alertd_routes() -> dict[str, set[str]]:
    """Every path the real aiohttp apps serve, with its methods (HEAD comes with GET)."""
    config = Config.from_environ({})
    service = build_service(config, make_logger(stream=io.StringIO()), CollectorRegistry())
    apps = (make_app(service, config, Anonymizer(None)), make_metrics_app(service, Health()))
    routes: dict[str, set[str]] = {}
    for app in apps:
        for route in app.router.routes():
            if route.method != "HEAD" and route.resource is not None:
                routes.setdefault(route.resource.canonical, set()).add(route.method.lower())
    return routes


def test_every_route_of_alertd_is_documented() -> None:
    document, _ = read_from_filename(str(SPEC))
    paths = document["paths"]
    methods = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
    assert {path: set(item) & methods for path, item in paths.items()} == alertd_routes()
    failures = paths["/v1/failures"]["post"]["responses"]
    assert set(failures) == {"202", "400", "401", "413", "415", "500"}
    event = document["components"]["schemas"]["FailureEvent"]["properties"]
    limits = {
        name: event[name].get("maxLength") for name in ("provider", "route", "request_id", "api_key", "error_type")
    }
    assert limits == {"provider": 128, "route": 1024, "request_id": 256, "api_key": 1024, "error_type": 128}
    assert (event["status"]["minimum"], event["status"]["maximum"]) == (100, 599)


@dataclass
class Live:
    api: str
    metrics: str


@pytest.fixture(scope="module")
def live_alertd() -> Iterator[Live]:
    """A real `alertd serve` child process, with a token, for the whole module."""
    env = child_env({"ALERTD_INGEST_TOKEN": TOKEN})
    with subprocess.Popen([*COMMAND, "serve"], env=env, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            for line in process.stdout:
                started = json.loads(line) if line.startswith("{") else {}
                if started.get("event") == "alertd_started":
                    break
            else:
                pytest.fail("alertd exited before it started")
            api = parse_listen(started["listen"])
            metrics = Address.from_string(started["metrics_listen"])
            assert isinstance(api, Address)
            yield Live(f"http://127.0.0.1:{api.port}", f"http://127.0.0.1:{metrics.port}")
        finally:
            process.terminate()
            process.wait(timeout=10)
            assert process.returncode == 0


# An NDJSON body is documented as a string (one JSON object per line): send it as the text it is.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
schema = schemathesis.openapi.from_path(str(SPEC))


SILENCE_END_RULES = ("ends_at is in the past", "ends_at must be in year 9999 or earlier (UTC)")


def accepts_valid_data(ctx: Any, response: Any, case: schemathesis.Case[Any]) -> bool | None:
    """schemathesis's positive_data_acceptance, except for two documented rules a schema cannot state.

    A provider name's characters (PROVIDER_RULE), and a silence's end, which must be in the future: a
    schema cannot say "after now", so schemathesis sends past `ends_at` values that alertd refuses.

    An NDJSON body is documented as text whose lines are FailureEvents: OpenAPI 3.1 cannot give each
    line a schema, so "schema-valid" text says nothing there and only the other checks apply.
    """
    if case.media_type == "application/x-ndjson":
        return None
    try:
        return positive_data_acceptance(ctx, response, case)
    except Failure:
        if response.status_code == 400 and response.json().get("detail") in (PROVIDER_RULE, *SILENCE_END_RULES):
            return None
        raise


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_alertd_conforms_to_its_openapi_document(case: schemathesis.Case[Any], live_alertd: Live) -> None:
    base = live_alertd.metrics if case.path in METRICS_PATHS else live_alertd.api
    case.call_and_validate(
        base_url=base,
        headers={"Authorization": f"Bearer {TOKEN}"},
        excluded_checks=[positive_data_acceptance],
        additional_checks=[accepts_valid_data],
    )
