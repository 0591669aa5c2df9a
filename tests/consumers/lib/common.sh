# Shared helpers for the consumer tier (sourced by run.sh).
# SPDX-License-Identifier: GPL-2.0-or-later

# Debian's own tools first: QEMU's configure must see /usr/bin/python3 and
# Debian's meson, not a pyenv/cargo-installed one.  cargo (if any) is kept,
# after the system directories, for a meson.build that builds Rust code.
vu_sys_path() {
    local p=/usr/sbin:/usr/bin:/sbin:/bin cargo_bin
    cargo_bin=$(command -v cargo 2>/dev/null || true)
    [ -z "$cargo_bin" ] && [ -x "$HOME/.cargo/bin/cargo" ] && cargo_bin=$HOME/.cargo/bin/cargo
    if [ -n "$cargo_bin" ]; then
        p="$p:$(dirname "$cargo_bin")"
        local rustc_bin
        rustc_bin=$(command -v rustc 2>/dev/null || true)
        [ -n "$rustc_bin" ] && p="$p:$(dirname "$rustc_bin")"
    fi
    echo "$p"
}

log()  { printf '[consumers %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die()  { log "FATAL: $*"; exit 2; }

# result STATUS NAME REASON [CONSUMER GEN LIB KIND FRONTEND]
# Prints one PASS/FAIL/SKIP line and records it in $RESULTS (TSV; the
# frontend column is "-" where no QEMU frontend is involved).
result() {
    local status=$1 name=$2 reason=${3:-} consumer=${4:--} gen=${5:--} lib=${6:--} kind=${7:-test} fe=${8:--}
    if [ -n "$reason" ]; then
        printf '%s %s: %s\n' "$status" "$name" "$reason"
    else
        printf '%s %s\n' "$status" "$name"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$status" "$name" "$consumer" "$gen" "$lib" "$kind" \
        "$(printf '%s' "$reason" | tr '\t\n' '  ')" "$fe" >> "$RESULTS"
}

# Processes started in the background, so that an interrupted run can end
# them (by PID only).
# A PID leaves the list as soon as it is reaped, so a recycled PID is never
# signalled.
VU_PIDS=()
track_pid() { VU_PIDS+=("$1"); }
untrack_pid() {
    local p keep=()
    for p in "${VU_PIDS[@]:-}"; do
        [ -n "$p" ] && [ "$p" != "$1" ] && keep+=("$p")
    done
    VU_PIDS=("${keep[@]:-}")
}
kill_tracked() {
    local p
    for p in "${VU_PIDS[@]:-}"; do
        [ -n "$p" ] || continue
        if kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p" 2>/dev/null || true
        fi
    done
    sleep 0.5
    for p in "${VU_PIDS[@]:-}"; do
        [ -n "$p" ] || continue
        if kill -0 "$p" 2>/dev/null; then
            kill -KILL "$p" 2>/dev/null || true
        fi
        wait "$p" 2>/dev/null || true
    done
    VU_PIDS=()
}

# wait_pid_bounded PID SECONDS: waits for a child; returns its exit status,
# or 255 after killing it (by PID) if it did not end in time.
wait_pid_bounded() {
    local pid=$1 secs=$2 i=0 limit
    limit=$((secs * 10))
    while kill -0 "$pid" 2>/dev/null; do
        # a zombie child still answers kill -0; `wait` reaps it below
        if [ -z "$(ps -o pid= -p "$pid" 2>/dev/null)" ] || \
           [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" = Z ]; then
            break
        fi
        i=$((i + 1))
        if [ "$i" -ge "$limit" ]; then
            kill -TERM "$pid" 2>/dev/null || true
            sleep 1
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            untrack_pid "$pid"
            return 255
        fi
        sleep 0.1
    done
    local rc=0
    wait "$pid" || rc=$?
    untrack_pid "$pid"
    return "$rc"
}

# stop_pid PID: SIGTERM, then reap (SIGKILL after 10 s)
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    wait_pid_bounded "$1" 10 || true
}

# wait_for_socket PATH SECONDS PID: a unix socket appears (or PID dies).
wait_for_socket() {
    local path=$1 secs=$2 pid=$3 i=0
    while [ ! -S "$path" ]; do
        kill -0 "$pid" 2>/dev/null || return 1
        i=$((i + 1))
        [ "$i" -ge $((secs * 10)) ] && return 1
        sleep 0.1
    done
    return 0
}

nonce() { od -An -N8 -tx1 /dev/urandom | tr -d ' \n'; }
