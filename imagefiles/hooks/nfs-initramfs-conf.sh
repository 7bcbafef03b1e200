#!/bin/sh
# mmdebstrap --customize-hook, run by sh on the build host with the new root
# as $1 (internal/imagebuild/bootstrap.go), after the packages. It makes the
# initramfs-tools configuration of the nodes' initrd, kept in the image so
# that node1 can remake that initrd (mkinitramfs -d): BOOT=nfs, since the
# stock kernel has no in-kernel IP autoconfiguration and the initramfs does
# DHCP and the NFS mount, and the folder the node script is then uploaded
# into.
set -e
mkdir -p "$1/etc/clusterdebian/initramfs-nfs"
cp -a "$1/etc/initramfs-tools/." "$1/etc/clusterdebian/initramfs-nfs/"
sed -i -e 's/^BOOT=.*/BOOT=nfs/' -e 's/^MODULES=.*/MODULES=netboot/' "$1/etc/clusterdebian/initramfs-nfs/initramfs.conf"
mkdir -p "$1/etc/clusterdebian/initramfs-nfs/scripts/nfs-bottom"
