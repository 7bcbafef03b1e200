#!/bin/sh
# mmdebstrap --customize-hook, run by sh on the build host with the new root
# as $1 (internal/imagebuild/bootstrap.go), when the image has munge. The
# package makes a key at installation: a key in the image would be every
# cluster's key, given away with the ISO. node1's head makes the cluster's
# own at its first start, in its state folder, and hands it to the nodes.
rm -f "$1/etc/munge/munge.key"
