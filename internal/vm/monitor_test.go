package vm

import (
	"bufio"
	"context"
	"fmt"
	"image/color"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeHMP answers on a unix socket as QEMU's human monitor does: a
// greeting and a prompt, then for each command its echo (with the terminal
// escapes QEMU's line editor writes), its output, and a prompt. A
// screendump writes a 2x1 PPM to the path given.
type fakeHMP struct {
	mu       sync.Mutex
	commands []string
}

func (f *fakeHMP) serve(t *testing.T, sock string) {
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprint(c, "QEMU 7.2.19 monitor - type 'help' for more information\r\n(qemu) ")
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					cmd := strings.TrimSpace(line)
					f.mu.Lock()
					f.commands = append(f.commands, cmd)
					f.mu.Unlock()
					out := ""
					switch {
					case strings.HasPrefix(cmd, "screendump "):
						os.WriteFile(strings.TrimPrefix(cmd, "screendump "), []byte("P6\n# by QEMU\n2 1\n255\n\xff\x00\x00\x00\x00\xff"), 0o644)
					case strings.HasPrefix(cmd, "sendkey "):
					default:
						out = "unknown command: '" + cmd + "'\r\n"
					}
					fmt.Fprintf(c, "%s\x1b[K\r\n%s(qemu) ", cmd, out)
				}
			}()
		}
	}()
}

// fakeMachine is a machine whose monitor socket, in its folder dir, is
// served by f.
func fakeMachine(t *testing.T) (dir string, f *fakeHMP, m *Machine) {
	dir, err := os.MkdirTemp("", "cdvm") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f = &fakeHMP{}
	f.serve(t, filepath.Join(dir, MonitorSocket))
	return dir, f, &Machine{Spec: Spec{Dir: dir}}
}

func TestMonitorTypeAndScreendump(t *testing.T) {
	dir, f, m := fakeMachine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if err := m.Type(ctx, "startx -- :1\n"); err != nil {
		t.Fatal(err)
	}
	want := []string{"sendkey s", "sendkey t", "sendkey a", "sendkey r", "sendkey t", "sendkey x", "sendkey spc", "sendkey minus",
		"sendkey minus", "sendkey spc", "sendkey shift-semicolon", "sendkey 1", "sendkey ret"}
	if !slices.Equal(f.commands, want) {
		t.Errorf("typed %q, want %q", f.commands, want)
	}
	if out, err := m.Monitor(ctx, "bogus"); err != nil || out != "unknown command: 'bogus'" {
		t.Errorf("monitor output %q, %v; want QEMU's error text, without the echo", out, err)
	}

	img, err := m.Screendump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 2 || b.Dy() != 1 {
		t.Fatalf("screendump %v, want 2x1", b)
	}
	if got := color.RGBAModel.Convert(img.At(0, 0)); got != (color.RGBA{255, 0, 0, 255}) {
		t.Errorf("pixel (0,0) = %v, want red", got)
	}
	if got := color.RGBAModel.Convert(img.At(1, 0)); got != (color.RGBA{0, 0, 255, 255}) {
		t.Errorf("pixel (1,0) = %v, want blue", got)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "screendump-*")); len(left) != 0 {
		t.Errorf("screendump left %v", left)
	}
}

func TestKeyFor(t *testing.T) {
	for r, want := range map[rune]string{'a': "a", 'Z': "shift-z", '7': "7", '&': "shift-7", ' ': "spc", '\n': "ret",
		'_': "shift-minus", '/': "slash", '~': "shift-grave_accent", '"': "shift-apostrophe"} {
		if got, err := KeyFor(r); err != nil || got != want {
			t.Errorf("KeyFor(%q) = %q, %v; want %q", r, got, err, want)
		}
	}
	if _, err := KeyFor('é'); err == nil {
		t.Error("KeyFor('é'): no error")
	}
	m := &Machine{Spec: Spec{Dir: t.TempDir()}}
	if err := m.Type(context.Background(), "naïve"); err == nil || !strings.Contains(err.Error(), "ï") {
		t.Errorf("Type with a character no key types: %v", err)
	}
}

func TestDecodePPMErrors(t *testing.T) {
	for _, bad := range []string{"P3\n1 1\n255\n000", "P6\n1 1\n65535\n\x00\x00\x00\x00\x00\x00", "P6\n2 2\n255\n\x00\x00\x00", "P6\n1"} {
		if _, err := DecodePPM([]byte(bad)); err == nil {
			t.Errorf("DecodePPM(%q): no error", bad)
		}
	}
}

func TestSysRqKeys(t *testing.T) {
	got, err := SysRqKeys("tw9")
	if want := []string{"alt-sysrq-t", "alt-sysrq-w", "alt-sysrq-9"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("SysRqKeys(tw9) = %q, %v; want %q", got, err, want)
	}
	for _, bad := range []string{"", "T", "t w", "-", "é"} {
		if got, err := SysRqKeys(bad); err == nil {
			t.Errorf("SysRqKeys(%q) = %q, no error", bad, got)
		}
	}
}

func TestMonitorSysRq(t *testing.T) {
	_, f, m := fakeMachine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.SysRq(ctx, "hw"); err != nil {
		t.Fatal(err)
	}
	if want := []string{"sendkey alt-sysrq-h", "sendkey alt-sysrq-w"}; !slices.Equal(f.commands, want) {
		t.Errorf("sent %q, want %q", f.commands, want)
	}
	// A bad key is refused before anything is pressed.
	if err := m.SysRq(ctx, "wX"); err == nil || len(f.commands) != 2 {
		t.Errorf("SysRq(wX) = %v after %d commands; want an error and nothing sent", err, len(f.commands))
	}
}
