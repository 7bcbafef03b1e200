#!/bin/sh
# ClusterDebian: installed as /usr/lib/live/boot/9995-clusterdebian-layers.sh,
# so live-boot sources it after its own 9990-mount-http.sh.
#
# live-boot's fetch= downloads a single file, but the image is a stack of
# layers (01-base.squashfs, 02-custom.ext4, ...). Nodes with the RAM root get
# fetch=<base layer> and clusterdebian.layers=<the others, comma-separated>;
# this wraps live-boot's do_httpmount so that the other layers are
# downloaded next to the first one, into the same RAM file system, before
# live-boot stacks everything it finds there in name order.
#
# The swarm boot (internal/swarm): node1 may answer a layer request with a
# redirect to a node that already holds the layer, and wget follows it. So
# every layer is checked against node1's manifest, clusterdebian.sha256=
# <name>:<SHA-256>,... on the command line: a copy with another sum (a bad
# or short copy from a peer) is refused and fetched again, first through
# node1 (which then offers another peer, or serves it), then from node1
# itself (?direct=1). A transfer that breaks off (a peer gone) is retried
# the same way. Each fetch's end is reported to node1 (with the cluster
# token), which frees the peer's upload slot and stops offering a peer
# that served a bad copy. The verified layers are listed in
# /run/clusterdebian/swarm-verified (sha256sum's format), which the agent
# reads to serve them in turn.

# Where live-boot's scripts are and where the per-boot state goes; a test
# (imagefiles) runs this script against its own.
CD_LIVE_BOOT="${CLUSTERDEBIAN_LIVE_BOOT:-/lib/live/boot}"
CD_RUN="${CLUSTERDEBIAN_RUN:-/run/clusterdebian}"

# live-boot's own function, under another name: POSIX sh cannot copy a
# function, so its definition is read again and renamed.
eval "$(sed -e 's/^do_httpmount ()/clusterdebian_live_httpmount ()/' "${CD_LIVE_BOOT}/9990-mount-http.sh")"

# clusterdebian_param NAME: the value of kernel parameter NAME=.
clusterdebian_param ()
{
	for p in ${LIVE_BOOT_CMDLINE:-$(cat /proc/cmdline)}; do
		case "$p" in "$1"=*) echo "${p#"$1"=}" ;; esac
	done
}

# clusterdebian_sum LAYER: node1's SHA-256 of LAYER, or nothing.
clusterdebian_sum ()
{
	for e in $(echo "${CD_SUMS}" | tr ',' ' '); do
		case "$e" in "$1":*) echo "${e#*:}" ;; esac
	done
}

# clusterdebian_check LAYER FILE: whether FILE is node1's LAYER. Without a
# manifest (a head older than the swarm) there is nothing to check against.
clusterdebian_check ()
{
	want=$(clusterdebian_sum "$1")
	[ -n "${want}" ] || return 0
	got=$(sha256sum "$2" | cut -d ' ' -f 1)
	if [ "${got}" != "${want}" ]; then
		echo "clusterdebian: $1 has SHA-256 ${got}, node1's manifest says ${want}: refused" >&2
		return 1
	fi
	mkdir -p "${CD_RUN}"
	echo "${got}  $1" >>"${CD_RUN}/swarm-verified"
}

# clusterdebian_report LAYER RESULT: tell node1 how the fetch ended (ok,
# bad, fail). Best effort: a lost report only holds a peer's slot until its
# lease runs out.
clusterdebian_report ()
{
	[ -n "${CD_TOKEN}" ] && [ -n "${CD_HEAD}" ] || return 0
	timeout 10 wget -q -O /dev/null --header "Authorization: Bearer ${CD_TOKEN}" \
		--post-data "layer=$1&result=$2" "http://${CD_HEAD}/api/v1/swarm/report" >/dev/null 2>&1 || true
}

# clusterdebian_fetch LAYER: download LAYER from node1's folder (base) into
# dest and check it: twice through node1's plain URL (a peer, or node1),
# then from node1 itself. A stalled transfer ends after 15 minutes. node1
# may hold a plain request in its queue before it answers (no free peer,
# no upload slot of its own: swarm.Broker.Route), at most 5 minutes
# (swarm.DefaultMaxWait), so that the wait and the transfer fit in the 15.
clusterdebian_fetch ()
{
	n=0
	while [ "${n}" -lt 5 ]; do
		n=$((n + 1))
		url="${base}/$1"
		[ "${n}" -ge 3 ] && url="${url}?direct=1"
		rm -f "${dest}/$1"
		log_begin_msg "ClusterDebian: fetching ${url}"
		if timeout 900 wget "${url}" -O "${dest}/$1"; then
			log_end_msg
			if clusterdebian_check "$1" "${dest}/$1"; then
				clusterdebian_report "$1" ok
				return 0
			fi
			clusterdebian_report "$1" bad
		else
			log_end_msg
			echo "clusterdebian: fetching ${url} failed; trying again" >&2
			clusterdebian_report "$1" fail
			sleep 2
		fi
	done
	echo "clusterdebian: cannot fetch $1" >&2
	return 1
}

do_httpmount ()
{
	[ -n "${FETCH}" ] || {
		clusterdebian_live_httpmount
		return
	}
	layers=$(clusterdebian_param clusterdebian.layers)
	CD_SUMS=$(clusterdebian_param clusterdebian.sha256)
	CD_TOKEN=$(clusterdebian_param clusterdebian.token)
	CD_HEAD=$(clusterdebian_param clusterdebian.head)
	base="${FETCH%/*}"
	first="${FETCH##*/}"
	# shellcheck disable=SC2154 # live-boot sets mountpoint (0001-init-vars.sh)
	dest="${mountpoint}/${LIVE_MEDIA_PATH}"

	# The base layer: live-boot's own fetch, checked; fetched again when it
	# is bad or broke off (live-boot then took its RAM file system down).
	if clusterdebian_live_httpmount; then
		if clusterdebian_check "${first}" "${dest}/${first}"; then
			clusterdebian_report "${first}" ok
		else
			clusterdebian_report "${first}" bad
			clusterdebian_fetch "${first}" || return 1
		fi
	else
		clusterdebian_report "${first}" fail
		mount -t ramfs ram "${mountpoint}" && mkdir -p "${dest}" || return 1
		if ! clusterdebian_fetch "${first}"; then
			umount "${mountpoint}"
			return 1
		fi
	fi

	for layer in $(echo "${layers}" | tr ',' ' '); do
		case "${layer}" in
		*/* | .*)
			echo "clusterdebian: ignoring layer name ${layer}" >&2
			continue
			;;
		esac
		clusterdebian_fetch "${layer}" || return 1
	done
	return 0
}
