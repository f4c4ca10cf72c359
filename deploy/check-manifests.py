"""Render and validate deploy/k8s with real tools; exit 1 on the first broken rule.

    .venv-deploy/bin/python deploy/check-manifests.py --alertd .venv/bin/alertd

Runs in the deploy venv (PyYAML and jsonschema come with kubernetes-validate) and needs kubectl
(for `kubectl kustomize`) and promtool. For each kustomization (base for 1.29+, the classic-sidecar
overlay for older clusters, the unix-socket, cluster-redis and rules-file overlays) it:

1. renders it with `kubectl kustomize` into a temporary directory;
2. runs `kubernetes-validate --strict` on the rendered output for the oldest version the variant
   targets and the newest version kubernetes-validate bundles; every resource must pass, and the only
   resources it may skip are the Prometheus Operator CRDs listed in CRD_SCHEMAS;
3. validates those CRDs against the strict schemas in deploy/schemas/;
4. checks what no schema can: the sidecar wiring, probes and ports agree with each other and with
   the ConfigMap, the grace period covers the shutdown timeouts, the securityContext is locked down,
   every secret reaches alertd as a file (each NAME_FILE names a key of a read-only Secret volume that
   only alertd mounts, and that key is in the example Secret); and alertd's own parser accepts the
   ConfigMap plus alertd's env (`alertd check-config`, each NAME_FILE pointing at a made-up value in a
   temporary file), reads every secret from its file, prints none of them, warns about nothing, and is
   in the mode the variant is for (per pod, or cluster mode with Redis); where alertd's env sets
   ALERTD_RULES_FILE (rules-file), the file must come from a ConfigMap mounted as a whole directory with a
   stable name (hot reload), and check-config gets that ConfigMap's rendered data, which must be
   deploy/rules.example.toml, as its rules file;
5. extracts the PrometheusRule groups and runs `promtool check rules` and `promtool test rules`.

The example Secrets (base and overlays) are validated by kubernetes-validate on their own: they are
part of no render, and a rendered Secret fails the check.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import yaml  # type: ignore[import-untyped,unused-ignore]

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
# kustomization -> (the oldest Kubernetes version it is for, how alertd runs beside the router,
# where it keeps its windows: "memory" per pod, or "redis" shared by every replica; docs/CLUSTER.md).
VARIANTS = {
    "base": ("1.29.0", "native", "memory"),
    "overlays/pre-1.29-classic-sidecar": ("1.25.0", "classic", "memory"),
    "overlays/unix-socket": ("1.29.0", "native", "memory"),
    "overlays/cluster-redis": ("1.29.0", "native", "redis"),
    "overlays/rules-file": ("1.29.0", "native", "memory"),
}
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "PodMonitor"): ROOT / "deploy" / "schemas" / "podmonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): ROOT / "deploy" / "schemas" / "prometheusrule-monitoring-v1.json",
}
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alertd-rules.test.yaml"
RULES_EXAMPLE = ROOT / "deploy" / "rules.example.toml"
# The suffix kustomize appends to a generated name unless disableNameSuffixHash: "-" and 10 characters of
# its hash alphabet (hex with 0 1 3 a e spelled g h k m t).
KUSTOMIZE_HASH_SUFFIX = re.compile(r"-[2456789bcdfghkmt]{10}$")
EXAMPLE_SECRETS = sorted(K8S.rglob("secret.example.yaml"))
CONFIG_PY = ROOT / "alertd" / "config.py"
# A made-up valid value for each secret alertd may read from a file, for `alertd check-config`. Each
# holds SAMPLE_MARK, which must then appear nowhere in its output.
SAMPLE_MARK = "cmsecret"
SAMPLE_SECRETS = {
    "ALERTD_INGEST_TOKEN": f"{SAMPLE_MARK}-token",
    "ALERTD_API_KEY_SALT": f"{SAMPLE_MARK}-salt",
    "SENTRY_DSN": f"https://{SAMPLE_MARK}0123456789@o0.ingest.sentry.io/1",
    "ALERTD_REDIS_URL": f"redis://alertd:{SAMPLE_MARK}-password@redis.example:6379/0",
    "SENTRY_AUTH_TOKEN": f"sntrys_{SAMPLE_MARK}-auth-token",
}
IMAGE_UID = 10001
METRICS_PORT = 9181


class CheckError(Exception):
    """A manifest broke a rule."""


def tool(name: str, *extra_dirs: Path) -> str:
    """The absolute path of a tool, looked up in `extra_dirs` first, then on PATH."""
    for directory in extra_dirs:
        if (directory / name).is_file():
            return str(directory / name)
    found = shutil.which(name)
    if found is None:
        raise CheckError(f"{name} is not installed")
    return found


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a tool; raise CheckError with its output when it fails."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300, **kwargs)  # noqa: S603
    if result.returncode != 0:
        raise CheckError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def ok(message: str) -> None:
    """Report one passed check."""
    print(f"  ok  {message}", flush=True)


def latest_bundled_version(validator: str) -> str:
    """The newest Kubernetes version kubernetes-validate has schemas for (its --version)."""
    return run([validator, "--version"]).stdout.strip()


def kubernetes_validate(validator: str, path: Path, version: str, docs: list[dict[str, Any]]) -> None:
    """`kubernetes-validate --strict`: every built-in resource passes; only our CRDs may be unknown."""
    result = subprocess.run(  # noqa: S603
        [validator, "--strict", "--kubernetes-version", version, str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    lines = result.stdout.splitlines()
    if result.returncode != 0 or any(line.startswith(("ERROR", "FATAL")) for line in lines):
        raise CheckError(f"kubernetes-validate --strict -k {version} {path.name}:\n{result.stdout}{result.stderr}")
    passed = [line for line in lines if line.startswith("INFO") and " passed " in line]
    skipped = [line for line in lines if line.startswith("WARN")]
    crds = [d for d in docs if (d["apiVersion"], d["kind"]) in CRD_SCHEMAS]
    for line in skipped:
        if not any(f"kind {kind} with api version {api}" in line for api, kind in CRD_SCHEMAS):
            raise CheckError(f"kubernetes-validate could not check a resource that is no known CRD: {line}")
    if len(passed) != len(docs) - len(crds) or len(skipped) != len(crds):
        raise CheckError(
            f"kubernetes-validate -k {version}: {len(passed)} passed and {len(skipped)} skipped, expected "
            f"{len(docs) - len(crds)} and {len(crds)}:\n{result.stdout}"
        )
    ok(f"kubernetes-validate --strict -k {version}: {len(passed)} resources pass, {len(crds)} CRDs left to schemas")


def validate_crds(docs: list[dict[str, Any]]) -> None:
    """Each Prometheus Operator resource against its strict schema."""
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if key not in CRD_SCHEMAS:
            continue
        schema = json.loads(CRD_SCHEMAS[key].read_text())
        try:
            jsonschema.Draft202012Validator(schema).validate(doc)
        except jsonschema.ValidationError as exc:
            where = ".".join(str(p) for p in exc.absolute_path)
            raise CheckError(f"{doc['kind']}/{doc['metadata']['name']}: {where}: {exc.message}") from None
        ok(f"{doc['kind']}/{doc['metadata']['name']} matches {CRD_SCHEMAS[key].name}")


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single resource of `kind` (and `name`)."""
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    if len(found) != 1:
        raise CheckError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


def expect(condition: object, message: str) -> None:
    """Raise CheckError(message) unless `condition`."""
    if not condition:
        raise CheckError(message)


def secret_variables() -> tuple[str, ...]:
    """The SECRET_VARIABLES of alertd/config.py (read from source: the deploy venv has no alertd to import)."""
    for node in ast.parse(CONFIG_PY.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "SECRET_VARIABLES" for t in node.targets
        ):
            return tuple(ast.literal_eval(node.value))
    raise CheckError(f"no SECRET_VARIABLES in {CONFIG_PY.relative_to(ROOT)}")


def env_value(container: dict[str, Any], name: str) -> str:
    """A plain `env` value of a container."""
    for item in container.get("env", []):
        if item["name"] == name:
            return str(item["value"])
    raise CheckError(f"container {container['name']} has no env {name}")


def port_of(address: str) -> int:
    """The port of a HOST:PORT setting."""
    return int(address.rpartition(":")[2])


def check_locked_down(pod: dict[str, Any], container: dict[str, Any]) -> None:
    """The securityContext every container must have."""
    sc = container.get("securityContext", {})
    name = container["name"]
    expect(sc.get("runAsNonRoot") is True, f"{name}: runAsNonRoot must be true")
    expect(sc.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem must be true")
    expect(sc.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation must be false")
    expect(sc.get("privileged") is False, f"{name}: privileged must be false")
    expect(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: must drop ALL capabilities")
    expect("add" not in sc.get("capabilities", {}), f"{name}: must add no capability")
    expect(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{name}: seccomp must be RuntimeDefault")
    expect(pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", "pod seccomp must be RuntimeDefault")
    expect(pod["securityContext"]["runAsNonRoot"] is True, "pod runAsNonRoot must be true")
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            expect(resource in container.get("resources", {}).get(kind, {}), f"{name}: no {kind}.{resource}")


def probe_target(container: dict[str, Any], probe: str) -> tuple[int, str]:
    """The (port number, path) an HTTP probe asks."""
    spec = container.get(probe)
    if spec is None:
        raise CheckError(f"{container['name']}: no {probe}")
    port = spec["httpGet"]["port"]
    if isinstance(port, str):
        named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        expect(port in named, f"{container['name']}: {probe} names unknown port {port}")
        port = named[port]
    return int(port), str(spec["httpGet"]["path"])


def check_placement(pod: dict[str, Any], variant: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Where alertd sits in the pod; returns the alertd and router containers."""
    expect(pod.get("automountServiceAccountToken") is False, "automountServiceAccountToken must be false")

    if variant == "native":
        inits = pod.get("initContainers", [])
        expect([c["name"] for c in inits] == ["alertd"], "base: alertd must be the only init container")
        alertd = inits[0]
        expect(alertd.get("restartPolicy") == "Always", "base: alertd needs restartPolicy: Always (native sidecar)")
        expect("alertd" not in [c["name"] for c in pod["containers"]], "base: alertd must not also be a container")
        expect([c["name"] for c in pod["containers"]] == ["api-router"], "base: the router is the only container")
        router = pod["containers"][0]
    else:
        expect(not pod.get("initContainers"), "classic: no init containers")
        expect(pod["containers"][0]["name"] == "alertd", "classic: alertd must be containers[0] (starts first)")
        alertd, router = pod["containers"][0], pod["containers"][1]
        expect("restartPolicy" not in alertd, "classic: a regular container has no restartPolicy")
        post_start = " ".join(alertd["lifecycle"]["postStart"]["exec"]["command"])
        expect(f"127.0.0.1:{METRICS_PORT}/readyz" in post_start, "classic: postStart must wait for /readyz")
    ok(f"{variant}: alertd is a {variant} sidecar of {router['name']}")
    return alertd, router


def check_wiring(
    docs: list[dict[str, Any]], variant: str, examples: dict[str, set[str]], secrets: tuple[str, ...]
) -> tuple[dict[str, str], dict[str, str]]:
    """Sidecar placement, ports, probes, grace period, secret files; returns the ConfigMap data and alertd's env."""
    expect(not [d for d in docs if d["kind"] == "Secret"], "a Secret is rendered: real ones are created out of band")
    config = one(docs, "ConfigMap", "alertd-config")["data"]
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    alertd, router = check_placement(pod, variant)
    for container in (alertd, router):
        check_locked_down(pod, container)
    expect(alertd["securityContext"]["runAsUser"] == IMAGE_UID, f"alertd must run as the image's UID {IMAGE_UID}")
    ok(f"{variant}: non-root, read-only root, no capabilities, RuntimeDefault seccomp, requests and limits")
    check_ports(docs, deployment=deployment, config=config, alertd=alertd, router=router, variant=variant)
    check_grace(pod, config, alertd, router, variant)
    env = check_secret_files(pod, config=config, alertd=alertd, router=router, examples=examples, secrets=secrets)
    return {str(k): str(v) for k, v in config.items()}, env


def check_secret_files(
    pod: dict[str, Any],
    *,
    config: dict[str, Any],
    alertd: dict[str, Any],
    router: dict[str, Any],
    examples: dict[str, set[str]],
    secrets: tuple[str, ...],
) -> dict[str, str]:
    """Secrets reach alertd only as files of read-only Secret volumes; returns alertd's (plain) env."""
    expect(
        [ref.get("configMapRef", {}).get("name") for ref in alertd.get("envFrom", [])] == ["alertd-config"],
        "alertd's envFrom must be the ConfigMap alertd-config only",
    )
    in_config = sorted(set(config) & {*secrets, *(f"{name}_FILE" for name in secrets)})
    expect(not in_config, f"secrets (or their file paths) in the ConfigMap: {in_config}; use the Deployment's env")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in alertd.get("volumeMounts", [])}
    router_volumes = {m["name"] for m in router.get("volumeMounts", [])}
    env: dict[str, str] = {}
    for item in alertd.get("env", []):
        name = item["name"]
        expect("value" in item and "valueFrom" not in item, f"alertd env {name}: plain values only (secrets as files)")
        expect(name not in secrets, f"alertd env {name} holds a secret: mount it and set {name}_FILE instead")
        env[name] = str(item["value"])
        if not (name.endswith("_FILE") and name.removesuffix("_FILE") in secrets):
            continue
        directory, _, key = env[name].rpartition("/")
        mount = mounts.get(directory)
        if mount is None:
            raise CheckError(f"{name}={env[name]}: alertd mounts nothing at {directory}")
        expect(mount.get("readOnly") is True and "subPath" not in mount, f"{directory}: mount it read-only, whole")
        source = volumes.get(mount["name"], {}).get("secret")
        expect(source is not None, f"{name}: volume {mount['name']} must be a Secret volume")
        secret_name = source["secretName"]
        expect("items" not in source, f"volume {mount['name']}: no items, each key is a file of its own name")
        expect(secret_name in examples, f"{name}: Secret {secret_name} has no secret.example.yaml")
        expect(key in examples[secret_name], f"{name}: the example Secret {secret_name} has no key {key}")
        expect(mount["name"] not in router_volumes, f"the router must not mount alertd's Secret volume {mount['name']}")
        ok(f"{name}={env[name]}: key {key} of Secret {secret_name}, mounted read-only for alertd only")
    return env


def check_ingest_is_pod_local(
    deployment: dict[str, Any], config: dict[str, Any], alertd: dict[str, Any], router: dict[str, Any]
) -> None:
    """ALERTD_LISTEN is 127.0.0.1 or a socket in a pod-private emptyDir; the router's ALERTD_URL points at it."""
    listen = config["ALERTD_LISTEN"]
    url = env_value(router, "ALERTD_URL")
    if listen.startswith("unix:"):
        directory = listen.removeprefix("unix:").rpartition("/")[0]
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"].get("volumes", [])}

        def socket_volume(container: dict[str, Any]) -> str | None:
            names = [m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == directory]
            return names[0] if names else None

        shared = socket_volume(alertd)
        expect(shared is not None and shared == socket_volume(router), f"{directory} must be shared by both containers")
        expect(
            "emptyDir" in volumes.get(str(shared), {}), f"the socket's volume {shared} must be a pod-private emptyDir"
        )
        expect(url == listen, f"ALERTD_URL {url} must be ALERTD_LISTEN {listen}")
        ok(f"ingest on {listen}, in emptyDir {shared} shared by alertd and the router only")
    else:
        expect(listen.startswith("127.0.0.1:"), "ALERTD_LISTEN must stay on 127.0.0.1 (pod-local)")
        expect(url.startswith(f"http://{listen}/"), f"ALERTD_URL {url} does not point at ALERTD_LISTEN {listen}")
        ok(f"ingest on {listen}: only the pod's own containers reach it")


def check_ports(
    docs: list[dict[str, Any]],
    *,
    deployment: dict[str, Any],
    config: dict[str, Any],
    alertd: dict[str, Any],
    router: dict[str, Any],
    variant: str,
) -> None:
    """Probes, annotations, PodMonitor and NetworkPolicy agree on the metrics port; ingest stays local."""
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]

    check_ingest_is_pod_local(deployment, config, alertd, router)
    metrics_port = port_of(config["ALERTD_METRICS_LISTEN"])
    expect(metrics_port == METRICS_PORT, f"ALERTD_METRICS_LISTEN must use {METRICS_PORT}")
    expect(
        [p["containerPort"] for p in alertd["ports"]] == [METRICS_PORT],
        "alertd must declare only the metrics port (the ingest port is pod-local)",
    )
    for probe, path in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        expect(probe_target(alertd, probe) == (metrics_port, path), f"alertd {probe} must GET {path} on {metrics_port}")
    expect(annotations.get("prometheus.io/scrape") == "true", "prometheus.io/scrape must be true")
    expect(annotations.get("prometheus.io/port") == str(metrics_port), "prometheus.io/port must be the metrics port")
    expect(annotations.get("prometheus.io/path") == "/metrics", "prometheus.io/path must be /metrics")
    monitor = one(docs, "PodMonitor")
    expect(monitor["spec"]["selector"]["matchLabels"].items() <= labels.items(), "PodMonitor must select the pods")
    expect(
        [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"], "PodMonitor must scrape `metrics`"
    )
    policy = one(docs, "NetworkPolicy", "alertd-metrics-scrape")
    expect(policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items(), "NetworkPolicy must select pods")
    allowed = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    expect(allowed == [metrics_port], f"alertd's NetworkPolicy must admit only {metrics_port}, not {allowed}")
    expect(all(rule.get("from") for rule in policy["spec"]["ingress"]), "metrics ingress must name who may scrape")
    ok(f"{variant}: probes, annotations, PodMonitor and NetworkPolicy all use metrics port {metrics_port}")


def check_grace(
    pod: dict[str, Any], config: dict[str, Any], alertd: dict[str, Any], router: dict[str, Any], variant: str
) -> None:
    """The grace period covers the router's drain and then alertd's."""
    router_drain = float(env_value(router, "ROUTER_SHUTDOWN_TIMEOUT_SECONDS"))
    alertd_drain = float(config["ALERTD_SHUTDOWN_TIMEOUT_SECONDS"])
    grace = pod["terminationGracePeriodSeconds"]
    # alertd's drain is bounded by ALERTD_SHUTDOWN_TIMEOUT_SECONDS + 1 s (alertd/daemon.py).
    needed = router_drain + alertd_drain + 1
    expect(
        grace >= needed, f"terminationGracePeriodSeconds {grace} < router {router_drain} + alertd {alertd_drain} + 1"
    )
    if variant == "classic":
        command = alertd["lifecycle"]["preStop"]["exec"]["command"]
        match = re.search(r"sleep\((\d+(?:\.\d+)?)\)", " ".join(command))
        expect(match is not None and float(match.group(1)) >= router_drain, "classic: preStop must outwait the router")
    ok(f"{variant}: terminationGracePeriodSeconds {grace} >= router {router_drain:g} + alertd {alertd_drain:g} + 1")


def rules_file_source(
    docs: list[dict[str, Any]], config: dict[str, str], env: dict[str, str]
) -> tuple[str, str] | None:
    """The (file name, text) of ALERTD_RULES_FILE from the rendered ConfigMap it is mounted from; None when unset.

    The file must be a key of a ConfigMap volume that alertd mounts as a whole directory (the kubelet never
    updates a subPath mount), that ConfigMap must be rendered with a stable name (a hash suffix turns every
    edit into a rollout), and its text must be deploy/rules.example.toml, so that check-config checks the
    file that ships.
    """
    path = env.get("ALERTD_RULES_FILE", config.get("ALERTD_RULES_FILE"))
    if path is None:
        return None
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    containers = [*pod.get("initContainers", []), *pod["containers"]]
    alertd = next(c for c in containers if c["name"] == "alertd")
    directory, _, key = path.rpartition("/")
    mounts = [m for m in alertd.get("volumeMounts", []) if m["mountPath"] == directory]
    expect(mounts, f"ALERTD_RULES_FILE={path}: alertd mounts nothing at {directory}")
    mount = mounts[0]
    expect("subPath" not in mount, f"{directory}: mount the rules directory whole; a subPath mount never updates")
    expect(mount.get("readOnly") is True, f"{directory}: mount the rules read-only")
    volume = {v["name"]: v for v in pod.get("volumes", [])}.get(mount["name"], {})
    source = volume.get("configMap")
    expect(source is not None, f"ALERTD_RULES_FILE: volume {mount['name']} must be a ConfigMap volume")
    expect("items" not in source, f"volume {mount['name']}: no items, each key is a file of its own name")
    name = source["name"]
    expect(
        not KUSTOMIZE_HASH_SUFFIX.search(name),
        f"ConfigMap {name}: a hash-suffixed name makes every rules edit a rollout; set disableNameSuffixHash",
    )
    data = one(docs, "ConfigMap", name).get("data", {})
    expect(key in data, f"ALERTD_RULES_FILE={path}: ConfigMap {name} has no key {key}")
    expect(
        data[key] == RULES_EXAMPLE.read_text(),
        f"ConfigMap {name} key {key} differs from {RULES_EXAMPLE.relative_to(ROOT)}",
    )
    ok(
        f"ALERTD_RULES_FILE={path}: key {key} of ConfigMap {name} (stable name), mounted read-only as a directory, "
        f"= {RULES_EXAMPLE.relative_to(ROOT)}"
    )
    return key, str(data[key])


def check_config_with_alertd(
    alertd: str,
    config: dict[str, str],
    container_env: dict[str, str],
    mode: str,
    workdir: Path,
    *,
    rules: tuple[str, str] | None = None,
) -> None:
    """Check that alertd's parser accepts the ConfigMap plus alertd's env, reads each secret file, hides them all.

    `rules`: the (file name, text) of the mounted rules file, written to a temporary file for ALERTD_RULES_FILE.
    """
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **config, **container_env}  # env wins over envFrom
    rules_path = None
    if rules is not None:
        rules_path = Path(tempfile.mkdtemp(prefix="rules-", dir=workdir)) / rules[0]
        rules_path.write_text(rules[1])
        env["ALERTD_RULES_FILE"] = str(rules_path)
    files = {  # secret -> NAME_FILE
        name.removesuffix("_FILE"): name
        for name in container_env
        if name.endswith("_FILE") and name.removesuffix("_FILE") in SAMPLE_SECRETS
    }
    secret_dir = Path(tempfile.mkdtemp(prefix="secrets-", dir=workdir))
    for secret, file_variable in files.items():
        sample = secret_dir / secret
        sample.write_text(SAMPLE_SECRETS[secret] + "\n")
        env[file_variable] = str(sample)
    result = run([alertd, "check-config"], env=env)
    report = json.loads(result.stdout)
    shown = report["config"]
    unknown = sorted(set(config) - set(shown))
    expect(not unknown, f"ConfigMap keys alertd does not read: {unknown}")
    unread = sorted(s for s in files if shown.get(s) is None)
    expect(not unread, f"alertd did not read {unread} from the files the Deployment names")
    expect(SAMPLE_MARK not in result.stdout + result.stderr, "`alertd check-config` printed a secret")
    expect(not report["warnings"], f"`alertd check-config` warns: {report['warnings']}")
    if mode == "redis":
        expect(shown["ALERTD_REDIS_URL"] is not None, "cluster mode: alertd read no ALERTD_REDIS_URL")
        prefix = config.get("ALERTD_REDIS_PREFIX")
        expect(
            prefix is not None and prefix == shown["ALERTD_REDIS_PREFIX"] != "alertd:",
            "cluster mode: set a deployment's own ALERTD_REDIS_PREFIX in the ConfigMap (not the default alertd:)",
        )
        where = f"cluster mode, Redis URL {shown['ALERTD_REDIS_URL']}, prefix {prefix}"
    else:
        expect(shown["ALERTD_REDIS_URL"] is None, "per-pod mode: ALERTD_REDIS_URL must be unset")
        where = "per-pod mode"
    if rules_path is None:
        expect("rules" not in report, "`alertd check-config` loaded a rules file the Deployment does not set")
    else:
        loaded = report.get("rules") or {}
        expect(loaded.get("source") == str(rules_path), f"`alertd check-config` did not load {rules_path}")
        where += f"; rules file: {len(loaded['rules'])} rules, {len(loaded['silences'])} silences"
    ok(
        f"`alertd check-config` accepts the ConfigMap ({len(config)} settings, all known) and env; "
        f"{', '.join(sorted(files)) or 'no secret'} read from files and never printed; no warning; {where}"
    )


def check_rules(docs: list[dict[str, Any]], promtool: str, workdir: Path) -> None:
    """Run promtool check rules and promtool test rules on the PrometheusRule's groups."""
    groups = one(docs, "PrometheusRule")["spec"]["groups"]
    rules_file = workdir / "alertd.rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    run([promtool, "check", "rules", str(rules_file)])
    ok(f"promtool check rules: {sum(len(g['rules']) for g in groups)} rules")
    bare = [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]} for g in groups]
    rules_file.write_text(yaml.safe_dump({"groups": bare}, sort_keys=False))
    tests = workdir / RULE_TESTS.name
    shutil.copyfile(RULE_TESTS, tests)
    run([promtool, "test", "rules", tests.name], cwd=workdir)
    ok(f"promtool test rules {RULE_TESTS.relative_to(ROOT)}: every test passes")


def load_all(text: str) -> list[dict[str, Any]]:
    """Every non-empty YAML document."""
    return [d for d in yaml.safe_load_all(text) if d]


def main() -> int:
    """Run every check; 0 when all pass."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--alertd", required=True, help="the project's alertd executable (for check-config)")
    args = parser.parse_args()
    bindir = Path(sys.executable).parent
    try:
        kubectl = tool("kubectl")
        validator = tool("kubernetes-validate", bindir)
        promtool = tool("promtool")
        newest = latest_bundled_version(validator)
        secrets = secret_variables()
        expect(set(secrets) == set(SAMPLE_SECRETS), f"alertd's secrets {secrets}: give each a value in SAMPLE_SECRETS")
        examples: dict[str, set[str]] = {}
        for path in EXAMPLE_SECRETS:
            secret = one(load_all(path.read_text()), "Secret")
            examples[secret["metadata"]["name"]] = set(secret["stringData"])
        found = sorted(str(k.parent.relative_to(K8S)) for k in K8S.rglob("kustomization.yaml"))
        expect(found == sorted(VARIANTS), f"kustomizations {found}; checked: {sorted(VARIANTS)}; add to VARIANTS")
        with tempfile.TemporaryDirectory(prefix="alertd-manifests-") as tmp:
            workdir = Path(tmp)
            for variant, (oldest, placement, mode) in VARIANTS.items():
                start = time.monotonic()
                print(f"{variant}:", flush=True)
                rendered = run([kubectl, "kustomize", str(K8S / variant)]).stdout
                out = workdir / (variant.replace("/", "_") + ".yaml")
                out.write_text(rendered)
                docs = load_all(rendered)
                ok(f"kubectl kustomize: {', '.join(sorted(d['kind'] for d in docs))}")
                for version in dict.fromkeys((oldest, newest)):
                    kubernetes_validate(validator, out, version, docs)
                validate_crds(docs)
                config, env = check_wiring(docs, placement, examples, secrets)
                rules = rules_file_source(docs, config, env)
                check_config_with_alertd(args.alertd, config, env, mode, workdir, rules=rules)
                if variant == "base":
                    check_rules(docs, promtool, workdir)
                print(f"  --  {variant}: {time.monotonic() - start:.1f} s", flush=True)
            for path in EXAMPLE_SECRETS:
                print(f"{path.relative_to(K8S)}:", flush=True)
                secret = load_all(path.read_text())
                for version in dict.fromkeys(("1.25.0", newest)):
                    kubernetes_validate(validator, path, version, secret)
                values = one(secret, "Secret")["stringData"].values()
                expect(all(str(v).startswith("REPLACE-ME") for v in values), f"{path.name} holds only placeholders")
                ok("every value is a REPLACE-ME placeholder")
    except CheckError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print("manifests: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
