package vm

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/syncbuf"
)

// fakeAgent listens on a unix socket like QEMU's chardev for the guest agent
// and answers as qemu-ga does: 0xFF resets its parser, guest-sync-delimited
// is answered after a 0xFF byte, every answer ends with a newline.
type fakeAgent struct {
	sock  string
	stale string // written to each new client before anything else
	mute  bool   // accept, read, never answer: no agent in the guest
	// exec, when set, runs guest-exec: it returns the output and exit code,
	// or qgaErr for the agent to fail the command.
	exec  func(path string, args []string) (out, errOut string, code int, qgaErr string)
	execs map[int][3]any // pid -> out, errOut, code

	mu       sync.Mutex
	requests []string
	polls    int
}

func startFakeAgent(t *testing.T, a *fakeAgent) *fakeAgent {
	t.Helper()
	a.sock = filepath.Join(t.TempDir(), "qga.sock")
	ln, err := net.Listen("unix", a.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go a.serve(conn)
		}
	}()
	return a
}

// ffAsSpace reads like the agent's parser: 0xFF only separates.
type ffAsSpace struct{ r io.Reader }

func (f ffAsSpace) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	for i := range p[:n] {
		if p[i] == 0xff {
			p[i] = ' '
		}
	}
	return n, err
}

func (a *fakeAgent) serve(conn net.Conn) {
	defer conn.Close()
	if a.stale != "" {
		conn.Write([]byte(a.stale))
	}
	dec := json.NewDecoder(ffAsSpace{conn})
	reply := func(v any) {
		data, _ := json.Marshal(v)
		conn.Write(append(data, '\n'))
	}
	for {
		var req struct {
			Execute   string          `json:"execute"`
			Arguments json.RawMessage `json:"arguments"`
		}
		if err := dec.Decode(&req); err != nil {
			return
		}
		a.mu.Lock()
		a.requests = append(a.requests, req.Execute+" "+string(req.Arguments))
		a.mu.Unlock()
		if a.mute {
			continue
		}
		switch req.Execute {
		case "guest-sync-delimited":
			var args struct {
				ID json.Number `json:"id"`
			}
			json.Unmarshal(req.Arguments, &args)
			// A stale answer of an earlier client first, then ours.
			conn.Write([]byte(`{"return": {"pid": 1}}` + "\n"))
			conn.Write([]byte{0xff})
			conn.Write([]byte(`{"return": ` + args.ID.String() + "}\n"))
		case "guest-ping":
			reply(map[string]any{"return": map[string]any{}})
		case "guest-get-host-name":
			reply(map[string]any{"return": map[string]any{"host-name": "node12"}})
		case "guest-exec":
			var args struct {
				Path    string   `json:"path"`
				Arg     []string `json:"arg"`
				Capture bool     `json:"capture-output"`
			}
			json.Unmarshal(req.Arguments, &args)
			if a.exec != nil {
				out, errOut, code, qgaErr := a.exec(args.Path, args.Arg)
				if qgaErr != "" {
					reply(map[string]any{"error": map[string]any{"class": "GenericError", "desc": qgaErr}})
					continue
				}
				a.mu.Lock()
				if a.execs == nil {
					a.execs = map[int][3]any{}
				}
				pid := 1000 + len(a.execs)
				a.execs[pid] = [3]any{out, errOut, code}
				a.mu.Unlock()
				reply(map[string]any{"return": map[string]any{"pid": pid}})
				continue
			}
			switch {
			case args.Path == "/nonexistent":
				reply(map[string]any{"error": map[string]any{"class": "GenericError", "desc": "Failed to execute child process “/nonexistent” (No such file or directory)"}})
			case args.Path == "killed":
				reply(map[string]any{"return": map[string]any{"pid": 9}})
			case args.Path == "echo" && args.Capture && args.Arg != nil:
				reply(map[string]any{"return": map[string]any{"pid": 4242}})
			default:
				reply(map[string]any{"error": map[string]any{"class": "GenericError", "desc": "bad request " + string(req.Arguments)}})
			}
		case "guest-exec-status":
			var args struct {
				PID int `json:"pid"`
			}
			json.Unmarshal(req.Arguments, &args)
			a.mu.Lock()
			a.polls++
			polls := a.polls
			e, ok := a.execs[args.PID]
			a.mu.Unlock()
			if ok {
				reply(map[string]any{"return": map[string]any{
					"exited": true, "exitcode": e[2],
					"out-data": base64.StdEncoding.EncodeToString([]byte(e[0].(string))),
					"err-data": base64.StdEncoding.EncodeToString([]byte(e[1].(string))),
				}})
				continue
			}
			switch {
			case args.PID == 9:
				reply(map[string]any{"return": map[string]any{"exited": true, "signal": 9}})
			case polls < 3:
				reply(map[string]any{"return": map[string]any{"exited": false}})
			default:
				reply(map[string]any{"return": map[string]any{
					"exited": true, "exitcode": 3,
					"out-data": base64.StdEncoding.EncodeToString([]byte("hello\n")),
					"err-data": base64.StdEncoding.EncodeToString([]byte("warn\n")),
				}})
			}
		default:
			reply(map[string]any{"error": map[string]any{"class": "CommandNotFound", "desc": "The command " + req.Execute + " has not been found"}})
		}
	}
}

func TestQGAExec(t *testing.T) {
	// Stale bytes from an earlier client, half a JSON value among them, and a
	// stale delimiter with a stale answer: all skipped by the sync.
	a := startFakeAgent(t, &fakeAgent{stale: `{"return": 5}` + "\n" + `{"retu` + "\xff" + `{"return": 77}` + "\n"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, errOut, code, err := QGAExec(ctx, a.sock, "echo", []string{"hello"})
	if err != nil || string(out) != "hello\n" || string(errOut) != "warn\n" || code != 3 {
		t.Fatalf("QGAExec = %q, %q, %d, %v", out, errOut, code, err)
	}
	a.mu.Lock()
	reqs := strings.Join(a.requests, "\n")
	a.mu.Unlock()
	if !strings.HasPrefix(reqs, "guest-sync-delimited") || !strings.Contains(reqs, `guest-exec {"arg":["hello"],"capture-output":true,"path":"echo"}`) ||
		!strings.Contains(reqs, `guest-exec-status {"pid":4242}`) {
		t.Errorf("requests:\n%s", reqs)
	}

	// No arguments: "arg" is an empty list, not null.
	if _, _, _, err := QGAExec(ctx, a.sock, "true", nil); err == nil || !strings.Contains(err.Error(), `"arg":[]`) {
		t.Errorf("QGAExec without args: %v", err)
	}

	// A command killed by a signal exits 128+signal, as in a shell.
	if _, _, code, err := QGAExec(ctx, a.sock, "killed", nil); err != nil || code != 137 {
		t.Errorf("killed command: code %d, %v", code, err)
	}

	// The agent's own error comes back as a QGAError.
	_, _, _, err = QGAExec(ctx, a.sock, "/nonexistent", nil)
	var qe *QGAError
	if !errors.As(err, &qe) || qe.Command != "guest-exec" || !strings.Contains(err.Error(), "No such file") {
		t.Errorf("QGAExec of a missing program: %v", err)
	}
}

func TestQGAHostnameAndPing(t *testing.T) {
	a := startFakeAgent(t, &fakeAgent{})
	ctx := context.Background()
	if err := QGAPing(ctx, a.sock); err != nil {
		t.Error(err)
	}
	if h, err := QGAHostname(ctx, a.sock); err != nil || h != "node12" {
		t.Errorf("QGAHostname = %q, %v", h, err)
	}
}

// QEMU accepts the connection whether or not an agent runs in the guest;
// no answer to the sync means no agent.
func TestQGANoAgent(t *testing.T) {
	old := QGASyncTimeout
	QGASyncTimeout = 300 * time.Millisecond
	t.Cleanup(func() { QGASyncTimeout = old })
	a := startFakeAgent(t, &fakeAgent{mute: true})
	start := time.Now()
	if err := QGAPing(context.Background(), a.sock); !errors.Is(err, ErrNoAgent) {
		t.Errorf("QGAPing of a mute agent: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %s to give up", d)
	}
	// A context shorter than the sync timeout wins.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := QGAHostname(ctx, a.sock); err == nil {
		t.Error("no error from a mute agent")
	}
	if _, err := QGAHostname(context.Background(), filepath.Join(t.TempDir(), "none.sock")); err == nil || errors.Is(err, ErrNoAgent) {
		t.Errorf("missing socket: %v", err)
	}
}

func TestAttachConsole(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "console.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.Write([]byte("node1 login: "))
		data, _ := io.ReadAll(conn)
		got <- string(data)
	}()
	var out syncbuf.Buffer
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- AttachConsole(context.Background(), sock, pr, &out, true) }()
	pw.Write([]byte("root\r"))
	// The escape byte detaches, and neither it nor what follows reaches the VM.
	time.Sleep(100 * time.Millisecond)
	pw.Write([]byte("x\x1dmore"))
	select {
	case err := <-done:
		if !errors.Is(err, ErrDetached) {
			t.Errorf("AttachConsole = %v, want ErrDetached", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Ctrl-] did not detach")
	}
	if s := <-got; s != "root\rx" {
		t.Errorf("the console received %q", s)
	}
	if out.String() != "node1 login: " {
		t.Errorf("shown %q", out.String())
	}
}
