#!/usr/bin/env bash
# End-to-end tests of omemo-bot (bot/) against a throwaway Prosody on loopback
# (scripts/prosody), the slixmpp-omemo peer (tests/e2e/slixmpp_peer.py), a raw stanza
# sender (tests/e2e/bot_raw_sender.py) and a flooding stranger (tests/e2e/bot_flood_sender.py).
# Builds the bot once (cargo build -p omemo-bot).
#
# Scenarios (each prints a PASS or FAIL line; the last line is "N passed, M failed"):
#   1. slixmpp-omemo client (two devices on one account, which start their session with
#      each other first) -> omemo-bot run: 50 messages, every echo decrypts to the same text
#      on both devices.
#   2. omemo-bot send -> slixmpp-omemo echo peer: first contact by prekey message, the echo
#      is decrypted and printed (--wait-reply); a second message on the session.
#   3. omemo-bot send -> omemo-bot run, twice; fingerprint/devices agree; distrust makes
#      send fail, trust by the URI `fingerprint` prints makes it work again (a tampered
#      URI is refused and changes nothing); a distrust in the running bot's store stops
#      its next echo to that device, without a restart; a second `run` on its store is
#      refused with a clear error.
#   4. Restarts: SIGTERM in the middle of a conversation, then kill -9 with messages sent
#      while the bot is down; the conversation goes on, every message is echoed, the
#      device id never changes.
#   5. An unencrypted message gets the OMEMO-only hint; a garbage <encrypted>, a key that is
#      not a Signal message and a message for other device ids get no answer (logged);
#      the bot keeps serving OMEMO.
#   6. The server restarts under a running bot: it reconnects (with backoff), republishes
#      and goes on echoing.
#   7. OMEMO 2: a client with two OMEMO 2 devices (SCE envelopes) -> omemo-bot run, 50
#      messages, every echo decrypts on both devices.
#   8. OMEMO 2: omemo-bot send -> the OMEMO 2 echo peer, with --version auto and omemo2; the
#      echoes are printed; --version legacy to it fails with a clear message.
#   9. Both versions on one account: a legacy-only device and an OMEMO 2-only device ->
#      omemo-bot run, 20 messages, every echo on both (one stanza, both <encrypted>).
#  10. One prekey, two first contacts (legacy, then OMEMO 2): `run --pre-keys 1`; two
#      slixmpp-omemo devices of one account build their sessions from one fetch of the bot's
#      bundle each, before either sends (both key exchanges name the same prekey). The first
#      is read; the second is refused (prekey not available any more), the bot rebuilds the
#      session and sends that device an empty key exchange (logged); then 10 messages from
#      each device, every echo read on both, each device reads the other's messages. The
#      store keeps one prekey per version.
#  11. The bot and a device start sessions with each other at once (legacy, then OMEMO 2):
#      a slixmpp-omemo device builds its session and encrypts, then holds what it receives;
#      its other device's first message makes the bot echo to the account with a key
#      exchange to the first; when that has arrived (unread), the first device sends. The
#      bot reads both first messages (no decryption failure at all); python-omemo replaces
#      its session with the bot's and the bot keeps sending on it, so none of the bot's
#      messages is lost to it; after a probe, 10 messages from each device, every echo read
#      on both.
#  12. Flood from a stranger: 250-device lists (both versions) published on its PEP (the
#      server notifies the bot from its bare JID) and 100 sent as <event> messages from its
#      full JID; 40 valid key exchanges from made-up devices with fresh identities, while a
#      legitimate client talks to the bot. Every event and list is refused, at most 20 of
#      the key exchanges are read (new sessions per JID per hour); the bot's store holds
#      at most 200 device records and 20 sessions of the stranger, its peak RSS (VmHWM)
#      stays within 64 MiB, and the client gets 18/18 echoes (3 before the flood: its first
#      contact must not take one of the prekeys the stranger's key exchanges use).
#  13. Clear failures at the door: `send`, `devices`, `publish` and `run` with a wrong
#      password each exit 4 within 2 s with "authentication failed for JID:
#      not-authorized" (`run` does not retry); `send`, `devices` and `publish` against a
#      closed port exit 5 within 2 s naming the server; `run` against it keeps waiting and
#      says what for.
#  14. Identity backup: a slixmpp-omemo contact talks to the bot (5 echoes); the bot stops,
#      `identity export` seals its identity under a passphrase; `identity import` with a
#      wrong passphrase fails and leaves no store; into a new store it gives the same
#      device id and fingerprint; the bot runs on the new store: the contact's next
#      message (on the old session) is lost, the bot rebuilds the session, and the
#      contact's 5 messages after it are echoed.
#  15. Contacts without a subscription: slixmpp-omemo echo peers whose OMEMO nodes have the
#      `presence` access model (as clients without publish-options leave them on Prosody).
#      `omemo-bot send` to one that accepts subscription requests asks for one, then
#      delivers (the echo is printed); to one that never answers it fails within its
#      deadline with "visible to subscribed contacts only" and the unanswered request.
#      A slixmpp-omemo client with such nodes writes to `omemo-bot run`: the bot asks it
#      for a subscription and sends each echo once it is approved (5/5).
#  16. The store encrypted at rest: a bot on a plain store talks to a slixmpp-omemo
#      client (its JIDs are in the file), `store encrypt` converts it (no JID left in the
#      database, WAL or journal, also while the bot runs); without the passphrase or with a
#      wrong one every command fails at once with exit 1 and the files stay as they were;
#      the conversation goes on across restarts, before and after `store
#      change-passphrase`, after which the old passphrase is refused.
#  17. Device hygiene: two old devices of the bot's account, then the bot's device with a
#      label, then (6 s later) a new one; `devices prune --older-than 4s` removes exactly
#      the two old ones from both lists (python-omemo, legacy and OMEMO 2, sees the bot
#      and the new device, and the bot's label, whose signature it checks); `devices
#      --own` shows each device with when it was last heard from; `devices reset` leaves
#      the bot's device alone on both lists.
#  18. Catching up after time offline (XEP-0313): a bot with one prekey per version talks
#      to zoe (2 echoes) and stops; while it is down zoe and three first contacts (walt
#      and xena on legacy OMEMO, yuri on OMEMO 2) send 5 messages each, so walt's and
#      xena's key exchanges name the same prekey. The bot restarts, reads its archive
#      (and the copies the server kept for it), and sends exactly 20 echoes, each
#      client's 5 once (none undecryptable); each first contact gets exactly one empty
#      message (the session's completion, after the catch-up); the prekeys the key
#      exchanges named are gone from the store afterwards and none is left hidden.
#  19. A group chat: amy (slixmpp-omemo, legacy OMEMO) creates a members-only,
#      non-anonymous room, makes bea and the bot members and invites the bot (XEP-0249);
#      the bot (`run --follow-invites-from amy`) joins (and the room of its `--join`, which
#      it creates); bea joins and changes her nickname halfway. Each member sends 4 messages,
#      one at a time: every member reads the other's 4 and the bot's 8 echoes (each of
#      its own once), the bot reads all 8 (no refusal, no failure) and recognises its 8
#      echoes coming back from the room.
#  20. A room's archive (XEP-0313 on the room), three slixmpp-omemo members and the bot:
#      ada creates the room with ben, cyd and the bot as members (cyd's device published,
#      but cyd away) and invites the bot through the room (XEP-0045 mediated: the room is
#      on ada's server, so the bot follows it); ada and ben send 3 messages each (one at a
#      time, after the bot's echo). cyd then joins, reads all 12 from the room's archive
#      (every one decrypts) and sends one (echoed); ada and ben read each other's 3,
#      cyd's 1 and the bot's echoes live. The bot stops; ada sends 3; the bot restarts,
#      joins the room again from the bookmark it kept (XEP-0402), reads the room's archive
#      after the last message it read, and echoes each of the 3 exactly once.
#      Then ada takes ben's membership away and writes: the bot's echo carries no key for
#      ben's device, in either version.
#
# Usage: tests/e2e/bot_e2e.sh [SCENARIO...]   (default: all; e.g. `bot_e2e.sh 2 3`)
#        E2E_REPEAT=20 tests/e2e/bot_e2e.sh 1   (scenario 1 twenty times, on one server and
#                                               build; each run with fresh accounts)
# Needs root only when Prosody or python3-venv is missing. Network use is loopback only
# (plus apt-get/pip/cargo when something is missing).
#
# Environment:
#   E2E_KEEP=1        keep the temporary directory (logs, stores) even on success
#   E2E_REPEAT=N      run each scenario given N times (scenarios 1, 7, 9-12, 14-17; each run
#                     with new accounts and stores), stopping a scenario at its first failure
#   CARGO_TARGET_DIR  where cargo builds (default: <repo>/target)
#   E2E_BOT_BUILT=1   use <target>/debug/omemo-bot as it is: scripts/test sets it, as its
#                     `cargo build --workspace --all-targets` has just built the binary (with
#                     the workspace's features; `cargo build -p omemo-bot` would build much
#                     of the tree again for its own feature set)
#   TMPDIR            where the temporary directory is created
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PROSODY="$ROOT/scripts/prosody"
PY="$ROOT/.venv/bin/python"
PEER="$ROOT/tests/e2e/slixmpp_peer.py"
RAW="$ROOT/tests/e2e/bot_raw_sender.py"
FLOOD="$ROOT/tests/e2e/bot_flood_sender.py"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
BOT="$TARGET_DIR/debug/omemo-bot"

T0=$SECONDS
say() { echo "bot_e2e: [$((SECONDS - T0))s] $*" >&2; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/omemo-bot-e2e.XXXXXX")"
: >"$WORK/pids"
STARTED_SERVER=0
PASSED=0
FAILED=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pid
    # Everything the scenarios started (bots, peers, clients), then the server.
    while read -r pid; do
        [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
    done <"$WORK/pids"
    sleep 0.3
    while read -r pid; do
        [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
    done <"$WORK/pids"
    if [ "$STARTED_SERVER" -eq 1 ]; then
        "$PROSODY" stop "$WORK/server" >/dev/null 2>&1 || true
    fi
    if [ "$rc" -ne 0 ] || [ "$FAILED" -ne 0 ] || [ "${E2E_KEEP:-0}" = 1 ]; then
        say "logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() {
    echo "bot_e2e: ERROR: $*" >&2
    echo "0 passed, 1 failed"
    exit 1
}

REPEAT="${E2E_REPEAT:-1}"
case "$REPEAT" in '' | *[!0-9]* | 0*) die "E2E_REPEAT must be a positive number, not '$REPEAT'" ;; esac

# ------------------------------------------------------------------------------------------
# setup: test environment, server, build

say "work dir $WORK"
"$ROOT/scripts/setup-test-env" >"$WORK/setup-test-env.log" 2>&1 \
    || { cat "$WORK/setup-test-env.log" >&2; die "scripts/setup-test-env failed"; }
"$PROSODY" install >"$WORK/prosody-install.log" 2>&1 \
    || { cat "$WORK/prosody-install.log" >&2; die "scripts/prosody install failed"; }
if [ "${E2E_BOT_BUILT:-}" = 1 ]; then
    [ -x "$BOT" ] || die "E2E_BOT_BUILT=1 but no binary at $BOT"
    say "using $BOT as built"
else
    say "building omemo-bot"
    (cd "$ROOT" && cargo build -p omemo-bot) >"$WORK/build.log" 2>&1 \
        || { tail -n 40 "$WORK/build.log" >&2; die "cargo build -p omemo-bot failed"; }
    [ -x "$BOT" ] || die "no binary at $BOT"
    say "built $BOT"
fi

mkdir -p "$WORK/server"
# The bots log each echo at debug level (scenarios count those lines), the rest at info.
export RUST_LOG="${RUST_LOG:-info,omemo_bot=debug}"
# info level: the debug log of every stanza is large and not needed here.
PORT="$(PROSODY_LOG_LEVEL=info "$PROSODY" start "$WORK/server")" || die "could not start Prosody"
STARTED_SERVER=1
SERVER="127.0.0.1:$PORT"
say "Prosody on $SERVER"

# One password for every throwaway account.
PW="pw-$RANDOM$RANDOM"
for user in alice bot1 bob dave carol bot3 erin bot4 eve bot5 frank bot6 grace bot7 heidi \
    ivan judy bot9 kate leo bot10 mike nina bot11 mallory oscar bot12 bot13 peggy bot14 quinn rupert sybil trent bot15 uma bot16 vic bot17 \
    walt xena yuri zoe bot18 amy bea bot19 ada ben cyd bot20; do
    "$PROSODY" adduser "$WORK/server" "$user@localhost" "$PW" 2>>"$WORK/adduser.log" \
        || die "could not create $user@localhost"
done

# ------------------------------------------------------------------------------------------
# helpers (used inside the scenario subshells; `fail` ends the scenario)
#
# An ACCOUNT given to a helper is a user name; the helpers add $SFX, which is empty on a
# scenario's first run and names a fresh set of accounts on each repetition (E2E_REPEAT).

SFX=""

fail() {
    echo "FAILED: $*"
    exit 1
}

track() { echo "$1" >>"$WORK/pids"; }

# Common bot options for ACCOUNT (user name) with store $WORK/ACCOUNT.db.
bot_opts() {
    printf '%s\n' --jid "$1$SFX@localhost" --store "$WORK/$1$SFX.db" --password "$PW" \
        --server "$SERVER" --insecure-plaintext
}

# wait_logged NAME PID TEXT [SECONDS]: waits (60 s unless told) until $WORK/NAME.log says
# TEXT; fails when the process PID exits first.
wait_logged() {
    local name="$1" pid="$2" text="$3" limit="${4:-60}" i
    for i in $(seq 1 $((limit * 10))); do
        grep -q "$text" "$WORK/$name.log" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null \
            || fail "$name exited: $(tail -n 5 "$WORK/$name.log") $(cat "$WORK/$name.json" 2>/dev/null)"
        sleep 0.1
    done
    fail "$name did not log \"$text\" within $limit s"
}

# start_bot ACCOUNT LOGNAME [RUN-OPTION...]: `omemo-bot run` in the background, waits until
# it has published its device. Sets BOT_PID.
start_bot() {
    local account="$1" name="$2"
    shift 2
    local -a opts
    mapfile -t opts < <(bot_opts "$account")
    # Emptied now: a repetition must not find the last run's lines before the bot writes.
    : >"$WORK/$name.log"
    "$BOT" run "${opts[@]}" "$@" </dev/null >"$WORK/$name.out" 2>"$WORK/$name.log" &
    BOT_PID=$!
    track "$BOT_PID"
    wait_logged "$name" "$BOT_PID" "own device lists and bundles published" 30
}

# stop_bot SIGNAL: sends SIGNAL to BOT_PID and waits for the exit; sets STOP_RC to the exit
# status. (Not to be called in $(...): the bot must be a child of this shell.)
stop_bot() {
    local sig="$1" i
    STOP_RC=0
    kill "-$sig" "$BOT_PID" 2>/dev/null || fail "bot $BOT_PID is not running"
    for i in $(seq 1 100); do
        kill -0 "$BOT_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$BOT_PID" 2>/dev/null && fail "bot $BOT_PID still running 10 s after SIG$sig"
    wait "$BOT_PID" 2>/dev/null || STOP_RC=$?
    BOT_PID=""
}

echo_count() { grep -c "sent an OMEMO message" "$WORK/$1.log" 2>/dev/null || true; }

device_id() { # ACCOUNT
    "$BOT" fingerprint --jid "$1$SFX@localhost" --store "$WORK/$1$SFX.db" 2>/dev/null \
        | sed -n 's/^device id: //p'
}

# client NAME ACCOUNT TO COUNT EXTRA...: slixmpp_peer.py client in the foreground (through
# `wait`, so that signals to this script are handled at once); its JSON summary goes to
# $WORK/NAME.json.
client() {
    local name="$1" account="$2$SFX" to="$3$SFX" count="$4" rc=0 pid
    shift 4
    timeout 150 "$PY" "$PEER" client --jid "$account@localhost" --password "$PW" \
        --server "$SERVER" --store "$WORK/$account-1" --to "$to@localhost" --count "$count" \
        --timeout 90 "$@" </dev/null >"$WORK/$name.json" 2>"$WORK/$name.log" &
    pid=$!
    track "$pid"
    wait "$pid" || rc=$?
    return "$rc"
}

# race NAME ACCOUNT TO MODE EXTRA...: slixmpp_peer.py race (two devices of ACCOUNT, stores
# $WORK/ACCOUNT-1 and $WORK/ACCOUNT-2) in the foreground; its JSON summary goes to
# $WORK/NAME.json.
race() {
    local name="$1" account="$2$SFX" to="$3$SFX" mode="$4" rc=0 pid
    shift 4
    timeout 150 "$PY" "$PEER" race --jid "$account@localhost" --password "$PW" \
        --server "$SERVER" --store "$WORK/$account-1" --second-device-store "$WORK/$account-2" \
        --to "$to@localhost" --mode "$mode" --timeout 90 "$@" \
        </dev/null >"$WORK/$name.json" 2>"$WORK/$name.log" &
    pid=$!
    track "$pid"
    wait "$pid" || rc=$?
    return "$rc"
}

# race_field NAME EXPR: a value from the race summary $WORK/NAME.json (EXPR in Python, over
# the summary `s`).
race_field() {
    "$PY" -c 'import json, sys; s = json.load(open(sys.argv[1], encoding="utf-8")); print(eval(sys.argv[2]))' \
        "$WORK/$1.json" "$2"
}

# rounds NAME: what the race summary $WORK/NAME.json says of the messages after the first
# contact, e.g. "10+10 messages, 20/20 echoes on each device".
rounds() {
    race_field "$1" '"%d+%d messages, %d/%d and %d/%d echoes on the devices" % (
        s["second"]["other_device_read"], s["primary"]["other_device_read"],
        s["primary"]["echoes"], s["primary"]["of"], s["second"]["echoes"], s["second"]["of"])'
}

# store_count DB SQL: one number from the SQLite file DB, opened read-only.
store_count() {
    "$PY" -c 'import sqlite3, sys; c = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True); print(c.execute(sys.argv[2]).fetchone()[0])' \
        "$1" "$2"
}

# send_expect_echo LOGNAME TEXT SEND-ARGS...: `omemo-bot send SEND-ARGS --wait-reply 30 TEXT`
# must exit 0 and print TEXT (the echo); its stderr goes to $WORK/LOGNAME.log.
send_expect_echo() {
    local log="$1" text="$2" out
    shift 2
    out="$("$BOT" send "$@" --wait-reply 30 "$text" 2>"$WORK/$log.log")" \
        || fail "$log exited $?: $(tail -n 5 "$WORK/$log.log")"
    [ "$out" = "$text" ] || fail "$log printed '$out', want '$text'"
}

# start_echo_peer NAME ACCOUNT EXTRA...: slixmpp_peer.py echo in the background, waits for
# READY; its stdout goes to $WORK/NAME.out. Sets ECHO_PID.
start_echo_peer() {
    local name="$1" account="$2$SFX" i
    shift 2
    "$PY" "$PEER" echo --jid "$account@localhost" --password "$PW" --server "$SERVER" \
        --store "$WORK/$account" "$@" </dev/null >"$WORK/$name.out" 2>"$WORK/$name.log" &
    ECHO_PID=$!
    track "$ECHO_PID"
    for i in $(seq 1 300); do
        grep -qx READY "$WORK/$name.out" 2>/dev/null && return 0
        kill -0 "$ECHO_PID" 2>/dev/null || fail "echo peer exited before READY"
        sleep 0.1
    done
    fail "echo peer not READY within 30 s"
}

# check_summary NAME COUNT [two]: the client's summary says all COUNT echoes arrived (on
# both devices with "two").
check_summary() {
    "$PY" - "$WORK/$1.json" "$2" "${3:-one}" <<'EOF'
import json, sys
path, count, devices = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lines = [l for l in open(path, encoding="utf-8").read().splitlines() if l.strip()]
if len(lines) != 1:
    sys.exit(f"expected one JSON line in {path}, got {len(lines)}")
s = json.loads(lines[0])
problems = []
if s.get("ok") is not True:
    problems.append(f"ok={s.get('ok')} errors={s.get('errors')}")
if s.get("sent") != count or s.get("echoed") != count:
    problems.append(f"sent={s.get('sent')} echoed={s.get('echoed')}, want {count}")
if s.get("mismatches"):
    problems.append(f"mismatches: {s['mismatches'][:3]}")
if s.get("duplicates"):
    problems.append(f"{s['duplicates']} duplicate echoes")
if devices == "two":
    second = s.get("second_device") or {}
    if second.get("received") != count:
        problems.append(f"second device received {second.get('received')}, want {count}")
if problems:
    sys.exit("; ".join(problems))
EOF
}

# ------------------------------------------------------------------------------------------
# scenarios

scenario_1() {
    start_bot bot1 bot1
    client s1-client alice bot1 50 --second-device-store "$WORK/alice$SFX-2" \
        --second-resource phone --subscribe \
        || fail "client exited non-zero: $(cat "$WORK/s1-client.json")"
    check_summary s1-client 50 two || fail "bad client summary"
    [ "$(echo_count bot1)" -eq 50 ] || fail "bot sent $(echo_count bot1) messages, want 50"
    grep -q "accepted a presence subscription" "$WORK/bot1.log" \
        || fail "the bot did not accept alice's subscription"
    if grep -q "could not decrypt\|not encrypted for this device" "$WORK/bot1.log"; then
        fail "decryption problems: $(grep -m3 'could not decrypt\|not encrypted for' "$WORK/bot1.log")"
    fi
    stop_bot TERM
    [ "$STOP_RC" = 0 ] || fail "the bot did not exit 0 on SIGTERM (exit $STOP_RC)"
    echo "50/50 echoes on both of alice's devices"
}

scenario_2() {
    start_echo_peer s2-echo bob
    local -a opts
    mapfile -t opts < <(bot_opts dave)
    local text1="first contact ✓ <&> \"quotes\" ünïcödé" text2="second message, same session"
    send_expect_echo s2-send1 "$text1" "${opts[@]}" --to bob@localhost
    grep -q '"text": "first contact' "$WORK/s2-echo.out" || fail "the echo peer did not report the message"
    send_expect_echo s2-send2 "$text2" "${opts[@]}" --to bob@localhost
    if grep -q '^ERROR ' "$WORK/s2-echo.out"; then
        fail "echo peer errors: $(grep '^ERROR ' "$WORK/s2-echo.out")"
    fi
    [ "$(grep -c '^ECHO ' "$WORK/s2-echo.out")" -eq 2 ] || fail "echo peer echoed $(grep -c '^ECHO ' "$WORK/s2-echo.out") messages, want 2"
    kill -TERM "$ECHO_PID"
    wait "$ECHO_PID" || fail "echo peer exited non-zero"
    echo "both echoes from slixmpp-omemo decrypted and printed"
}

scenario_3() {
    local rc bot_device
    start_bot bot3 bot3
    local -a opts
    mapfile -t opts < <(bot_opts carol)
    send_expect_echo s3-send1 "hello from carol" "${opts[@]}" --to bot3@localhost
    send_expect_echo s3-send2 "and again" "${opts[@]}" --to bot3@localhost
    # `devices` shows the bot's device with the fingerprint `fingerprint` prints.
    bot_device="$(device_id bot3)"
    local fp
    fp="$("$BOT" fingerprint --jid bot3@localhost --store "$WORK/bot3.db" | sed -n 's/^fingerprint: //p')"
    "$BOT" devices "${opts[@]}" bot3@localhost >"$WORK/s3-devices.out" 2>"$WORK/s3-devices.log" \
        || fail "devices exited non-zero: $(tail -n 5 "$WORK/s3-devices.log")"
    # (Its last message, the echo, came seconds ago.)
    grep -qE "^ *$bot_device  blind +active +legacy\+omemo2 +(just now|[0-9]+m ago) +$fp\$" \
        "$WORK/s3-devices.out" \
        || fail "devices output lacks device $bot_device / $fp: $(cat "$WORK/s3-devices.out")"
    # Distrusted: nothing to encrypt to, send fails; trusted again: it works.
    "$BOT" distrust --jid carol@localhost --store "$WORK/carol.db" bot3@localhost "$bot_device" \
        >/dev/null 2>&1 || fail "distrust failed"
    rc=0
    "$BOT" send "${opts[@]}" --to bot3@localhost "to a distrusted device" >/dev/null 2>"$WORK/s3-send3.log" || rc=$?
    [ "$rc" -ne 0 ] || fail "send to a distrusted device succeeded"
    # Trust by the URI `fingerprint` prints (what a QR code holds): a tampered fingerprint
    # is refused and changes nothing; the real one marks the device verified.
    local uri bad_uri
    uri="$("$BOT" fingerprint --jid bot3@localhost --store "$WORK/bot3.db" | sed -n 's/^uri: //p')"
    case "$uri" in "xmpp:bot3$SFX@localhost?message;omemo-sid-$bot_device="*) ;;
        *) fail "fingerprint printed the URI '$uri'" ;; esac
    bad_uri="${uri%?}$( [ "${uri: -1}" = 0 ] && echo 1 || echo 0)"
    rc=0
    "$BOT" trust --jid carol@localhost --store "$WORK/carol.db" --uri "$bad_uri" \
        >/dev/null 2>"$WORK/s3-bad-uri.log" || rc=$?
    [ "$rc" -eq 1 ] || fail "trust of a tampered URI exited $rc, want 1"
    grep -q "is not the one of its identity key; nothing was changed" "$WORK/s3-bad-uri.log" \
        || fail "no clear error for a tampered URI: $(cat "$WORK/s3-bad-uri.log")"
    rc=0
    "$BOT" send "${opts[@]}" --to bot3@localhost "still distrusted" >/dev/null 2>&1 || rc=$?
    [ "$rc" -ne 0 ] || fail "a refused URI changed the distrust"
    "$BOT" trust --jid carol@localhost --store "$WORK/carol.db" --uri "$uri" \
        >"$WORK/s3-uri.out" 2>&1 || fail "trust --uri failed: $(cat "$WORK/s3-uri.out")"
    grep -q "device $bot_device of bot3$SFX@localhost is now verified" "$WORK/s3-uri.out" \
        || fail "trust --uri said: $(cat "$WORK/s3-uri.out")"
    send_expect_echo s3-send4 "verified now" "${opts[@]}" --to bot3@localhost
    "$BOT" devices "${opts[@]}" bot3@localhost >"$WORK/s3-devices2.out" 2>/dev/null \
        || fail "devices exited non-zero"
    grep -q "^ *$bot_device  verified " "$WORK/s3-devices2.out" \
        || fail "the device is not verified: $(cat "$WORK/s3-devices2.out")"
    rc=0
    "$BOT" trust --jid carol@localhost --store "$WORK/carol.db" bot3@localhost 12345 >/dev/null 2>&1 || rc=$?
    [ "$rc" -eq 1 ] || fail "trust of an unknown device exited $rc, want 1"
    # A second `run` on the running bot's store is refused with a clear error (two
    # would reuse message keys).
    local -a bot3_opts
    mapfile -t bot3_opts < <(bot_opts bot3)
    rc=0
    timeout 20 "$BOT" run "${bot3_opts[@]}" </dev/null >/dev/null 2>"$WORK/s3-second-run.log" || rc=$?
    [ "$rc" -eq 1 ] || fail "a second run on one store exited $rc, want 1"
    grep -q "bot3.db is in use by another process" "$WORK/s3-second-run.log" \
        || fail "no clear error for the second run: $(tail -n 2 "$WORK/s3-second-run.log")"
    # The bot's operator distrusts carol's device while the bot runs: the next message
    # gets no echo, without a restart; trusted again, it does.
    local carol_device
    carol_device="$(device_id carol)"
    "$BOT" distrust --jid bot3@localhost --store "$WORK/bot3.db" carol@localhost "$carol_device" \
        >/dev/null 2>"$WORK/s3-distrust.log" || fail "distrust in the bot's store failed: $(cat "$WORK/s3-distrust.log")"
    rc=0
    "$BOT" send "${opts[@]}" --to bot3@localhost --wait-reply 5 "after the distrust" >/dev/null \
        2>"$WORK/s3-send5.log" || rc=$?
    [ "$rc" -eq 3 ] || fail "a distrusted device got an echo (send exited $rc)"
    grep -q "message from a distrusted device not answered" "$WORK/bot3.log" \
        || fail "the running bot did not see the distrust"
    "$BOT" trust --jid bot3@localhost --store "$WORK/bot3.db" carol@localhost "$carol_device" \
        >/dev/null 2>&1 || fail "trust in the bot's store failed"
    send_expect_echo s3-send6 "trusted again" "${opts[@]}" --to bot3@localhost
    stop_bot INT
    [ "$STOP_RC" = 0 ] || fail "the bot did not exit 0 on SIGINT (exit $STOP_RC)"
    echo "4 echoes between two omemo-bots; distrust/trust respected, also while the bot runs"
}

scenario_4() {
    local id0 id n client_pid rc
    start_bot bot4 bot4a
    id0="$(device_id bot4)"
    [ -n "$id0" ] || fail "no device id"
    client s4-a erin bot4 10 --sequential || fail "phase A client failed: $(cat "$WORK/s4-a.json")"
    check_summary s4-a 10 || fail "phase A: bad summary"

    # Phase B: SIGTERM while erin is in the middle of 10 messages (one at a time).
    timeout 150 "$PY" "$PEER" client --jid erin@localhost --password "$PW" --server "$SERVER" \
        --store "$WORK/erin-1" --to bot4@localhost --count 10 --timeout 90 --sequential \
        </dev/null >"$WORK/s4-b.json" 2>"$WORK/s4-b.log" &
    client_pid=$!
    track "$client_pid"
    for n in $(seq 1 300); do
        [ "$(echo_count bot4a)" -ge 13 ] && break
        sleep 0.1
    done
    [ "$(echo_count bot4a)" -ge 13 ] || fail "phase B: the conversation did not start"
    stop_bot TERM
    [ "$STOP_RC" = 0 ] || fail "phase B: the bot did not exit 0 on SIGTERM (exit $STOP_RC)"
    grep -q "OMEMO state is saved" "$WORK/bot4a.log" || fail "no clean-stop line in the log"
    sleep 1
    start_bot bot4 bot4b
    rc=0
    wait "$client_pid" || rc=$?
    [ "$rc" -eq 0 ] || fail "phase B client failed: $(cat "$WORK/s4-b.json")"
    check_summary s4-b 10 || fail "phase B: bad summary"

    # Phase C: kill -9, erin sends 5 messages while the bot is down (kept offline by the
    # server), the bot comes back and answers them all.
    stop_bot KILL
    timeout 150 "$PY" "$PEER" client --jid erin@localhost --password "$PW" --server "$SERVER" \
        --store "$WORK/erin-1" --to bot4@localhost --count 5 --timeout 90 \
        </dev/null >"$WORK/s4-c.json" 2>"$WORK/s4-c.log" &
    client_pid=$!
    track "$client_pid"
    sleep 4
    start_bot bot4 bot4c
    rc=0
    wait "$client_pid" || rc=$?
    [ "$rc" -eq 0 ] || fail "phase C client failed: $(cat "$WORK/s4-c.json")"
    check_summary s4-c 5 || fail "phase C: bad summary"

    id="$(device_id bot4)"
    [ "$id" = "$id0" ] || fail "device id changed: $id0 -> $id"
    for n in bot4b bot4c; do
        grep -q "created OMEMO identity" "$WORK/$n.log" && fail "$n created a new identity"
        grep -q "device_id=$id0" "$WORK/$n.log" || fail "$n does not run device $id0"
    done
    if grep -q "could not decrypt" "$WORK/bot4a.log" "$WORK/bot4b.log" "$WORK/bot4c.log"; then
        fail "decryption failures after restarts"
    fi
    stop_bot TERM
    [ "$STOP_RC" = 0 ] || fail "the bot did not exit 0 on SIGTERM (exit $STOP_RC)"
    echo "25/25 echoes across SIGTERM and kill -9; device $id0 kept"
}

scenario_5() {
    local device
    start_bot bot5 bot5
    device="$(device_id bot5)"
    "$PY" "$RAW" --jid eve@localhost --password "$PW" --server "$SERVER" --to bot5@localhost \
        --bot-device "$device" </dev/null >"$WORK/s5-raw.json" 2>"$WORK/s5-raw.log" \
        || fail "raw sender failed: $(tail -n 5 "$WORK/s5-raw.log")"
    "$PY" - "$WORK/s5-raw.json" <<'EOF' || fail "wrong answers: $(cat "$WORK/s5-raw.json")"
import json, sys
r = json.load(open(sys.argv[1], encoding="utf-8"))
assert len(r["plain"]) == 1 and "only talk OMEMO" in r["plain"][0], r["plain"]
for case in ("garbage-xml", "garbage-key", "wrong-device"):
    assert r[case] == [], (case, r[case])
EOF
    kill -0 "$BOT_PID" 2>/dev/null || fail "the bot died"
    [ "$(grep -c 'could not decrypt an OMEMO message' "$WORK/bot5.log")" -eq 2 ] \
        || fail "expected 2 decryption warnings: $(grep WARN "$WORK/bot5.log")"
    grep -q "OMEMO message not encrypted for this device" "$WORK/bot5.log" \
        || fail "no warning for the message to other devices"
    client s5-client eve bot5 3 || fail "client failed after the bad messages: $(cat "$WORK/s5-client.json")"
    check_summary s5-client 3 || fail "bad summary after the bad messages"
    stop_bot TERM
    [ "$STOP_RC" = 0 ] || fail "the bot did not exit 0 on SIGTERM (exit $STOP_RC)"
    echo "hint for plaintext, silence for 3 kinds of bad OMEMO, then 3/3 echoes"
}

scenario_6() {
    local i
    start_bot bot6 bot6
    client s6-a frank bot6 3 || fail "client before the restart failed: $(cat "$WORK/s6-a.json")"
    check_summary s6-a 3 || fail "bad summary before the restart"
    "$PROSODY" stop "$WORK/server" >/dev/null 2>&1 || fail "could not stop Prosody"
    sleep 1
    PROSODY_C2S_PORT="$PORT" PROSODY_LOG_LEVEL=info "$PROSODY" start "$WORK/server" >/dev/null \
        2>"$WORK/s6-restart.log" || fail "could not restart Prosody on port $PORT"
    for i in $(seq 1 300); do
        [ "$(grep -c 'own device lists and bundles published' "$WORK/bot6.log")" -ge 2 ] && break
        kill -0 "$BOT_PID" 2>/dev/null || fail "the bot died with the server"
        sleep 0.1
    done
    [ "$(grep -c 'own device lists and bundles published' "$WORK/bot6.log")" -ge 2 ] \
        || fail "the bot did not come back within 30 s"
    client s6-b frank bot6 3 || fail "client after the restart failed: $(cat "$WORK/s6-b.json")"
    check_summary s6-b 3 || fail "bad summary after the restart"
    stop_bot TERM
    [ "$STOP_RC" = 0 ] || fail "the bot did not exit 0 on SIGTERM (exit $STOP_RC)"
    echo "reconnected after a server restart; 6/6 echoes"
}

scenario_7() {
    start_bot bot7 bot7
    client s7-client grace bot7 50 --second-device-store "$WORK/grace$SFX-2" \
        --second-resource phone --subscribe --omemo-version omemo2 \
        || fail "client exited non-zero: $(cat "$WORK/s7-client.json")"
    check_summary s7-client 50 two || fail "bad client summary"
    [ "$(echo_count bot7)" -eq 50 ] || fail "bot sent $(echo_count bot7) messages, want 50"
    if grep -q "could not decrypt\|not encrypted for this device\|bad SCE" "$WORK/bot7.log"; then
        fail "decryption problems: $(grep -m3 'could not decrypt\|not encrypted for\|bad SCE' "$WORK/bot7.log")"
    fi
    grep -q 'version=OMEMO 2' "$WORK/bot7.log" || fail "no OMEMO 2 message in the bot's log"
    stop_bot TERM
    [ "$STOP_RC" = 0 ] || fail "the bot did not exit 0 on SIGTERM (exit $STOP_RC)"
    echo "OMEMO 2: 50/50 echoes on both of grace's devices"
}

scenario_8() {
    local rc
    start_echo_peer s8-echo heidi --omemo-version omemo2
    local -a opts
    mapfile -t opts < <(bot_opts ivan)
    local text1="OMEMO 2 first contact ✓ <&> ünïcödé" text2="second, --version omemo2"
    send_expect_echo s8-send1 "$text1" "${opts[@]}" --to heidi@localhost
    send_expect_echo s8-send2 "$text2" "${opts[@]}" --version omemo2 --to heidi@localhost
    rc=0
    "$BOT" send "${opts[@]}" --version legacy --to heidi@localhost "legacy only" \
        >/dev/null 2>"$WORK/s8-send3.log" || rc=$?
    [ "$rc" -eq 1 ] || fail "send --version legacy to an OMEMO 2 only peer exited $rc, want 1"
    grep -q "could not send to heidi@localhost" "$WORK/s8-send3.log" \
        || fail "no clear error: $(tail -n 3 "$WORK/s8-send3.log")"
    if grep -q '^ERROR ' "$WORK/s8-echo.out"; then
        fail "echo peer errors: $(grep '^ERROR ' "$WORK/s8-echo.out")"
    fi
    [ "$(grep -c '^ECHO ' "$WORK/s8-echo.out")" -eq 2 ] \
        || fail "echo peer echoed $(grep -c '^ECHO ' "$WORK/s8-echo.out") messages, want 2"
    kill -TERM "$ECHO_PID"
    wait "$ECHO_PID" || fail "echo peer exited non-zero"
    echo "OMEMO 2: both echoes from the OMEMO 2 peer decrypted and printed; legacy refused"
}

scenario_9() {
    start_bot bot9 bot9
    client s9-client judy bot9 20 --second-device-store "$WORK/judy$SFX-2" \
        --second-resource omemo2 --second-device-omemo-version omemo2 --subscribe \
        || fail "client exited non-zero: $(cat "$WORK/s9-client.json")"
    check_summary s9-client 20 two || fail "bad client summary"
    [ "$(echo_count bot9)" -eq 20 ] || fail "bot sent $(echo_count bot9) messages, want 20"
    # Every echo was one stanza with both <encrypted> elements.
    [ "$(grep -c 'sent an OMEMO message.*versions={Legacy, Omemo2}' "$WORK/bot9.log")" -eq 20 ] \
        || fail "not every echo carried both versions: $(grep -m3 'sent an OMEMO message' "$WORK/bot9.log")"
    if grep -q "could not decrypt\|not encrypted for this device" "$WORK/bot9.log"; then
        fail "decryption problems: $(grep -m3 'could not decrypt\|not encrypted for' "$WORK/bot9.log")"
    fi
    stop_bot TERM
    [ "$STOP_RC" = 0 ] || fail "the bot did not exit 0 on SIGTERM (exit $STOP_RC)"
    echo "20/20 echoes on judy's legacy device and on her OMEMO 2 device"
}

scenario_10() {
    local version account id pre_key n detail=""
    # One one-time prekey per version: two first contacts from one fetch of the bundle
    # each use it.
    start_bot bot10 bot10 --pre-keys 1
    for version in legacy omemo2; do
        case "$version" in legacy) account=kate ;; *) account=leo ;; esac
        race "s10-$version" "$account" bot10 first-contact --omemo-version "$version" \
            || fail "$version: $(cat "$WORK/s10-$version.json")"
        id="$(race_field "s10-$version" 's["devices"]["second"]')"
        pre_key="$(race_field "s10-$version" 's["key_exchanges"]["second"]["pre_key_id"]')"
        grep -q "prekey $pre_key is not available any more" "$WORK/bot10.log" \
            || fail "$version: the bot did not report the used prekey $pre_key"
        grep -q "rebuilding the session sender=$account$SFX@localhost device_id=$id " "$WORK/bot10.log" \
            || fail "$version: no rebuild for $account's device $id in the bot's log"
        grep -q "session rebuilt jid=$account$SFX@localhost device_id=$id " "$WORK/bot10.log" \
            || fail "$version: the session with $account's device $id was not rebuilt"
        detail+="$version: prekey $pre_key taken twice, healed, then $(rounds "s10-$version"); "
    done
    if grep -q "rebuild held back" "$WORK/bot10.log"; then
        fail "a rebuild was held back: $(grep -m1 'rebuild held back' "$WORK/bot10.log")"
    fi
    stop_bot TERM
    [ "$STOP_RC" = 0 ] || fail "the bot did not exit 0 on SIGTERM (exit $STOP_RC)"
    # --pre-keys 1: each version's bundle holds one prekey (the used ones were replaced).
    for version in 1 2; do
        n="$(store_count "$WORK/bot10$SFX.db" "SELECT count(*) FROM pre_keys WHERE version = $version")"
        [ "$n" = 1 ] || fail "the store holds $n prekeys of version $version, want 1"
    done
    echo "${detail%; }"
}

scenario_11() {
    local version account before after lost detail=""
    start_bot bot11 bot11
    for version in legacy omemo2; do
        case "$version" in legacy) account=mike ;; *) account=nina ;; esac
        race "s11-$version" "$account" bot11 crossing --omemo-version "$version" \
            || fail "$version: $(cat "$WORK/s11-$version.json")"
        before="$(race_field "s11-$version" 's["primary_session_before"]["initiation"]')"
        after="$(race_field "s11-$version" 's["primary_session_after"]["initiation"]')"
        [ "$before/$after" = "active/passive" ] \
            || fail "$version: the device's session went $before -> $after, want active -> passive"
        lost="$(race_field "s11-$version" 'len(s["unreadable_in_crossing"])')"
        # The bot keeps sending on the session it started (python-omemo switched to it),
        # so nothing it sends during the crossing is lost.
        [ "$lost" = 0 ] || fail "$version: $lost of the bot's messages unreadable by python-omemo"
        detail+="$version: crossed ($lost of the bot's messages unreadable by python-omemo"
        detail+=" meanwhile), then $(rounds "s11-$version"); "
    done
    # The bot read everything: both first messages, the answers on the session it
    # started (kept as the previous one), every round.
    if grep -q "could not decrypt\|not encrypted for this device" "$WORK/bot11.log"; then
        fail "decryption problems: $(grep -m3 'could not decrypt\|not encrypted for' "$WORK/bot11.log")"
    fi
    stop_bot TERM
    [ "$STOP_RC" = 0 ] || fail "the bot did not exit 0 on SIGTERM (exit $STOP_RC)"
    echo "${detail%; }"
}

# vm_hwm PID: the peak resident memory of process PID (VmHWM), in KiB.
vm_hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

# log_count LOGNAME PATTERN: the lines of $WORK/LOGNAME.log that match PATTERN (grep -E).
log_count() { grep -cE "$2" "$WORK/$1.log" 2>/dev/null || true; }

scenario_12() {
    local device flood_pid rc=0 hwm0 hwm i dropped read refused handled lists records sessions
    local events=100 made_up=40 cap_kib=$((64 * 1024))
    local stranger="mallory$SFX@localhost" bot="bot12$SFX@localhost"
    local skipped="device list item skipped jid=$stranger version=" too_many=' error=device list names 250'
    start_bot bot12 bot12
    device="$(device_id bot12)"
    # The legitimate client's first contact, before the stranger fetches the bot's bundle
    # (it used a prekey of it: once the echoes are back, the bot has published the bundle
    # without it).
    client s12-before oscar bot12 3 || fail "client before the flood failed: $(cat "$WORK/s12-before.json")"
    check_summary s12-before 3 || fail "bad summary before the flood"
    hwm0="$(vm_hwm "$BOT_PID")"
    # Device lists of 250 devices, published by the stranger (the server notifies the bot
    # from its bare JID: the last item of each list once the bot is subscribed, then each
    # new one).
    "$PY" "$FLOOD" --phase lists --jid "$stranger" --password "$PW" --server "$SERVER" \
        --to "$bot" </dev/null >"$WORK/s12-lists.json" 2>"$WORK/s12-lists.log" \
        || fail "flood sender (lists) failed: $(tail -n 3 "$WORK/s12-lists.log")"
    both_lists_refused() {
        [ "$(log_count bot12 "${skipped}legacy OMEMO$too_many")" -ge 1 ] \
            && [ "$(log_count bot12 "${skipped}OMEMO 2$too_many")" -ge 1 ]
    }
    for i in $(seq 1 300); do
        both_lists_refused && break
        sleep 0.1
    done
    lists="$(log_count bot12 "$skipped.*$too_many")"
    both_lists_refused || fail "the stranger's lists did not reach the bot in both versions within 30 s ($lists)"
    # The stranger floods while a legitimate client talks to the bot.
    "$PY" "$FLOOD" --phase messages --jid "$stranger" --password "$PW" --server "$SERVER" \
        --to "$bot" --bot-device "$device" --events "$events" --devices "$made_up" \
        </dev/null >"$WORK/s12-flood.json" 2>"$WORK/s12-flood.log" &
    flood_pid=$!
    track "$flood_pid"
    client s12-during oscar bot12 10 || fail "client during the flood failed: $(cat "$WORK/s12-during.json")"
    check_summary s12-during 10 || fail "bad summary during the flood"
    wait "$flood_pid" || rc=$?
    [ "$rc" -eq 0 ] || fail "flood sender exited $rc: $(tail -n 3 "$WORK/s12-flood.log")"
    "$PY" - "$WORK/s12-flood.json" "$events" "$made_up" <<'EOF' || fail "flood not sent: $(cat "$WORK/s12-flood.json")"
import json, sys
r, events, made_up = json.load(open(sys.argv[1], encoding="utf-8")), int(sys.argv[2]), int(sys.argv[3])
assert r["events_sent"] == events and r["key_exchanges_sent"] == made_up, r
assert len(set(r["device_ids"])) == made_up, r
EOF
    # Until the bot has handled every event and every key exchange.
    for i in $(seq 1 600); do
        dropped="$(log_count bot12 'pubsub event not from a bare JID; dropped')"
        read="$(log_count bot12 "decrypted an OMEMO message from=$stranger ")"
        refused="$(log_count bot12 "could not decrypt an OMEMO message from=$stranger/")"
        handled=$((read + refused))
        [ "$dropped" -ge "$events" ] && [ "$handled" -ge "$made_up" ] && break
        kill -0 "$BOT_PID" 2>/dev/null || fail "the bot died in the flood"
        sleep 0.1
    done
    [ "$dropped" -eq "$events" ] || fail "$dropped of $events full-JID events dropped"
    [ "$handled" -eq "$made_up" ] || fail "$handled of $made_up key exchanges handled within 60 s"
    [ "$read" -le 20 ] || fail "the bot read $read key exchanges of made-up devices, more than 20 an hour"
    [ "$read" -ge 1 ] || fail "the bot read none of the made-up devices' key exchanges"
    [ "$(log_count bot12 "from=$stranger/flood error=$stranger started too many new sessions")" \
        -eq "$refused" ] || fail "not every refusal is the new-session limit: $(grep -m3 \
        "could not decrypt an OMEMO message from=$stranger" "$WORK/bot12.log")"
    client s12-after oscar bot12 5 || fail "client after the flood failed: $(cat "$WORK/s12-after.json")"
    check_summary s12-after 5 || fail "bad summary after the flood"
    kill -0 "$BOT_PID" 2>/dev/null || fail "the bot died"
    hwm="$(vm_hwm "$BOT_PID")"
    stop_bot TERM
    [ "$STOP_RC" = 0 ] || fail "the bot did not exit 0 on SIGTERM (exit $STOP_RC)"
    records="$(store_count "$WORK/bot12$SFX.db" "SELECT count(*) FROM devices WHERE jid = '$stranger'")"
    sessions="$(store_count "$WORK/bot12$SFX.db" "SELECT count(*) FROM sessions WHERE jid = '$stranger'")"
    echo "store: $records device records, $sessions sessions of the stranger; peak RSS" \
        "$((hwm / 1024)) MiB ($((hwm0 / 1024)) MiB online before the flood)"
    [ "$records" -le 200 ] || fail "$records device records of the stranger, more than 200"
    [ "$sessions" -le 20 ] || fail "$sessions sessions with the stranger, more than 20"
    [ "$hwm" -le "$cap_kib" ] || fail "peak RSS $((hwm / 1024)) MiB, more than $((cap_kib / 1024)) MiB"
    echo "$lists 250-device lists from the bare JID refused, $events from a full JID dropped, $read of $made_up" \
        "made-up devices read (limit 20/h); store: $records device records, $sessions sessions;" \
        "peak RSS $((hwm / 1024)) MiB (<= $((cap_kib / 1024))); 18/18 echoes to a legitimate client"
}

# door_check WHAT WANT_RC PATTERN OPTION...: each of `send`, `devices`, `publish` (and
# `run` when WHAT is "auth") with the options given exits WANT_RC within 2 s and says
# PATTERN (a grep regex) on stderr.
door_check() {
    local what="$1" want="$2" pattern="$3" cmd rc t0 ms log
    shift 3
    local -a commands=(send devices publish) args
    [ "$what" = auth ] && commands+=(run)
    for cmd in "${commands[@]}"; do
        case "$cmd" in
            send) args=(send --to alice@localhost "hello") ;;
            devices) args=(devices alice@localhost) ;;
            *) args=("$cmd") ;;
        esac
        log="$WORK/s13-$what-$cmd.log"
        t0=$(date +%s%N)
        rc=0
        timeout 20 "$BOT" "${args[0]}" "$@" "${args[@]:1}" </dev/null >/dev/null 2>"$log" || rc=$?
        ms=$((($(date +%s%N) - t0) / 1000000))
        [ "$rc" -eq "$want" ] || fail "$cmd ($what) exited $rc, want $want: $(tail -n 2 "$log")"
        [ "$ms" -lt 2000 ] || fail "$cmd ($what) took $ms ms"
        grep -q "$pattern" "$log" || fail "$cmd ($what): no clear message: $(tail -n 2 "$log")"
    done
}

scenario_13() {
    local closed
    local -a good wrong
    mapfile -t good < <(bot_opts bot13)
    # The same options with another password (the value follows --password).
    wrong=("${good[@]}")
    for i in "${!wrong[@]}"; do
        [ "${wrong[$i]}" = "--password" ] && wrong[$((i + 1))]="not-$PW"
    done
    door_check auth 4 "authentication failed for bot13$SFX@localhost: not-authorized" "${wrong[@]}"
    closed="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    for i in "${!good[@]}"; do
        [ "${good[$i]}" = "--server" ] && good[$((i + 1))]="127.0.0.1:$closed"
    done
    door_check closed 5 "cannot reach the XMPP server 127.0.0.1:$closed: .*[Rr]efused" "${good[@]}"
    # The service waits for its server and says so.
    "$BOT" run "${good[@]}" </dev/null >/dev/null 2>"$WORK/s13-closed-run.log" &
    local pid=$!
    track "$pid"
    sleep 2.5
    kill -0 "$pid" 2>/dev/null || fail "run gave up on an absent server: $(tail -n 2 "$WORK/s13-closed-run.log")"
    kill -TERM "$pid"
    wait "$pid"
    grep -q "cannot reach the XMPP server; waiting for it.*127.0.0.1:$closed" "$WORK/s13-closed-run.log" \
        || fail "run does not say what it waits for: $(tail -n 2 "$WORK/s13-closed-run.log")"
    echo "wrong password: exit 4 at once from send, devices, publish and run; closed port: exit 5 at once from the one-shot commands, run waits"
}

scenario_14() {
    local id0 fp0 id fp rc db="$WORK/bot14$SFX.db"
    start_bot bot14 bot14a
    id0="$(device_id bot14)"
    client s14-a peggy bot14 5 || fail "first client failed: $(cat "$WORK/s14-a.json")"
    check_summary s14-a 5 || fail "first client: bad summary"
    stop_bot TERM
    fp0="$("$BOT" fingerprint --jid "bot14$SFX@localhost" --store "$db" | sed -n 's/^fingerprint: //p')"
    printf '%s\n' "backup passphrase $RANDOM" >"$WORK/s14-passphrase"
    "$BOT" identity export --jid "bot14$SFX@localhost" --store "$db" --file "$WORK/s14$SFX.backup" \
        --passphrase-file "$WORK/s14-passphrase" >"$WORK/s14-export.out" 2>&1 \
        || fail "export failed: $(cat "$WORK/s14-export.out")"
    grep -q "bot14$SFX@localhost" "$WORK/s14$SFX.backup" && fail "the backup shows the JID in clear"
    # The phone is reinstalled: the old store goes away.
    mkdir -p "$WORK/s14$SFX-old" && mv "$db"* "$WORK/s14$SFX-old/"
    rc=0
    "$BOT" identity import --jid "bot14$SFX@localhost" --store "$db" --file "$WORK/s14$SFX.backup" \
        --passphrase "not the passphrase" >/dev/null 2>"$WORK/s14-import-wrong.log" || rc=$?
    [ "$rc" -eq 1 ] || fail "import with a wrong passphrase exited $rc, want 1"
    grep -q "wrong passphrase for the identity backup" "$WORK/s14-import-wrong.log" \
        || fail "no clear error: $(cat "$WORK/s14-import-wrong.log")"
    [ ! -e "$db" ] || fail "a failed import left a store behind"
    "$BOT" identity import --jid "bot14$SFX@localhost" --store "$db" --file "$WORK/s14$SFX.backup" \
        --passphrase-file "$WORK/s14-passphrase" >"$WORK/s14-import.out" 2>&1 \
        || fail "import failed: $(cat "$WORK/s14-import.out")"
    fp="$("$BOT" fingerprint --jid "bot14$SFX@localhost" --store "$db" | sed -n 's/^fingerprint: //p')"
    [ "$fp" = "$fp0" ] || fail "fingerprint changed: $fp0 -> $fp"
    start_bot bot14 bot14b
    id="$(device_id bot14)"
    [ "$id" = "$id0" ] || fail "device id changed: $id0 -> $id"
    grep -q "created OMEMO identity" "$WORK/bot14b.log" && fail "the bot made a new identity"
    # Peggy's next message is on the session the old store had: it is lost, and the bot
    # rebuilds the session.
    client s14-b peggy bot14 1 --timeout 15 && fail "a message on the lost session was echoed"
    grep -q "rebuilding the session sender=peggy$SFX@localhost" "$WORK/bot14b.log" \
        || fail "the bot did not rebuild the session: $(grep -m2 'not decrypted' "$WORK/bot14b.log")"
    client s14-c peggy bot14 5 || fail "client after the rebuild failed: $(cat "$WORK/s14-c.json")"
    check_summary s14-c 5 || fail "client after the rebuild: bad summary"
    stop_bot TERM
    echo "device $id0 restored with its fingerprint; one message lost to the old session, the session rebuilt, 5/5 echoes after"
}

scenario_15() {
    local rc t0 secs
    local -a opts
    mapfile -t opts < <(bot_opts sybil)
    start_echo_peer s15-echo quinn --access-model presence
    grep -q "now has access model presence" "$WORK/s15-echo.log" \
        || fail "the echo peer's nodes are not restricted: $(tail -n 3 "$WORK/s15-echo.log")"
    send_expect_echo s15-send "hello behind presence" "${opts[@]}" --to "quinn$SFX@localhost"
    grep -q "visible to subscribed contacts only: asking for a presence subscription" "$WORK/s15-send.log" \
        || fail "send did not say why it asked: $(tail -n 3 "$WORK/s15-send.log")"
    kill -TERM "$ECHO_PID"
    wait "$ECHO_PID" || fail "echo peer exited non-zero"
    start_echo_peer s15-silent rupert --access-model presence --ignore-subscriptions
    t0=$SECONDS
    rc=0
    "$BOT" send "${opts[@]}" --to "rupert$SFX@localhost" "nobody answers" >/dev/null \
        2>"$WORK/s15-silent-send.log" || rc=$?
    secs=$((SECONDS - t0))
    [ "$rc" -eq 1 ] || fail "send to a contact that never answers exited $rc, want 1"
    [ "$secs" -le 40 ] || fail "send took $secs s"
    grep -q "rupert$SFX@localhost's OMEMO devices are visible to subscribed contacts only; no answer to the presence subscription request within 30 s" \
        "$WORK/s15-silent-send.log" || fail "no clear reason: $(tail -n 2 "$WORK/s15-silent-send.log")"
    kill -TERM "$ECHO_PID"
    wait "$ECHO_PID" || fail "silent echo peer exited non-zero"
    # The echo bot: its echoes to such a contact wait for the subscription it asks for.
    start_bot bot15 bot15
    client s15-client trent bot15 5 --sequential --access-model presence \
        || fail "client with restricted nodes failed: $(cat "$WORK/s15-client.json")"
    check_summary s15-client 5 || fail "client with restricted nodes: bad summary"
    grep -q "devices visible to subscribed contacts only: asking for a presence subscription" "$WORK/bot15.log" \
        || fail "the bot did not ask trent for a subscription"
    stop_bot TERM
    echo "send: asked for a subscription and delivered; a contact that never answers: clear failure after ${secs} s; run: 5/5 echoes after asking"
}

# client_field NAME EXPR: a value from the client summary $WORK/NAME.json (EXPR in Python,
# over the summary `s`).
client_field() { race_field "$@"; }

scenario_18() {
    local spec who version i n pid rc messages detail="" used=()
    local -a pids=() names=()
    # One prekey per version: the first contacts made while the bot is down all name the
    # one of their version.
    start_bot bot18 bot18a --pre-keys 1
    client s18-zoe-before zoe bot18 2 || fail "zoe before the stop: $(cat "$WORK/s18-zoe-before.json")"
    check_summary s18-zoe-before 2 || fail "zoe before the stop: bad summary"
    stop_bot TERM
    [ "$STOP_RC" = 0 ] || fail "the bot did not exit 0 on SIGTERM (exit $STOP_RC)"

    for spec in zoe:legacy walt:legacy xena:legacy yuri:omemo2; do
        who="${spec%%:*}" version="${spec#*:}"
        timeout 200 "$PY" "$PEER" client --jid "$who$SFX@localhost" --password "$PW" \
            --server "$SERVER" --store "$WORK/$who$SFX-1" --to "bot18$SFX@localhost" --count 5 \
            --timeout 150 --settle 3 --omemo-version "$version" \
            </dev/null >"$WORK/s18-$who.json" 2>"$WORK/s18-$who.log" &
        pid=$!
        track "$pid"
        pids+=("$pid") names+=("$who")
    done
    # Until all 20 messages are out (to the server, which keeps them for the bot).
    for i in $(seq 1 1200); do
        n=0
        for who in "${names[@]}"; do
            grep -q "sent 5/5" "$WORK/s18-$who.log" 2>/dev/null && n=$((n + 1))
        done
        [ "$n" -eq 4 ] && break
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null || fail "a client exited while the bot was down: $(cat "$WORK"/s18-*.json)"
        done
        sleep 0.1
    done
    [ "$n" -eq 4 ] || fail "the clients did not send their messages within 120 s"

    start_bot bot18 bot18b
    for i in "${!pids[@]}"; do
        rc=0
        wait "${pids[$i]}" || rc=$?
        [ "$rc" -eq 0 ] || fail "${names[$i]}: $(cat "$WORK/s18-${names[$i]}.json")"
        check_summary "s18-${names[$i]}" 5 || fail "${names[$i]}: bad summary"
    done
    n="$(echo_count bot18b)"
    [ "$n" -eq 20 ] || fail "the bot sent $n messages after its restart, want 20 (one per missed message)"
    if grep -E "could not decrypt|not encrypted for this device|rebuilding the session" "$WORK/bot18b.log"; then
        fail "a missed message was not read"
    fi
    messages="$(sed -n 's/.*caught up with the archive archive=[^ ]* messages=\([0-9]*\).*/\1/p' "$WORK/bot18b.log" | head -n 1)"
    [ -n "$messages" ] || fail "no completed catch-up in the log: $(grep -m3 'catch-up\|caught up' "$WORK/bot18b.log")"
    [ "$messages" -ge 20 ] || fail "the catch-up read $messages archived messages, want at least 20"

    # Exactly one empty message per new session (after the catch-up), none for zoe.
    for who in walt xena yuri zoe; do
        n="$(client_field "s18-$who" 's["empty_messages"]')"
        want=1
        [ "$who" = zoe ] && want=0
        [ "$n" = "$want" ] || fail "$who got $n empty messages, want $want"
    done
    # walt and xena named the same prekey, and both were read.
    for who in walt xena yuri; do
        used+=("$(client_field "s18-$who" '[v["pre_key_id"] for v in s["sessions"].values() if v][0]')")
    done
    [ "${used[0]}" = "${used[1]}" ] || fail "walt and xena named different prekeys (${used[0]}, ${used[1]}): --pre-keys 1 did not hold"
    stop_bot TERM
    [ "$STOP_RC" = 0 ] || fail "the bot did not exit 0 on SIGTERM (exit $STOP_RC)"
    n="$(store_count "$WORK/bot18$SFX.db" "SELECT count(*) FROM pre_keys WHERE hidden = 1")"
    [ "$n" = 0 ] || fail "$n prekeys still hidden after the catch-up"
    n="$(store_count "$WORK/bot18$SFX.db" "SELECT count(*) FROM pre_keys WHERE (version = 1 AND id = ${used[0]}) OR (version = 2 AND id = ${used[2]})")"
    [ "$n" = 0 ] || fail "a prekey the key exchanges named is still in the store"
    echo "20/20 missed messages answered once after a catch-up of $messages archived messages; walt and xena both read on prekey ${used[0]}; one completion per new session"
}

# room_member NAME ACCOUNT ROOM NICK EXTRA...: slixmpp_peer.py room in the background; its
# JSON summary goes to $WORK/NAME.json. Sets MEMBER_PID.
room_member() {
    local name="$1" account="$2$SFX" room="$3" nick="$4"
    shift 4
    # Emptied now, not when the background job gets to it: a repetition must not find
    # the last run's lines in them.
    : >"$WORK/$name.log"
    : >"$WORK/$name.json"
    timeout 150 "$PY" "$PEER" room --jid "$account@localhost" --password "$PW" \
        --server "$SERVER" --store "$WORK/$account-1" --room "$room" --nick "$nick" \
        --bot "${ROOM_BOT:-bot19}" --timeout 120 "$@" </dev/null >"$WORK/$name.json" 2>"$WORK/$name.log" &
    MEMBER_PID=$!
    track "$MEMBER_PID"
}

# wait_member NAME PID: waits for the room member NAME and checks that it succeeded.
wait_member() {
    local rc=0
    wait "$2" || rc=$?
    [ "$rc" -eq 0 ] || fail "$1: $(cat "$WORK/$1.json")"
}

scenario_19() {
    local room="lounge$SFX@conference.localhost" amy bea n
    # The bot follows amy's invitations; it also joins the room --join names (a new one:
    # Prosody creates it, with the bot as its owner and only member).
    # (omemo_tokio at debug: it logs each own message that comes back from the room.)
    RUST_LOG="$RUST_LOG,omemo_tokio=debug" start_bot bot19 bot19 --nick bot19 \
        --follow-invites-from "amy$SFX@localhost" --join "nowhere$SFX@conference.localhost"
    room_member s19-amy amy "$room" amy --members "bea$SFX@localhost,bot19$SFX@localhost" \
        --invite "bot19$SFX@localhost" --peers bea,bot19 --count 4 --expect 4
    amy=$MEMBER_PID
    wait_logged s19-amy "$amy" "invited"
    room_member s19-bea bea "$room" bea --peers amy,bot19 --count 4 --expect 4 --rename beatrice \
        --after amy
    bea=$MEMBER_PID
    wait_member s19-amy "$amy"
    wait_member s19-bea "$bea"
    "$PY" - "$WORK/s19-amy.json" "$WORK/s19-bea.json" "amy$SFX@localhost" "bea$SFX@localhost" \
        "bot19$SFX@localhost" <<'EOF' || fail "bad summaries: $(cat "$WORK/s19-amy.json" "$WORK/s19-bea.json")"
import json, sys
amy, bea = (json.load(open(p, encoding="utf-8")) for p in sys.argv[1:3])
amy_jid, bea_jid, bot_jid = sys.argv[3:6]
for s, other in ((amy, bea_jid), (bea, amy_jid)):
    assert s["ok"] and s["sent"] == 4 and s["echoed"] == 4, s
    assert s["read"] == {other: 4, bot_jid: 8}, s["read"]
EOF
    n="$(echo_count bot19)"
    [ "$n" -eq 8 ] || fail "the bot sent $n messages to the room, want 8"
    n="$(log_count bot19 'own room message came back')"
    [ "$n" -eq 8 ] || fail "the bot recognised $n of its 8 messages coming back"
    grep -q "invited by a contact it follows: joining room=$room" "$WORK/bot19.log" \
        || fail "the bot did not follow amy's invitation: $(grep -m2 invit "$WORK/bot19.log")"
    grep -q "room ready room=$room members=3" "$WORK/bot19.log" || fail "the bot did not see 3 members: $(grep -m2 room "$WORK/bot19.log")"
    grep -q "room ready room=nowhere$SFX@conference.localhost members=1" "$WORK/bot19.log" \
        || fail "the bot did not join the room of --join: $(grep -m2 nowhere "$WORK/bot19.log")"
    if grep -E "could not decrypt|room message refused|not encrypted for this device" "$WORK/bot19.log"; then
        fail "the bot did not read every member's message"
    fi
    stop_bot TERM
    [ "$STOP_RC" = 0 ] || fail "the bot did not exit 0 on SIGTERM (exit $STOP_RC)"
    echo "the bot followed amy's invitation; amy and bea (renamed halfway) read each other's 4 messages and the bot's 8 echoes; the bot read all 8 and recognised its own 8 coming back"
}

scenario_20() {
    local room="archive$SFX@conference.localhost" ada ben cyd n
    local bot="bot20$SFX@localhost"
    export ROOM_BOT=bot20
    # cyd's device exists (its device lists published) before anyone writes.
    timeout 60 "$PY" "$PEER" devices --jid "cyd$SFX@localhost" --password "$PW" \
        --server "$SERVER" --store "$WORK/cyd$SFX-1" --of "cyd$SFX@localhost" --timeout 45 \
        </dev/null >"$WORK/s20-cyd-devices.json" 2>"$WORK/s20-cyd-devices.log" \
        || fail "cyd could not publish its device: $(tail -n 3 "$WORK/s20-cyd-devices.log")"
    start_bot bot20 bot20 --nick bot20 --follow-invites-from "ada$SFX@localhost"
    room_member s20-ada ada "$room" ada --invite "$bot" --mediated --peers ben,bot20 --count 3 \
        --expect 4 --members "ben$SFX@localhost,cyd$SFX@localhost,$bot"
    ada=$MEMBER_PID
    wait_logged s20-ada "$ada" "invited"
    room_member s20-ben ben "$room" ben --peers ada,bot20 --count 3 --expect 4 --after ada
    ben=$MEMBER_PID
    # (Each has all its echoes before it says so: the 12 messages are archived.)
    wait_logged s20-ada "$ada" "sent all 3"
    wait_logged s20-ben "$ben" "sent all 3"

    # cyd, away until now, reads what it missed from the room's archive, then writes to
    # ada and ben, who are still there.
    room_member s20-cyd cyd "$room" cyd --archive --peers ada,ben,bot20 --count 1
    cyd=$MEMBER_PID
    wait_member s20-cyd "$cyd"
    wait_member s20-ada "$ada"
    wait_member s20-ben "$ben"

    # The bot is away while ada writes 3 messages; back, it reads them from the archive.
    stop_bot TERM
    [ "$STOP_RC" = 0 ] || fail "the bot did not exit 0 on SIGTERM (exit $STOP_RC)"
    room_member s20-ada2 ada "$room" ada --burst --count 3
    ada=$MEMBER_PID
    wait_logged s20-ada2 "$ada" "sent all 3"
    # (No --join: the room the bot joined on ada's invitation is in its bookmarks.)
    start_bot bot20 bot20b --nick bot20
    wait_member s20-ada2 "$ada"

    # ben is no member any more: the bot's echo of ada's next message has no key for him.
    room_member s20-ada3 ada "$room" ada --remove "ben$SFX@localhost" --peers bot20 --count 1
    wait_member s20-ada3 "$MEMBER_PID"

    "$PY" - "$WORK" "ada$SFX@localhost" "ben$SFX@localhost" "cyd$SFX@localhost" "$bot" <<'EOF' \
        || fail "bad summaries"
import json, sys
work, ada, ben, cyd, bot = sys.argv[1:6]
load = lambda name: json.load(open(f"{work}/{name}.json", encoding="utf-8"))
s = {n: load(f"s20-{n}") for n in ("ada", "ben", "cyd", "ada2", "ada3")}
for name, other in (("ada", ben), ("ben", ada)):
    read = dict(s[name]["read"])
    # (The bot's echo of cyd's message may come after they stopped listening.)
    assert read.pop(bot) in (6, 7) and read == {other: 3, cyd: 1}, (name, s[name])
assert s["cyd"]["archived"] == {ada: 3, ben: 3, bot: 6}, s["cyd"]
assert s["cyd"]["echoed"] == 1 and not s["cyd"]["undecryptable"], s["cyd"]
assert s["ada2"]["echoed"] == 3 and not s["ada2"]["duplicates"], s["ada2"]
assert s["ada3"]["echoes_inspected"] >= 1 and s["ada3"]["keys_for_removed"] == 0, s["ada3"]
EOF
    n="$(echo_count bot20)"
    [ "$n" -eq 7 ] || fail "the bot sent $n messages to the room before it stopped, want 7"
    n="$(echo_count bot20b)"
    [ "$n" -eq 4 ] || fail "the bot sent $n messages after its restart, want 4 (3 missed, 1 live)"
    grep -q "invited by a contact it follows: joining room=$room inviter=ada$SFX@localhost direct=false" \
        "$WORK/bot20.log" || fail "the bot did not follow ada's mediated invitation: $(grep -m2 invit "$WORK/bot20.log")"
    grep -q "bookmarked room=$room" "$WORK/bot20.log" \
        || fail "the bot did not bookmark the room: $(grep -m2 bookmark "$WORK/bot20.log")"
    grep -q "joining a bookmarked room room=$room" "$WORK/bot20b.log" \
        || fail "the restarted bot did not join the bookmarked room: $(grep -m2 bookmark "$WORK/bot20b.log")"
    grep -q "caught up with the archive archive=$room messages=" "$WORK/bot20b.log" \
        || fail "the bot did not catch up with the room: $(grep -m3 'catch-up\|caught up' "$WORK/bot20b.log")"
    if grep -E "could not decrypt|room message refused|not encrypted for this device|ended early" \
        "$WORK/bot20.log" "$WORK/bot20b.log"; then
        fail "the bot did not read every member's message"
    fi
    stop_bot TERM
    [ "$STOP_RC" = 0 ] || fail "the bot did not exit 0 on SIGTERM (exit $STOP_RC)"
    echo "cyd read all 12 messages said while it was away from the room's archive; the bot, back after ada's 3 messages, echoed each once from the archive; after ben's removal the bot's echo had no key for him"
}

TITLES=(
    ""
    "slixmpp-omemo client (2 devices) -> omemo-bot run, 50 messages"
    "omemo-bot send -> slixmpp-omemo echo peer"
    "omemo-bot send -> omemo-bot run"
    "omemo-bot run restarted (SIGTERM, kill -9) mid-conversation"
    "plaintext, garbage and misaddressed OMEMO messages"
    "server restart under a running bot (reconnect)"
    "OMEMO 2 client (2 devices) -> omemo-bot run, 50 messages"
    "omemo-bot send -> OMEMO 2 echo peer"
    "legacy device + OMEMO 2 device on one account -> omemo-bot run"
    "one prekey, two first contacts on it: the bot heals the second"
    "the bot and a device start sessions with each other at once"
    "flood from a stranger: device lists, made-up devices; bounds hold"
    "wrong password and closed port: clear, prompt failures"
    "identity backup: export, import into a new store, sessions heal"
    "contacts whose OMEMO nodes need a presence subscription"
    "the store encrypted at rest: conversion, wrong passphrase, passphrase change"
    "device hygiene: prune, signed label, devices --own, reset"
    "catching up after time offline: each missed message answered once"
    "a group chat: invitation, members-only non-anonymous room, nickname change, echoes"
    "a room's archive: a member away at first, the bot away with room traffic, a member removed"
)

# traces FILE...: the files among FILE... (the store, its WAL and journal) that hold a JID of
# scenario 16 in clear.
traces() {
    local f
    for f in "$@"; do
        [ -e "$f" ] || continue
        if grep -aqE "(uma|bot16)$SFX@localhost" "$f"; then echo "$f"; fi
    done
}

scenario_16() {
    local db="$WORK/bot16$SFX.db" pass="$WORK/s16-pass" pass2="$WORK/s16-pass2" rc t0 sum
    local -a files=("$db" "$db-wal" "$db-journal")
    local -a fp=(fingerprint --jid "bot16$SFX@localhost" --store "$db")
    printf '%s\n' "store passphrase $RANDOM$RANDOM" >"$pass"
    printf '%s\n' "second store passphrase $RANDOM$RANDOM" >"$pass2"
    # A plain store, as before: it shows whom the bot talks to.
    start_bot bot16 bot16a
    client s16-a uma bot16 3 || fail "client on the plain store failed: $(cat "$WORK/s16-a.json")"
    check_summary s16-a 3 || fail "client on the plain store: bad summary"
    stop_bot TERM
    [ -n "$(traces "${files[@]}")" ] || fail "the plain store shows no JID: the check sees nothing"
    local fp0
    fp0="$("$BOT" "${fp[@]}" | sed -n 's/^fingerprint: //p')"

    # The passphrase the bot will be given is the one to encrypt with.
    "$BOT" store encrypt --store "$db" --store-passphrase-file "$pass" >"$WORK/s16-encrypt.out" 2>&1 \
        || fail "store encrypt failed: $(cat "$WORK/s16-encrypt.out")"
    [ -z "$(traces "${files[@]}")" ] || fail "JIDs in clear after encrypting: $(traces "${files[@]}")"
    # Without the passphrase, or with a wrong one: a clear error at once, nothing written.
    sum="$(cat "${files[@]}" 2>/dev/null | sha256sum)"
    rc=0
    "$BOT" "${fp[@]}" >/dev/null 2>"$WORK/s16-nopass.log" || rc=$?
    [ "$rc" -eq 1 ] || fail "fingerprint without the passphrase exited $rc, want 1"
    grep -q "is encrypted (or is not a database): give its passphrase (--store-passphrase" \
        "$WORK/s16-nopass.log" || fail "no clear error without the passphrase: $(cat "$WORK/s16-nopass.log")"
    t0=$SECONDS
    rc=0
    "$BOT" run --jid "bot16$SFX@localhost" --store "$db" \
        --store-passphrase "not the passphrase" --password "$PW" --server "$SERVER" \
        --insecure-plaintext </dev/null >/dev/null 2>"$WORK/s16-wrong.log" || rc=$?
    [ "$rc" -eq 1 ] || fail "run with a wrong passphrase exited $rc, want 1"
    [ $((SECONDS - t0)) -le 5 ] || fail "run with a wrong passphrase took $((SECONDS - t0)) s"
    grep -q "wrong passphrase for the encrypted store" "$WORK/s16-wrong.log" \
        || fail "no clear error for a wrong passphrase: $(tail -n 2 "$WORK/s16-wrong.log")"
    [ "$(cat "${files[@]}" 2>/dev/null | sha256sum)" = "$sum" ] || fail "a refused open changed the files"

    # The conversation goes on, on the sessions of the plain store, with the store encrypted
    # (while the bot runs, its WAL too).
    [ "$("$BOT" "${fp[@]}" --store-passphrase-file "$pass" | sed -n 's/^fingerprint: //p')" = "$fp0" ] \
        || fail "the fingerprint changed with the encryption"
    start_bot bot16 bot16b --store-passphrase-file "$pass"
    client s16-b uma bot16 3 || fail "client on the encrypted store failed: $(cat "$WORK/s16-b.json")"
    check_summary s16-b 3 || fail "client on the encrypted store: bad summary"
    [ -s "$db-wal" ] || fail "no WAL while the bot runs"
    [ -z "$(traces "${files[@]}")" ] || fail "JIDs in clear while the bot runs: $(traces "${files[@]}")"
    stop_bot TERM
    grep -q "created OMEMO identity" "$WORK/bot16b.log" && fail "the bot made a new identity"
    grep -q "rebuilding the session" "$WORK/bot16b.log" && fail "a session was lost to the encryption"

    # A new passphrase: the old one is refused, the conversation goes on.
    OMEMO_BOT_STORE_PASSPHRASE="$(head -n 1 "$pass")" "$BOT" store change-passphrase --store "$db" \
        --new-passphrase-file "$pass2" >"$WORK/s16-change.out" 2>&1 \
        || fail "store change-passphrase failed: $(cat "$WORK/s16-change.out")"
    rc=0
    "$BOT" "${fp[@]}" --store-passphrase-file "$pass" >/dev/null 2>&1 || rc=$?
    [ "$rc" -eq 1 ] || fail "the old passphrase still opens the store (exit $rc)"
    start_bot bot16 bot16c --store-passphrase-file "$pass2"
    client s16-c uma bot16 3 || fail "client after the change failed: $(cat "$WORK/s16-c.json")"
    check_summary s16-c 3 || fail "client after the change: bad summary"
    stop_bot TERM
    [ -z "$(traces "${files[@]}")" ] || fail "JIDs in clear after the change: $(traces "${files[@]}")"
    echo "plain store encrypted (no JID left in the files, also while running); no passphrase or a wrong one: exit 1 at once, nothing written; 3+3+3 echoes across encryption and a passphrase change"
}

# peer_devices NAME ACCOUNT VERSION OF: what python-omemo (ACCOUNT's device of VERSION) sees of
# OF's devices; the JSON goes to $WORK/NAME.json.
peer_devices() {
    local name="$1" account="$2$SFX" version="$3" of="$4$SFX"
    timeout 60 "$PY" "$PEER" devices --jid "$account@localhost" --password "$PW" \
        --server "$SERVER" --store "$WORK/$account-$version" --omemo-version "$version" \
        --of "$of@localhost" </dev/null >"$WORK/$name.json" 2>"$WORK/$name.log" \
        || fail "$name: $(tail -n 2 "$WORK/$name.log")"
}

# active_ids NAME: the ids of the active devices in $WORK/NAME.json, sorted, one line.
active_ids() {
    "$PY" -c 'import json, sys
s = json.load(open(sys.argv[1]))
print(" ".join(str(d["id"]) for d in s["devices"] if d["active"]))' "$WORK/$1.json"
}

# sorted_ids ID...: the ids sorted numerically, on one line.
sorted_ids() { printf '%s\n' "$@" | sort -n | tr '\n' ' ' | sed 's/ $//'; }

scenario_17() {
    local -a opts
    local main fresh id n out expected version label="echo bot ✓ 17"
    local -a old=()
    mapfile -t opts < <(bot_opts bot17)
    opts+=(--label "$label")
    # Two devices of the account whose stores are long gone, then this one, labelled.
    for n in 1 2; do
        "$BOT" publish --jid "bot17$SFX@localhost" --store "$WORK/bot17-old$n$SFX.db" \
            --password "$PW" --server "$SERVER" --insecure-plaintext >/dev/null \
            2>"$WORK/s17-old$n.log" || fail "old device $n: $(tail -n 2 "$WORK/s17-old$n.log")"
        old+=("$("$BOT" fingerprint --jid "bot17$SFX@localhost" --store "$WORK/bot17-old$n$SFX.db" \
            | sed -n 's/^device id: //p')")
    done
    "$BOT" publish "${opts[@]}" >/dev/null 2>"$WORK/s17-main.log" \
        || fail "publish: $(tail -n 2 "$WORK/s17-main.log")"
    main="$(device_id bot17)"
    # Six seconds on, a new device appears; this device first sees it while pruning, so
    # it is seconds old then, the old ones at least six.
    sleep 6
    "$BOT" publish --jid "bot17$SFX@localhost" --store "$WORK/bot17-fresh$SFX.db" \
        --password "$PW" --server "$SERVER" --insecure-plaintext >/dev/null \
        2>"$WORK/s17-fresh.log" || fail "fresh device: $(tail -n 2 "$WORK/s17-fresh.log")"
    fresh="$("$BOT" fingerprint --jid "bot17$SFX@localhost" --store "$WORK/bot17-fresh$SFX.db" \
        | sed -n 's/^device id: //p')"
    "$BOT" devices "${opts[@]}" prune --older-than 4s >"$WORK/s17-prune.out" 2>"$WORK/s17-prune.log" \
        || fail "prune: $(tail -n 2 "$WORK/s17-prune.log")"
    out="$(cat "$WORK/s17-prune.out")"
    expected="$(sorted_ids "${old[@]}")"
    [ "$out" = "removed 2 silent own device(s) from the device lists of both versions: $expected" ] \
        || fail "prune said: $out (want the old devices $expected)"
    # What a contact's python-omemo sees, in both versions: this device and the new one;
    # OMEMO 2 also shows this device's label, whose signature it checked.
    expected="$(sorted_ids "$main" "$fresh")"
    for version in legacy omemo2; do
        peer_devices "s17-$version" vic "$version" bot17
        [ "$(active_ids "s17-$version")" = "$expected" ] \
            || fail "$version: python-omemo sees $(active_ids "s17-$version"), want $expected"
    done
    "$PY" -c 'import json, sys
s = json.load(open(sys.argv[1]))
labels = {d["id"]: d["label"] for d in s["devices"]}
sys.exit(0 if labels.get(int(sys.argv[2])) == sys.argv[3] else f"labels seen: {labels}")' \
        "$WORK/s17-omemo2.json" "$main" "$label" || fail "the label did not verify in python-omemo"
    # devices --own: this device first with its label, the others with when last heard.
    "$BOT" devices "${opts[@]}" --own >"$WORK/s17-own.out" 2>"$WORK/s17-own.log" \
        || fail "devices --own: $(tail -n 2 "$WORK/s17-own.log")"
    grep -qF "$main  own" "$WORK/s17-own.out" && grep -qF "(this device)  \"$label\"" "$WORK/s17-own.out" \
        || fail "devices --own: no line for this device with its label: $(cat "$WORK/s17-own.out")"
    grep -qE "^ *$fresh  .*legacy\+omemo2 +never \(seen" "$WORK/s17-own.out" \
        || fail "devices --own: the new device is not listed as never heard: $(cat "$WORK/s17-own.out")"
    for id in "${old[@]}"; do
        grep -qE "^ *$id  .* - +never" "$WORK/s17-own.out" \
            || fail "devices --own: old device $id not shown as unlisted: $(cat "$WORK/s17-own.out")"
    done
    # A reset: this device alone on both lists.
    "$BOT" devices "${opts[@]}" reset >"$WORK/s17-reset.out" 2>"$WORK/s17-reset.log" \
        || fail "reset: $(tail -n 2 "$WORK/s17-reset.log")"
    grep -qF "hold only this device now (removed: $fresh)" "$WORK/s17-reset.out" \
        || fail "reset said: $(cat "$WORK/s17-reset.out")"
    for version in legacy omemo2; do
        peer_devices "s17-$version-reset" vic "$version" bot17
        [ "$(active_ids "s17-$version-reset")" = "$main" ] \
            || fail "$version after the reset: python-omemo sees $(active_ids "s17-$version-reset")"
    done
    echo "prune removed exactly the 2 old devices from both lists (the new one stayed); python-omemo verified the label; reset left this device alone in both versions"
}

# The accounts of the scenarios that can run again with fresh accounts (E2E_REPEAT).
declare -A REPEAT_ACCOUNTS=(
    [1]="alice bot1" [7]="grace bot7" [9]="judy bot9" [10]="kate leo bot10" [11]="mike nina bot11"
    [12]="mallory oscar bot12" [14]="peggy bot14" [15]="quinn rupert sybil trent bot15"
    [16]="uma bot16" [17]="vic bot17" [18]="walt xena yuri zoe bot18"
    [19]="amy bea bot19" [20]="ada ben cyd bot20"
)

# run_scenario N [RUN]: runs scenario N (the RUN-th time: "" or 1 for the first); returns
# non-zero when it failed.
run_scenario() {
    local n="$1" run="${2:-}" t=$SECONDS rc=0 detail label="${TITLES[$n]}"
    [ -n "$run" ] && label+=" [run $run/$REPEAT]"
    ( scenario_"$n" ) >"$WORK/scenario-$n.txt" 2>&1 || rc=$?
    detail="$(tail -n 1 "$WORK/scenario-$n.txt")"
    if [ "$rc" -eq 0 ]; then
        PASSED=$((PASSED + 1))
        echo "PASS $n: $label ($((SECONDS - t))s): $detail"
    else
        FAILED=$((FAILED + 1))
        echo "FAIL $n: $label ($((SECONDS - t))s): $detail"
        local f
        for f in "$WORK"/scenario-"$n".txt "$WORK"/s"$n"-*.log "$WORK"/s"$n"-*.json \
            "$WORK"/bot"$n"*.log; do
            [ -s "$f" ] || continue
            echo "----- tail of $f -----" >&2
            tail -n 15 "$f" >&2
        done
        return 1
    fi
}

SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20)
for n in "${SCENARIOS[@]}"; do
    case "$n" in [1-9] | 1[0-9] | 20) ;; *) die "unknown scenario $n" ;; esac
    if [ "$REPEAT" -gt 1 ] && [ -z "${REPEAT_ACCOUNTS[$n]:-}" ]; then
        die "E2E_REPEAT: scenario $n cannot be repeated (these can: ${!REPEAT_ACCOUNTS[*]})"
    fi
done
for n in "${SCENARIOS[@]}"; do
    if [ "$REPEAT" -eq 1 ]; then
        run_scenario "$n"
        continue
    fi
    for run in $(seq 1 "$REPEAT"); do
        SFX=""
        if [ "$run" -gt 1 ]; then
            SFX="-r$run"
            for user in ${REPEAT_ACCOUNTS[$n]}; do
                "$PROSODY" adduser "$WORK/server" "$user$SFX@localhost" "$PW" 2>>"$WORK/adduser.log" \
                    || die "could not create $user$SFX@localhost"
            done
        fi
        # The first failure ends the repetitions: its logs are kept as they are.
        run_scenario "$n" "$run" || break
    done
done
SFX=""

say "done in $((SECONDS - T0))s"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
