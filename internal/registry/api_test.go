package registry

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/clusterdebian/clusterdebian/internal/sshtrust"
)

const testToken = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

type apiEnv struct {
	reg *Registry
	ca  *sshtrust.CA
	srv *httptest.Server
}

func newAPIEnv(t *testing.T, opts ...APIOption) *apiEnv {
	t.Helper()
	reg, err := Open(filepath.Join(t.TempDir(), "nodes.json"), testNaming, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Flush() })
	ca, err := sshtrust.OpenCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := httptest.NewServer(NewAPI(reg, testToken, ca, log, opts...))
	t.Cleanup(srv.Close)
	return &apiEnv{reg: reg, ca: ca, srv: srv}
}

// post sends body (a string is sent as is) with the token tok ("" for
// none) and returns the status and answer.
func (e *apiEnv) post(t *testing.T, path, tok string, body any) (int, []byte) {
	t.Helper()
	var data []byte
	if s, ok := body.(string); ok {
		data = []byte(s)
	} else {
		data, _ = json.Marshal(body)
	}
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, bytes.NewReader(data))
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func hostKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := ssh.NewPublicKey(pub)
	return k
}

func registerBody(t *testing.T, mac, ip string, key ssh.PublicKey) RegisterRequest {
	r := RegisterRequest{MAC: mac, IP: ip, Cores: 2, MemTotalKiB: 4 << 20}
	if key != nil {
		r.SSHHostKey = string(ssh.MarshalAuthorizedKey(key))
	}
	return r
}

func TestAPIRefusesWithoutToken(t *testing.T) {
	e := newAPIEnv(t)
	// One registered node, so heartbeat and leave have something to hit.
	if _, err := e.reg.Register(req("52:54:00:00:00:02", "10.99.0.2")); err != nil {
		t.Fatal(err)
	}
	before := e.reg.Nodes()
	body := map[string]any{
		PathRegister:  registerBody(t, "52:54:00:00:00:03", "10.99.0.3", hostKey(t)),
		PathHeartbeat: HeartbeatRequest{MAC: "52:54:00:00:00:02", Stats: Stats{Load1: 9}},
		PathLeave:     LeaveRequest{MAC: "52:54:00:00:00:02"},
	}
	for path, b := range body {
		for _, tok := range []string{"", "wrong", testToken[:63], testToken + "0"} {
			status, out := e.post(t, path, tok, b)
			if status != http.StatusUnauthorized {
				t.Errorf("%s with token %q: %d %s, want 401", path, tok, status, out)
			}
		}
		// Not a bearer token at all.
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader("{}"))
		req.SetBasicAuth("root", testToken)
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s with basic auth: %d", path, resp.StatusCode)
		}
	}
	after := e.reg.Nodes()
	if len(after) != 1 || after[0].Load1 != before[0].Load1 || !after[0].LastSeen.Equal(before[0].LastSeen) {
		t.Errorf("unauthenticated requests changed the registry: %+v", after)
	}
}

func TestAPIEmptyTokenRefusesAll(t *testing.T) {
	reg, _ := Open(filepath.Join(t.TempDir(), "nodes.json"), testNaming, time.Second, nil)
	t.Cleanup(func() { reg.Flush() })
	srv := httptest.NewServer(NewAPI(reg, "", nil, slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer srv.Close()
	e := &apiEnv{reg: reg, srv: srv}
	for _, tok := range []string{"", " "} {
		if status, _ := e.post(t, PathRegister, tok, registerBody(t, "52:54:00:00:00:03", "10.99.0.3", nil)); status != http.StatusUnauthorized {
			t.Errorf("token %q against an empty head token: %d", tok, status)
		}
	}
	// "Bearer " with nothing after it.
	req, _ := http.NewRequest(http.MethodPost, srv.URL+PathRegister, strings.NewReader(`{"mac":"52:54:00:00:00:03","ip":"10.99.0.3"}`))
	req.Header.Set("Authorization", "Bearer ")
	resp, _ := srv.Client().Do(req)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || len(reg.Nodes()) != 0 {
		t.Errorf("empty bearer against an empty head token: %d, %d nodes", resp.StatusCode, len(reg.Nodes()))
	}
}

func TestAPIFlow(t *testing.T) {
	e := newAPIEnv(t)
	key := hostKey(t)
	status, out := e.post(t, PathRegister, testToken, registerBody(t, "52:54:00:12:34:56", "10.99.0.23", key))
	if status != http.StatusOK {
		t.Fatalf("register: %d %s", status, out)
	}
	var resp RegisterResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Name != "node23" || resp.HeartbeatSeconds != 1 || resp.SSHCAPublicKey != e.ca.PublicKey() {
		t.Errorf("response: %+v", resp)
	}

	// The certificate is for our key, signed by the CA, for our names.
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(resp.SSHHostCertificate))
	if err != nil {
		t.Fatalf("certificate: %v\n%s", err, resp.SSHHostCertificate)
	}
	cert := k.(*ssh.Certificate)
	caKey, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(e.ca.PublicKey()))
	if !bytes.Equal(cert.SignatureKey.Marshal(), caKey.Marshal()) || !bytes.Equal(cert.Key.Marshal(), key.Marshal()) {
		t.Error("certificate signed by another key, or for another key")
	}
	checker := &ssh.CertChecker{IsHostAuthority: func(auth ssh.PublicKey, _ string) bool {
		return bytes.Equal(auth.Marshal(), caKey.Marshal())
	}}
	addr := &net.TCPAddr{IP: net.IPv4(10, 99, 0, 23), Port: 22}
	for _, h := range []string{"node23:22", "node23.cluster:22", "10.99.0.23:22"} {
		if err := checker.CheckHostKey(h, addr, cert); err != nil {
			t.Errorf("certificate for %s: %v", h, err)
		}
	}

	status, out = e.post(t, PathHeartbeat, testToken, HeartbeatRequest{MAC: "52:54:00:12:34:56", Stats: Stats{Load1: 0.5, MemUsedKiB: 2048, UptimeSec: 60}})
	if status != http.StatusNoContent {
		t.Errorf("heartbeat: %d %s", status, out)
	}
	// GET is open and shows the stats.
	resp2, err := http.Get(e.srv.URL + PathNodes)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []Node
	json.NewDecoder(resp2.Body).Decode(&nodes)
	resp2.Body.Close()
	if len(nodes) != 1 || nodes[0].Name != "node23" || nodes[0].Load1 != 0.5 || nodes[0].MemUsedKiB != 2048 || nodes[0].State != StateUp || nodes[0].Role != RoleNode {
		t.Errorf("GET %s: %+v", PathNodes, nodes)
	}
	if resp3, err := http.Get(e.srv.URL + PathNodes + "/"); err != nil || resp3.StatusCode != http.StatusOK {
		t.Errorf("GET %s/: %v", PathNodes, err)
	}

	status, _ = e.post(t, PathHeartbeat, testToken, HeartbeatRequest{MAC: "52:54:00:99:99:99"})
	if status != http.StatusNotFound {
		t.Errorf("heartbeat of an unknown node: %d, want 404", status)
	}
	status, _ = e.post(t, PathLeave, testToken, LeaveRequest{MAC: "52:54:00:12:34:56"})
	if status != http.StatusNoContent || len(e.reg.Nodes()) != 0 {
		t.Errorf("leave: %d, nodes %v", status, e.reg.Nodes())
	}
	status, _ = e.post(t, PathLeave, testToken, LeaveRequest{MAC: "52:54:00:12:34:56"})
	if status != http.StatusNotFound {
		t.Errorf("second leave: %d, want 404", status)
	}
}

func TestAPIBadInput(t *testing.T) {
	e := newAPIEnv(t)
	head := req("52:54:00:00:00:01", "10.99.0.1")
	head.Role = RoleHead
	e.reg.Register(head)
	certText, _ := e.ca.SignHost(hostKey(t), []string{"x"}, 0)
	big := registerBody(t, "52:54:00:00:00:05", "10.99.0.5", nil)
	big.SSHHostKey = strings.Repeat("A", maxBody)
	tests := []struct {
		name string
		path string
		body any
		want int
	}{
		{"malformed JSON", PathRegister, `{"mac": "52:54:00:00:00:05",`, http.StatusBadRequest},
		{"not an object", PathHeartbeat, `[1,2]`, http.StatusBadRequest},
		{"empty body", PathLeave, ``, http.StatusBadRequest},
		{"bad MAC", PathRegister, registerBody(t, "zz:54:00:00:00:05", "10.99.0.5", nil), http.StatusBadRequest},
		{"bad IP", PathRegister, registerBody(t, "52:54:00:00:00:05", "10.99.0.500", nil), http.StatusBadRequest},
		{"outside subnet", PathRegister, registerBody(t, "52:54:00:00:00:05", "10.98.0.5", nil), http.StatusBadRequest},
		{"broadcast", PathRegister, registerBody(t, "52:54:00:00:00:05", "10.99.0.255", nil), http.StatusBadRequest},
		{"network address", PathRegister, registerBody(t, "52:54:00:00:00:05", "10.99.0.0", nil), http.StatusBadRequest},
		{"bad host key", PathRegister, RegisterRequest{MAC: "52:54:00:00:00:05", IP: "10.99.0.5", SSHHostKey: "ssh-ed25519 !!!"}, http.StatusBadRequest},
		{"certificate as host key", PathRegister, RegisterRequest{MAC: "52:54:00:00:00:05", IP: "10.99.0.5", SSHHostKey: certText}, http.StatusBadRequest},
		{"head's address", PathRegister, registerBody(t, "52:54:00:00:00:05", "10.99.0.1", nil), http.StatusConflict},
		{"too big", PathRegister, big, http.StatusRequestEntityTooLarge},
		{"bad MAC heartbeat", PathHeartbeat, HeartbeatRequest{MAC: "x"}, http.StatusBadRequest},
	}
	for _, tc := range tests {
		status, out := e.post(t, tc.path, testToken, tc.body)
		if status != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, status, out, tc.want)
		}
		var er errorResponse
		if json.Unmarshal(out, &er) != nil || er.Error == "" {
			t.Errorf("%s: answer is not a JSON error: %s", tc.name, out)
		}
	}
	if ns := e.reg.Nodes(); len(ns) != 1 || ns[0].Role != RoleHead {
		t.Errorf("bad requests changed the registry: %+v", ns)
	}
	// A GET of a POST path, and a POST of the list: wrong method.
	resp, _ := http.Get(e.srv.URL + PathRegister)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET %s: %d", PathRegister, resp.StatusCode)
	}
	// Without a host key, registration works and no certificate comes back.
	status, out := e.post(t, PathRegister, testToken, registerBody(t, "52:54:00:00:00:05", "10.99.0.5", nil))
	var rr RegisterResponse
	json.Unmarshal(out, &rr)
	if status != http.StatusOK || rr.Name != "node5" || rr.SSHHostCertificate != "" {
		t.Errorf("register without a host key: %d %s", status, out)
	}
	// The API always registers nodes, never the head, whatever the JSON says.
	status, _ = e.post(t, PathRegister, testToken, `{"mac":"52:54:00:00:00:06","ip":"10.99.0.6","role":"head"}`)
	if ns := e.reg.Nodes(); status != http.StatusOK || ns[len(ns)-1].Role != RoleNode {
		t.Errorf("role from JSON honoured: %d %+v", status, ns)
	}
}

// TestAPIMungeKeyForRootOnly: the munge key goes only to a registration
// from the registered address and a privileged port, root's on that
// machine; the token alone (any user on a node can read it) gets a name
// and a certificate, but no key.
func TestAPIMungeKeyForRootOnly(t *testing.T) {
	reg, err := Open(filepath.Join(t.TempDir(), "nodes.json"), testNaming, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Flush() })
	key := []byte(strings.Repeat("k", 64))
	h := NewAPI(reg, testToken, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), Slurm(key, "10.99.0.1"))
	for _, c := range []struct {
		remote string
		want   bool
	}{
		{"10.99.0.7:1023", true},
		{"10.99.0.7:600", true},
		{"[::ffff:10.99.0.7]:700", true},
		{"10.99.0.7:1024", false},
		{"10.99.0.7:40000", false},
		{"10.99.0.8:600", false}, // another machine's root
	} {
		body, _ := json.Marshal(registerBody(t, "52:54:00:00:00:07", "10.99.0.7", nil))
		r := httptest.NewRequest(http.MethodPost, PathRegister, bytes.NewReader(body))
		r.RemoteAddr = c.remote
		r.Header.Set("Authorization", "Bearer "+testToken)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		var resp RegisterResponse
		if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &resp) != nil {
			t.Fatalf("from %s: %d %s", c.remote, w.Code, w.Body)
		}
		if got := bytes.Equal(resp.MungeKey, key) && resp.SlurmController == "10.99.0.1"; got != c.want {
			t.Errorf("from %s: munge key and controller given: %v, want %v (%+v)", c.remote, got, c.want, resp)
		}
		if !c.want && (len(resp.MungeKey) > 0 || resp.SlurmController != "") {
			t.Errorf("from %s: a part of the Slurm answer: %+v", c.remote, resp)
		}
	}
}
