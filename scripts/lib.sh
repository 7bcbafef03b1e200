# Shared by the scripts: run as root, and find or install a Go toolchain.
# shellcheck shell=bash

# need_root stops unless we are root, with the command to type: many Debian
# installs have no sudo, and their root shell needs none.
need_root() {
	if [ "$(id -u)" != 0 ]; then
		local cmd hint
		cmd="$0$(printf ' %q' "$@")"
		if command -v sudo >/dev/null 2>&1; then
			hint="sudo $cmd"
		else
			hint="su -c '$cmd', or in a root shell: $cmd"
		fi
		echo "$0: run this as root (it installs Debian packages): $hint" >&2
		exit 1
	fi
}

# Where ensure_go installs the Go toolchain that go.mod asks for, one folder
# per version, and where it keeps the downloaded toolchain zips between runs.
# The variables let a test point them elsewhere.
CLUSTERDEBIAN_GO_ROOT="${CLUSTERDEBIAN_GO_ROOT:-/usr/local/lib/clusterdebian-go}"
CLUSTERDEBIAN_GO_CACHE="${CLUSTERDEBIAN_GO_CACHE:-/var/cache/clusterdebian/go}"

# ensure_go puts the Go that go.mod asks for (its toolchain line, else its go
# line), or a newer one, first on PATH. It keeps a Go already on PATH (or in
# /usr/local/go) when that is new enough, and otherwise installs the toolchain
# from the Go module proxy into $CLUSTERDEBIAN_GO_ROOT/go<version>, the way
# GOTOOLCHAIN=auto gets it, checked against the Go checksum database. Debian's
# golang-go is too old on bookworm (1.19) and trixie (1.24). Run from the
# repository root.
ensure_go() {
	# CI may run with a bare environment: go needs a home for its caches.
	export HOME="${HOME:-/root}"
	export PATH="$PATH:/usr/sbin:/sbin"
	local want go dir=
	want=$(go_mod_toolchain go.mod) || return 1
	# The first go on PATH may be Debian's, too old, while /usr/local/go has
	# a good one.
	for go in "$(command -v go)" /usr/local/go/bin/go "$CLUSTERDEBIAN_GO_ROOT/go$want/bin/go"; do
		if go_version_ge "$(go_version_of "$go")" "$want" 2>/dev/null; then
			dir=$(dirname "$go")
			break
		fi
	done
	if [ -z "$dir" ]; then
		dir="$CLUSTERDEBIAN_GO_ROOT/go$want/bin"
		install_go_toolchain "$want" "${dir%/bin}" || return 1
	fi
	if [ "$(command -v go)" != "$dir/go" ]; then
		export PATH="$dir:$PATH"
		# A GOROOT left over from another Go would give this go its library.
		unset GOROOT
	fi
	# The Go chosen above is new enough: never switch toolchains behind our
	# back (unless the caller asked to).
	export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
	if [ -e .git ] && ! command -v git >/dev/null 2>&1; then
		# go build stamps the commit into the binary, which needs git.
		apt_install git || return 1
	fi
}

# go_mod_toolchain FILE prints the Go version FILE asks for, without "go":
# its toolchain line, else its go line (a bare "1.N" meaning 1.N.0).
go_mod_toolchain() {
	local v
	v=$(sed -n 's/^toolchain[[:space:]]\{1,\}go\([^[:space:]]*\).*/\1/p' "$1")
	[ -n "$v" ] || v=$(sed -n 's/^go[[:space:]]\{1,\}\([0-9][^[:space:]]*\).*/\1/p' "$1")
	case "$v" in
	"")
		echo "$0: $1 has no go line" >&2
		return 1
		;;
	[0-9]*.[0-9]*.* | *rc* | *beta*) ;;
	*) v="$v.0" ;;
	esac
	echo "$v"
}

# go_version_of GO prints the version of the go command GO (e.g. 1.26.8), or
# nothing when GO is empty, absent or does not run. It asks from / so that no
# go.mod makes it switch toolchains or refuse.
go_version_of() {
	[ -n "$1" ] && command -v "$1" >/dev/null 2>&1 || return 0
	(cd / && GOTOOLCHAIN=local "$1" version 2>/dev/null) |
		sed -n 's/^go version go\([0-9][^[:space:]]*\) .*/\1/p'
}

# go_version_ge A B succeeds when Go version A is at least B. Versions are
# 1.N, 1.N.P, 1.NrcR or 1.NbetaR; 1.N < 1.NbetaR < 1.NrcR < 1.N.0, as Go orders
# them.
go_version_ge() {
	local a b
	a=$(go_version_key "$1") && b=$(go_version_key "$2") || return 1
	# Keys are fixed-width numbers, so string order is version order.
	[[ ! "$a" < "$b" ]]
}

go_version_key() {
	local v=$1 major minor rest kind=0 n=0
	if [[ "$v" != *.* ]]; then
		echo "$0: cannot read Go version $v" >&2
		return 1
	fi
	major=${v%%.*}
	rest=${v#*.}
	minor=${rest%%[!0-9]*}
	rest=${rest#"$minor"}
	case "$rest" in
	"") ;;
	beta*) kind=1 n=${rest#beta} ;;
	rc*) kind=2 n=${rest#rc} ;;
	.*) kind=3 n=${rest#.} ;;
	*) n=x ;;
	esac
	if ! [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ && "$n" =~ ^[0-9]+$ ]]; then
		echo "$0: cannot read Go version $v" >&2
		return 1
	fi
	printf '%05d.%05d.%d.%05d\n' "$((10#$major))" "$((10#$minor))" "$kind" "$((10#$n))"
}

# go_toolchain_arch prints the architecture part of a Go toolchain module
# version for this machine (amd64, arm64, armv6l, ...).
go_toolchain_arch() {
	local arch
	arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
	case "$arch" in
	amd64 | x86_64) echo amd64 ;;
	arm64 | aarch64) echo arm64 ;;
	i386 | i686) echo 386 ;;
	armhf | armel | armv7l | armv6l) echo armv6l ;;
	ppc64el | ppc64le) echo ppc64le ;;
	mips64el) echo mips64le ;;
	*) echo "$arch" ;;
	esac
}

# apt_install PACKAGE... installs Debian packages, updating the package lists
# only when the first try fails (a fresh machine may have none).
apt_install() {
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 ||
		{ apt-get update && apt-get install -y --no-install-recommends "$@"; }
}

# install_go_toolchain VERSION DIR downloads the Go toolchain module
# golang.org/toolchain@v0.0.1-go<VERSION>.linux-<arch> from the Go module
# proxy (the first entry of $GOPROXY, if it is a URL), checks its hash against
# the Go checksum database, and unpacks it into DIR. The zip stays in
# $CLUSTERDEBIAN_GO_CACHE, so a second install (or a test) need not download
# it again; it is checked again each time.
install_go_toolchain() (
	version=$1 dir=$2
	proxy=${GOPROXY:-}
	proxy=${proxy%%[,|]*}
	case "$proxy" in
	http://* | https://*) proxy=${proxy%/} ;;
	*) proxy=https://proxy.golang.org ;;
	esac
	mod=golang.org/toolchain
	modver=v0.0.1-go$version.linux-$(go_toolchain_arch)

	need=()
	command -v curl >/dev/null 2>&1 || command -v wget >/dev/null 2>&1 || need+=(curl)
	command -v unzip >/dev/null 2>&1 || need+=(unzip)
	[ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
	if [ ${#need[@]} -gt 0 ]; then
		echo "==> installing ${need[*]} with apt-get, to fetch Go"
		apt_install "${need[@]}" || exit 1
	fi

	mkdir -p "$CLUSTERDEBIAN_GO_CACHE" "$(dirname "$dir")" || exit 1
	# One installer at a time: scripts may run side by side. The lock goes
	# with this subshell.
	exec {lockfd}>"$CLUSTERDEBIAN_GO_CACHE/lock" && flock "$lockfd" || exit 1
	if [ "$(go_version_of "$dir/bin/go")" = "$version" ]; then
		exit 0
	fi

	echo "==> installing Go $version ($mod@$modver) into $dir"
	want=$(go_sumdb_hash "$proxy" "$mod" "$modver") || exit 1
	zip="$CLUSTERDEBIAN_GO_CACHE/$modver.zip"
	stage=$(mktemp -d "$(dirname "$dir")/.install-go$version.XXXXXX") || exit 1
	trap 'rm -rf "$stage" "$zip.part"' EXIT
	got=
	for try in cached download; do
		if [ "$try" = download ]; then
			echo "    downloading $proxy/$mod/@v/$modver.zip"
			fetch_url "$proxy/$mod/@v/$modver.zip" "$zip.part" && mv "$zip.part" "$zip" || break
		elif [ ! -e "$zip" ]; then
			continue
		fi
		rm -rf "${stage:?}"/*
		got=$(unzip_module_h1 "$zip" "$mod@$modver" "$stage") && [ "$got" = "$want" ] && break
		echo "    $zip: hash ${got:-unreadable}, the checksum database says $want; discarding it" >&2
		rm -f "$zip"
		got=
	done
	if [ -z "$got" ]; then
		echo "$0: could not get a verified Go $version toolchain from $proxy" >&2
		exit 1
	fi
	# Module zips keep no file modes: make the commands executable, as the go
	# command does when it unpacks a toolchain.
	chmod -R a+rX "$stage/$mod@$modver" &&
		chmod a+x "$stage/$mod@$modver"/bin/* "$stage/$mod@$modver"/pkg/tool/*/* &&
		rm -rf "$dir" && mv "$stage/$mod@$modver" "$dir" || exit 1
	if [ "$(go_version_of "$dir/bin/go")" != "$version" ]; then
		echo "$0: the Go installed into $dir does not run as Go $version" >&2
		exit 1
	fi
)

# fetch_url URL FILE downloads URL into FILE with curl or wget.
fetch_url() {
	if command -v curl >/dev/null 2>&1; then
		curl -fsSL --retry 3 -o "$2" "$1"
	else
		wget -q --tries=3 -O "$2" "$1"
	fi
}

# go_sumdb_hash PROXY MODULE VERSION prints the h1: hash that the Go checksum
# database (sum.golang.org, through the proxy when it serves it, as the go
# command asks it) records for MODULE@VERSION's zip. Each failed lookup is
# reported on stderr. CLUSTERDEBIAN_SUMDB replaces https://sum.golang.org
# (tests point it at a local address).
go_sumdb_hash() {
	local proxy=$1 mod=$2 ver=$3 out url h= why= reached=
	out=$(mktemp) || return 1
	for url in "$proxy/sumdb/sum.golang.org/lookup/$mod@$ver" "${CLUSTERDEBIAN_SUMDB:-https://sum.golang.org}/lookup/$mod@$ver"; do
		if why=$(fetch_url "$url" "$out" 2>&1); then
			reached=$url
			h=$(awk -v m="$mod" -v v="$ver" '$1 == m && $2 == v { print $3 }' "$out")
			[ -n "$h" ] && break
		else
			echo "    $url: ${why:-download failed}" >&2
		fi
	done
	rm -f "$out"
	if [ -z "$h" ] && [ -z "$reached" ]; then
		echo "$0: no answer from the Go checksum database (through $proxy, then ${CLUSTERDEBIAN_SUMDB:-https://sum.golang.org}) for $mod@$ver, so Go's toolchain cannot be checked; the errors above say why (network, proxy, TLS certificates, or a Go version not released)" >&2
		return 1
	elif [ -z "$h" ]; then
		echo "$0: the Go checksum database has no hash for $mod@$ver (is that Go version released for this machine?)" >&2
		return 1
	fi
	echo "$h"
}

# unzip_module_h1 ZIP PREFIX DIR unpacks a module zip into DIR and prints its
# h1: hash (golang.org/x/mod/sumdb/dirhash Hash1: the base64 SHA-256 of the
# sorted "sha256  name" lines of its files), computed over what was unpacked,
# so that what is installed is what was checked. Every name must start with
# PREFIX/.
unzip_module_h1() {
	local zip=$1 prefix=$2 dir=$3 names sum
	names=$(unzip -Z1 "$zip" 2>/dev/null) || return 1
	if [ -z "$names" ] || ! awk -v p="$prefix/" 'index($0, p) != 1 || /(^|\/)\.\.(\/|$)/ { bad = 1 } END { exit bad }' <<<"$names"; then
		echo "    $zip: names outside $prefix/" >&2
		return 1
	fi
	unzip -q -d "$dir" "$zip" || return 1
	sum=$(cd "$dir" && find "$prefix" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum) || return 1
	sum=${sum%% *}
	echo "h1:$(printf '%b' "$(sed 's/../\\x&/g' <<<"$sum")" | base64)"
}

# build_binary makes the static bin/clusterdebian (static so that it runs
# inside the image, where it is copied).
build_binary() {
	echo "==> building bin/clusterdebian"
	CGO_ENABLED=0 go build -trimpath -o bin/clusterdebian ./cmd/clusterdebian
}

# fuzz_targets prints every fuzz target of the module's packages, one
# "./internal/pkg FuzzName" a line: every `func Fuzz...` at the start of a
# line of a _test.go file under internal/. scripts/test and scripts/bench
# both run what it lists.
fuzz_targets() {
	grep -rl --include='*_test.go' '^func Fuzz' internal | sort | while read -r f; do
		for fn in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //'); do
			echo "./$(dirname "$f") $fn"
		done
	done
}

# fuzz_figures reads the output of one `go test -fuzz` run from standard
# input and prints "EXECS NEW CRASHER": the executions and new corpus
# entries of its last "fuzz: elapsed: ..., execs: N (...), new interesting:
# M (total: ...)" line (0 when it has none), and the file of the input that
# failed, relative to the package ("-" when none failed; "seed:NAME" when a
# seed corpus entry failed, before fuzzing began; "deadline" when the run
# failed only with Go's own "context deadline exceeded" as a duration
# budget ran out, which no input caused: go.dev/issue/75804).
fuzz_figures() {
	awk '
		/^fuzz: elapsed: .*execs: [0-9]+/ {
			for (i = 1; i < NF; i++) {
				if ($i == "execs:") execs = $(i + 1)
				if ($i == "interesting:") fresh = $(i + 1)
			}
		}
		/Failing input written to / { crasher = $NF }
		/failure while testing seed corpus entry: / && crasher == "" { crasher = "seed:" $NF }
		# The coordinator prints its own error as the only line under the
		# FAIL line of the target; an input that fails prints its own lines.
		after_fail && /^    context deadline exceeded$/ { deadline = 1 }
		{ after_fail = /^--- FAIL: Fuzz[A-Za-z0-9_]* \(/ }
		END {
			if (crasher == "" && deadline) crasher = "deadline"
			if (crasher == "") crasher = "-"
			printf "%d %d %s\n", execs + 0, fresh + 0, crasher
		}'
}
