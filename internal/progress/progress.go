// Package progress shows long work to the user: numbered stages with elapsed
// time and the latest status line, redrawn in place on a terminal and printed
// as plain lines (at a calm rate) when the output is a log or a pipe.
package progress

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/terminal"
)

// Reporter prints stage progress to one writer.
type Reporter struct {
	out      io.Writer
	tty      bool
	mu       sync.Mutex
	interval time.Duration // plain mode: the least time between status lines
}

// New returns a Reporter writing to out. It redraws lines in place when out is
// a terminal that can (terminal.CanRedraw).
func New(out io.Writer) *Reporter {
	return &Reporter{out: out, tty: terminal.CanRedraw(out), interval: 20 * time.Second}
}

// Printf prints a plain line.
func (r *Reporter) Printf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.out, format+"\n", args...)
}

// Stage is one running stage.
type Stage struct {
	r        *Reporter
	label    string
	start    time.Time
	mu       sync.Mutex
	status   string
	percent  int
	lastLine time.Time
	stop     chan struct{}
	done     sync.WaitGroup
}

// Stage starts stage i of n.
func (r *Reporter) Stage(i, n int, name string) *Stage {
	s := &Stage{r: r, label: fmt.Sprintf("[%d/%d] %-9s", i, n, name), start: time.Now(), percent: -1, stop: make(chan struct{})}
	s.lastLine = s.start
	if r.tty {
		s.done.Add(1)
		go s.redraw()
	} else {
		r.Printf("%s started", s.label)
	}
	return s
}

// Status sets the stage's latest status line (a tool's output, say).
func (s *Stage) Status(msg string) {
	msg = strings.TrimSpace(msg)
	if msg == "" {
		return
	}
	s.mu.Lock()
	s.status = msg
	due := time.Since(s.lastLine) >= s.r.interval
	if due {
		s.lastLine = time.Now()
	}
	s.mu.Unlock()
	if !s.r.tty && due {
		s.r.Printf("%s %s  %s", s.label, elapsed(time.Since(s.start)), msg)
	}
}

// Percent sets a completion percentage, or -1 for none.
func (s *Stage) Percent(p int) {
	s.mu.Lock()
	s.percent = p
	s.mu.Unlock()
}

func (s *Stage) redraw() {
	defer s.done.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		s.draw()
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

func (s *Stage) draw() {
	s.mu.Lock()
	line := fmt.Sprintf("%s %s", s.label, elapsed(time.Since(s.start)))
	if s.percent >= 0 {
		line += " " + bar(s.percent, 20)
	}
	status := s.status
	s.mu.Unlock()
	if status != "" {
		line += "  " + status
	}
	if len(line) > 110 {
		line = line[:110]
	}
	s.r.mu.Lock()
	fmt.Fprintf(s.r.out, "\r\033[K%s", line)
	s.r.mu.Unlock()
}

func bar(p, width int) string {
	p = max(0, min(p, 100))
	n := p * width / 100
	return fmt.Sprintf("[%s%s] %3d%%", strings.Repeat("#", n), strings.Repeat("-", width-n), p)
}

// Done ends the stage with a closing note ("done", "cached", "failed").
func (s *Stage) Done(note string) time.Duration {
	d := time.Since(s.start)
	if s.r.tty {
		close(s.stop)
		s.done.Wait()
		s.r.mu.Lock()
		fmt.Fprint(s.r.out, "\r\033[K")
		s.r.mu.Unlock()
	}
	s.r.Printf("%s %s  %s", s.label, elapsed(d), note)
	return d
}

func elapsed(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%02d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}
