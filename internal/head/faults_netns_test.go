package head

// TestHeadDamagedState restarts a whole head (in a network namespace, as
// TestHeadOnLAN does) over damaged and lost state files, with pretend
// machines on the segment, and holds it to issue 15's rules: the head
// starts every time (no crash loop), keeps each bad file beside it as
// <file>.corrupt-<time>, says so in its log, rebuilds what it can, and
// hands no running node's address to another machine; nodes keep their
// names. On a full state folder (its tmpfs shrunk to 1 MiB and filled) it
// says so, acknowledges no lease it cannot save, serves the machines it
// knows, starts again, and once there is space has lost nothing.
//
//	cdt-fl…  br0: the segment; it also plays a running node (MAC runMAC,
//	   │     runIP on br0, so it answers ARP for it)
//	   ├─ veth ─ cdt-fh…  eth0 (the head)
//	   └─ veth ─ cdt-fc…  eth0 (a PXE machine that changes its MAC)

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/netns"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"golang.org/x/sys/unix"
)

const (
	runMAC      = "02:cd:00:00:00:30"
	runIP       = "10.99.0.2"
	strangerMAC = "02:cd:00:00:00:40"
)

func TestHeadDamagedState(t *testing.T) {
	if os.Getenv(roomChildEnv) == "faults" {
		faultsChild(t, strings.Fields(os.Getenv(roomEnv)))
		return
	}
	needTools(t, "udhcpc")
	ctx, cancel := context.WithTimeout(context.Background(), 10*guard)
	defer cancel()
	lan, head, client := runningNodeRoom(t, ctx, "fl", "fh", "fc")
	runRoomChild(t, ctx, head, "TestHeadDamagedState", "faults", roomEnv+"="+client.Name+" "+lan.Name)
}

// runningNodeRoom is lanRoom whose LAN bridge also stands for a node that
// runs at runIP with runMAC (it answers ARP there), as a node running from
// RAM does while the head restarts.
func runningNodeRoom(t *testing.T, ctx context.Context, lanPrefix, headPrefix, clientPrefix string) (lan, head, client *netns.NS) {
	t.Helper()
	lan, head, client = lanRoom(t, ctx, lanPrefix, headPrefix, clientPrefix)
	must(t, lan.IP(ctx, "link", "set", "br0", "address", runMAC))
	must(t, lan.IP(ctx, "addr", "add", runIP+"/24", "dev", "br0"))
	return lan, head, client
}

// tryDHCP runs udhcpc briefly and returns what it got, if it got a lease.
func (n *node) tryDHCP(t *testing.T) (map[string]string, bool) {
	t.Helper()
	out := filepath.Join(n.dir, "udhcpc.env")
	os.Remove(out)
	script := filepath.Join(n.dir, "udhcpc.sh")
	must(t, os.WriteFile(script, []byte("#!/bin/sh\ncase \"$1\" in bound) env > "+out+" ;; esac\nexit 0\n"), 0o755))
	cmd := udhcpc()
	n.run(cmd[0], append(cmd[1:], "-i", "eth0", "-f", "-q", "-n", "-t", "3", "-T", "1", "-s", script)...)
	data, err := os.ReadFile(out)
	if err != nil {
		return nil, false
	}
	vars := map[string]string{}
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = strings.TrimSpace(v)
		}
	}
	return vars, true
}

// fillUp writes to dir until its file system is full and returns the file
// that holds the space.
func fillUp(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	must(t, err)
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return p
		}
	}
}

// faultsChild is TestHeadDamagedState inside the head's namespace.
func faultsChild(t *testing.T, env []string) {
	clientNS := env[0]
	r := newRestartable(t)
	stateDir := r.stateDir
	leases := filepath.Join(stateDir, contract.LeasesFile)
	nodes := filepath.Join(stateDir, contract.RegistryFile)
	tokenFile := filepath.Join(stateDir, contract.TokenFile)
	start := r.start
	token := func() string {
		b, err := os.ReadFile(tokenFile)
		must(t, err)
		return strings.TrimSpace(string(b))
	}
	register := func(h *Head, tok, mac, ip string) (string, error) {
		resp, err := registry.NewClient("http://"+h.Addr().String(), tok, nil).Register(context.Background(),
			registry.RegisterRequest{MAC: mac, IP: ip, Cores: 1, MemTotalKiB: 1 << 20})
		return resp.Name, err
	}
	nameOf := func(ip string) string {
		a := netip.MustParseAddr(ip)
		return wantPrefix + strconv.Itoa(int(a.As4()[3]))
	}
	machine := &node{ns: clientNS, dir: t.TempDir()}
	setMAC := func(mac string) {
		for _, args := range [][]string{{"link", "set", "eth0", "down"}, {"link", "set", "eth0", "address", mac}, {"link", "set", "eth0", "up"}} {
			if _, err := machine.run("ip", args...); err != nil {
				t.Fatal(err)
			}
		}
	}
	damage := func(path string) []byte {
		data, err := os.ReadFile(path)
		must(t, err)
		bad := data[:len(data)/2]
		must(t, os.WriteFile(path, bad, 0o600))
		return bad
	}
	keptCopy := func(path string, want []byte) {
		t.Helper()
		kept, _ := filepath.Glob(path + ".corrupt-*")
		if len(kept) != 1 {
			t.Errorf("%s kept as %v, want one copy", path, kept)
			return
		}
		if got, err := os.ReadFile(kept[0]); err != nil || string(got) != string(want) {
			t.Errorf("%s holds %q, %v; want the damaged %q", kept[0], got, err, want)
		}
	}
	logSays := func(what string, parts ...string) {
		t.Helper()
		for _, p := range parts {
			if !strings.Contains(r.log(), p) {
				t.Errorf("%s: the head's log does not say %q", what, p)
			}
		}
	}

	// A healthy start: the running node registers at runIP (it holds the
	// address on the segment), the PXE machine gets a lease and registers.
	h, stop := start(t, "first start")
	tok := token()
	if name, err := register(h, tok, runMAC, runIP); err != nil || name != nameOf(runIP) {
		t.Fatalf("running node registers as %q, %v", name, err)
	}
	setMAC(pxeMAC)
	vars := machine.dhcp(t)
	ipA := vars["ip"]
	if ipA == runIP || vars["hostname"] != nameOf(ipA) {
		t.Fatalf("PXE machine leased %s as %q (running node holds %s)", ipA, vars["hostname"], runIP)
	}
	if name, err := register(h, tok, pxeMAC, ipA); err != nil || name != nameOf(ipA) {
		t.Fatalf("PXE machine registers as %q, %v", name, err)
	}
	stop()

	t.Run("lease and token files damaged", func(t *testing.T) {
		badLeases := damage(leases)
		must(t, os.WriteFile(tokenFile, []byte("not a token\n"), 0o600))
		h, stop := start(t, "damaged lease and token files")
		defer stop()
		keptCopy(leases, badLeases)
		keptCopy(tokenFile, []byte("not a token\n"))
		logSays("damaged files", "lease file is corrupt", "leases rebuilt from the node registry", "cluster token file was damaged")
		// The lease file is rebuilt from the registry before anyone asks.
		data, err := os.ReadFile(leases)
		must(t, err)
		for _, want := range []string{pxeMAC, ipA, runMAC, runIP} {
			if !strings.Contains(string(data), `"`+want+`"`) {
				t.Errorf("rebuilt lease file lacks %s:\n%s", want, data)
			}
		}
		// A new token; the old one opens nothing.
		fresh := token()
		if fresh == tok || !validToken(fresh) {
			t.Fatalf("token after the damage %q, old %q", fresh, tok)
		}
		var se *registry.StatusError
		if _, err := register(h, tok, pxeMAC, ipA); !errors.As(err, &se) || se.Status != http.StatusUnauthorized {
			t.Errorf("register with the lost token: %v, want 401", err)
		}
		tok = fresh
		// A stranger first: no node's address; then the node: its own.
		setMAC(strangerMAC)
		if got := machine.dhcp(t)["ip"]; got == ipA || got == runIP {
			t.Errorf("a new machine got %s, a node's address (%s, %s)", got, ipA, runIP)
		}
		setMAC(pxeMAC)
		if vars := machine.dhcp(t); vars["ip"] != ipA || vars["hostname"] != nameOf(ipA) {
			t.Errorf("the node got %s as %q after the rebuild, had %s as %s", vars["ip"], vars["hostname"], ipA, nameOf(ipA))
		}
	})

	t.Run("registry file damaged", func(t *testing.T) {
		bad := damage(nodes)
		h, stop := start(t, "damaged registry")
		defer stop()
		keptCopy(nodes, bad)
		logSays("damaged registry", "node registry file was damaged")
		ns, _, err := registry.NewClient("http://"+h.Addr().String(), "", nil).Nodes(context.Background())
		must(t, err)
		for _, n := range ns {
			if n.MAC == pxeMAC || n.MAC == runMAC {
				t.Errorf("registry after the damage holds %+v; want it started empty", n)
			}
		}
		// The nodes register again (their heartbeat is answered 404) and
		// keep their names; DHCP still knows the PXE machine's lease.
		for mac, ip := range map[string]string{pxeMAC: ipA, runMAC: runIP} {
			if name, err := register(h, tok, mac, ip); err != nil || name != nameOf(ip) {
				t.Errorf("%s registers again as %q, %v; want %s", mac, name, err, nameOf(ip))
			}
		}
		if vars := machine.dhcp(t); vars["ip"] != ipA || vars["hostname"] != nameOf(ipA) {
			t.Errorf("the node got %s as %q, had %s", vars["ip"], vars["hostname"], ipA)
		}
	})

	t.Run("state folder full", func(t *testing.T) {
		h, stop := start(t, "before the disk fills")
		setMAC(pxeMAC)
		ipA := machine.dhcp(t)["ip"]
		// The state folder's tmpfs shrinks to 1 MiB, and fills up.
		must(t, unix.Mount("", stateDir, "", unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NODEV, "size=1m"))
		filler := fillUp(t, stateDir)
		const newMAC = "02:cd:00:00:00:41"
		setMAC(newMAC)
		if vars, ok := machine.tryDHCP(t); ok {
			t.Errorf("a new machine got %s with the state folder full", vars["ip"])
		}
		logSays("full disk", "state directory full")
		setMAC(pxeMAC)
		if vars, ok := machine.tryDHCP(t); !ok || vars["ip"] != ipA {
			t.Errorf("a known machine on a full disk got %q (%v), want its lease %s", vars["ip"], ok, ipA)
		}
		if name, err := register(h, tok, pxeMAC, ipA); err != nil || name != nameOf(ipA) {
			t.Errorf("a node registers on a full disk as %q, %v", name, err)
		}
		stop()

		// A restart on the full disk: the head starts, and still serves
		// what it knows.
		_, stop = start(t, "on a full state folder")
		if vars, ok := machine.tryDHCP(t); !ok || vars["ip"] != ipA {
			t.Errorf("after a restart on a full disk the known machine got %q (%v), want %s", vars["ip"], ok, ipA)
		}
		// Space again: the new machine gets its lease, and it is on disk.
		must(t, os.Remove(filler))
		setMAC(newMAC)
		ipNew := machine.dhcp(t)["ip"]
		stop()
		data, err := os.ReadFile(leases)
		must(t, err)
		for _, want := range []string{pxeMAC, ipA, newMAC, ipNew} {
			if !strings.Contains(string(data), `"`+want+`"`) {
				t.Errorf("lease file after space came back lacks %s:\n%s", want, data)
			}
		}
	})

	t.Run("lease and registry files lost", func(t *testing.T) {
		must(t, os.Remove(leases))
		must(t, os.Remove(nodes))
		h, stop := start(t, "no lease or registry file")
		defer stop()
		// The running node still holds runIP on the segment: the ARP
		// check keeps it from a new machine.
		setMAC(strangerMAC)
		if got := machine.dhcp(t)["ip"]; got == runIP {
			t.Errorf("a new machine got %s, the address of a running node", got)
		}
		if name, err := register(h, tok, runMAC, runIP); err != nil || name != nameOf(runIP) {
			t.Errorf("running node registers again as %q, %v; want %s", name, err, nameOf(runIP))
		}
	})
}
