#!/usr/bin/env bash
# Builds ./Dockerfile for real and runs the image, without a Docker engine and without a registry.
#
#   deploy/image-check.sh        (root; CI runs it through `make deploy-check`)
#
# 1. A local Python base image: Debian bookworm by debootstrap (minbase + python3, python3-venv,
#    python3-pip) with `python` linked to python3, as the official python images have it. Its
#    rootfs tarball is cached in $ALERTD_CI_CACHE (default /var/cache/alertd-ci), outside the
#    checkout, so a fresh clone on the same machine reuses it; delete the file to rebuild it.
# 2. `buildah bud --isolation chroot --storage-driver vfs` with PYTHON_IMAGE set to that base.
# 3. Checks on the result: image config (non-root UID, exec-form CMD, ports, HEALTHCHECK),
#    `alertd check-config` and `id -u` via `buildah run`, no pip or compiler in the runtime stage,
#    then `alertd serve` on a READ-ONLY root filesystem as UID 10001: the image's own HEALTHCHECK
#    command passes, five failures POSTed from outside fire one alert, visible on /metrics, and
#    SIGTERM drains and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${ALERTD_CI_CACHE:-/var/cache/alertd-ci}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# Bump the key when the base recipe below changes: a new tarball and base image are made.
BASE_KEY=debian-${SUITE}-python3-v1
BASE_TAR=$CACHE/$BASE_KEY.tar
BASE_IMAGE=localhost/alertd-ci-base:$BASE_KEY
IMAGE=localhost/alertd:ci-$$
UID_EXPECTED=10001
BUILDAH=(buildah --root "$CACHE/storage" --runroot /run/alertd-ci/storage --storage-driver vfs)
export BUILDAH_ISOLATION=chroot

log() { printf '[image-check %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() {
  printf '[image-check] FAILED: %s\n' "$*" >&2
  exit 1
}
timed() {
  local name=$1 start=$SECONDS
  shift
  "$@"
  log "$name took $((SECONDS - start)) s"
}

[ "$(id -u)" = 0 ] || fail "needs root (buildah with vfs storage, debootstrap, chroot)"
# .checkov.yaml cannot see through `FROM ${PYTHON_IMAGE}` (CKV_DOCKER_7 is skipped there): the default
# base must carry a version tag, never :latest.
default_base=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
[[ "$default_base" =~ ^[^@]+:[A-Za-z0-9._-]+$ && "$default_base" != *:latest ]] ||
  fail "ARG PYTHON_IMAGE default '$default_base' must have a version tag (not :latest)"
if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  log "installing buildah and debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends buildah debootstrap >/dev/null
fi
mkdir -p "$CACHE"

make_base_tar() {
  local work
  work=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  log "debootstrap $SUITE into $work (cold cache)"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip "$SUITE" "$work/rootfs" "$MIRROR" \
    >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    fail "debootstrap failed (log above)"
  }
  ln -sf /usr/bin/python3 "$work/rootfs/usr/local/bin/python"
  chroot "$work/rootfs" apt-get clean
  rm -rf "$work/rootfs/var/lib/apt/lists/"*
  tar -C "$work/rootfs" --numeric-owner -cf "$BASE_TAR.partial" .
  mv "$BASE_TAR.partial" "$BASE_TAR"
  rm -rf "$work"
}

import_base() {
  local ctr
  ctr=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" add "$ctr" "$BASE_TAR" / # a local tarball is extracted into the root
  "${BUILDAH[@]}" config --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 "$ctr"
  "${BUILDAH[@]}" commit --rm --quiet "$ctr" "$BASE_IMAGE" >/dev/null
}

[ -s "$BASE_TAR" ] || timed "base rootfs (debootstrap)" make_base_tar
if ! "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
  timed "base image import" import_base
fi

ctr=
mnt_done=
cleanup() {
  if [ -n "$mnt_done" ]; then "${BUILDAH[@]}" umount "$ctr" >/dev/null 2>&1 || true; fi
  if [ -n "$ctr" ]; then "${BUILDAH[@]}" rm "$ctr" >/dev/null 2>&1 || true; fi
  "${BUILDAH[@]}" rmi "$IMAGE" >/dev/null 2>&1 || true
  "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
}
trap cleanup EXIT

tmp=$(mktemp -d)
build() {
  local volumes=()
  # Where pip on this machine trusts a CA of its own (a TLS-inspecting proxy in front of PyPI), RUN
  # steps get the same bundle through a bind-mounted /etc/pip.conf; the Dockerfile stays generic and
  # nothing of it lands in a layer.
  local ca
  ca=$(python3 -m pip config get global.cert 2>/dev/null || true)
  ca=${ca:-${PIP_CERT:-}}
  if [ -n "$ca" ] && [ -s "$ca" ]; then
    printf '[global]\ncert = /etc/alertd-ci-ca.pem\n' >"$tmp/pip.conf"
    volumes+=(--volume "$ca:/etc/alertd-ci-ca.pem:ro" --volume "$tmp/pip.conf:/etc/pip.conf:ro")
  fi
  "${BUILDAH[@]}" bud --isolation chroot --format docker --pull=never "${volumes[@]}" \
    --build-arg "PYTHON_IMAGE=$BASE_IMAGE" --tag "$IMAGE" --file Dockerfile .
}
timed "buildah bud" build

check_config() {
  "${BUILDAH[@]}" inspect --type image "$IMAGE" >"$tmp/inspect.json"
  python3 - "$tmp/inspect.json" "$UID_EXPECTED" "$tmp" <<'EOF' || fail "image config"
import json, sys
config = json.load(open(sys.argv[1]))["Docker"]["config"]
uid, tmp = sys.argv[2], sys.argv[3]
assert config["User"] == f"{uid}:{uid}", f"USER is {config['User']!r}, not {uid}:{uid}"
assert config["Cmd"] == ["alertd", "serve"], f"CMD is {config['Cmd']!r}"
assert {"9180/tcp", "9181/tcp"} <= set(config["ExposedPorts"]), f"EXPOSE {config['ExposedPorts']!r}"
test = config["Healthcheck"]["Test"]
assert test[:3] == ["CMD", "python", "-c"] and "/healthz" in test[3], f"HEALTHCHECK {test!r}"
# For the read-only serve test: the image's environment and its health check's Python code.
open(f"{tmp}/env", "w").write("".join(f"{line}\n" for line in config["Env"]))
open(f"{tmp}/healthcheck.py", "w").write(test[3])
print(f"image config: USER {config['User']}, CMD {config['Cmd']}, EXPOSE {sorted(config['ExposedPorts'])}")
EOF
  ctr=$("${BUILDAH[@]}" from --pull=never --quiet "$IMAGE")
  [ "$("${BUILDAH[@]}" run "$ctr" -- id -u)" = "$UID_EXPECTED" ] || fail "the image does not run as $UID_EXPECTED"
  if "${BUILDAH[@]}" run "$ctr" -- sh -c 'python -m pip --version || command -v gcc || command -v cc' >/dev/null 2>&1; then
    fail "pip or a compiler is in the runtime image"
  fi
  log "buildah run $IMAGE alertd check-config:"
  "${BUILDAH[@]}" run "$ctr" -- alertd check-config | tee "$tmp/check-config.json"
  python3 - "$tmp/check-config.json" <<'EOF'
import json, sys
config = json.load(open(sys.argv[1]))["config"]
assert config["ALERTD_LISTEN"] == "127.0.0.1:9180", config["ALERTD_LISTEN"]
assert config["ALERTD_METRICS_LISTEN"] == "0.0.0.0:9181", config["ALERTD_METRICS_LISTEN"]
EOF
}

timed "image config, buildah run checks" check_config

serve_read_only() {
  local mnt api metrics healthcheck
  mnt=$("${BUILDAH[@]}" mount "$ctr")
  mnt_done=1
  read -r api metrics < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
  # The image's env (PATH with the venv first, PYTHON* settings) and its HEALTHCHECK command.
  healthcheck=$(cat "$tmp/healthcheck.py")
  healthcheck=${healthcheck//9181/$metrics}
  # A private mount namespace: the container's root is bind-mounted read-only, /dev is the host's.
  # shellcheck disable=SC2016 # the inner script expands its own positional parameters
  unshare --mount --propagation private bash -euo pipefail -c '
    mnt=$1 tmp=$2 api=$3 metrics=$4 healthcheck=$5 uid=$6
    mount --bind "$mnt" "$mnt"
    mount -o remount,bind,ro "$mnt"
    mount --bind /dev "$mnt/dev"
    if touch "$mnt/probe" 2>/dev/null; then echo "root filesystem is not read-only" >&2; exit 1; fi
    run() { env -i $(cat "$tmp/env") ALERTD_LISTEN=127.0.0.1:$api ALERTD_METRICS_LISTEN=127.0.0.1:$metrics \
      ALERTD_API_KEY_SALT=image-check chroot --userspec="$uid:$uid" "$mnt" "$@"; }
    # exec: $! is alertd itself (env and chroot exec in turn), so the SIGTERM below reaches it.
    (run_exec() { exec env -i $(cat "$tmp/env") ALERTD_LISTEN=127.0.0.1:$api ALERTD_METRICS_LISTEN=127.0.0.1:$metrics \
      ALERTD_API_KEY_SALT=image-check chroot --userspec="$uid:$uid" "$mnt" "$@"; }
     run_exec alertd serve >"$tmp/serve.log" 2>&1) &
    pid=$!
    for _ in $(seq 100); do
      if run python -c "$healthcheck" 2>/dev/null; then break; fi
      sleep 0.1
    done
    run python -c "$healthcheck" || { cat "$tmp/serve.log" >&2; echo "HEALTHCHECK failed" >&2; exit 1; }
    python3 - "$api" "$metrics" <<EOF
import json, sys, urllib.request
api, metrics = sys.argv[1:]
for i in range(5):
    body = json.dumps({"provider": "image-smoke", "status": 503, "api_key": "sk-test-0123456789abcdef"}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{api}/v1/failures", body, {"Content-Type": "application/json"})
    assert urllib.request.urlopen(request, timeout=5).status == 202
text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5).read().decode()
assert "alertd_alerts_total{provider=\"image-smoke\"} 1.0" in text, text
print("image-check: 5 failures -> alertd_alerts_total{provider=\"image-smoke\"} 1.0")
EOF
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; echo "alertd did not stop within 10 s of SIGTERM" >&2; exit 1; fi
    wait "$pid" || { cat "$tmp/serve.log" >&2; echo "alertd serve exited non-zero" >&2; exit 1; }
    grep -q "\"alert_fired\"" "$tmp/serve.log" || { echo "no alert_fired in the log" >&2; exit 1; }
    grep -q "\"alertd_stopped\"" "$tmp/serve.log" || { echo "no alertd_stopped in the log" >&2; exit 1; }
  ' _ "$mnt" "$tmp" "$api" "$metrics" "$healthcheck" "$UID_EXPECTED" || fail "read-only serve check"
  log "alertd serve ran as UID $UID_EXPECTED on a read-only root, fired an alert and drained on SIGTERM"
}
timed "read-only serve smoke test" serve_read_only

# Opt-in (not in CI, ~1 min): ALERTD_IMAGE_MEASURE=1 deploy/image-check.sh runs deploy/measure_resources.py
# with the image's Python, as UID 10001 on the read-only root, idle / unpaced / 500 per second.
measure_in_image() {
  local mnt args
  mnt=$("${BUILDAH[@]}" mount "$ctr")
  for args in "--seconds 20" "--seconds 20 --rate 500"; do
    # shellcheck disable=SC2016,SC2086 # the inner script expands its own parameters; $args is a list
    unshare --mount --propagation private bash -euo pipefail -c '
      mnt=$1 tmp=$2 uid=$3; shift 3
      mount --bind "$mnt" "$mnt"
      mount -o remount,bind,ro "$mnt"
      mount -t proc proc "$mnt/proc"
      mount --bind /dev "$mnt/dev"
      env -i $(cat "$tmp/env") chroot --userspec="$uid:$uid" "$mnt" python - "$@" <deploy/measure_resources.py
    ' _ "$mnt" "$tmp" "$UID_EXPECTED" $args
  done
}
if [ "${ALERTD_IMAGE_MEASURE:-}" = 1 ]; then timed "resource measurement in the image" measure_in_image; fi
rm -rf "$tmp"
log "OK"
