#!/bin/sh
# Install the edgefleet agent on this device, served by the fleet server at /install.sh:
#
#   curl -fsSL https://FLEET/install.sh | sudo sh -s -- --token ENROLLMENT_TOKEN [options]
#
# What it does, each step skipped when already done (running it again repairs, never duplicates):
#   1. the system user edgefleet, which owns /opt/edgefleet and /var/lib/edgefleet;
#   2. a Python venv /opt/edgefleet/envs/VERSION with edgefleet[agent] (pip: the configured index, or the
#      fleet server's wheel mirror with --offline), pointed to by the symlinks /opt/edgefleet/current (the agent
#      runs from it) and /opt/edgefleet/confirmed (its supervisor runs from it; self-update moves it);
#   3. enrollment: the device key is generated here and never leaves; /etc/edgefleet/agent.toml, state in
#      /var/lib/edgefleet (skipped when this device is already enrolled: the token is then not used);
#   4. the hardened unit edgefleet-agent.service, enabled and (re)started;
#   5. the device id and the service's status.
# Root never runs code the agent can change, nor writes where it can: the agent updates itself, so it owns
# /opt/edgefleet, and every step that runs or writes anything there (venv, pip, the environment's own programs,
# enrollment, the links) runs as edgefleet (runuser). Root only adds the user, creates the two directories,
# and writes /etc/edgefleet and the unit; it reads no file of the agent's but as the agent.
# --uninstall removes the service and /opt/edgefleet and keeps the device's identity (it says what stays).
# The fleet server fills in FLEET_URL and AGENT_VERSION when it serves this file.
#
# The whole script is one { ... } block: sh reads a block to its end before it runs any of it, so a download
# that the network cuts short (curl | sh) is a syntax error that runs nothing, never the first half of a step.
{
set -eu
umask 022  # whatever the caller's umask, nothing written here (venv, unit, config dir) is writable by others

FLEET_URL='@FLEET_URL@'
AGENT_VERSION='@AGENT_VERSION@'
UNIT_NAME=edgefleet-agent.service
SERVICE_USER=edgefleet

usage() {
    cat <<EOF
Install the edgefleet agent (version $AGENT_VERSION) from $FLEET_URL on this device.

usage: curl -fsSL $FLEET_URL/install.sh | sudo sh -s -- --token TOKEN [options]

  --token TOKEN        one-time enrollment token (\`edgefleet device enroll --name ID\` prints one);
                       needed only the first time: an enrolled device keeps its identity
  --token-file FILE    read the token from FILE instead: other users of this machine can read
                       --token in the process list while the script runs
  --profile NAME       firmware profile, e.g. raspberry-pi-5 (\`edgefleet profile list\`) [generic-cpu]
  --tags K=V[,K=V]     device tags, repeatable (the operator's tags win)
  --scoring-port PORT  local Open Inference Protocol port [8181]
  --cloud-url URL      fleet server that scores what the device cannot [none]
  --index-url URL      Python package index for pip [pip's configured one]
  --offline            install only from the fleet server's wheel mirror ($FLEET_URL/wheels/);
                       pip's own configuration is not read
  --python PATH        Python 3.11+ with the venv module to build the environment with [python3]
  --uninstall          remove the service and /opt/edgefleet; keep the device's identity and state
  --no-systemd         for containers and tests: no user, no systemctl (the unit file is still written);
                       every step runs as the caller; run the agent yourself with the command printed
                       at the end
  --root DIR           for tests: a throwaway root, every path is prefixed with DIR (implies nothing
                       else; combine with --no-systemd)
  -h, --help           this help
EOF
}

say() { printf '%s\n' "$*"; }
step() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

TOKEN=
TOKEN_FILE=
PROFILE=
TAGS=
SCORING_PORT=
CLOUD_URL=
INDEX_URL=
OFFLINE=0
PYTHON=python3
UNINSTALL=0
SYSTEMD=1
ROOT=

need_value() {
    if [ $# -lt 2 ] || [ -z "$2" ]; then
        die "$1 needs a value (see --help)"
    fi
}

while [ $# -gt 0 ]; do
    case $1 in
        --token) need_value "$@"; TOKEN=$2; shift 2 ;;
        --token-file) need_value "$@"; TOKEN_FILE=$2; shift 2 ;;
        --profile) need_value "$@"; PROFILE=$2; shift 2 ;;
        --tags) need_value "$@"; TAGS=${TAGS:+$TAGS,}$2; shift 2 ;;
        --scoring-port) need_value "$@"; SCORING_PORT=$2; shift 2 ;;
        --cloud-url) need_value "$@"; CLOUD_URL=$2; shift 2 ;;
        --index-url) need_value "$@"; INDEX_URL=$2; shift 2 ;;
        --python) need_value "$@"; PYTHON=$2; shift 2 ;;
        --root) need_value "$@"; ROOT=${2%/}; shift 2 ;;
        --offline) OFFLINE=1; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        --no-systemd) SYSTEMD=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

if [ -n "$TOKEN_FILE" ]; then
    [ -r "$TOKEN_FILE" ] || die "cannot read the token file $TOKEN_FILE"
    TOKEN=$(tr -d ' \t\r\n' <"$TOKEN_FILE")
    [ -n "$TOKEN" ] || die "the token file $TOKEN_FILE is empty"
fi
case $ROOT in
    "" | /*) ;;
    *) ROOT=$(pwd)/$ROOT ;;  # before the cd / below
esac

# The device's paths; the unit and the self-updater name them without ROOT.
OPT=$ROOT/opt/edgefleet
ENV_DIR=$OPT/envs/$AGENT_VERSION
CURRENT=$OPT/current
CONFIG_DIR=$ROOT/etc/edgefleet
CONFIG=$CONFIG_DIR/agent.toml
STATE=$ROOT/var/lib/edgefleet
UNIT=$ROOT/etc/systemd/system/$UNIT_NAME

# Nothing from the caller's Python setup (nor a package in the current directory) reaches the agent's environment.
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP VIRTUAL_ENV PIP_REQUIRE_VIRTUALENV
cd /

if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    die "run this as root: curl -fsSL $FLEET_URL/install.sh | sudo sh -s -- ..."
fi

have_systemctl() {
    [ "$SYSTEMD" = 1 ] && command -v systemctl >/dev/null 2>&1
}

# --- uninstall -------------------------------------------------------------------------------------------
if [ "$UNINSTALL" = 1 ]; then
    device=$(sed -n 's/^device_id = "\(.*\)"$/\1/p' "$CONFIG" 2>/dev/null || true)
    if have_systemctl; then
        step "stopping and disabling $UNIT_NAME"
        systemctl disable --now "$UNIT_NAME" 2>/dev/null || true
    fi
    rm -f "$UNIT"
    if have_systemctl; then
        systemctl daemon-reload
    fi
    rm -rf "$OPT"
    say "removed: $UNIT_NAME ($UNIT) and $OPT (the agent's Python environments)"
    if [ -e "$CONFIG" ] || [ -e "$STATE" ]; then
        forget="rm -rf $CONFIG_DIR $STATE"
        say "kept:    $CONFIG and $STATE: device ${device:-?}'s key, certificate, installed modules"
        say "         and unsent telemetry (installing again resumes as this device, no token needed)"
        if have_systemctl && id "$SERVICE_USER" >/dev/null 2>&1; then
            say "         the user $SERVICE_USER, which owns them"
            forget="$forget; userdel $SERVICE_USER"
        fi
        say "to forget the device: $forget; and on the server: edgefleet device revoke ${device:-DEVICE_ID}"
    fi
    exit 0
fi

enrolled() {
    [ -s "$CONFIG" ] && [ -s "$STATE/identity/device.key" ]
}

if [ -z "$TOKEN" ] && ! enrolled; then
    die "this device is not enrolled yet: pass --token (\`edgefleet device enroll --name DEVICE_ID\` prints one)"
fi

CHANGED=0  # whether a running agent must be restarted to pick up what this run did

# --- 1. the service user and its directories -------------------------------------------------------------
# as_agent runs a command as the service user: whatever the agent can write (all of $OPT, $STATE) is only
# ever run, written or read through it. Without systemd there is no service user: commands run as the caller.
if have_systemctl; then
    command -v runuser >/dev/null 2>&1 ||
        die "runuser is missing (util-linux; on Alpine: apk add runuser): it runs the agent's steps as $SERVICE_USER"
    if ! id "$SERVICE_USER" >/dev/null 2>&1; then
        step "adding the system user $SERVICE_USER"
        if command -v useradd >/dev/null 2>&1; then
            useradd --system --home-dir /var/lib/edgefleet --no-create-home --shell /usr/sbin/nologin \
                --user-group "$SERVICE_USER"
        else
            addgroup -S "$SERVICE_USER" && adduser -S -D -H -h /var/lib/edgefleet -s /sbin/nologin \
                -G "$SERVICE_USER" "$SERVICE_USER"
        fi
    fi
    as_agent() { runuser -u "$SERVICE_USER" -- "$@"; }
    # Only these two directories themselves (their parents are root's): never a walk through what the agent
    # wrote below them, which could hold hard links to root's files.
    mkdir -p "$OPT" "$STATE"
    chown "$SERVICE_USER:$SERVICE_USER" "$OPT" "$STATE"
    chmod 0755 "$OPT"
    chmod 0700 "$STATE"
else
    as_agent() { "$@"; }
fi

# --- 2. the Python environment ---------------------------------------------------------------------------
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
    die "$PYTHON is not Python 3.11 or newer (install python3, or pass --python PATH)"
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null ||
    die "$PYTHON cannot make virtual environments (on Debian and Raspberry Pi OS: apt-get install python3-venv)"

# A rerun repairs, it never downgrades: an agent that updated itself to a newer version (its supervisor moved
# 'confirmed' there once it proved healthy) keeps running that version; the steps below check its environment.
SELF_UPDATED=$(readlink "$OPT/confirmed" 2>/dev/null || true)
SELF_UPDATED=${SELF_UPDATED#envs/}
case $SELF_UPDATED in  # the agent wrote this link: a version, or nothing this script uses
    [0-9]*[!0-9A-Za-z.+-]* | [!0-9]*) SELF_UPDATED= ;;
esac
if [ -n "$SELF_UPDATED" ] && [ "$SELF_UPDATED" != "$AGENT_VERSION" ] && [ -f "$OPT/envs/$SELF_UPDATED/.complete" ] &&
    as_agent "$OPT/envs/$SELF_UPDATED/bin/edgefleet" --help >/dev/null 2>&1 &&
    "$PYTHON" -c 'import re, sys; v = [[int(n) for n in re.findall(r"[0-9]+", re.match(r"[0-9.]*", a).group())]
for a in sys.argv[1:]]; sys.exit(v[0] <= v[1])' "$SELF_UPDATED" "$AGENT_VERSION"; then
    step "keeping agent $SELF_UPDATED, which updated itself (newer than $AGENT_VERSION served here)"
    AGENT_VERSION=$SELF_UPDATED
    ENV_DIR=$OPT/envs/$AGENT_VERSION
fi
# An environment counts once its .complete marker exists (written last), so an interrupted install is redone.
if [ -f "$ENV_DIR/.complete" ] && as_agent "$ENV_DIR/bin/edgefleet" --help >/dev/null 2>&1; then
    step "environment $ENV_DIR is in place"
else
    step "installing edgefleet[agent]==$AGENT_VERSION into $ENV_DIR"
    as_agent rm -rf "$ENV_DIR"
    as_agent mkdir -p "$OPT/envs"
    as_agent "$PYTHON" -m venv "$ENV_DIR"
    if [ "$OFFLINE" = 1 ]; then
        # Only the mirror: none of the find-links, indexes or constraints pip is configured with elsewhere.
        unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_CONSTRAINT PIP_NO_INDEX
        PIP_CONFIG_FILE=/dev/null
        export PIP_CONFIG_FILE
        set -- --no-index --find-links "$FLEET_URL/wheels/"
    elif [ -n "$INDEX_URL" ]; then
        set -- --index-url "$INDEX_URL" --find-links "$FLEET_URL/wheels/"
    else
        set -- --find-links "$FLEET_URL/wheels/"
    fi
    as_agent "$ENV_DIR/bin/pip" install --disable-pip-version-check --no-input --no-cache-dir --progress-bar off "$@" \
        "edgefleet[agent]==$AGENT_VERSION" ||
        die "pip could not install edgefleet[agent]==$AGENT_VERSION (with --offline every wheel must be in the server's mirror: edgefleet server run --wheels-dir DIR)"
    as_agent "$ENV_DIR/bin/python" -c 'import edge_agent.agent' ||
        die "the new environment cannot import the agent"
    as_agent touch "$ENV_DIR/.complete"
    CHANGED=1
fi
# Switch 'current' with one rename (a relative link, so it also holds under --root).
if [ "$(readlink "$CURRENT" 2>/dev/null || true)" != "envs/$AGENT_VERSION" ]; then
    as_agent ln -sfn "envs/$AGENT_VERSION" "$OPT/current.new"
    as_agent "$PYTHON" -c 'import os, sys; os.replace(sys.argv[1], sys.argv[2])' "$OPT/current.new" "$CURRENT"
    CHANGED=1
    SWITCHED=1
fi
# 'confirmed' is where the service starts `edgefleet agent supervise` from: the last version that proved healthy
# (the supervisor moves it after a self-update); a version this script installed counts as confirmed.
if [ "${SWITCHED:-0}" = 1 ] || [ ! -L "$OPT/confirmed" ]; then
    as_agent ln -sfn "envs/$AGENT_VERSION" "$OPT/confirmed.new"
    as_agent "$PYTHON" -c 'import os, sys; os.replace(sys.argv[1], sys.argv[2])' "$OPT/confirmed.new" "$OPT/confirmed"
    CHANGED=1
fi

# --- 3. enrollment ---------------------------------------------------------------------------------------
config_device() {
    "$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["device_id"])' "$1"
}

if enrolled; then
    DEVICE_ID=$(config_device "$CONFIG") || die "$CONFIG is not a valid agent config; move it away and run this again"
    step "already enrolled as $DEVICE_ID: keeping its key and $CONFIG (no token used)"
    if [ -n "$TOKEN" ] && [ "${TOKEN%.*}" != "$DEVICE_ID" ]; then
        say "    the token given is for ${TOKEN%.*}; to enroll as that device, run --uninstall, remove $CONFIG_DIR and $STATE, then install"
    fi
    if [ -n "$PROFILE$TAGS$SCORING_PORT$CLOUD_URL" ]; then
        say "    --profile/--tags/--scoring-port/--cloud-url apply at enrollment only: edit $CONFIG to change them"
    fi
else
    step "enrolling with $FLEET_URL (the device key is made here and stays here)"
    # The agent enrolls as itself and writes its config among its state; root then copies it to /etc, where
    # the agent can read it but not change it, reading it as the agent (a link there must not show root's files).
    ENROLLED=$STATE/agent.toml.enrolled
    set -- --server "$FLEET_URL" --state-dir "$STATE" --config "$ENROLLED" --install-prefix "$OPT"
    [ -z "$PROFILE" ] || set -- "$@" --profile "$PROFILE"
    [ -z "$TAGS" ] || set -- "$@" --tags "$TAGS"
    [ -z "$SCORING_PORT" ] || set -- "$@" --scoring-port "$SCORING_PORT"
    [ -z "$CLOUD_URL" ] || set -- "$@" --cloud-url "$CLOUD_URL"
    # The token goes by the environment (readable by root and the agent only), never by a command line others
    # can read.
    EDGEFLEET_ENROLL_TOKEN=$TOKEN
    export EDGEFLEET_ENROLL_TOKEN
    as_agent "$CURRENT/bin/edgefleet" agent enroll "$@" --json >/dev/null || die "enrollment failed (see above)"
    unset EDGEFLEET_ENROLL_TOKEN
    mkdir -p "$CONFIG_DIR"
    (umask 077 && as_agent cat "$ENROLLED" >"$CONFIG.new") || die "enrollment wrote no $ENROLLED"
    DEVICE_ID=$(config_device "$CONFIG.new") || die "enrollment wrote no valid config ($ENROLLED)"
    mv -f "$CONFIG.new" "$CONFIG"
    as_agent rm -f "$ENROLLED"
    CHANGED=1
fi

# --- 4. unit, service ------------------------------------------------------------------------------------
if have_systemctl; then
    # The agent reads its config and cannot change it.
    chown root:"$SERVICE_USER" "$CONFIG_DIR" "$CONFIG"
    chmod 0750 "$CONFIG_DIR"
    chmod 0640 "$CONFIG"
fi

mkdir -p "$(dirname "$UNIT")"
cat >"$UNIT.new" <<EOF
# Written by $FLEET_URL/install.sh; running it again rewrites this file.
[Unit]
Description=edgefleet device agent (runs the fleet's ML modules on this device)
Documentation=$FLEET_URL/docs
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
# The agent, a child of its supervisor, sends READY=1 and the watchdog pings.
NotifyAccess=all
# The supervisor runs the agent from /opt/edgefleet/current and rolls a failed self-update back to the previous
# environment; it runs from the last confirmed one, so a new agent that cannot start cannot stop it.
ExecStart=/opt/edgefleet/confirmed/bin/edgefleet agent supervise --config /etc/edgefleet/agent.toml
User=$SERVICE_USER
Group=$SERVICE_USER
Environment=PYTHONUNBUFFERED=1
StateDirectory=edgefleet
StateDirectoryMode=0700
# Self-update installs new environments next to the running one. What the agent can write (this, its state
# directory, its private /tmp) holds nothing that root runs: every command here runs as User= (no ExecStartPre=,
# no '+' or '!' prefix), and install.sh runs what lives there only as $SERVICE_USER.
ReadWritePaths=/opt/edgefleet
Restart=on-failure
RestartSec=5
# The agent pings every second while its threads run; loading large models happens before READY=1.
WatchdogSec=30
TimeoutStartSec=180
TimeoutStopSec=30
UMask=0077
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
# Not set, on purpose: PrivateDevices= and DevicePolicy= (accelerators are device nodes: GPU, NPU, TPU),
# MemoryDenyWriteExecute= (accelerator runtimes may generate code), ProcSubset=pid (memory telemetry
# reads /proc/meminfo).

[Install]
WantedBy=multi-user.target
EOF
UNIT_CHANGED=0
if cmp -s "$UNIT.new" "$UNIT"; then
    rm -f "$UNIT.new"
    step "$UNIT is unchanged"
else
    mv -f "$UNIT.new" "$UNIT"
    step "wrote $UNIT"
    UNIT_CHANGED=1
    CHANGED=1
fi

if have_systemctl; then
    [ "$UNIT_CHANGED" = 0 ] || systemctl daemon-reload
    systemctl enable --quiet "$UNIT_NAME"
    if [ "$CHANGED" = 1 ] || ! systemctl is-active --quiet "$UNIT_NAME"; then
        step "(re)starting $UNIT_NAME"
        systemctl restart "$UNIT_NAME" || say "    $UNIT_NAME did not start: journalctl -u $UNIT_NAME"
    else
        step "$UNIT_NAME is running and nothing changed: not restarted"
    fi
    STATUS=$(systemctl is-active "$UNIT_NAME" || true)
else
    # as the unit does: the supervisor, so the agent can update itself and roll a bad update back
    STATUS="not started (--no-systemd): run $OPT/confirmed/bin/edgefleet agent supervise --config $CONFIG"
fi

# --- 5. what is installed --------------------------------------------------------------------------------
say "edgefleet agent $AGENT_VERSION installed"
say "  device:  $DEVICE_ID"
say "  server:  $FLEET_URL"
say "  env:     $ENV_DIR ($CURRENT)"
say "  config:  $CONFIG"
say "  state:   $STATE"
say "  service: $UNIT_NAME $STATUS"
[ "$STATUS" != failed ] || exit 1
}
