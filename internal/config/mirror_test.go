package config

import (
	"os"
	"path/filepath"
	"testing"
)

// aptDir makes a fake /etc/apt holding files (paths relative to it).
func aptDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sources.list.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const debianSources = `Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie trixie-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`

func TestHostMirror(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{
			name:  "one-line sources.list",
			files: map[string]string{"sources.list": "deb http://ftp.fr.debian.org/debian/ bookworm main contrib\n"},
			want:  "http://ftp.fr.debian.org/debian",
		},
		{
			name: "one-line with comments, deb-src and security first",
			files: map[string]string{"sources.list": `# deb http://commented.example/debian bookworm main
#deb http://commented2.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb http://security.debian.org/debian-security bookworm-security main
deb https://mirror.example.org/debian bookworm-updates main
deb https://mirror.example.org/debian bookworm main
`},
			want: "https://mirror.example.org/debian",
		},
		{
			name:  "one-line with [options]",
			files: map[string]string{"sources.list": "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://ftp.us.debian.org/debian bookworm main\n"},
			want:  "http://ftp.us.debian.org/debian",
		},
		{
			name:  "one-line with a single [option]",
			files: map[string]string{"sources.list": "deb [arch=amd64] https://ftp.nl.debian.org/debian/ trixie main\n"},
			want:  "https://ftp.nl.debian.org/debian",
		},
		{
			name:  "one-line with spaced [ options ]",
			files: map[string]string{"sources.list": "deb [ arch=amd64 ] http://ftp.se.debian.org/debian sid main\n"},
			want:  "http://ftp.se.debian.org/debian",
		},
		{
			name: "one-line skips third-party suites and non-http URIs",
			files: map[string]string{"sources.list": `deb https://deb.nodesource.com/node_20.x nodistro main
deb http://ppa.launchpad.net/x/ubuntu jammy main
deb cdrom:[Debian GNU/Linux 12]/ bookworm main
deb file:/srv/mirror bookworm main
deb http://ftp.at.debian.org/debian stable main
`},
			want: "http://ftp.at.debian.org/debian",
		},
		{
			name: "sources.list.d/*.list",
			files: map[string]string{
				"sources.list":              "# empty\n",
				"sources.list.d/local.list": "deb http://apt.local/debian testing main\n",
			},
			want: "http://apt.local/debian",
		},
		{
			name:  "deb822 .sources",
			files: map[string]string{"sources.list.d/debian.sources": debianSources},
			want:  "http://deb.debian.org/debian",
		},
		{
			name: "deb822 with comments, security first, third-party and disabled stanzas",
			files: map[string]string{"sources.list.d/debian.sources": `# Modernized from /etc/apt/sources.list
# URIs: http://commented.example/debian
Types: deb
URIs: http://deb.debian.org/debian-security
Suites: trixie-security
Components: main

Types: deb
# a comment inside a stanza
URIs: https://packages.example.com/repo
Suites: nodistro
Components: main

Types: deb-src
URIs: http://source-only.example/debian
Suites: trixie
Components: main

Types: deb
URIs: http://disabled.example/debian
Suites: trixie
Components: main
Enabled: no

Types: deb deb-src
URIs: https://ftp.cz.debian.org/debian/
Suites: trixie trixie-updates
Components: main non-free-firmware
`},
			want: "https://ftp.cz.debian.org/debian",
		},
		{
			name: "deb822 keys are case-insensitive and several URIs are tried",
			files: map[string]string{"sources.list.d/x.sources": `types: deb
uris: ftp://old.example/debian http://second.example/debian
suites: bookworm
components: main
`},
			want: "http://second.example/debian",
		},
		{
			name: "security in the URI is skipped",
			files: map[string]string{"sources.list.d/sec.sources": `Types: deb
URIs: http://security.debian.org/
Suites: bookworm
`},
			want: FallbackMirror,
		},
		{
			name: "sources.list wins over sources.list.d",
			files: map[string]string{
				"sources.list":                  "deb http://first.example/debian trixie main\n",
				"sources.list.d/debian.sources": debianSources,
			},
			want: "http://first.example/debian",
		},
		{
			name:  "nothing matches: fallback",
			files: map[string]string{"sources.list": "deb https://download.example.com/repo nodistro main\n"},
			want:  FallbackMirror,
		},
		{
			name:  "no files at all: fallback",
			files: map[string]string{},
			want:  FallbackMirror,
		},
		{
			name: "only disabled and security deb822: fallback",
			files: map[string]string{"sources.list.d/d.sources": `Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Enabled: no

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: trixie-security
`},
			want: FallbackMirror,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := HostMirror(aptDir(t, tc.files)); got != tc.want {
				t.Errorf("HostMirror = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHostMirrorMissingDir(t *testing.T) {
	if got := HostMirror(filepath.Join(t.TempDir(), "nope")); got != FallbackMirror {
		t.Errorf("HostMirror(missing) = %q, want %q", got, FallbackMirror)
	}
}

func TestDebianSuite(t *testing.T) {
	for s, want := range map[string]bool{
		"bookworm": true, "trixie-updates": true, "bookworm-backports": true, "sid": true,
		"stable": true, "oldstable": true, "trixie-security": true, // security is excluded by okMirror
		"jammy": false, "nodistro": false, "": false, "focal-updates": false,
	} {
		if got := debianSuite(s); got != want {
			t.Errorf("debianSuite(%q) = %v, want %v", s, got, want)
		}
	}
	main := []string{"main"}
	none := t.TempDir() // an apt folder with no downloaded lists
	if okMirror(none, "http://deb.debian.org/debian", "trixie-security", main) {
		t.Error("okMirror accepted a -security suite")
	}
	if okMirror(none, "ftp://deb.debian.org/debian", "trixie", main) {
		t.Error("okMirror accepted an ftp URI")
	}
	if okMirror(none, "http://deb.debian.org/debian", "trixie", []string{"contrib"}) {
		t.Error("okMirror accepted a source without the main component")
	}
	if !okMirror(none, "http://deb.debian.org/debian", "trixie", main) {
		t.Error("okMirror refused Debian's own mirror")
	}
}

// TestThirdPartyDebianSuites: Docker's repository names Debian suites and
// comes first (a .list file), but its Release file says Origin: Docker.
func TestThirdPartyDebianSuites(t *testing.T) {
	root := t.TempDir()
	apt := filepath.Join(root, "etc", "apt")
	lists := filepath.Join(root, "var", "lib", "apt", "lists")
	os.MkdirAll(filepath.Join(apt, "sources.list.d"), 0o755)
	os.MkdirAll(lists, 0o755)
	os.WriteFile(filepath.Join(apt, "sources.list.d", "docker.list"),
		[]byte("deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/debian trixie stable\n"), 0o644)
	os.WriteFile(filepath.Join(apt, "sources.list.d", "other.list"),
		[]byte("deb https://packages.example.com/debian trixie main\n"), 0o644)
	os.WriteFile(filepath.Join(lists, "packages.example.com_debian_dists_trixie_InRelease"),
		[]byte("Origin: Example\nLabel: Example\nSuite: trixie\n"), 0o644)
	os.WriteFile(filepath.Join(apt, "sources.list.d", "debian.sources"),
		[]byte("Types: deb\nURIs: http://mirror.example.org/debian\nSuites: trixie\nComponents: main\n"), 0o644)
	os.WriteFile(filepath.Join(lists, "mirror.example.org_debian_dists_trixie_InRelease"),
		[]byte("Origin: Debian\nLabel: Debian\n"), 0o644)
	if got := HostMirror(apt); got != "http://mirror.example.org/debian" {
		t.Errorf("HostMirror = %q, want the Debian mirror, not a third-party repository", got)
	}
}
