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

# live-boot's own function, under another name: POSIX sh cannot copy a
# function, so its definition is read again and renamed.
eval "$(sed -e 's/^do_httpmount ()/clusterdebian_live_httpmount ()/' /lib/live/boot/9990-mount-http.sh)"

do_httpmount ()
{
	clusterdebian_live_httpmount || return 1

	layers=
	for p in ${LIVE_BOOT_CMDLINE:-$(cat /proc/cmdline)}; do
		case "$p" in clusterdebian.layers=*) layers="${p#clusterdebian.layers=}" ;; esac
	done
	[ -n "${layers}" ] && [ -n "${FETCH}" ] || return 0

	base="${FETCH%/*}"
	dest="${mountpoint}/${LIVE_MEDIA_PATH}"
	for layer in $(echo "${layers}" | tr ',' ' '); do
		case "${layer}" in
		*/* | .*)
			echo "clusterdebian: ignoring layer name ${layer}" >&2
			continue
			;;
		esac
		log_begin_msg "ClusterDebian: fetching ${base}/${layer}"
		if ! wget "${base}/${layer}" -O "${dest}/${layer}"; then
			log_end_msg
			echo "clusterdebian: cannot fetch ${base}/${layer}" >&2
			return 1
		fi
		log_end_msg
	done
	return 0
}
