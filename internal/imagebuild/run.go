package imagebuild

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/progress"
)

// ToolError is a failed external tool, with the last lines it printed.
type ToolError struct {
	Tool string
	Err  error
	Tail []string
}

func (e *ToolError) Error() string {
	return fmt.Sprintf("%s failed: %v\n  last lines:\n    %s", e.Tool, e.Err, strings.Join(e.Tail, "\n    "))
}

func (e *ToolError) Unwrap() error { return e.Err }

// runner runs external tools for one stage: their output goes to the build log,
// their latest line to the progress display, and they live in their own
// process group so that a cancelled build stops all of them.
type runner struct {
	log   io.Writer
	stage *progress.Stage
}

const tailLines = 25

var percentRE = regexp.MustCompile(`(\d{1,3})%\s*$`)

func (r *runner) run(ctx context.Context, name string, args ...string) error {
	return r.runIn(ctx, "", name, args...)
}

func (r *runner) runIn(ctx context.Context, dir, name string, args ...string) error {
	fmt.Fprintf(r.log, "\n$ %s %s\n", name, strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The whole group: mmdebstrap's apt and dpkg, mksquashfs's threads.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	}
	cmd.WaitDelay = 20 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var tail []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		sc.Split(scanLinesOrCR)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), " \t")
			if line == "" {
				continue
			}
			fmt.Fprintln(r.log, line)
			tail = append(tail, line)
			if len(tail) > tailLines {
				tail = tail[1:]
			}
			if r.stage != nil {
				if m := percentRE.FindStringSubmatch(line); m != nil {
					p, _ := strconv.Atoi(m[1])
					r.stage.Percent(p)
				} else {
					r.stage.Status(line)
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	start := time.Now()
	err := cmd.Run()
	pw.Close()
	wg.Wait()
	if r.stage != nil {
		r.stage.Percent(-1)
	}
	fmt.Fprintf(r.log, "# %s exited after %s: %v\n", name, time.Since(start).Round(time.Millisecond), err)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: interrupted", name)
		}
		return &ToolError{Tool: name, Err: err, Tail: tail}
	}
	return nil
}

// output runs a quick tool and returns its standard output.
func output(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// scanLinesOrCR splits on \n and on \r, so progress bars that redraw with \r
// come through as lines.
func scanLinesOrCR(data []byte, atEOF bool) (int, []byte, error) {
	for i, b := range data {
		if b == '\n' || b == '\r' {
			return i + 1, data[:i], nil
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}
