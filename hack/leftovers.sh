#!/usr/bin/env bash
# leftovers.sh snapshot FILE | check FILE
#
# `make test` takes a snapshot of what tests could leave behind before the Go
# tests run and checks it afterwards: processes of the servers and daemons
# the tests start, listening ports, network namespaces, links, policy rules,
# and entries in the temporary directory. Anything new fails the run and is
# named.
set -euo pipefail

state() {
	echo "## processes"
	# Only the programs the tests start: the sandbox has its own processes.
	ps -eo comm= | grep -E '^(headscale|tailscaled|tailscale|etcd|kube-apiserver|kube-controller|chrome|chromium|headless_shell|tsymbiote-|tailscale-cni|install-cni|iperf3|containerd|devcp)' | sort || true
	echo "## listening sockets"
	ss -Hltnu 2>/dev/null | awk '{print $1, $5}' | sort -u || true
	echo "## network namespaces"
	ip netns list 2>/dev/null | awk '{print $1}' | sort || true
	echo "## links"
	ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | sort || true
	echo "## rules"
	{ ip rule show; ip -6 rule show; } 2>/dev/null | sort || true
	echo "## temporary directory"
	# go test's own build dirs come and go with each package.
	ls -A "${TMPDIR:-/tmp}" | grep -vE '^go-build[0-9]+$' | sort || true
}

case "${1:-}" in
snapshot)
	state >"$2"
	;;
check)
	# Not mktemp: a file in the temporary directory would show up as a
	# leftover of its own.
	after="$2.after"
	trap 'rm -f "$after"' EXIT
	state >"$after"
	# Lines only in the second file: what the tests added.
	added=$(diff "$2" "$after" | grep '^>' || true)
	if [ -n "$added" ]; then
		echo "tests left these behind (not there before the tests ran):"
		echo "$added"
		exit 1
	fi
	echo "nothing left behind: no new processes, listeners, namespaces, links, rules or temporary files"
	rm -f "$2"
	;;
*)
	echo "usage: $0 snapshot FILE | check FILE" >&2
	exit 2
	;;
esac
