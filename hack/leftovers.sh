#!/usr/bin/env bash
# leftovers.sh snapshot FILE | check FILE
#
# `make test` takes a snapshot of what tests could leave behind before the Go
# tests run and checks it afterwards: processes of the servers and daemons
# the tests start, listening ports, network namespaces, links, policy rules
# and routes, mounts, cgroups, iptables rules, the sysctls and node
# directories a Kubernetes node changes, and entries in the temporary
# directory. Anything new (or changed) fails the run and is named.
set -euo pipefail

state() {
	echo "## processes"
	# Only the programs the tests start: the sandbox has its own processes.
	ps -eo comm= | grep -E '^(headscale|tailscaled|tailscale|etcd|kube-|kubelet|kubectl|helm|chrome|chromium|headless_shell|tsymbiote-|tailscale-cni|install-cni|iperf3|containerd|runc|devcp|testapp|pause)' | sort || true
	echo "## listening sockets"
	ss -Hltnu 2>/dev/null | awk '{print $1, $5}' | sort -u || true
	echo "## network namespaces"
	ip netns list 2>/dev/null | awk '{print $1}' | sort || true
	echo "## links"
	ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | sort || true
	echo "## rules"
	{ ip rule show; ip -6 rule show; } 2>/dev/null | sort || true
	echo "## routes in other tables"
	{ ip route show table all; ip -6 route show table all; } 2>/dev/null | grep ' table ' | grep -vE ' table (local|main)' | sort || true
	echo "## mounts"
	# /run/netns is the mount iproute2 makes once, for good, on the first
	# \`ip netns add\`; what is mounted beneath it is checked.
	# With its propagation: a test that makes / shared must make it private again.
	awk '{p="private"; for (i = 7; $i != "-"; i++) if ($i ~ /^shared:/) p="shared"; else if ($i ~ /^master:/) p="slave"; print $5, p}' /proc/self/mountinfo | grep -v '^/run/netns ' | sort || true
	echo "## cgroups"
	find /sys/fs/cgroup -mindepth 2 -maxdepth 4 -type d 2>/dev/null | sort || true
	echo "## iptables"
	# Rules and user chains; built-in chains come with tables iptables-nft
	# creates on first use and cannot remove.
	for t in iptables-save ip6tables-save; do
		command -v $t >/dev/null && $t 2>/dev/null | grep -E '^(\*|-A|:)' | grep -vE '^:(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) ' | sed "s/^/$t /" || true
	done | grep -v '^ip.*-save \*' | sort || true
	echo "## sysctls"
	for k in net/ipv4/ip_forward net/ipv6/conf/all/forwarding net/ipv4/conf/all/route_localnet \
		vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops \
		kernel/keys/root_maxkeys kernel/keys/root_maxbytes; do
		[ -r /proc/sys/$k ] && echo "$k=$(cat /proc/sys/$k)"
	done
	echo "## node directories"
	for d in /etc/cni /opt/cni /var/lib/cni /var/lib/kubelet /var/log/containers /var/log/pods \
		/run/containerd /var/run/tailscale-cni /var/lib/tailscale-cni /run/tsymbiote-cluster.lock; do
		[ -e $d ] && find $d -maxdepth 2 2>/dev/null | sort
	done
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
