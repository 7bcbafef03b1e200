package pexec

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
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

// testSSH is a throw-away sshd on loopback and the client options that log
// in to it as root with a key of the test's own, the way
// internal/sshtrust's end-to-end test does. Every node name maps to this
// one sshd; the client passes the name in $NODE (SetEnv, AcceptEnv), so
// a test command can behave differently per node.
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
	sshd, err := exec.LookPath("/usr/sbin/sshd")
	if err != nil {
		t.Skip("no /usr/sbin/sshd (apt-get install openssh-server)")
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("no ssh client (apt-get install openssh-client)")
	}
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("no ssh-keygen")
	}
	if os.Geteuid() != 0 {
		t.Skip("the ssh tests log in as root, so they must run as root")
	}
	// sshd refuses to start without its privilege separation folder.
	if _, err := os.Stat("/run/sshd"); errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir("/run/sshd", 0o755); err != nil {
			t.Skipf("cannot make /run/sshd: %v", err)
		}
		t.Cleanup(func() { os.Remove("/run/sshd") })
	}
	dir := t.TempDir()
	hostKey, userKey := filepath.Join(dir, "host_key"), filepath.Join(dir, "user_key")
	for _, k := range []string{hostKey, userKey} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	pub, err := os.ReadFile(userKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	authorized := filepath.Join(dir, "authorized_keys")
	os.WriteFile(authorized, pub, 0o600)
	port := startSSHD(t, sshd, dir, hostKey, authorized)
	return &testSSH{port: port, args: []string{"-F", "/dev/null", "-i", userKey, "-o", "IdentitiesOnly=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"}}
}

// startSSHD runs sshd in the foreground on a free loopback port and
// returns the port; it is stopped, and its children reaped, when the test
// ends.
func startSSHD(t *testing.T, sshd, dir, hostKey, authorized string) int {
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
AcceptEnv NODE
MaxStartups 100
MaxSessions 100
`, port, hostKey, authorized)
	confPath := filepath.Join(dir, "sshd_config")
	os.WriteFile(confPath, []byte(conf), 0o600)
	if out, err := exec.Command(sshd, "-t", "-f", confPath).CombinedOutput(); err != nil {
		t.Fatalf("sshd -t: %v\n%s", err, out)
	}
	// sshd's privilege-separated children can outlive their parent; as a
	// subreaper this test inherits and reaps them.
	subreaper()
	var logBuf syncBuffer
	cmd := exec.Command(sshd, "-D", "-e", "-f", confPath)
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listeners.Store(cmd.Process.Pid, true)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		waitNoChildren(cmd.Process.Pid)
		cmd.Process.Kill()
		<-done
		listeners.Delete(cmd.Process.Pid)
		reapOrphans()
		if t.Failed() {
			t.Logf("sshd log:\n%s", logBuf.String())
		}
	})
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			c.Close()
			return port
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("sshd exited: %v\n%s", err, logBuf.String())
		case <-time.After(20 * time.Millisecond):
		}
		if i > 500 {
			t.Fatalf("sshd does not listen on %d", port)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
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
// child processes.
func waitNoChildren(pid int) {
	for range 250 {
		if len(childProcs(pid, "")) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
