package head

// TestHeadAccessAudit starts a whole head in a network namespace (as
// TestHeadOnLAN does) and checks the access rule of every port it opens and
// of every route of its HTTP server, by requests without and with the
// cluster token. The ports are read from the namespace's socket tables
// (/proc/net), the routes from the head's own route table (routeTable) and
// the node API's (registry.Routes): a port or route without a rule fails
// the test. It does so in server mode, then again in proxy mode, which
// adds UDP 4011, and runs the agent's swarm layer server (TCP 7079) at its
// real port against its read-only rule. docs/architecture.md's threat
// model has the same table.

import (
	"bytes"
	"context"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcp"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/swarm"
)

// headPorts is the access rule of each socket the head opens, in any DHCP
// mode, as "proto address:port" (the head at nsHead). Which of them a head
// opens depends on its mode (Listeners, which TestListenersMatchAudit ties
// to this table); the audit checks a real head in server and in proxy
// mode.
var headPorts = map[string]string{
	"udp 0.0.0.0:67": "DHCP (server and proxy mode): open by protocol; leases addresses (server mode) and names boot files, nothing secret. " +
		"An exchange admits that MAC, at the address it was given or asked for, to its own boot script (route " + contract.ScriptPathPrefix + ": booted machines only)",
	"udp 0.0.0.0:4011": "PXE boot server (proxy mode only): open by protocol like 67; answers a PXE client's boot-server REQUEST with its boot file, " +
		"and admits that MAC at that address to its boot script like 67; no address, no token",
	"udp " + nsHead + ":69": "TFTP: open, read-only (boot loaders, GRUB's configuration; no token); writes refused",
	"tcp " + nsHead + ":80": "HTTP: per route (routeTable)",
	"tcp 127.0.0.1:80":      "HTTP on loopback: the same routes, for the status page on node1",
}

// checkPorts holds the sockets open in this namespace to the head's port
// table for its DHCP mode (Listeners) and to an access rule each (headPorts).
func checkPorts(t *testing.T, mode dhcp.Mode) {
	t.Helper()
	want := map[string]Listener{}
	for _, l := range Listeners(mode, netip.MustParseAddr(nsHead), DefaultHTTPPort) {
		want[l.String()] = l
	}
	seen := map[string]bool{}
	for _, s := range listening(t) {
		seen[s] = true
		rule, ok := headPorts[s]
		switch {
		case !ok:
			t.Errorf("the head (DHCP %s) listens on %s, which has no access rule (headPorts, docs/architecture.md)", mode, s)
			continue
		case want[s].Proto == "":
			t.Errorf("the head (DHCP %s) listens on %s, which Listeners does not name for that mode (doctor would miss it)", mode, s)
		}
		t.Logf("%-22s %s", s, rule)
	}
	for s, l := range want {
		if !seen[s] && !l.Optional {
			t.Errorf("Listeners names %s (%s) for DHCP %s, which the head does not open", s, l.What, mode)
		}
	}
}

func TestHeadAccessAudit(t *testing.T) {
	if os.Getenv(roomChildEnv) == "audit" {
		auditChild(t, strings.Fields(os.Getenv(roomEnv)))
		return
	}
	needTools(t, "udhcpc", "curl")
	ctx, cancel := context.WithTimeout(context.Background(), 10*guard)
	defer cancel()
	_, head, client := lanRoom(t, ctx, "al", "ah", "ac")
	runRoomChild(t, ctx, head, "TestHeadAccessAudit", "audit", roomEnv+"="+client.Name)
}

// listening returns the namespace's listening TCP and bound UDP sockets
// (IPv4 and IPv6) as "proto address:port", read as doctor reads them
// (Listening).
func listening(t *testing.T) []string {
	t.Helper()
	ls, err := Listening()
	must(t, err)
	var out []string
	for _, l := range ls {
		out = append(out, l.String())
	}
	sort.Strings(out)
	return out
}

// auditChild is TestHeadAccessAudit inside the head's namespace.
func auditChild(t *testing.T, env []string) {
	clientNS := env[0]
	h, _, root, stopHead := startRoomHead(t, func(o *Options) {
		// The RAM root, whose swarm adds the layer route.
		must(t, os.WriteFile(filepath.Join(o.BootDir, contract.BaseLayer), []byte("the base layer\n"), 0o644))
		o.Root = contract.RootRAM
		o.DHCP = dhcp.ModeServer
		o.Logger = slog.New(slog.NewTextHandler(&testLog{t: t}, nil))
	})
	token := h.token
	base := "http://" + h.Addr().String()

	t.Run("ports", func(t *testing.T) { checkPorts(t, dhcp.ModeServer) })

	// do sends a request to the head; tok "" sends no Authorization.
	do := func(method, path, tok string, body any) (int, string) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, err := json.Marshal(body)
			must(t, err)
			rd = bytes.NewReader(b)
		}
		req, err := http.NewRequest(method, base+path, rd)
		must(t, err)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	nodes := func() string {
		ns := h.cluster.reg.Nodes()
		var s []string
		for _, n := range ns {
			s = append(s, n.MAC+"="+n.IP+"/"+string(n.State))
		}
		return strings.Join(s, " ")
	}
	// A registered node, so that leave and prune without the token have
	// something to change. In process: the API takes a node's requests
	// only from root on it ("node requests from root on the node").
	if _, err := h.cluster.reg.Register(registry.RegisterRequest{MAC: "02:cd:00:00:00:50", IP: "10.99.0.50", Cores: 1}); err != nil {
		t.Fatalf("register: %v", err)
	}
	bodies := map[string]any{
		registry.PathRegister:  registry.RegisterRequest{MAC: "02:cd:00:00:00:51", IP: "10.99.0.51", Cores: 1},
		registry.PathHeartbeat: registry.HeartbeatRequest{MAC: "02:cd:00:00:00:50"},
		registry.PathLeave:     registry.LeaveRequest{MAC: "02:cd:00:00:00:50"},
		registry.PathPrune:     nil,
	}

	// A machine on the segment that did DHCP with the head, with the
	// address it got.
	m := &node{ns: clientNS, dir: t.TempDir()}
	ip := m.dhcp(t)["ip"]
	if _, err := m.run("ip", "addr", "add", ip+"/24", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}

	t.Run("node requests from root on the node", func(t *testing.T) {
		// The token is on every node's kernel command line, which any
		// user there reads: register, heartbeat and leave also need root
		// on the node they are about (its address, a port below 1024).
		const mac = "02:cd:00:00:00:60"
		post := func(path, from string, body any, privileged bool) int {
			t.Helper()
			b, err := json.Marshal(body)
			must(t, err)
			if from == "node1" {
				c, _ := do(http.MethodPost, path, token, body)
				return c
			}
			args := []string{"-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Authorization: Bearer " + token, "--data", string(b)}
			if privileged {
				args = append(args, "--local-port", "600-1000")
			}
			out, err := m.run("curl", append(args, base+path)...)
			must(t, err)
			c, err := strconv.Atoi(string(out))
			must(t, err)
			return c
		}
		reg := registry.RegisterRequest{MAC: mac, IP: ip, Cores: 1}
		for _, c := range []struct {
			what, from string
			body       any
			privileged bool
		}{
			{"register from an ordinary port", "m", reg, false},
			{"register from node1", "node1", reg, true},
			{"register another address", "m", registry.RegisterRequest{MAC: mac, IP: "10.99.0.77", Cores: 1}, true},
		} {
			if code := post(registry.PathRegister, c.from, c.body, c.privileged); code != http.StatusForbidden {
				t.Errorf("%s: %d, want 403", c.what, code)
			}
		}
		if _, ok := h.cluster.reg.Lookup(mac); ok {
			t.Fatalf("a refused registration registered %s", mac)
		}
		if code := post(registry.PathRegister, "m", reg, true); code != http.StatusOK {
			t.Fatalf("register as root on the node: %d, want 200", code)
		}
		hb, leave := registry.HeartbeatRequest{MAC: mac}, registry.LeaveRequest{MAC: mac}
		for _, c := range []struct {
			what, path, from string
			body             any
			privileged       bool
		}{
			{"heartbeat from node1", registry.PathHeartbeat, "node1", hb, true},
			{"heartbeat from an ordinary port", registry.PathHeartbeat, "m", hb, false},
			{"leave from node1", registry.PathLeave, "node1", leave, true},
			{"leave from an ordinary port", registry.PathLeave, "m", leave, false},
		} {
			if code := post(c.path, c.from, c.body, c.privileged); code != http.StatusForbidden {
				t.Errorf("%s: %d, want 403", c.what, code)
			}
		}
		if _, ok := h.cluster.reg.Lookup(mac); !ok {
			t.Fatalf("a refused leave removed %s", mac)
		}
		if code := post(registry.PathHeartbeat, "m", hb, true); code != http.StatusNoContent {
			t.Errorf("heartbeat as root on the node: %d, want 204", code)
		}
		if code := post(registry.PathLeave, "m", leave, true); code != http.StatusNoContent {
			t.Errorf("leave as root on the node: %d, want 204", code)
		}
		if _, ok := h.cluster.reg.Lookup(mac); ok {
			t.Errorf("%s is still registered after its leave", mac)
		}
	})

	t.Run("tftp is read-only", func(t *testing.T) {
		local := filepath.Join(m.dir, "audit-write")
		must(t, os.WriteFile(local, []byte("written by the audit\n"), 0o644))
		out, _ := m.run("tftp", nsHead, "-c", "put", local, "audit-write")
		t.Logf("tftp put: %s", out)
		if !strings.Contains(string(out), "Error") {
			t.Errorf("TFTP write: %q, want an error", out)
		}
		found := ""
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Name() == "audit-write" {
				found = p
			}
			return nil
		})
		if found != "" {
			t.Errorf("a TFTP write reached %s", found)
		}
	})

	for _, rt := range h.routeTable() {
		t.Run(rt.name, func(t *testing.T) {
			t.Logf("%s (e.g. %s): %s", rt.name, rt.example, rt.access)
			if !rt.match(rt.example) {
				t.Fatalf("the route's example %s does not match it", rt.example)
			}
			switch rt.access {
			case AccessOpen:
				if c, b := do(http.MethodGet, rt.example, "", nil); c == http.StatusUnauthorized || c == http.StatusForbidden || c >= 500 {
					t.Errorf("GET %s without the token: %d %.200s; want it served", rt.example, c, b)
				}
				before := nodes()
				for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
					if c, _ := do(m, rt.example, token, nil); c != http.StatusMethodNotAllowed {
						t.Errorf("%s %s: %d, want 405 (read-only)", m, rt.example, c)
					}
				}
				if after := nodes(); after != before {
					t.Errorf("writes to a read-only route changed the registry: %s -> %s", before, after)
				}
			case AccessPerAPIRoute:
				for _, ar := range registry.Routes() {
					path := strings.TrimSuffix(ar.Pattern, "{$}")
					if !rt.match(path) {
						t.Errorf("API route %s is not under %s", ar.Pattern, rt.example)
					}
					if !ar.NeedsToken {
						if ar.Method != http.MethodGet {
							t.Errorf("%s %s needs no token but may change state", ar.Method, ar.Pattern)
						}
						if c, b := do(ar.Method, path, "", nil); c != http.StatusOK {
							t.Errorf("%s %s without the token: %d %.200s; want 200", ar.Method, path, c, b)
						}
						continue
					}
					body, ok := bodies[ar.Pattern]
					if !ok {
						t.Errorf("%s %s: the audit has no request body for it; add one", ar.Method, ar.Pattern)
						continue
					}
					before := nodes()
					for _, tok := range []string{"", strings.Repeat("0", 64), token[:63] + "x"} {
						if c, _ := do(ar.Method, path, tok, body); c != http.StatusUnauthorized {
							t.Errorf("%s %s with token %q: %d, want 401", ar.Method, path, tok, c)
						}
					}
					if after := nodes(); after != before {
						t.Errorf("%s %s without the token changed the registry: %s -> %s", ar.Method, path, before, after)
					}
					if c, b := do(ar.Method, path, token, body); c == http.StatusUnauthorized || c >= 500 {
						t.Errorf("%s %s with the token: %d %.200s", ar.Method, path, c, b)
					}
				}
			case AccessTokenWrite:
				if c, b := do(http.MethodGet, contract.SwarmPath, "", nil); c != http.StatusOK {
					t.Errorf("GET %s without the token: %d %.200s; want 200", contract.SwarmPath, c, b)
				}
				report := func(tok string) int {
					req, err := http.NewRequest(http.MethodPost, base+contract.SwarmReportPath,
						strings.NewReader("layer="+contract.BaseLayer+"&result="+contract.SwarmOK))
					must(t, err)
					req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
					if tok != "" {
						req.Header.Set("Authorization", "Bearer "+tok)
					}
					resp, err := http.DefaultClient.Do(req)
					must(t, err)
					resp.Body.Close()
					return resp.StatusCode
				}
				peers := func() int { return len(h.swarm.broker.Stats().Peers) }
				before := peers()
				for _, tok := range []string{"", strings.Repeat("0", 64), token[:63] + "x"} {
					if c := report(tok); c != http.StatusUnauthorized {
						t.Errorf("POST %s with token %q: %d, want 401", contract.SwarmReportPath, tok, c)
					}
				}
				if after := peers(); after != before {
					t.Errorf("reports without the token changed the swarm: %d peers -> %d", before, after)
				}
				if c := report(token); c != http.StatusNoContent {
					t.Errorf("POST %s with the token: %d, want 204", contract.SwarmReportPath, c)
				}
				if after := peers(); after != before+1 {
					t.Errorf("a report with the token did not count: %d peers -> %d", before, after)
				}
				for _, m := range []string{http.MethodPut, http.MethodDelete} {
					if c, _ := do(m, contract.SwarmPath, token, nil); c != http.StatusMethodNotAllowed {
						t.Errorf("%s %s: %d, want 405", m, contract.SwarmPath, c)
					}
				}
			case AccessBooted:
				// This process is node1, which did no DHCP for that MAC;
				// a token does not open the gate either.
				for _, tok := range []string{"", token} {
					if c, b := do(http.MethodGet, rt.example, tok, nil); c != http.StatusForbidden || strings.Contains(b, token) {
						t.Errorf("GET %s by a machine that did not boot here (token %v): %d %.200s; want 403, no token", rt.example, tok != "", c, b)
					}
				}
				// A machine that did DHCP with the head gets its script, from
				// its address only.
				script := contract.ScriptPathPrefix + pxeMAC + contract.IPXEScriptSuffix
				if b := m.curl(t, base+script); !strings.Contains(b, token) {
					t.Errorf("the booted machine's script lacks the token:\n%s", b)
				}
				if c, b := do(http.MethodGet, script, "", nil); c != http.StatusForbidden || strings.Contains(b, token) {
					t.Errorf("GET %s from another address: %d, want 403", script, c)
				}
			default:
				t.Errorf("route %q has no access rule", rt.name)
			}
		})
	}

	// The same head in proxy mode (beside a LAN's DHCP server) opens UDP
	// 4011 too.
	t.Run("ports in proxy mode", func(t *testing.T) {
		stopHead()
		startRoomHead(t, func(o *Options) {
			o.DHCP = dhcp.ModeProxy
			o.Address = netip.PrefixFrom(netip.MustParseAddr(nsHead), nsSubnet.Bits())
			o.Logger = slog.New(slog.NewTextHandler(&testLog{t: t}, nil))
		})
		checkPorts(t, dhcp.ModeProxy)
	})

	t.Run("agent swarm port", func(t *testing.T) { auditSwarmPort(t) })
}

// auditSwarmPort runs the agent's layer server (what a RAM-root node with
// the swarm on opens, agentPorts) at its real address, and holds it to its
// rule: the port is contract.SwarmPort; without any token, GET and HEAD of
// a verified layer are served, anything else is 404 and every other method
// 405, and nothing changes the layer.
func auditSwarmPort(t *testing.T) {
	dir := t.TempDir()
	layer := []byte("a verified layer\n")
	must(t, os.WriteFile(filepath.Join(dir, contract.BaseLayer), layer, 0o644))
	const unverified = "02-other.squashfs"
	must(t, os.WriteFile(filepath.Join(dir, unverified), []byte("not verified\n"), 0o644))
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- swarm.Serve(ctx, swarm.ListenAddr, &swarm.Server{Dir: dir, Layers: []string{contract.BaseLayer}, Logger: slog.New(slog.NewTextHandler(&testLog{t: t}, nil))})
	}()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("swarm.Serve: %v", err)
		}
	}()
	port := uint16(contract.SwarmPort)
	waitFor(t, "the swarm port", func() bool {
		ls, err := Listening()
		return err == nil && slices.ContainsFunc(ls, func(l Listener) bool { return l.Proto == "tcp" && l.Addr.Port() == port })
	})
	t.Logf("tcp %d: %s", port, agentPorts["../agent/swarm.go"])
	if !strings.Contains(agentPorts["../agent/swarm.go"], "TCP "+strconv.Itoa(contract.SwarmPort)+" ") {
		t.Errorf("agentPorts' rule does not name the port %d", contract.SwarmPort)
	}
	base := "http://" + net.JoinHostPort(nsHead, strconv.Itoa(contract.SwarmPort))
	req := func(method, path string) (int, string) {
		t.Helper()
		r, err := http.NewRequest(method, base+path, strings.NewReader("overwrite"))
		must(t, err)
		resp, err := http.DefaultClient.Do(r)
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if c, b := req(http.MethodGet, "/"+contract.BaseLayer); c != http.StatusOK || b != string(layer) {
		t.Errorf("GET of the verified layer without a token: %d %q", c, b)
	}
	if c, _ := req(http.MethodHead, "/"+contract.BaseLayer); c != http.StatusOK {
		t.Errorf("HEAD of the verified layer: %d", c)
	}
	for _, path := range []string{"/" + unverified, "/", "/" + contract.TokenFile, "/../" + filepath.Base(dir) + "/" + contract.BaseLayer, "/api/v1/nodes"} {
		if c, _ := req(http.MethodGet, path); c != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, c)
		}
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		if c, _ := req(m, "/"+contract.BaseLayer); c != http.StatusMethodNotAllowed {
			t.Errorf("%s of the layer: %d, want 405 (read-only)", m, c)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(dir, contract.BaseLayer)); string(got) != string(layer) {
		t.Errorf("the layer changed: %q", got)
	}
}

// agentPorts is the access rule of each port the agent opens, by the
// source file that opens it: the swarm's layer server (RAM root, swarm on),
// which internal/swarm's tests hold to serving the verified layers only.
var agentPorts = map[string]string{
	"../agent/swarm.go": "TCP " + strconv.Itoa(contract.SwarmPort) + " (swarm): open, read-only; GET/HEAD of the image layers the initrd verified against node1's sums, nothing else (other paths 404, other methods 405)",
}

// TestAgentOpensNoPort holds the agent to being a client, but for the
// ports in agentPorts: no other code of it listens or serves, so each port
// has a row in the access table.
func TestAgentOpensNoPort(t *testing.T) {
	files, err := filepath.Glob("../agent/*.go")
	must(t, err)
	checked := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(token.NewFileSet(), f, nil, 0)
		must(t, err)
		checked++
		listens := false
		ast.Inspect(file, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				switch name := sel.Sel.Name; {
				case strings.HasPrefix(name, "Listen"), name == "Serve", name == "ListenAndServe", name == "HandleFunc", name == "Handle":
					listens = true
					if _, ok := agentPorts[f]; !ok {
						t.Errorf("%s calls %s: a port or route in the agent needs a row in the access table (agentPorts, docs/architecture.md)", f, name)
					}
				}
			}
			return true
		})
		if rule, ok := agentPorts[f]; ok {
			if !listens {
				t.Errorf("agentPorts has %s, which opens no port: remove it", f)
			}
			t.Logf("%s: %s", f, rule)
		}
	}
	if checked == 0 {
		t.Fatal("no agent source found")
	}
}
