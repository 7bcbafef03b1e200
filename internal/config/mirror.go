package config

import (
	"bufio"
	"os"
	"path/filepath"
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
		if len(fields) >= 2 && okMirror(fields[0], fields[1]) {
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
	for _, stanza := range strings.Split(string(data), "\n\n") {
		fields := map[string]string{}
		for _, line := range strings.Split(stanza, "\n") {
			if strings.HasPrefix(line, "#") {
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			if ok {
				fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
		}
		if fields["enabled"] == "no" || !strings.Contains(" "+fields["types"]+" ", " deb ") {
			continue
		}
		for _, uri := range strings.Fields(fields["uris"]) {
			for _, suite := range strings.Fields(fields["suites"]) {
				if okMirror(uri, suite) {
					return strings.TrimSuffix(uri, "/")
				}
			}
		}
	}
	return ""
}

func okMirror(uri, suite string) bool {
	return (strings.HasPrefix(uri, "http://") || strings.HasPrefix(uri, "https://")) &&
		debianSuite(suite) && !strings.Contains(suite, "security") && !strings.Contains(uri, "security")
}

// ResolvedMirror returns image.mirror, or the host's mirror when it is empty.
func (c *Config) ResolvedMirror() string {
	if c.Image.Mirror != "" {
		return strings.TrimSuffix(c.Image.Mirror, "/")
	}
	return HostMirror("")
}
