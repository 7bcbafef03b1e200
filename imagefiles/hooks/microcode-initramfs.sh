#!/bin/sh
# mmdebstrap --customize-hook, run by sh on the build host with the new root
# as $1 (internal/imagebuild/bootstrap.go), with image.firmware. The image
# boots on any machine, so every initrd carries every CPU's microcode,
# loaded early: the microcode packages' default ("auto") would put in only
# the build host's (Intel's, for the build host's CPU only, unless the
# initrd has MODULES=most; AMD's only on an AMD build host). Then it
# remakes the live initrd, which the kernel's installation made before this
# setting; the nodes' NFS-root initrd is made after it (nfs-initrd.sh).
set -e
if [ -f "$1/etc/default/intel-microcode" ]; then
	printf '\n# ClusterDebian: every CPU'"'"'s microcode, whatever machine boots the image.\nIUCODE_TOOL_INITRAMFS=early\nIUCODE_TOOL_SCANCPUS=no\n' >> "$1/etc/default/intel-microcode"
fi
if [ -f "$1/etc/default/amd64-microcode" ]; then
	printf '\n# ClusterDebian: every CPU'"'"'s microcode, whatever machine boots the image.\nAMD64UCODE_INITRAMFS=early\n' >> "$1/etc/default/amd64-microcode"
fi
chroot "$1" update-initramfs -u -k all
