#!/bin/sh
# mmdebstrap --customize-hook, run by sh on the build host with the new root
# as $1 (internal/imagebuild/bootstrap.go). It fetches Debian's Secure Boot
# chain for the image's own suite and mirror, as the root's apt knows them,
# without installing it into the image: shim (shim-signed, signed by
# Microsoft's UEFI CA) and GRUB (grub-efi-amd64-signed, signed by Debian)
# with its CD image gcdx64 and its network image grubnetx64. The binaries
# go into /boot/clusterdebian-efi, which the bootstrap moves out of the
# root: the ISO's EFI system partition and the netboot files take them.
set -e
work=/tmp/clusterdebian-efi
mkdir -p "$1$work" "$1/boot/clusterdebian-efi"
chroot "$1" sh -c "cd $work && apt-get -q -o APT::Sandbox::User=root download shim-signed grub-efi-amd64-signed && for deb in *.deb; do dpkg-deb -x \"\$deb\" x; done"
cp "$1$work/x/usr/lib/shim/shimx64.efi.signed" "$1/boot/clusterdebian-efi/shimx64.efi"
cp "$1$work/x/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed" "$1/boot/clusterdebian-efi/gcdx64.efi"
cp "$1$work/x/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed" "$1/boot/clusterdebian-efi/grubnetx64.efi"
rm -rf "$1$work"
