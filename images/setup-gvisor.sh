#!/usr/bin/env bash
# Register gVisor (runsc) with the running Docker engine, as root, idempotently.
#
#   sudo images/setup-gvisor.sh
#
# 1. installs Debian's runsc if /usr/bin/runsc is missing (the host's own apt sources);
# 2. merges "runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}}
#    into the engine's daemon.json, keeping every other key and every other runtime;
# 3. reloads the engine with SIGHUP (never a restart: other processes use it);
# 4. waits until `docker info` lists runsc, or fails saying why.
# --network=none is required: without it every runsc container fails with "cannot run with network
# enabled in root network namespace". Running it twice changes nothing.
# Environment: DOCKER_DAEMON_JSON overrides the config file path (default: the dockerd
# --config-file argument, else /etc/docker/daemon.json); GVISOR_WAIT_S the wait (default 30).
set -euo pipefail

RUNSC=/usr/bin/runsc
WAIT_S=${GVISOR_WAIT_S:-30}

die() { echo "setup-gvisor: error: $*" >&2; exit 1; }
say() { echo "setup-gvisor: $*" >&2; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs a package, edits the engine's config and signals dockerd)"
[ "$(uname -m)" = x86_64 ] || die "gVisor from Debian and fnforge's runner need x86_64, this is $(uname -m)"
command -v python3 >/dev/null || die "python3 is needed to merge the JSON config"
command -v docker >/dev/null || die "the docker CLI is missing (apt-get install -y docker.io)"

# 1. runsc
if [ ! -x "$RUNSC" ]; then
    say "installing runsc (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends runsc >/dev/null 2>&1 \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends runsc >/dev/null; } \
        || die "apt-get install runsc failed (is Debian's archive reachable? run apt-get update)"
fi
[ -x "$RUNSC" ] || die "$RUNSC is still missing after the install"
"$RUNSC" --version >/dev/null 2>&1 || die "$RUNSC does not run: $("$RUNSC" --version 2>&1 | head -1)"

# 2. the engine and its config file
pids=$(pidof dockerd || true)
[ -n "$pids" ] || die "dockerd is not running: start it first (dockerd >/tmp/dockerd.log 2>&1 &)"
[ "$(echo "$pids" | wc -w)" -eq 1 ] || die "more than one dockerd runs ($pids): configure the right one by hand"
pid=$pids
config=${DOCKER_DAEMON_JSON:-}
if [ -z "$config" ]; then
    # dockerd --config-file PATH / --config-file=PATH, else the default
    config=$(tr '\0' '\n' < "/proc/$pid/cmdline" | awk '
        prev == "--config-file" { print; exit }
        /^--config-file=/ { sub(/^--config-file=/, ""); print; exit }
        { prev = $0 }')
    config=${config:-/etc/docker/daemon.json}
fi
listed() {  # the engine knows runsc, with --network=none
    docker info --format '{{json .Runtimes}}' 2>/dev/null | python3 -c '
import json, sys
r = json.load(sys.stdin).get("runsc") or {}
sys.exit(0 if "--network=none" in (r.get("runtimeArgs") or []) else 1)'
}
cmdline=$(tr '\0' '\n' < "/proc/$pid/cmdline")
if printf '%s\n' "$cmdline" | grep -q -- '^--add-runtime'; then
    listed && { say "ok: dockerd already has runsc from its command line"; exit 0; }
    die "dockerd was started with --add-runtime: runtimes in $config too would make the reload fail; add runsc=$RUNSC to its command line instead"
fi

changed=$(python3 - "$config" "$RUNSC" <<'PY'
import json, os, sys, tempfile
path, runsc = sys.argv[1], sys.argv[2]
want = {"path": runsc, "runtimeArgs": ["--network=none"]}
try:
    with open(path) as f:
        text = f.read()
except FileNotFoundError:
    text = ""
try:
    config = json.loads(text) if text.strip() else {}
except ValueError as exc:
    sys.exit(f"setup-gvisor: error: {path} is not valid JSON ({exc}); left untouched")
if not isinstance(config, dict):
    sys.exit(f"setup-gvisor: error: {path} is not a JSON object; left untouched")
runtimes = config.get("runtimes", {})
if not isinstance(runtimes, dict):
    sys.exit(f"setup-gvisor: error: 'runtimes' in {path} is not an object; left untouched")
if runtimes.get("runsc") == want:
    print("no")
    sys.exit(0)
config["runtimes"] = {**runtimes, "runsc": want}  # every other key and runtime kept
directory = os.path.dirname(os.path.abspath(path))
os.makedirs(directory, exist_ok=True)
mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644
fd, tmp = tempfile.mkstemp(dir=directory, prefix=".daemon.json.")
with os.fdopen(fd, "w") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
os.chmod(tmp, mode)
os.replace(tmp, path)  # atomic: the engine never reads half a file
print("yes")
PY
) || exit 1

# 3. reload (SIGHUP re-reads daemon.json; running containers are untouched)
if [ "$changed" = yes ] || ! listed; then
    say "runsc registered in $config; reloading dockerd (pid $pid) with SIGHUP"
    kill -HUP "$pid"
fi

# 4. wait for the engine to list it
for _ in $(seq $((WAIT_S * 5))); do
    if listed; then
        say "ok: docker info lists runsc ($("$RUNSC" --version | head -1))"
        exit 0
    fi
    sleep 0.2
done
docker info >/dev/null 2>&1 || die "docker info fails: is DOCKER_HOST pointing at this machine's engine?"
die "dockerd did not pick up runsc within ${WAIT_S}s after the reload; see the engine's log for 'failed to reload' (a conflicting flag or an invalid $config)"
