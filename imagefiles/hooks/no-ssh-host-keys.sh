#!/bin/sh
# mmdebstrap --customize-hook, run by sh on the build host with the new root
# as $1 (internal/imagebuild/bootstrap.go). No SSH host keys in the image:
# they are made per machine at boot, not shipped in an ISO that may be
# given away.
rm -f "$1"/etc/ssh/ssh_host_*
