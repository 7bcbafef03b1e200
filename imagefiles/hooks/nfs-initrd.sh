#!/bin/sh
# mmdebstrap --customize-hook, run by sh on the build host with the new root
# as $1 (internal/imagebuild/bootstrap.go), after the upload of the node
# script (initramfs/clusterdebian-node) as an nfs-bottom script, which makes
# node1's shared root safe for one node. It makes the nodes' initrd for the
# shared root, /boot/initrd-nfs.img (contract.NFSInitrdFile), for the newest
# kernel in the root.
set -e
chmod 0755 "$1/etc/clusterdebian/initramfs-nfs/scripts/nfs-bottom/clusterdebian-node"
# The newest kernel is looked up inside the new root, so in single quotes.
# shellcheck disable=SC2016
chroot "$1" sh -c 'mkinitramfs -d /etc/clusterdebian/initramfs-nfs -o /boot/initrd-nfs.img "$(ls /lib/modules | sort -V | tail -n 1)"'
