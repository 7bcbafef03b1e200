package sshtrust

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestOpenSSHEndToEnd starts a real sshd on loopback with a host key
// certified by the CA and checks that an OpenSSH client which trusts only
// the CA (the known_hosts line the head writes) logs in with no prompt,
// with StrictHostKeyChecking=yes; and that the same client refuses an sshd
// whose host key is not certified.
func TestOpenSSHEndToEnd(t *testing.T) {
	sshd, err := exec.LookPath("/usr/sbin/sshd")
	if err != nil {
		t.Skip("no /usr/sbin/sshd (apt-get install openssh-server, then systemctl disable --now ssh): skipping the end-to-end ssh check")
	}
	sshBin, err := exec.LookPath("ssh")
	if err != nil {
		t.Skip("no ssh client (apt-get install openssh-client)")
	}
	if os.Geteuid() != 0 {
		t.Skip("the end-to-end ssh check logs in as root, so it must run as root")
	}
	// sshd refuses to start without its privilege separation folder.
	if _, err := os.Stat("/run/sshd"); errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir("/run/sshd", 0o755); err != nil {
			t.Skipf("cannot make /run/sshd: %v", err)
		}
		t.Cleanup(func() { os.Remove("/run/sshd") })
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
	port := startSSHD(t, sshd, certDir, userDir, true)
	if out, err := login(port); err != nil || !strings.Contains(string(out), "logged-in") {
		t.Fatalf("ssh to the certified sshd failed: %v\n%s", err, out)
	}

	// Uncertified host: refused, with no prompt (BatchMode would fail it
	// anyway; the point is the error is about the host key).
	plainDir := filepath.Join(dir, "plain")
	if _, err := NewHostKey(plainDir); err != nil {
		t.Fatal(err)
	}
	port = startSSHD(t, sshd, plainDir, userDir, false)
	out, err := login(port)
	if err == nil || strings.Contains(string(out), "logged-in") {
		t.Fatalf("ssh to an uncertified sshd succeeded:\n%s", out)
	}
	if !strings.Contains(string(out), "Host key verification failed") {
		t.Errorf("ssh failed for another reason than the host key:\n%s", out)
	}
}

// startSSHD runs sshd in the foreground on a free loopback port with the
// host key (and certificate) in keyDir and returns the port. The process
// is killed when the test ends.
func startSSHD(t *testing.T, sshd, keyDir, userDir string, withCert bool) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile none
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
`, port, filepath.Join(keyDir, HostKeyFile), filepath.Join(userDir, AuthorizedKeys))
	if withCert {
		conf += "HostCertificate " + filepath.Join(keyDir, HostCertFile) + "\n"
	}
	confPath := filepath.Join(keyDir, "sshd_config")
	os.WriteFile(confPath, []byte(conf), 0o600)
	if out, err := exec.Command(sshd, "-t", "-f", confPath).CombinedOutput(); err != nil {
		t.Fatalf("sshd -t: %v\n%s", err, out)
	}
	// sshd's privilege-separated children can outlive their parent; as a
	// subreaper this test inherits and reaps them, instead of leaving them
	// to an init that may not reap (as in some containers).
	subreaper()
	var logBuf strings.Builder
	cmd := exec.Command(sshd, "-D", "-e", "-f", confPath)
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listeners.Store(cmd.Process.Pid, true)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		// Let connection processes end first: killed, the listener could no
		// longer reap them, and they would linger as zombies.
		waitNoChildren(cmd.Process.Pid)
		cmd.Process.Kill()
		<-done
		listeners.Delete(cmd.Process.Pid)
		reapOrphans()
		if t.Failed() {
			t.Logf("sshd log:\n%s", logBuf.String())
		}
	})
	// Wait until it listens (or has died).
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", fmt.Sprint(port)))
		if err == nil {
			c.Close()
			return port
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("sshd exited: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if i > 500 {
			t.Fatalf("sshd does not listen on %d", port)
		}
	}
}

// subreaper makes this process the reaper of its orphaned descendants
// (prctl PR_SET_CHILD_SUBREAPER).
func subreaper() {
	const prSetChildSubreaper = 36
	syscall.Syscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
}

// listeners holds the pids of the sshd listeners still running.
var listeners sync.Map

// reapOrphans waits for the sshd processes this test inherited, for a few
// seconds at most. Only those, by pid: other children belong to os/exec.
func reapOrphans() {
	self := os.Getpid()
	for range 250 {
		left := false
		for pid, st := range childProcs(self, "sshd") {
			if _, running := listeners.Load(pid); running {
				continue
			}
			left = true
			if st == "Z" {
				syscall.Wait4(pid, nil, syscall.WNOHANG, nil)
			}
		}
		if !left {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// childProcs returns the state of every child of ppid named comm.
func childProcs(ppid int, comm string) map[int]string {
	out := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ...": comm may hold spaces.
		s := string(data)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(s[end+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) && (comm == "" || s[open+1:end] == comm) {
			out[pid] = f[0]
		}
	}
	return out
}

// waitNoChildren waits (a few seconds at most) until process pid has no
// child processes, reading the parent of every process from /proc.
func waitNoChildren(pid int) {
	for range 250 {
		if !hasChildren(pid) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hasChildren(pid int) bool { return len(childProcs(pid, "")) > 0 }
