package head

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/netboot/bootstage"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/sshtrust"
	"github.com/clusterdebian/clusterdebian/internal/syncbuf"
	"golang.org/x/crypto/ssh"
)

// A damaged booted nodes file does not stop the head: it is set aside and
// the export set starts empty.
func TestExportSetDamaged(t *testing.T) {
	state := filepath.Join(t.TempDir(), contract.BootedFile)
	bad := []byte(`{"version":1,"nodes":[{"mac":"52:54:00:00:00:05","ip":"10.9`)
	must(t, os.WriteFile(state, bad, 0o600))
	var logs bytes.Buffer
	e, err := newExportSet(state, contract.RootShared, newFakeSystem(t.TempDir()), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("a damaged %s stops the head: %v", state, err)
	}
	if got := e.Clients(); len(got) != 0 {
		t.Errorf("clients from a damaged file: %v", got)
	}
	kept, _ := filepath.Glob(state + ".corrupt-*")
	if len(kept) != 1 {
		t.Fatalf("damaged file kept as %v, want one copy", kept)
	}
	if got, _ := os.ReadFile(kept[0]); !bytes.Equal(got, bad) {
		t.Errorf("%s holds %q, want %q", kept[0], got, bad)
	}
	if !strings.Contains(logs.String(), "booted nodes file is damaged") {
		t.Errorf("log does not say what was done:\n%s", logs.String())
	}
}

// A damaged SSH CA key (truncated, or garbage) does not stop the head, nor
// would systemd restart it into the same error: setupCluster sets the key
// aside, makes a new CA and says so; node1's host certificate and the
// known hosts it writes name the new CA, a registration is signed by it,
// and heartbeat answers carry its fingerprint, which is how running nodes
// learn to register again (agent.TestRunFollowsNewCA). A second start
// keeps the new CA and reports nothing.
func TestHeadDamagedCA(t *testing.T) {
	const testToken = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for name, damage := range map[string]func([]byte) []byte{
		"truncated": func(key []byte) []byte { return key[:len(key)/3] },
		"garbage":   func([]byte) []byte { return []byte("\x00\xffthis is no key\n") },
	} {
		t.Run(name, func(t *testing.T) {
			state, root := t.TempDir(), t.TempDir()
			old, err := sshtrust.OpenCA(state)
			must(t, err)
			keyFile := filepath.Join(state, contract.CAKeyFile)
			key, err := os.ReadFile(keyFile)
			must(t, err)
			bad := damage(key)
			must(t, os.WriteFile(keyFile, bad, 0o600))
			_, err = sshtrust.NewHostKey(filepath.Join(root, "etc/ssh"))
			must(t, err)

			// The registry's saver and the export set log from goroutines
			// of their own.
			var logs syncbuf.Buffer
			start := func() *Head {
				t.Helper()
				sys := newFakeSystem(root)
				sys.macs["eth0"] = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}
				h := &Head{opts: Options{StateDir: state, ClusterRoot: root, Root: contract.RootShared, SimulatedNodes: true}, sys: sys,
					iface: "eth0", addr: testNaming.Head, naming: testNaming, token: testToken,
					log: slog.New(slog.NewTextHandler(&logs, nil)), tracker: bootstage.NewTracker()}
				if err := h.setupCluster(); err != nil {
					t.Fatalf("a %s CA key stops the head: %v", name, err)
				}
				// The registry's saver and the export set's applier write
				// into the temporary folders from their own goroutines.
				t.Cleanup(h.flushCluster)
				return h
			}
			h := start()
			ca := h.cluster.ca
			if ca.PublicKey() == old.PublicKey() {
				t.Fatal("the head kept the damaged CA's key")
			}
			kept, _ := filepath.Glob(keyFile + ".corrupt-*")
			if len(kept) != 2 || kept[1] != kept[0]+".pub" {
				t.Fatalf("kept %v, want the key and its .pub", kept)
			}
			if got, _ := os.ReadFile(kept[0]); !bytes.Equal(got, bad) {
				t.Errorf("%s holds %q, want the damaged key %q", kept[0], got, bad)
			}
			for _, want := range []string{"SSH CA key was damaged", "kept_as=" + kept[0], "new_ca=" + ca.Fingerprint()} {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("the log does not say %q:\n%s", want, logs.String())
				}
			}

			// What nodes and node1's sshd see is the new CA.
			known, err := os.ReadFile(filepath.Join(root, sshtrust.KnownHostsPath))
			must(t, err)
			if !strings.Contains(string(known), ca.PublicKey()) || strings.Contains(string(known), old.PublicKey()) {
				t.Errorf("known hosts do not trust the new CA alone:\n%s", known)
			}
			if got := certSigner(t, filepath.Join(root, InstalledHostCert)); got != ca.Fingerprint() {
				t.Errorf("node1's host certificate is signed by %s, want the new CA %s", got, ca.Fingerprint())
			}
			srv := httptest.NewServer(h.routes())
			defer srv.Close()
			hostKey, err := sshtrust.NewHostKey(t.TempDir())
			must(t, err)
			c := registry.NewClient(srv.URL, testToken, nil)
			resp, err := c.Register(context.Background(), registry.RegisterRequest{MAC: "52:54:00:00:00:07", IP: "10.99.0.7", Cores: 1,
				SSHHostKey: string(ssh.MarshalAuthorizedKey(hostKey))})
			must(t, err)
			if got := sshtrust.Fingerprint(resp.SSHCAPublicKey); got != ca.Fingerprint() {
				t.Errorf("registration names CA %s, want %s", got, ca.Fingerprint())
			}
			if _, fp, err := c.HeartbeatCA(context.Background(), "52:54:00:00:00:07", registry.Stats{}); err != nil || fp != ca.Fingerprint() {
				t.Errorf("heartbeat answer names CA %q (%v), want %s", fp, err, ca.Fingerprint())
			}

			// A restart keeps the new CA, and finds nothing damaged.
			since := len(logs.String())
			if again := start(); again.cluster.ca.PublicKey() != ca.PublicKey() {
				t.Error("a restart made yet another CA")
			}
			if restart := logs.String()[since:]; strings.Contains(restart, "damaged") {
				t.Errorf("a restart reports damage:\n%s", restart)
			}
		})
	}
}

// certSigner returns the fingerprint of the CA that signed the host
// certificate at path.
func certSigner(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	must(t, err)
	k, _, _, _, err := ssh.ParseAuthorizedKey(data)
	must(t, err)
	cert, ok := k.(*ssh.Certificate)
	if !ok {
		t.Fatalf("%s is no certificate", path)
	}
	return ssh.FingerprintSHA256(cert.SignatureKey)
}
