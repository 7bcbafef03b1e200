#!/bin/sh
# mmdebstrap --customize-hook, run by sh on the build host with the new root
# as $1 (internal/imagebuild/bootstrap.go), when the image has PVM. Debian's
# pvm starts remote daemons through the pvm-rsh alternative, which it points
# at rsh: this makes ssh PVM's remote shell.
chroot "$1" sh -c 'update-alternatives --install /usr/lib/pvm3/bin/rsh pvm-rsh /usr/bin/ssh 50 && update-alternatives --set pvm-rsh /usr/bin/ssh'
