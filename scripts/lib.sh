# Shared by the scripts: run as root, and find or install a Go toolchain.
# shellcheck shell=bash

need_root() {
	if [ "$(id -u)" != 0 ]; then
		echo "$0: run this as root (it installs Debian packages): sudo $0 $*" >&2
		exit 1
	fi
}

# ensure_go puts a Go >= 1.21 on PATH. go.mod asks for a newer Go; Go 1.21 and
# later fetch that toolchain by themselves through the Go module proxy.
ensure_go() {
	# CI may run with a bare environment: go needs a home for its caches.
	export HOME="${HOME:-/root}"
	export PATH="$PATH:/usr/local/go/bin:/usr/lib/go/bin:/usr/sbin:/sbin"
	if ! command -v go >/dev/null 2>&1; then
		echo "==> installing Go (golang-go) with apt-get"
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y --no-install-recommends golang-go ca-certificates git >/dev/null 2>&1 ||
			{ apt-get update && apt-get install -y --no-install-recommends golang-go ca-certificates git; }
	fi
	local v
	v=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
	case "$v" in
	1.[0-9] | 1.[0-9].* | 1.1[0-9] | 1.1[0-9].* | 1.20 | 1.20.* | "")
		echo "$0: Go $v is too old (this Debian's golang-go). Install Go 1.21 or later" >&2
		echo "  (from bookworm-backports, or https://go.dev/dl into /usr/local/go) and run again." >&2
		exit 1
		;;
	esac
	export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
}

# build_binary makes the static bin/clusterdebian (static so that it runs
# inside the image, where it is copied).
build_binary() {
	echo "==> building bin/clusterdebian"
	CGO_ENABLED=0 go build -trimpath -o bin/clusterdebian ./cmd/clusterdebian
}
