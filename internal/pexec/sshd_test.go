package pexec

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/testsshd"
)

// testSSH is a throw-away sshd on loopback and the client options that log
// in to it as root with a key of the test's own. Every node name maps to
// this one sshd; the client passes the name in $NODE (SetEnv, AcceptEnv),
// so a test command can behave differently per node.
type testSSH struct {
	port int
	args []string // client options
}

// dest is an Options.Destination for the test sshd.
func (s *testSSH) dest(node string) (string, []string) {
	return "root@127.0.0.1", []string{"-p", strconv.Itoa(s.port), "-o", "SetEnv=NODE=" + node}
}

func newTestSSH(t *testing.T) *testSSH {
	t.Helper()
	testsshd.Require(t)
	dir := t.TempDir()
	hostKey, userKey := filepath.Join(dir, "host_key"), filepath.Join(dir, "user_key")
	testsshd.KeyPair(t, hostKey)
	pub := testsshd.KeyPair(t, userKey)
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, []byte(pub+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := testsshd.Start(t, testsshd.Config{Dir: dir, HostKey: hostKey, AuthorizedKeys: authorized,
		Extra: []string{"AcceptEnv NODE", "MaxStartups 100", "MaxSessions 100"}})
	return &testSSH{port: srv.Port, args: []string{"-F", "/dev/null", "-i", userKey, "-o", "IdentitiesOnly=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"}}
}
