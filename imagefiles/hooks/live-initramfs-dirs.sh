#!/bin/sh
# mmdebstrap --essential-hook, run by sh on the build host with the new root
# as $1 (internal/imagebuild/bootstrap.go). The essential hooks run before
# the kernel and live-boot are installed, so that the live initrd the
# kernel's installation makes already has the nodes' RAM-root pieces. This
# one makes the folders they are then uploaded into: live-boot's extensions
# and the initramfs-tools live-bottom scripts.
mkdir -p "$1/usr/lib/live/boot" "$1/etc/initramfs-tools/scripts/live-bottom"
