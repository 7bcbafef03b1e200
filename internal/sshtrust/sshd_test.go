package sshtrust

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/testsshd"
)

// TestOpenSSHEndToEnd starts a real sshd on loopback with a host key
// certified by the CA and checks that an OpenSSH client which trusts only
// the CA (the known_hosts line the head writes) logs in with no prompt,
// with StrictHostKeyChecking=yes; and that the same client refuses an sshd
// whose host key is not certified.
func TestOpenSSHEndToEnd(t *testing.T) {
	testsshd.Require(t)
	sshBin, err := exec.LookPath("ssh")
	if err != nil {
		t.Fatal(err)
	}

	ca := mustCA(t, t.TempDir())
	dir := t.TempDir()
	userDir := filepath.Join(dir, "user")
	os.Mkdir(userDir, 0o700)
	userPub, _, err := writeKeyPair(filepath.Join(userDir, UserKeyFile), "test@cluster")
	if err != nil {
		t.Fatal(err)
	}
	if err := authorize(filepath.Join(userDir, AuthorizedKeys), userPub, "test@cluster", -1, -1); err != nil {
		t.Fatal(err)
	}
	knownHosts := filepath.Join(dir, "known_hosts")
	line := ca.KnownHostsLine(KnownHostsPatterns(netip.MustParsePrefix("10.99.0.0/24")))
	os.WriteFile(knownHosts, []byte(line+"\n"), 0o644)

	login := func(port int) ([]byte, error) {
		// HostKeyAlias makes ssh check the certificate as for "node5",
		// the name a user types on the cluster, while connecting to
		// loopback; -F /dev/null keeps this host's ssh_config out.
		cmd := exec.Command(sshBin, "-F", "/dev/null",
			"-o", "UserKnownHostsFile="+knownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
			"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "HostKeyAlias=node5",
			"-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=20", "-i", filepath.Join(userDir, UserKeyFile),
			"-p", fmt.Sprint(port), "root@127.0.0.1", "echo", "logged-in")
		return cmd.CombinedOutput()
	}

	// Certified host: logs in.
	certDir := filepath.Join(dir, "certified")
	pub, err := NewHostKey(certDir)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignHost(pub, HostPrincipals("node5", "10.99.0.5"), 0)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(certDir, HostCertFile), []byte(cert+"\n"), 0o644)
	port := startSSHD(t, certDir, userDir, true)
	if out, err := login(port); err != nil || !strings.Contains(string(out), "logged-in") {
		t.Fatalf("ssh to the certified sshd failed: %v\n%s", err, out)
	}

	// Uncertified host: refused, with no prompt (BatchMode would fail it
	// anyway; the point is the error is about the host key).
	plainDir := filepath.Join(dir, "plain")
	if _, err := NewHostKey(plainDir); err != nil {
		t.Fatal(err)
	}
	port = startSSHD(t, plainDir, userDir, false)
	out, err := login(port)
	if err == nil || strings.Contains(string(out), "logged-in") {
		t.Fatalf("ssh to an uncertified sshd succeeded:\n%s", out)
	}
	if !strings.Contains(string(out), "Host key verification failed") {
		t.Errorf("ssh failed for another reason than the host key:\n%s", out)
	}
}

// startSSHD runs sshd on a free loopback port with the host key (and
// certificate) in keyDir and returns the port.
func startSSHD(t *testing.T, keyDir, userDir string, withCert bool) int {
	t.Helper()
	c := testsshd.Config{Dir: keyDir, HostKey: filepath.Join(keyDir, HostKeyFile),
		AuthorizedKeys: filepath.Join(userDir, AuthorizedKeys)}
	if withCert {
		c.HostCertificate = filepath.Join(keyDir, HostCertFile)
	}
	return testsshd.Start(t, c).Port
}
