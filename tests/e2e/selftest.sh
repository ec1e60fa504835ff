#!/usr/bin/env bash
# Self-test of the end-to-end infrastructure (no Rust involved):
#   throwaway Prosody (scripts/prosody) + slixmpp_peer.py echo (bob) + slixmpp_peer.py client
#   (alice, two devices). Exits 0 iff everything worked.
#
# Phase 1: fresh devices; alice sends 10 messages, both of her devices must decrypt all 10
#          echoes (mutual presence subscription requested with --subscribe).
# Phase 2: alice's two devices restart with the same stores (JSON storage persistence, existing
#          sessions) and send 5 more messages, one at a time (--sequential).
# Phase 3: the echo peer restarts with its store (same device, existing sessions); 3 more.
# Phase 4: OMEMO 2 (urn:xmpp:omemo:2 with SCE envelopes): --omemo-version omemo2 echo peer
#          (dave) and client (carol, two devices), fresh accounts; 10 messages, both devices
#          must decrypt all 10 echoes; neither account may have published a legacy node.
#
# Needs root only when Prosody is not installed yet (scripts/prosody install). Network use is
# loopback only (apt-get/pip aside, which only run when something is missing).
#
# Environment:
#   E2E_KEEP=1   keep the temporary directory (logs, stores, server data) even on success
#   TMPDIR       where the temporary directory is created
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PROSODY="$ROOT/scripts/prosody"
PY="$ROOT/.venv/bin/python"
PEER="$ROOT/tests/e2e/slixmpp_peer.py"

T0=$SECONDS
say() { echo "selftest: [$((SECONDS - T0))s] $*" >&2; }
fail() {
    echo "selftest: FAILED: $*" >&2
    exit 1
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/omemo-e2e.XXXXXX")"
ECHO_PID=""
CLIENT_PID=""
STARTED_SERVER=0

show_logs() {
    local f
    for f in "$WORK"/server/prosody.log "$WORK"/echo*.out "$WORK"/echo*.log "$WORK"/client*.log \
        "$WORK"/client*.json; do
        [ -s "$f" ] || continue
        echo "----- tail of $f -----" >&2
        tail -n 30 "$f" >&2
    done
    echo "-----" >&2
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$ECHO_PID" ] && kill -0 "$ECHO_PID" 2>/dev/null; then
        kill -TERM "$ECHO_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$ECHO_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$ECHO_PID" 2>/dev/null || true
        wait "$ECHO_PID" 2>/dev/null || true
    fi
    # A client interrupted by a signal (`timeout` passes the TERM on to it).
    if [ -n "$CLIENT_PID" ] && kill -0 "$CLIENT_PID" 2>/dev/null; then
        kill -TERM "$CLIENT_PID" 2>/dev/null || true
        wait "$CLIENT_PID" 2>/dev/null || true
    fi
    if [ "$STARTED_SERVER" -eq 1 ]; then
        "$PROSODY" stop "$WORK/server" >/dev/null 2>&1 || true
    fi
    if [ "$rc" -ne 0 ]; then
        show_logs
        echo "selftest: FAILED (exit $rc); logs kept in $WORK" >&2
    elif [ "${E2E_KEEP:-0}" = 1 ]; then
        say "passed; logs kept in $WORK"
    else
        rm -rf "$WORK"
        say "passed"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "work dir $WORK"
"$ROOT/scripts/setup-test-env" >"$WORK/setup-test-env.log" 2>&1 \
    || { cat "$WORK/setup-test-env.log" >&2; fail "scripts/setup-test-env failed"; }
"$PROSODY" install >"$WORK/prosody-install.log" 2>&1 \
    || { cat "$WORK/prosody-install.log" >&2; fail "scripts/prosody install failed"; }

mkdir -p "$WORK/server"
STARTED_SERVER=1
PORT="$("$PROSODY" start "$WORK/server")" || fail "could not start Prosody"
SERVER="127.0.0.1:$PORT"
say "Prosody on $SERVER"

ALICE=alice@localhost
BOB=bob@localhost
CAROL=carol@localhost # phase 4 (OMEMO 2)
DAVE=dave@localhost   # phase 4 (OMEMO 2)
PW_A="a-$RANDOM$RANDOM"
PW_B="b-$RANDOM$RANDOM"
PW_C="c-$RANDOM$RANDOM"
PW_D="d-$RANDOM$RANDOM"
"$PROSODY" adduser "$WORK/server" "$ALICE" "$PW_A"
"$PROSODY" adduser "$WORK/server" "$BOB" "$PW_B"
"$PROSODY" adduser "$WORK/server" "$CAROL" "$PW_C"
"$PROSODY" adduser "$WORK/server" "$DAVE" "$PW_D"

# --- the echo peer (bob; dave in phase 4) ---
# start_echo NAME: bob's echo peer (legacy OMEMO), see start_echo_as.
start_echo() { start_echo_as "$BOB" "$PW_B" "$WORK/bob" "$1"; }

# start_echo_as JID PASSWORD STORE NAME EXTRA-ARGS...: starts it with output in
# $WORK/NAME.out and .log, waits for READY and sets ECHO_DEVICE to its device id. (Not called
# in $(...): ECHO_PID must be set in this shell.)
start_echo_as() {
    local jid="$1" password="$2" store="$3" name="$4"
    shift 4
    "$PY" "$PEER" echo --jid "$jid" --password "$password" --server "$SERVER" --store "$store" \
        "$@" </dev/null >"$WORK/$name.out" 2>"$WORK/$name.log" &
    ECHO_PID=$!
    for _ in $(seq 1 300); do
        grep -qx READY "$WORK/$name.out" 2>/dev/null && break
        kill -0 "$ECHO_PID" 2>/dev/null || fail "echo peer exited before READY"
        sleep 0.1
    done
    grep -qx READY "$WORK/$name.out" || fail "echo peer not READY within 30 s"
    ECHO_DEVICE="$(sed -n 's/^DEVICE .*"device_id": \([0-9]*\).*/\1/p' "$WORK/$name.out")"
    [ -n "$ECHO_DEVICE" ] || fail "echo peer printed no DEVICE line"
}

# stop_echo NAME WANT: SIGTERM must make it exit 0; it must have echoed WANT messages.
stop_echo() {
    local name="$1" want="$2" rc=0 n
    kill -0 "$ECHO_PID" 2>/dev/null || fail "echo peer died"
    kill -TERM "$ECHO_PID"
    wait "$ECHO_PID" || rc=$?
    ECHO_PID=""
    [ "$rc" -eq 0 ] || fail "echo peer exited with $rc on SIGTERM"
    n="$(grep -c '^ECHO ' "$WORK/$name.out" || true)"
    [ "$n" -eq "$want" ] || fail "echo peer ($name) reports $n echoes, want $want"
    if grep -q '^ERROR ' "$WORK/$name.out"; then
        fail "echo peer ($name) reported errors: $(grep '^ERROR ' "$WORK/$name.out")"
    fi
}

start_echo echo1
BOB_DEVICE="$ECHO_DEVICE"
say "echo peer ready, device $BOB_DEVICE"

# check_summary FILE COUNT: the client's JSON summary says every echo arrived on both devices.
check_summary() {
    "$PY" - "$1" "$2" <<'EOF'
import json, sys
path, count = sys.argv[1], int(sys.argv[2])
lines = [l for l in open(path, encoding="utf-8").read().splitlines() if l.strip()]
if len(lines) != 1:
    sys.exit(f"expected one JSON line in {path}, got {len(lines)}")
s = json.loads(lines[0])
problems = []
if s.get("ok") is not True:
    problems.append("ok is not true")
if s.get("sent") != count or s.get("echoed") != count:
    problems.append(f"sent={s.get('sent')} echoed={s.get('echoed')}, want {count}")
if s.get("mismatches"):
    problems.append(f"mismatches: {s['mismatches']}")
second = s.get("second_device") or {}
if second.get("received") != count:
    problems.append(f"second device received {second.get('received')}, want {count}")
if problems:
    sys.exit("; ".join(problems))
print(f"{s['device_id']} {second['device_id']}")
EOF
}

run_client() { # NAME COUNT EXTRA-ARGS...: alice (legacy OMEMO) to bob
    run_client_as "$ALICE" "$PW_A" "$WORK/alice" "$BOB" "$@"
}

# JID PASSWORD STORE-PREFIX TO NAME COUNT EXTRA-ARGS...: a client with two devices (stores
# STORE-PREFIX-1 and -2) sends COUNT messages to TO; every echo must arrive on both.
run_client_as() {
    local jid="$1" password="$2" stores="$3" to="$4" name="$5" count="$6"
    shift 6
    local rc=0
    # In the background + wait, so that a signal to this script is handled at once (bash
    # runs traps only after a foreground child has finished).
    timeout 150 "$PY" "$PEER" client --jid "$jid" --password "$password" --server "$SERVER" \
        --store "$stores-1" --second-device-store "$stores-2" --second-resource phone \
        --to "$to" --count "$count" --timeout 90 "$@" \
        </dev/null >"$WORK/$name.json" 2>"$WORK/$name.log" &
    CLIENT_PID=$!
    wait "$CLIENT_PID" || rc=$?
    CLIENT_PID=""
    [ "$rc" -eq 0 ] || fail "$name: slixmpp_peer.py client exited with $rc: $(cat "$WORK/$name.json")"
    check_summary "$WORK/$name.json" "$count" >"$WORK/$name.devices" \
        || fail "$name: bad summary: $(cat "$WORK/$name.json")"
}

# --- phase 1: fresh devices, burst of 10 ---
t=$SECONDS
run_client client1 10 --subscribe
say "phase 1 ok in $((SECONDS - t))s: 10/10 echoes on both devices (devices $(cat "$WORK/client1.devices"))"

# --- phase 2: same stores again, 5 messages one at a time ---
t=$SECONDS
run_client client2 5 --sequential
[ "$(cat "$WORK/client1.devices")" = "$(cat "$WORK/client2.devices")" ] \
    || fail "device ids changed across restarts: $(cat "$WORK/client1.devices") -> $(cat "$WORK/client2.devices")"
say "phase 2 ok in $((SECONDS - t))s: 5/5 echoes, same device ids after restart"

# --- phase 3: the echo peer restarts with its store; 3 more messages ---
t=$SECONDS
stop_echo echo1 15
start_echo echo2
[ "$ECHO_DEVICE" = "$BOB_DEVICE" ] || fail "the echo peer's device changed across restarts: $BOB_DEVICE -> $ECHO_DEVICE"
run_client client3 3
stop_echo echo2 3
say "phase 3 ok in $((SECONDS - t))s: echo peer restarted with device $BOB_DEVICE, 3/3 echoes"

# --- phase 4: OMEMO 2 (carol's two devices and dave's echo peer, all --omemo-version omemo2) ---
t=$SECONDS
start_echo_as "$DAVE" "$PW_D" "$WORK/dave" echo4 --omemo-version omemo2
DAVE_DEVICE="$ECHO_DEVICE"
run_client_as "$CAROL" "$PW_C" "$WORK/carol" "$DAVE" client4 10 --subscribe --omemo-version omemo2
stop_echo echo4 10
# Only OMEMO 2 nodes on the server: Prosody's internal storage keeps the items of each PEP
# node in data/localhost/pep_<node, with . and : percent-encoded>/<user>.list.
legacy_nodes="$(find "$WORK/server/data" -path '*axolotl*' \( -name 'carol.*' -o -name 'dave.*' \) -print)"
[ -z "$legacy_nodes" ] || fail "phase 4: omemo2 peers published legacy OMEMO nodes: $legacy_nodes"
two_nodes="$(find "$WORK/server/data" -path '*omemo%3a2*' \( -name 'carol.*' -o -name 'dave.*' \) -print | wc -l)"
[ "$two_nodes" -eq 4 ] || fail "phase 4: want 4 OMEMO 2 item stores (device list and bundles of carol and dave) in $WORK/server/data, found $two_nodes"
say "phase 4 ok in $((SECONDS - t))s: OMEMO 2, 10/10 echoes on both devices (devices $(cat "$WORK/client4.devices"), echo peer $DAVE_DEVICE)"

"$PROSODY" stop "$WORK/server" >/dev/null 2>&1 || fail "could not stop Prosody"
STARTED_SERVER=0
say "all checks passed in $((SECONDS - T0))s"
