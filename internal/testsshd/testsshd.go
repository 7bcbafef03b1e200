// Package testsshd runs throw-away OpenSSH servers for tests and
// benchmarks: the real /usr/sbin/sshd in the foreground, with a
// configuration and keys of the test's own, stopped and reaped when the
// test ends. A real sshd rather than an SSH library's server, because what
// is tested is how OpenSSH clients meet the cluster's trust (host
// certificates, known hosts, authorized keys).
package testsshd

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

	"github.com/clusterdebian/clusterdebian/internal/syncbuf"
)

// Path is the OpenSSH server.
const Path = "/usr/sbin/sshd"

// Require skips t unless this machine can run OpenSSH servers and clients
// for it: sshd, ssh and ssh-keygen installed, and root (the servers let
// root log in, as nodes do). It makes sshd's privilege separation folder
// if it is missing.
func Require(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(Path); err != nil {
		t.Skip("no " + Path + " (apt-get install openssh-server, then systemctl disable --now ssh)")
	}
	for _, c := range []string{"ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("no %s (apt-get install openssh-client)", c)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("the ssh tests log in as root, so they must run as root")
	}
	// sshd refuses to start without it. It is left in place: tests in
	// other packages may run their sshds at the same time, and it is the
	// empty folder openssh-server itself makes at boot.
	if _, err := os.Stat("/run/sshd"); errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir("/run/sshd", 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			t.Skipf("cannot make /run/sshd: %v", err)
		}
	}
}

// KeyPair makes an ed25519 key pair without passphrase at path and
// path.pub, and returns the public key line.
func KeyPair(t testing.TB, path string) string {
	t.Helper()
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", filepath.Base(path), "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(pub))
}

// Config is one server.
type Config struct {
	// Dir receives the server's sshd_config.
	Dir string
	// Address to listen on; 127.0.0.1 if empty.
	Address string
	// Port to listen on. 0 picks a free one, by listening on Address
	// briefly from this process: so only with no Wrap.
	Port int
	// HostKey is the host's private key file; HostCertificate, if set,
	// its certificate.
	HostKey, HostCertificate string
	// AuthorizedKeys is the file of keys that may log in (as any user).
	AuthorizedKeys string
	// Extra lines for sshd_config.
	Extra []string
	// Wrap runs sshd through another command, for example
	// {"ip", "netns", "exec", NAME} to serve inside a network namespace.
	// The command must exec sshd, not fork it, so that signals reach it.
	Wrap []string
}

// Server is a running sshd.
type Server struct {
	Address string
	Port    int
	log     *syncbuf.Buffer
}

// Log is what the server has logged so far.
func (s *Server) Log() string { return s.log.String() }

// Start runs sshd for c in the foreground and returns once it listens.
// When the test ends it waits (a few seconds at most) for the server's
// connections to end, kills it and reaps what it left; a failed test gets
// the server's log.
func Start(t testing.TB, c Config) *Server {
	t.Helper()
	if c.Address == "" {
		c.Address = "127.0.0.1"
	}
	if c.Port == 0 {
		if len(c.Wrap) > 0 {
			t.Fatal("testsshd: a wrapped sshd needs a port")
		}
		l, err := net.Listen("tcp", net.JoinHostPort(c.Address, "0"))
		if err != nil {
			t.Fatal(err)
		}
		c.Port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	// SetEnv SHLVL=1: Debian's bash sources ~/.bashrc for a command that
	// sshd runs only in a top-level shell (SHLVL < 2), and the build
	// host's root profile (pyenv, conda) then writes into the output
	// the tests compare; the login is still root's own shell.
	var conf strings.Builder
	fmt.Fprintf(&conf, `Port %d
ListenAddress %s
HostKey %s
PidFile none
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
SetEnv SHLVL=1
`, c.Port, c.Address, c.HostKey, c.AuthorizedKeys)
	if c.HostCertificate != "" {
		fmt.Fprintf(&conf, "HostCertificate %s\n", c.HostCertificate)
	}
	for _, l := range c.Extra {
		conf.WriteString(l + "\n")
	}
	confPath := filepath.Join(c.Dir, "sshd_config")
	if err := os.WriteFile(confPath, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	// sshd's privilege-separated children can outlive their parent; as a
	// subreaper this process inherits and reaps them, instead of leaving
	// them to an init that may not reap (as in some containers).
	subreaper()
	// -e logs to stderr, so a config error shows in the log below.
	argv := append(append([]string(nil), c.Wrap...), Path, "-D", "-e", "-f", confPath)
	log := &syncbuf.Buffer{}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	// A test binary that dies (a go test timeout panics past every
	// cleanup) takes its listeners along rather than leave them serving.
	// The signal follows the thread that forked: callers must not end
	// threads (netns.Do) after starting servers.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listeners.Store(cmd.Process.Pid, true)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		// Let connection processes end first: killed, the listener could
		// no longer reap them, and they would linger as zombies.
		waitNoChildren(cmd.Process.Pid)
		cmd.Process.Kill()
		<-done
		listeners.Delete(cmd.Process.Pid)
		reapOrphans()
		if t.Failed() {
			t.Logf("sshd %s port %d log:\n%s", c.Address, c.Port, log.String())
		}
	})
	// sshd says when it listens; this works inside a namespace too, where
	// this process could not connect to probe.
	ready := fmt.Sprintf("Server listening on %s port %d.", c.Address, c.Port)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(log.String(), ready) {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("sshd exited: %v\n%s", err, log.String())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd does not listen on %s port %d:\n%s", c.Address, c.Port, log.String())
		}
	}
	return &Server{Address: c.Address, Port: c.Port, log: log}
}

// subreaper makes this process the reaper of its orphaned descendants
// (prctl PR_SET_CHILD_SUBREAPER).
func subreaper() {
	const prSetChildSubreaper = 36
	syscall.Syscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
}

// listeners holds the pids of the sshd listeners still running.
var listeners sync.Map

// reapOrphans waits for the sshd processes this process inherited, for a
// few seconds at most. Only those, by pid: other children belong to
// os/exec.
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

// childProcs returns the state of every child of ppid named comm (any
// name if comm is empty).
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
// child processes.
func waitNoChildren(pid int) {
	for range 250 {
		if len(childProcs(pid, "")) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
