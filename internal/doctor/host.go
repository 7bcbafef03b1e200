package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/head"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// HostSystem is node1 itself: /proc, statfs(2), exportfs, and the head's
// API on loopback at httpPort (0: 80).
func HostSystem(httpPort int) Host {
	if httpPort == 0 {
		httpPort = 80
	}
	return hostSystem{api: registry.NewClient("http://"+net127(httpPort), "", &http.Client{Timeout: 10 * time.Second})}
}

func net127(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

type hostSystem struct{ api *registry.Client }

func (hostSystem) Network() (registry.Network, error) {
	var n registry.Network
	data, err := os.ReadFile(filepath.Join(contract.RunDir, contract.NetworkFile))
	if err != nil {
		return n, err
	}
	if err := json.Unmarshal(data, &n); err != nil {
		return n, fmt.Errorf("%s: %w", filepath.Join(contract.RunDir, contract.NetworkFile), err)
	}
	return n, nil
}

func (hostSystem) Listening() ([]head.Listener, error) { return head.Listening() }

func (hostSystem) Exports(ctx context.Context) ([]Export, error) {
	out, err := exec.CommandContext(ctx, "exportfs", "-s").Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return nil, fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, err
	}
	return ParseExportfs(out), nil
}

// ParseExportfs parses `exportfs -s` output: "path client(options)" per
// line, several clients of one path on one line, a long path alone on its
// line with its clients on the next.
func ParseExportfs(out []byte) []Export {
	var ex []Export
	path := ""
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if strings.HasPrefix(fields[0], "/") {
			path, fields = fields[0], fields[1:]
		}
		for _, f := range fields {
			client, _, _ := strings.Cut(f, "(")
			ex = append(ex, Export{Path: path, Client: client})
		}
	}
	return ex
}

func (hostSystem) StatFS(path string) (FS, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return FS{}, err
	}
	bs := uint64(st.Bsize)
	fs := FS{Size: st.Blocks * bs, Free: st.Bavail * bs}
	switch st.Type {
	case 0x01021994:
		fs.Type = "tmpfs"
	case 0xEF53:
		fs.Type = "ext4"
	case 0x794c7630:
		fs.Type = "overlayfs"
	}
	return fs, nil
}

func (hostSystem) MemInfo() (avail, total uint64, err error) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, 0, err
	}
	return ParseMemInfo(data)
}

// ParseMemInfo returns MemAvailable and MemTotal of /proc/meminfo, in bytes.
func ParseMemInfo(data []byte) (avail, total uint64, err error) {
	var haveA, haveT bool
	for _, line := range strings.Split(string(data), "\n") {
		key, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, perr := strconv.ParseUint(f[0], 10, 64)
		if perr != nil {
			continue
		}
		switch key {
		case "MemAvailable":
			avail, haveA = v<<10, true
		case "MemTotal":
			total, haveT = v<<10, true
		}
	}
	if !haveA || !haveT {
		return 0, 0, fmt.Errorf("no MemAvailable or MemTotal line")
	}
	return avail, total, nil
}

func (h hostSystem) Nodes(ctx context.Context) ([]registry.Node, error) {
	ns, _, err := h.api.Nodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("head API at %s: %w", h.api.Base(), err)
	}
	return ns, nil
}

func (hostSystem) ReadFile(path string) ([]byte, error) { return os.ReadFile(path) }

func (hostSystem) Now() time.Time { return time.Now() }
