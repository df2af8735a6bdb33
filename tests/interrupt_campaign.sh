#!/usr/bin/env bash
# Interrupting cr-dump checkpoint must never harm the task (issue 13, item 1): a campaign.
#
# For each mode, a fresh self-checking target (tests/programs/checksum.c: rewrites and checks
# a buffer's checksum, holds known values in its registers across a spin, sleeps in
# nanosleep calls that must return 0) is checkpointed over and over while cr-dump is
#   - killed at its K-th ptrace call, K = 1..N (strace -e inject), with SIGKILL, SIGINT, SIGTERM;
#   - killed at a random moment (timeout -s SIG, 1..40 ms), RANDOM_TRIALS times per signal.
# After each run (allowing up to 15 s for cr-dump's guard to repair what a SIGKILL left): the
# target is alive, not traced (TracerPid 0), has no child (no twin, no zombie) and has not
# reported corruption. A casualty is counted, printed, and the target replaced.
# strace runs with -b execve: it lets go of cr-dump's guard (cr-dump __guard, exec'ed), whose
# own ptrace calls must not count towards K nor be killed.
#
# Usage: tests/interrupt_campaign.sh [RANDOM_TRIALS] [MODE...]
#   RANDOM_TRIALS default 200; MODES default: lazy twin copy direct track incremental precopy.
#   SIGNALS (default "KILL INT TERM") picks the signals.
#   CR_DUMP (default target/release/cr-dump, else target/debug/cr-dump) picks the binary.
set -u
cd "$(dirname "$0")/.."
TRIALS=${1:-200}
shift || true
MODES=${*:-lazy twin copy direct track incremental precopy}
B=${CR_DUMP:-}
[ -z "$B" ] && { [ -x target/release/cr-dump ] && B=target/release/cr-dump || B=target/debug/cr-dump; }
command -v strace >/dev/null || { echo "strace is needed" >&2; exit 2; }
W=$(mktemp -d /tmp/cr-interrupt.XXXXXX)
trap 'kill $P 2>/dev/null; rm -rf "$W"' EXIT
gcc -O0 -o "$W/checksum" tests/programs/checksum.c || exit 2
export CR_CRID_FILE="$W/crid"

flags() {
	case $1 in
	lazy) echo "" ;; twin) echo "--twin" ;; copy) echo "--copy" ;; direct) echo "--direct" ;;
	track) echo "--track" ;; incremental) echo "--incremental" ;; precopy) echo "--precopy" ;;
	esac
}
# Tracking is armed (a userfaultfd injected) by a task's first checkpoint only: a fresh
# target per trial for the modes that arm it.
fresh() { case $1 in track | precopy) kill "$P" 2>/dev/null; wait "$P" 2>/dev/null; start ;; esac; }
# A target, once it has written its whole buffer (a lazy checkpoint makes a twin only for
# 32 MiB or more to copy; on a loaded machine 0.1 s is not always enough for that).
start() {
	"$W/checksum" "$PAGES" >/dev/null 2>"$W/err" &
	P=$!
	local i rss
	for i in $(seq 1 250); do
		rss=$(awk '/^VmRSS/{print $2}' /proc/$P/status 2>/dev/null)
		[ "${rss:-0}" -ge $((PAGES * 4)) ] && break
		sleep 0.02
	done
}
# Why the target is not fine (empty if it is).
why_bad() {
	if ! kill -0 "$P" 2>/dev/null || grep -q '^State:.*Z' /proc/$P/status 2>/dev/null; then
		echo "dead"
		return
	fi
	local tp ch
	tp=$(awk '/^TracerPid/{print $2}' /proc/$P/status)
	ch=$(cat /proc/$P/task/*/children 2>/dev/null | tr -d ' \n')
	[ "$tp" != 0 ] && echo -n "traced by $tp "
	[ -n "$ch" ] && echo -n "children: $ch"
}
switches() { awk '/^voluntary_ctxt_switches/{print $2}' /proc/$P/status 2>/dev/null; }
# 0 if the target is fine (within 15 s: the guard repairs after cr-dump's death) and makes
# progress (it sleeps again: a task left spinning at the injection stub never does); else
# prints why (and what cr-dump and its guard said) and replaces it.
judge() {
	local why="" end=$(($(date +%s) + 15)) s0
	while :; do
		why=$(why_bad)
		{ [ -z "$why" ] || [ "$why" = dead ] || [ "$(date +%s)" -gt $end ]; } && break
		sleep 0.02
	done
	if [ -z "$why" ]; then
		s0=$(switches)
		while [ "$(switches)" = "$s0" ] && [ "$(date +%s)" -le $end ]; do sleep 0.02; done
		[ "$(switches)" = "$s0" ] && why="no progress (spinning?)"
	fi
	[ "$why" = dead ] && { wait "$P" 2>/dev/null; why="dead (status $?) $(cat "$W/err")"; }
	[ -z "$why" ] && return 0
	echo "  casualty ($1): $why $(tr '\n' ' ' <"$W/stderr")"
	kill -9 "$P" 2>/dev/null; wait "$P" 2>/dev/null
	start
	return 1
}

total_bad=0
for m in $MODES; do
	F=$(flags "$m")
	# The default lazy mode makes a twin only for 32 MiB or more to copy.
	PAGES=64; [ "$m" = lazy ] && PAGES=9000
	rm -rf "$W/o"; mkdir "$W/o"
	start
	# shellcheck disable=SC2086
	strace -f -b execve -qq -o "$W/trace" -e trace=ptrace "$B" checkpoint --pid $P $F -o "$W/o" >/dev/null 2>&1
	N=$(grep -c 'ptrace(' "$W/trace")
	for sig in ${SIGNALS:-KILL INT TERM}; do
		runs=0 bad=0
		for K in $(seq 1 "$N"); do
			fresh "$m"
			# shellcheck disable=SC2086
			strace -f -b execve -qq -o /dev/null -e trace=ptrace -e inject=ptrace:signal=$sig:when=$K \
				"$B" checkpoint --pid $P $F -o "$W/o" >/dev/null 2>"$W/stderr"
			runs=$((runs + 1)); judge "$m, SIG$sig at ptrace call $K" || bad=$((bad + 1))
		done
		for _ in $(seq 1 "$TRIALS"); do
			fresh "$m"
			d=$(printf '0.%03d' $((RANDOM % 40 + 1)))
			# shellcheck disable=SC2086
			timeout -s "$sig" "$d" "$B" checkpoint --pid $P $F -o "$W/o" >/dev/null 2>"$W/stderr"
			runs=$((runs + 1)); judge "$m, SIG$sig after ${d}s" || bad=$((bad + 1))
		done
		ls -a "$W/o" | grep -q tmp && echo "  temporary files left: $(ls -a "$W/o" | grep tmp)"
		echo "$m SIG$sig: N=$N ptrace calls, $runs interrupted runs, $bad casualties"
		total_bad=$((total_bad + bad))
	done
	kill "$P" 2>/dev/null; wait "$P" 2>/dev/null
done
echo "total casualties: $total_bad"
[ "$total_bad" = 0 ]
