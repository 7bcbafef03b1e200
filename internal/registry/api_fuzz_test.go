package registry

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/sshtrust"
)

// fuzzMAC is a node registered before each fuzzed request, so that
// heartbeat and leave bodies can name a known node.
const fuzzMAC = "52:54:00:00:00:02"

// FuzzAPI sends fuzzed JSON bodies, with the cluster token, to the node
// API's register, heartbeat and leave routes through the real handler.
// Whatever the body, the API answers: never a panic, never a 5xx, a JSON
// answer for every status but 204, and a registration it accepts names the
// node by the contract's naming and is in the registry.
func FuzzAPI(f *testing.F) {
	f.Add(uint8(0), []byte(`{"mac":"52:54:00:00:00:03","ip":"10.99.0.3","cores":2}`))
	ca, err := sshtrust.OpenCA(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	paths := []string{PathRegister, PathHeartbeat, PathLeave}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		reg, err := Open(filepath.Join(t.TempDir(), "nodes.json"), testNaming, time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer reg.Flush()
		if _, err := reg.Register(RegisterRequest{MAC: fuzzMAC, IP: "10.99.0.2", Cores: 1}); err != nil {
			t.Fatal(err)
		}
		h := NewAPI(reg, testToken, ca, log)
		path := paths[int(route)%len(paths)]
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		code := rec.Code
		if code >= 500 {
			t.Fatalf("POST %s %q: %d %s", path, body, code, rec.Body)
		}
		if code == http.StatusNoContent {
			return
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("POST %s %q: %d with no JSON answer: %q", path, body, code, rec.Body)
		}
		if code != http.StatusOK || path != PathRegister {
			return
		}
		var resp RegisterResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatalf("register %q: answer %q: %v", body, rec.Body, err)
		}
		if !contract.IsNodeName(resp.Name) {
			t.Fatalf("register %q: name %q is not a node name", body, resp.Name)
		}
		var sent RegisterRequest
		if err := json.Unmarshal(body, &sent); err != nil {
			t.Fatalf("register accepted %q that encoding/json rejects: %v", body, err)
		}
		mac, _ := contract.NormalizeMAC(sent.MAC)
		for _, n := range reg.Nodes() {
			if n.MAC == mac {
				if n.Name != resp.Name {
					t.Fatalf("register %q: answered %q, registry has %q", body, resp.Name, n.Name)
				}
				return
			}
		}
		t.Fatalf("register %q answered %q, but the registry has no %s", body, resp.Name, strings.ToLower(sent.MAC))
	})
}

// FuzzDecodeNodes reads fuzzed node lists, as `clusterdebian status` and
// the agents read the head's answer. A list it accepts is never nil (nil
// would pass for a cluster without nodes), and writes back as JSON that
// decodes to the same list.
func FuzzDecodeNodes(f *testing.F) {
	f.Add([]byte(`[{"name":"node2","mac":"52:54:00:00:00:02","ip":"10.99.0.2"}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ns, err := DecodeNodes(data)
		if err != nil {
			return
		}
		if ns == nil {
			t.Fatalf("DecodeNodes(%q): nil list without error", data)
		}
		once, err := json.Marshal(ns)
		if err != nil {
			t.Fatalf("DecodeNodes(%q) gave nodes that do not encode: %v", data, err)
		}
		again, err := DecodeNodes(once)
		if err != nil {
			t.Fatalf("DecodeNodes(%q) (re-encoded %q): %v", once, data, err)
		}
		if twice, _ := json.Marshal(again); string(twice) != string(once) {
			t.Fatalf("round trip of %q:\n once  %s\n twice %s", data, once, twice)
		}
	})
}
