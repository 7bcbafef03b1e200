#!/bin/sh
# mmdebstrap --essential-hook, run by sh on the build host with the new root
# as $1 (internal/imagebuild/bootstrap.go), after the upload of the live-boot
# layers extension (initramfs/live-layers.sh) and of the node script
# (initramfs/clusterdebian-node, a live-bottom script that does nothing on
# node1): both must be executable to run in the initrd.
chmod 0755 "$1/usr/lib/live/boot/9995-clusterdebian-layers.sh" "$1/etc/initramfs-tools/scripts/live-bottom/clusterdebian-node"
