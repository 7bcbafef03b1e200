package scripts

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/dirhash"
)

// bash runs script under bash after sourcing lib.sh, from the repository
// root, with only the environment given (plus a plain PATH), and returns its
// standard output and error.
func bash(t *testing.T, env []string, script string) (string, string, error) {
	t.Helper()
	lib, err := filepath.Abs("lib.sh")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), "bash", "-c", `. "$1" && shift && `+script, "lib.sh", lib)
	cmd.Dir = ".."
	cmd.Env = append([]string{"HOME=" + t.TempDir(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	return stdout.String(), stderr.String(), err
}

// needTools fails the test when the host lacks a command that lib.sh's
// installer uses: the installer would apt-get it, which a test must not do.
func needTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Fatalf("%s is missing: clusterdebian doctor --fix installs it", n)
		}
	}
}

func TestGoVersionGE(t *testing.T) {
	for _, c := range []struct {
		a, b string
		ge   bool
	}{
		{"1.26.8", "1.26.0", true},
		{"1.26.0", "1.26.8", false},
		{"1.26.0", "1.26.0", true},
		{"1.26.10", "1.26.9", true},
		{"1.26.0", "1.26rc2", true},
		{"1.26rc2", "1.26rc1", true},
		{"1.26rc1", "1.26.0", false},
		{"1.26beta1", "1.26rc1", false},
		{"1.26", "1.26beta1", false},
		{"1.27.0", "1.26.11", true},
		{"1.9.1", "1.21.0", false},
		{"1.19.8", "1.26.0", false},
		{"2.0.0", "1.99.99", true},
	} {
		_, stderr, err := bash(t, nil, fmt.Sprintf("go_version_ge %s %s", c.a, c.b))
		if got := err == nil; got != c.ge || stderr != "" {
			t.Errorf("go_version_ge %s %s: ok=%v (want %v), stderr %q", c.a, c.b, got, c.ge, stderr)
		}
	}
	for _, v := range []string{"devel", "1", "1.x", ""} {
		if _, stderr, err := bash(t, []string{"V=" + v}, `go_version_ge "$V" 1.26.0`); err == nil || !strings.Contains(stderr, "cannot read Go version "+v) {
			t.Errorf("go_version_ge %q 1.26.0: err %v, stderr %q; want a refusal that names the version", v, err, stderr)
		}
	}
}

func TestGoModToolchain(t *testing.T) {
	for _, c := range []struct{ gomod, want string }{
		{"module x\n\ngo 1.26.0\n\ntoolchain go1.26.8\n", "1.26.8"},
		{"module x\n\ngo 1.26.0\n", "1.26.0"},
		{"module x\ngo 1.22\n", "1.22.0"},
		{"module x\ngo 1.27rc1\n", "1.27rc1"},
		{"module x\ngo 1.25.1 // comment\ntoolchain default\n", "1.25.1"},
	} {
		f := filepath.Join(t.TempDir(), "go.mod")
		if err := os.WriteFile(f, []byte(c.gomod), 0o644); err != nil {
			t.Fatal(err)
		}
		out, stderr, err := bash(t, []string{"F=" + f}, `go_mod_toolchain "$F"`)
		if err != nil || strings.TrimSpace(out) != c.want {
			t.Errorf("go_mod_toolchain of %q = %q (%v, %q), want %q", c.gomod, out, err, stderr, c.want)
		}
	}
	f := filepath.Join(t.TempDir(), "go.mod")
	if err := os.WriteFile(f, []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := bash(t, []string{"F=" + f}, `go_mod_toolchain "$F"`); err == nil || !strings.Contains(stderr, "has no go line") {
		t.Errorf("go_mod_toolchain without a go line: err %v, stderr %q; want a refusal", err, stderr)
	}
}

// TestModuleHashMatchesGo holds lib.sh's h1: hash to the go command's own, on
// real module zips from go.sum.
func TestModuleHashMatchesGo(t *testing.T) {
	needTools(t, "unzip", "go")
	for _, m := range []string{"github.com/spf13/cobra", "golang.org/x/term"} {
		out, err := exec.Command("go", "mod", "download", "-json", m).Output()
		if err != nil {
			t.Fatalf("go mod download %s: %v", m, err)
		}
		var info struct{ Path, Version, Zip, Sum string }
		if err := json.Unmarshal(out, &info); err != nil {
			t.Fatal(err)
		}
		got, stderr, err := bash(t, []string{"ZIP=" + info.Zip, "PREFIX=" + info.Path + "@" + info.Version, "DIR=" + t.TempDir()},
			`unzip_module_h1 "$ZIP" "$PREFIX" "$DIR"`)
		if err != nil || strings.TrimSpace(got) != info.Sum {
			t.Errorf("%s@%s: unzip_module_h1 = %q (%v, %q), go.sum has %s", info.Path, info.Version, got, err, stderr, info.Sum)
		}
	}
}

// fakeProxy serves a made-up Go toolchain module, golang.org/toolchain
// v0.0.1-go<version>.linux-<arch>, and the checksum database's record for it,
// as the Go module proxy does. Its bin/go is a shell script that says its
// version.
type fakeProxy struct {
	version string
	// tamper, when set, changes the zip that is served after its hash is
	// recorded, as a bad mirror would.
	tamper bool

	mu      sync.Mutex
	zipGets int
}

func (p *fakeProxy) zip(t *testing.T, modver string) ([]byte, string) {
	prefix := "golang.org/toolchain@" + modver + "/"
	files := map[string]string{
		"bin/go":                      "#!/bin/sh\necho 'go version go" + p.version + " linux/fake'\n",
		"bin/gofmt":                   "#!/bin/sh\n",
		"pkg/tool/linux_fake/compile": "#!/bin/sh\n",
		"src/runtime/extern.go":       "package runtime\n",
		"VERSION":                     "go" + p.version + "\n",
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, err := zw.Create(prefix + name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "m.zip")
	if err := os.WriteFile(f, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := dirhash.HashZip(f, dirhash.Hash1)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), h
}

func (p *fakeProxy) start(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		const zipPrefix, lookupPrefix = "/golang.org/toolchain/@v/", "/sumdb/sum.golang.org/lookup/golang.org/toolchain@"
		switch {
		case strings.HasPrefix(r.URL.Path, zipPrefix) && strings.HasSuffix(r.URL.Path, ".zip"):
			modver := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, zipPrefix), ".zip")
			body, _ := p.zip(t, modver)
			if p.tamper {
				body, _ = (&fakeProxy{version: "6.6.6"}).zip(t, modver)
			}
			p.mu.Lock()
			p.zipGets++
			p.mu.Unlock()
			w.Write(body)
		case strings.HasPrefix(r.URL.Path, lookupPrefix):
			modver := strings.TrimPrefix(r.URL.Path, lookupPrefix)
			_, h := p.zip(t, modver)
			fmt.Fprintf(w, "123\ngolang.org/toolchain %s %s\ngolang.org/toolchain %s/go.mod h1:x=\n\ngo.sum database tree\n", modver, h, modver)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func (p *fakeProxy) gets() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.zipGets
}

// TestInstallToolchain runs lib.sh's installer against a fake proxy: a first
// install downloads, a second one uses the cached zip, a damaged cached zip is
// downloaded again, and a zip whose hash differs from the checksum database's
// is refused and leaves nothing installed.
func TestInstallToolchain(t *testing.T) {
	needTools(t, "unzip", "curl", "flock")
	const version = "1.99.0"
	p := &fakeProxy{version: version}
	url := p.start(t)
	root, cache := t.TempDir(), t.TempDir()
	dir := filepath.Join(root, "go"+version)
	env := []string{"GOPROXY=" + url + ",direct", "no_proxy=127.0.0.1", "NO_PROXY=127.0.0.1",
		"CLUSTERDEBIAN_GO_CACHE=" + cache, "DIR=" + dir}
	install := func(t *testing.T) (string, error) {
		t.Helper()
		out, stderr, err := bash(t, env, `install_go_toolchain `+version+` "$DIR" && go_version_of "$DIR/bin/go"`)
		return out + stderr, err
	}
	cached := func(t *testing.T) []string {
		t.Helper()
		m, err := filepath.Glob(filepath.Join(cache, "v0.0.1-go"+version+".linux-*.zip"))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	t.Run("first install downloads", func(t *testing.T) {
		out, err := install(t)
		if err != nil || !strings.HasSuffix(out, "\n"+version+"\n") {
			t.Fatalf("install: %v\n%s", err, out)
		}
		if p.gets() != 1 || len(cached(t)) != 1 {
			t.Errorf("%d downloads, cached %v; want 1 and one zip", p.gets(), cached(t))
		}
		for _, f := range []string{"bin/go", "bin/gofmt", "pkg/tool/linux_fake/compile"} {
			if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Mode()&0o111 != 0o111 {
				t.Errorf("%s: %v, mode %v; want executable by all", f, err, st.Mode())
			}
		}
		if left, _ := filepath.Glob(filepath.Join(root, ".install-*")); len(left) != 0 {
			t.Errorf("staging left behind: %v", left)
		}
	})
	t.Run("installed is a no-op", func(t *testing.T) {
		out, err := install(t)
		if err != nil || strings.Contains(out, "installing") || p.gets() != 1 {
			t.Errorf("second install: %v, %d downloads\n%s", err, p.gets(), out)
		}
	})
	t.Run("reinstall uses the cached zip", func(t *testing.T) {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		out, err := install(t)
		if err != nil || !strings.Contains(out, "installing") || strings.Contains(out, "downloading") || p.gets() != 1 {
			t.Errorf("reinstall: %v, %d downloads\n%s", err, p.gets(), out)
		}
	})
	t.Run("damaged cached zip is downloaded again", func(t *testing.T) {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		zips := cached(t)
		if len(zips) != 1 {
			t.Fatalf("cached %v", zips)
		}
		if err := os.WriteFile(zips[0], []byte("not a zip"), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := install(t)
		if err != nil || !strings.Contains(out, "discarding it") || p.gets() != 2 {
			t.Errorf("install over a damaged cache: %v, %d downloads\n%s", err, p.gets(), out)
		}
	})
	t.Run("zip that does not match the checksum database is refused", func(t *testing.T) {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		for _, z := range cached(t) {
			os.Remove(z)
		}
		p.tamper = true
		defer func() { p.tamper = false }()
		out, err := install(t)
		if err == nil || !strings.Contains(out, "could not get a verified Go "+version) {
			t.Errorf("install of a tampered zip: err %v\n%s", err, out)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s after a refused install: %v; want nothing", dir, err)
		}
		if z := cached(t); len(z) != 0 {
			t.Errorf("refused zip kept in the cache: %v", z)
		}
	})
}

// TestInstallToolchainUnreachable: when neither the proxy nor the checksum
// database answers (a machine whose TLS is intercepted, or offline), the
// installer says which URLs failed and why, and installs nothing.
func TestInstallToolchainUnreachable(t *testing.T) {
	needTools(t, "unzip", "curl", "flock")
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close() // a local port that refuses connections
	dir := filepath.Join(t.TempDir(), "go1.99.0")
	env := []string{"GOPROXY=" + closed.URL, "CLUSTERDEBIAN_SUMDB=" + closed.URL, "no_proxy=127.0.0.1", "NO_PROXY=127.0.0.1",
		"CLUSTERDEBIAN_GO_CACHE=" + t.TempDir(), "DIR=" + dir}
	out, stderr, err := bash(t, env, `set -u && install_go_toolchain 1.99.0 "$DIR"`) // as the scripts run it
	if err == nil {
		t.Fatalf("install with no checksum database succeeded:\n%s%s", out, stderr)
	}
	for _, want := range []string{
		closed.URL + "/sumdb/sum.golang.org/lookup/golang.org/toolchain@v0.0.1-go1.99.0.linux-",
		closed.URL + "/lookup/golang.org/toolchain@",
		"curl: (7)",
		"no answer from the Go checksum database",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "unbound variable") {
		t.Errorf("the installer hit an unset variable:\n%s", stderr)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s after a failed install: %v; want nothing", dir, err)
	}
}

// TestUnzipRefusesForeignNames: a zip with a file outside its module's folder
// is refused before anything is unpacked.
func TestUnzipRefusesForeignNames(t *testing.T) {
	needTools(t, "unzip")
	for _, name := range []string{"other@v1/x", "m@v1/../../x", "x"} {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		for _, n := range []string{"m@v1/go.mod", name} {
			w, err := zw.Create(n)
			if err != nil {
				t.Fatal(err)
			}
			w.Write([]byte("module m\n"))
		}
		zw.Close()
		f := filepath.Join(t.TempDir(), "m.zip")
		if err := os.WriteFile(f, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		out, stderr, err := bash(t, []string{"ZIP=" + f, "DIR=" + dir}, `unzip_module_h1 "$ZIP" m@v1 "$DIR"`)
		if err == nil || !strings.Contains(stderr, "names outside m@v1/") {
			t.Errorf("zip with %q: err %v, out %q, stderr %q; want a refusal", name, err, out, stderr)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("zip with %q: unpacked %d entries; want none", name, len(ents))
		}
	}
}

// TestEnsureGoOnAFreshMachine runs ensure_go, as the scripts do, in a mount
// namespace that hides every installed Go and its caches and puts a Go 1.19
// (as Debian 12's golang-go) first on PATH, with the real Go module proxy: it
// must install the Go that go.mod asks for, and a second
// call (in the same shell, and in a new one) must find it and do nothing.
// The toolchain zip stays in /var/cache/clusterdebian/go between runs, so
// only the first run on a machine downloads it.
func TestEnsureGoOnAFreshMachine(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it mounts tmpfs over /usr/local and the Go caches in a private mount namespace")
	}
	needTools(t, "unshare", "unzip", "curl", "flock")
	want := goModToolchain(t)

	home, _ := os.UserHomeDir()
	hide := []string{"/usr/local", "/root/go", "/root/.cache", "/root/.config/go", "/root/sdk"}
	if home != "" && home != "/root" {
		hide = append(hide, home+"/go", home+"/.cache", home+"/.config/go", home+"/sdk")
	}
	// Debian's golang-go lives in /usr/lib/go-1.N (/usr/bin/go points there),
	// and the Go running this test may live anywhere.
	debian, _ := filepath.Glob("/usr/lib/go-*")
	hide = append(hide, debian...)
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	hide = append(hide, strings.TrimSpace(string(goroot)))

	out := t.TempDir()
	var env []string
	for _, k := range []string{"GOPROXY", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	script := `set -euo pipefail
for d in ` + shellWords(hide) + `; do
	if [ -d "$d" ]; then mount -t tmpfs tmpfs "$d"; fi
done
# Debian'"'"'s golang-go of bookworm, first on PATH.
mkdir -p /usr/local/bin
printf "#!/bin/sh\necho go version go1.19.8 linux/amd64\n" >/usr/local/bin/go
chmod +x /usr/local/bin/go
exec env -i HOME=/root PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin OUT="$OUT" REPO="$REPO" ` + shellWords(env) + ` bash -c '
set -euo pipefail
cd "$REPO"
type -ap go >"$OUT/before" || true
. scripts/lib.sh
ensure_go >"$OUT/first.log" 2>&1
command -v go >"$OUT/first.path"
go env GOVERSION GOROOT GOTOOLCHAIN >"$OUT/first.env"
go tool compile -V >"$OUT/compile"
echo "package x" | gofmt >"$OUT/gofmt"
ensure_go >"$OUT/second.log" 2>&1
command -v go >"$OUT/second.path"
exec env -i HOME=/root PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin OUT="$OUT" bash -c "
	set -euo pipefail
	. scripts/lib.sh
	ensure_go >\"\$OUT/third.log\" 2>&1
	command -v go >\"\$OUT/third.path\"
"
'
`
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), "unshare", "--mount", "--propagation", "private", "bash", "-c", script)
	cmd.Env = append(os.Environ(), "OUT="+out, "REPO="+repo)
	if b, err := cmd.CombinedOutput(); err != nil {
		logs := ""
		for _, f := range []string{"first.log", "second.log", "third.log"} {
			logs += "\n" + f + ":\n" + read(t, out, f)
		}
		t.Fatalf("hidden-Go run: %v\n%s%s", err, b, logs)
	}

	if b := read(t, out, "before"); b != "/usr/local/bin/go\n" {
		t.Fatalf("go commands on PATH with Go hidden: %q; want only the old one the test made, /usr/local/bin/go", b)
	}
	wantPath := "/usr/local/lib/clusterdebian-go/go" + want + "/bin/go\n"
	t.Run("installs the Go that go.mod asks for", func(t *testing.T) {
		if got := read(t, out, "first.path"); got != wantPath {
			t.Errorf("go after ensure_go = %q, want %q\n%s", got, wantPath, read(t, out, "first.log"))
		}
		wantEnv := "go" + want + "\n" + strings.TrimSuffix(strings.TrimSuffix(wantPath, "\n"), "/bin/go") + "\nlocal\n"
		if got := read(t, out, "first.env"); got != wantEnv {
			t.Errorf("go env GOVERSION GOROOT GOTOOLCHAIN = %q, want %q", got, wantEnv)
		}
		if got := read(t, out, "compile"); !strings.HasPrefix(got, "compile version go"+want) {
			t.Errorf("go tool compile -V = %q; want its version go%s", got, want)
		}
		if got := read(t, out, "gofmt"); got != "package x\n" {
			t.Errorf("gofmt printed %q", got)
		}
		t.Logf("first ensure_go:\n%s", read(t, out, "first.log"))
	})
	t.Run("a second call in the same shell is a no-op", func(t *testing.T) {
		if got := read(t, out, "second.log"); got != "" {
			t.Errorf("second ensure_go printed %q; want nothing", got)
		}
		if got := read(t, out, "second.path"); got != wantPath {
			t.Errorf("go after the second ensure_go = %q, want %q", got, wantPath)
		}
	})
	t.Run("a new shell finds the installed Go", func(t *testing.T) {
		if got := read(t, out, "third.log"); got != "" {
			t.Errorf("ensure_go in a new shell printed %q; want nothing", got)
		}
		if got := read(t, out, "third.path"); got != wantPath {
			t.Errorf("go in a new shell = %q, want %q", got, wantPath)
		}
	})
}

// goModToolchain reads the Go version that go.mod asks for: its toolchain
// line, else its go line.
func goModToolchain(t *testing.T) string {
	b, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	var goLine string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 2 && f[0] == "toolchain" && strings.HasPrefix(f[1], "go"):
			return strings.TrimPrefix(f[1], "go")
		case len(f) >= 2 && f[0] == "go":
			goLine = f[1]
		}
	}
	if goLine == "" {
		t.Fatal("go.mod has no go line")
	}
	if strings.Count(goLine, ".") == 1 && !strings.ContainsAny(goLine, "rcbeta") {
		goLine += ".0"
	}
	return goLine
}

// shellWords quotes each word for a POSIX shell.
func shellWords(ws []string) string {
	q := make([]string, len(ws))
	for i, w := range ws {
		q[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

func read(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}
