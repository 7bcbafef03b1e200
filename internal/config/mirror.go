package config

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// FallbackMirror is used when the build host's apt names no Debian mirror.
const FallbackMirror = "http://deb.debian.org/debian"

// HostMirror returns the Debian mirror the build host's apt uses: the first
// "deb" source whose suites are Debian's own (not -security, not third-party
// repositories), from sources.list and the deb822 .sources files.
func HostMirror(aptDir string) string {
	if aptDir == "" {
		aptDir = "/etc/apt"
	}
	var files []string
	files = append(files, filepath.Join(aptDir, "sources.list"))
	more, _ := filepath.Glob(filepath.Join(aptDir, "sources.list.d", "*.list"))
	files = append(files, more...)
	more, _ = filepath.Glob(filepath.Join(aptDir, "sources.list.d", "*.sources"))
	files = append(files, more...)
	for _, f := range files {
		var m string
		if strings.HasSuffix(f, ".sources") {
			m = mirrorFromDeb822(f)
		} else {
			m = mirrorFromList(f)
		}
		if m != "" {
			return m
		}
	}
	return FallbackMirror
}

// debianSuite reports whether a suite looks like Debian's main archive.
func debianSuite(s string) bool {
	s = strings.SplitN(s, "-", 2)[0]
	switch s {
	case "buster", "bullseye", "bookworm", "trixie", "forky", "sid", "stable", "testing", "unstable", "oldstable":
		return true
	}
	return false
}

func mirrorFromList(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || fields[0] != "deb" {
			continue
		}
		fields = fields[1:]
		if strings.HasPrefix(fields[0], "[") { // options like [arch=amd64 signed-by=...]
			for len(fields) > 0 && !strings.HasSuffix(fields[0], "]") {
				fields = fields[1:]
			}
			if len(fields) > 0 {
				fields = fields[1:]
			}
		}
		if len(fields) >= 3 && okMirror(aptDirOf(path), fields[0], fields[1], fields[2:]) {
			return strings.TrimSuffix(fields[0], "/")
		}
	}
	return ""
}

func mirrorFromDeb822(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	// Stanzas are separated by lines that are empty or only white space.
	var stanzas [][]string
	cur := []string{}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(line) == "" {
			if len(cur) > 0 {
				stanzas = append(stanzas, cur)
				cur = []string{}
			}
			continue
		}
		cur = append(cur, line)
	}
	stanzas = append(stanzas, cur)
	for _, stanza := range stanzas {
		fields := map[string]string{}
		for _, line := range stanza {
			if strings.HasPrefix(line, "#") {
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			if ok {
				fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
		}
		switch strings.ToLower(fields["enabled"]) {
		case "no", "false", "off", "0":
			continue
		}
		if !slices.Contains(strings.Fields(fields["types"]), "deb") {
			continue
		}
		for _, uri := range strings.Fields(fields["uris"]) {
			for _, suite := range strings.Fields(fields["suites"]) {
				if okMirror(aptDirOf(path), uri, suite, strings.Fields(fields["components"])) {
					return strings.TrimSuffix(uri, "/")
				}
			}
		}
	}
	return ""
}

// aptDirOf returns the apt folder a sources file lives in.
func aptDirOf(sourcesPath string) string {
	dir := filepath.Dir(sourcesPath)
	if filepath.Base(dir) == "sources.list.d" {
		dir = filepath.Dir(dir)
	}
	return dir
}

// releaseOrigin returns the Origin field of the Release file apt downloaded
// for uri and suite, or "" when apt has none (the lists live in
// <root>/var/lib/apt/lists, beside <root>/etc/apt).
func releaseOrigin(aptDir, uri, suite string) string {
	root := filepath.Dir(filepath.Dir(aptDir))
	lists := filepath.Join(root, "var/lib/apt/lists")
	u := uri
	if i := strings.Index(u, "://"); i >= 0 {
		u = u[i+3:]
	}
	base := strings.ReplaceAll(strings.TrimSuffix(u, "/"), "/", "_") + "_dists_" + strings.ReplaceAll(suite, "/", "_")
	for _, name := range []string{base + "_InRelease", base + "_Release"} {
		data, err := os.ReadFile(filepath.Join(lists, name))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "Origin:"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return ""
}

// okMirror accepts a source that looks like Debian's main archive: http(s),
// a Debian suite, the main component, not security, and, when apt has
// fetched its Release file, Origin: Debian (so a third-party repository that
// names Debian suites, like Docker's, is not taken for a mirror).
func okMirror(aptDir, uri, suite string, components []string) bool {
	if !(strings.HasPrefix(uri, "http://") || strings.HasPrefix(uri, "https://")) ||
		!debianSuite(suite) || strings.Contains(suite, "security") || strings.Contains(uri, "security") ||
		!slices.Contains(components, "main") {
		return false
	}
	origin := releaseOrigin(aptDir, uri, suite)
	return origin == "" || origin == "Debian"
}

// FirmwareComponent is the archive component of Debian's non-free
// firmware and CPU microcode (since bookworm).
const FirmwareComponent = "non-free-firmware"

// Components returns the archive components the image is installed from:
// main, and FirmwareComponent with image.firmware. Debian's mirrors carry
// every component under one URL, so the mirror found for main (image.mirror,
// or HostMirror, which looks at main only: a build host need not list the
// firmware component itself) serves the firmware too; a partial mirror
// without it fails the build naming image.mirror and image.firmware.
func (c *Config) Components() []string {
	if c.Image.Firmware {
		return []string{"main", FirmwareComponent}
	}
	return []string{"main"}
}

// ResolvedMirror returns image.mirror, or the host's mirror when it is empty.
func (c *Config) ResolvedMirror() string {
	if c.Image.Mirror != "" {
		return strings.TrimSuffix(c.Image.Mirror, "/")
	}
	return HostMirror("")
}
