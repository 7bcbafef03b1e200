package registry

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/clusterdebian/clusterdebian/internal/sshtrust"
)

// The client against the real API: each call, and the errors it decodes.
func TestClientAgainstAPI(t *testing.T) {
	e := newAPIEnv(t, RootKeys("ssh-ed25519 AAAA root@node1"))
	ctx := context.Background()
	c := NewClient(e.srv.URL+"/", testToken, nil)
	if c.Base() != e.srv.URL {
		t.Errorf("Base() = %q, want %q without the slash", c.Base(), e.srv.URL)
	}

	resp, err := c.Register(ctx, registerBody(t, "52:54:00:00:00:05", "10.99.0.5", hostKey(t)))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Name != "node5" || resp.HeartbeatSeconds != 1 || resp.SSHCAPublicKey != e.ca.PublicKey() ||
		resp.RootAuthorizedKeys != "ssh-ed25519 AAAA root@node1" {
		t.Errorf("Register = %+v", resp)
	}
	if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.SSHHostCertificate)); err != nil {
		t.Errorf("host certificate %q: %v", resp.SSHHostCertificate, err)
	}

	gen, err := c.Heartbeat(ctx, "52:54:00:00:00:05", Stats{Load1: 1.5})
	if err != nil || gen != e.reg.Generation() || gen == 0 {
		t.Errorf("Heartbeat = %d, %v; registry generation %d", gen, err, e.reg.Generation())
	}
	// The heartbeat answer names the CA, as the registration did.
	if _, fp, err := c.HeartbeatCA(ctx, "52:54:00:00:00:05", Stats{Load1: 1.5}); err != nil || fp == "" || fp != sshtrust.Fingerprint(resp.SSHCAPublicKey) {
		t.Errorf("HeartbeatCA = %q, %v; want the fingerprint of %s", fp, err, resp.SSHCAPublicKey)
	}
	nodes, listGen, err := c.Nodes(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].Name != "node5" || nodes[0].Load1 != 1.5 || listGen != gen {
		t.Errorf("Nodes = %+v, %d, %v; want node5 at generation %d", nodes, listGen, err, gen)
	}

	// An unknown node: a 404 that means "register again".
	_, err = c.Heartbeat(ctx, "52:54:00:00:00:09", Stats{})
	var se *StatusError
	if !errors.Is(err, ErrUnknownNode) || !errors.As(err, &se) || se.Status != http.StatusNotFound || se.Msg != ErrUnknownNode.Error() {
		t.Errorf("Heartbeat of an unknown node: %v (%#v)", err, se)
	}
	// A refusal is a StatusError that is not ErrUnknownNode.
	_, err = c.Register(ctx, registerBody(t, "52:54:00:00:00:06", "10.99.0.1", nil))
	if !errors.As(err, &se) || se.Status != http.StatusConflict || errors.Is(err, ErrUnknownNode) {
		t.Errorf("Register at the head's address: %v", err)
	}
	// Without the token.
	_, err = NewClient(e.srv.URL, "", nil).Register(ctx, registerBody(t, "52:54:00:00:00:06", "10.99.0.6", nil))
	if !errors.As(err, &se) || se.Status != http.StatusUnauthorized || !strings.Contains(err.Error(), "401") {
		t.Errorf("Register without the token: %v", err)
	}
	if _, err := NewClient(e.srv.URL, "wrong", nil).Prune(ctx); !errors.As(err, &se) || se.Status != http.StatusUnauthorized {
		t.Errorf("Prune with a wrong token: %v", err)
	}

	// Prune: nothing is down, then node5 is.
	if gone, err := c.Prune(ctx); err != nil || gone == nil || len(gone) != 0 {
		t.Errorf("Prune with nothing down = %#v, %v; want an empty list", gone, err)
	}
	e.reg.Sweep(time.Now().Add(time.Hour))
	if gone, err := c.Prune(ctx); err != nil || len(gone) != 1 || gone[0].Name != "node5" {
		t.Errorf("Prune = %+v, %v; want node5", gone, err)
	}

	// Leave: of a node the head knows, then of one it does not (success too).
	if _, err := c.Register(ctx, registerBody(t, "52:54:00:00:00:07", "10.99.0.7", nil)); err != nil {
		t.Fatal(err)
	}
	if err := c.Leave(ctx, "52:54:00:00:00:07"); err != nil || len(e.reg.Nodes()) != 0 {
		t.Errorf("Leave: %v; left %+v", err, e.reg.Nodes())
	}
	if err := c.Leave(ctx, "52:54:00:00:00:07"); err != nil {
		t.Errorf("Leave of an unknown node: %v, want success", err)
	}
	// An empty list is a list.
	if nodes, _, err := c.Nodes(ctx); err != nil || nodes == nil || len(nodes) != 0 {
		t.Errorf("Nodes of an empty registry = %#v, %v", nodes, err)
	}
}

// Leave asks again after a failure that may pass, and not after a refusal.
func TestClientLeaveRetries(t *testing.T) {
	for _, tt := range []struct {
		name    string
		answers []int // status per request; the last repeats
		calls   int32
		ok      bool
	}{
		{"ok", []int{204}, 1, true},
		{"unknown node", []int{404}, 1, true},
		{"unavailable, then ok", []int{503, 503, 204}, 3, true},
		{"server errors throughout", []int{500}, 3, false},
		{"bad request", []int{400}, 1, false},
		{"refused", []int{401}, 1, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := int(calls.Add(1))
				if r.URL.Path != PathLeave || r.Header.Get("Authorization") != "Bearer tok" {
					t.Errorf("request %s %s with %q", r.Method, r.URL.Path, r.Header.Get("Authorization"))
				}
				writeError(w, tt.answers[min(n, len(tt.answers))-1], "says no")
			}))
			defer srv.Close()
			err := NewClient(srv.URL, "tok", nil).Leave(context.Background(), "52:54:00:00:00:02")
			if (err == nil) != tt.ok || calls.Load() != tt.calls {
				t.Errorf("Leave: %v after %d requests; want ok %v after %d", err, calls.Load(), tt.ok, tt.calls)
			}
		})
	}

	// A transport failure is retried too, while the context allows.
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	if err := NewClient(url, "tok", nil).Leave(context.Background(), "52:54:00:00:00:02"); err == nil {
		t.Error("Leave to a closed server: no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := NewClient(url, "tok", nil).Leave(ctx, "52:54:00:00:00:02"); !errors.Is(err, context.Canceled) {
		t.Errorf("Leave with a cancelled context: %v", err)
	}
}

// Answers that are not what the API sends are errors, never "no nodes".
func TestClientBadAnswers(t *testing.T) {
	var body string
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			t.Errorf("a client without a token sent %q", r.Header.Get("Authorization"))
		}
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	defer srv.Close()
	c := NewClient(srv.URL, "", nil)
	ctx := context.Background()
	for _, tt := range []struct{ body, want string }{
		{"null", "is not a node list: null"},
		{"", "is not a node list"},
		{`{"name": "node2"}`, "is not a node list"},
		{`[{"name": "node2", "cores": "many"}]`, "is not a node list"},
	} {
		body = tt.body
		if ns, _, err := c.Nodes(ctx); err == nil || !strings.Contains(err.Error(), tt.want) || ns != nil {
			t.Errorf("Nodes of %q = %v, %v; want an error with %q", tt.body, ns, err, tt.want)
		}
		if ns, err := c.Prune(ctx); err == nil || ns != nil {
			t.Errorf("Prune of %q = %v, %v; want an error", tt.body, ns, err)
		}
	}
	body = `{"heartbeat_seconds": 5}`
	if _, err := c.Register(ctx, RegisterRequest{}); err == nil || !strings.Contains(err.Error(), "no name") {
		t.Errorf("Register answered without a name: %v", err)
	}

	// An error answer that is not JSON is shown as it is.
	status, body = http.StatusBadGateway, "upstream gone\n"
	var se *StatusError
	if _, _, err := c.Nodes(ctx); !errors.As(err, &se) || se.Status != http.StatusBadGateway || se.Msg != "upstream gone" {
		t.Errorf("Nodes of a 502: %v", err)
	}

	// An answer over the limit is refused, not cut and misread.
	status, body = http.StatusOK, `[{"name": "node2"}]`
	c.limit = int64(len(body)) - 1
	if _, _, err := c.Nodes(ctx); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Nodes over the limit: %v", err)
	}
	c.limit = int64(len(body))
	if ns, _, err := c.Nodes(ctx); err != nil || len(ns) != 1 || ns[0].Name != "node2" {
		t.Errorf("Nodes at the limit = %+v, %v", ns, err)
	}
}

func TestDecodeNodes(t *testing.T) {
	ns, err := DecodeNodes([]byte(`[{"name": "node2", "mac": "52:54:00:00:00:02", "state": "up"}]`))
	if err != nil || len(ns) != 1 || ns[0].Name != "node2" || ns[0].State != StateUp {
		t.Errorf("DecodeNodes = %+v, %v", ns, err)
	}
	if ns, err := DecodeNodes([]byte("[]")); err != nil || ns == nil {
		t.Errorf("DecodeNodes([]) = %#v, %v; want an empty list", ns, err)
	}
	for _, bad := range []string{"null", "", "{}", "[", `"node2"`} {
		if ns, err := DecodeNodes([]byte(bad)); err == nil {
			t.Errorf("DecodeNodes(%q) = %+v, want an error", bad, ns)
		}
	}
}

func TestHeadURL(t *testing.T) {
	for in, want := range map[string]string{
		"10.99.0.1":            "http://10.99.0.1",
		"10.99.0.1:8080":       "http://10.99.0.1:8080",
		"http://10.99.0.1/":    "http://10.99.0.1",
		"http://127.0.0.1:999": "http://127.0.0.1:999",
		"fd00::1":              "http://[fd00::1]",
	} {
		if got, err := HeadURL(in); err != nil || got != want {
			t.Errorf("HeadURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "node1", "http://", "10.99.0.300"} {
		if got, err := HeadURL(bad); err == nil {
			t.Errorf("HeadURL(%q) = %q, want an error", bad, got)
		}
	}
}

// TestClientNetwork: the typed client reads the head's network; a head
// from before that API answers 404, which callers can tell.
func TestClientNetwork(t *testing.T) {
	want := Network{Summary: "proxyDHCP on 192.168.50.0/23 beside the DHCP server 192.168.50.1", Interface: "eth0", Address: "192.168.50.37",
		Subnet: "192.168.50.0/23", AddressSource: "lease", Mode: "proxy", Lease: &NetworkLease{Server: "192.168.50.1"}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathNetwork, func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, want) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	got, err := NewClient(srv.URL, "", nil).Network(context.Background())
	if err != nil || got.Summary != want.Summary || got.Lease == nil || got.Lease.Server != "192.168.50.1" {
		t.Errorf("Network = %+v, %v", got, err)
	}
	old := httptest.NewServer(http.NotFoundHandler())
	defer old.Close()
	_, err = NewClient(old.URL, "", nil).Network(context.Background())
	var se *StatusError
	if !errors.As(err, &se) || se.Status != http.StatusNotFound {
		t.Errorf("an older head: %v, want a 404 StatusError", err)
	}
	empty := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("{}")) }))
	defer empty.Close()
	if _, err := NewClient(empty.URL, "", nil).Network(context.Background()); err == nil {
		t.Error("an answer without a summary was taken")
	}
}
