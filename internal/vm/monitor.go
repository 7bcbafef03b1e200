package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// MonitorSocket is the name of a machine's QEMU monitor socket (HMP, the
// human monitor) in its Spec.Dir.
const MonitorSocket = "monitor.sock"

// hmpPrompt ends every answer of QEMU's human monitor.
const hmpPrompt = "(qemu) "

// Monitor runs one command on the machine's QEMU monitor and returns what
// QEMU printed for it (without its echo of the command and the prompt).
// QEMU's own errors for a command come back as its output, not as err:
// err is about reaching the monitor.
func (m *Machine) Monitor(ctx context.Context, command string) (string, error) {
	return monitor(ctx, filepath.Join(m.Spec.Dir, MonitorSocket), command)
}

func monitor(ctx context.Context, sock, command string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return "", fmt.Errorf("QEMU monitor %s: %w", sock, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(time.Minute))
	}
	r := bufio.NewReader(conn)
	// The greeting ends with the first prompt.
	if _, err := readUntilPrompt(r); err != nil {
		return "", fmt.Errorf("QEMU monitor %s: greeting: %w", sock, err)
	}
	if _, err := io.WriteString(conn, command+"\n"); err != nil {
		return "", fmt.Errorf("QEMU monitor %s: %w", sock, err)
	}
	out, err := readUntilPrompt(r)
	if err != nil {
		return "", fmt.Errorf("QEMU monitor %s: %s: %w", sock, command, err)
	}
	return hmpOutput(out), nil
}

// readUntilPrompt reads up to and including the next prompt.
func readUntilPrompt(r *bufio.Reader) (string, error) {
	var b bytes.Buffer
	for !bytes.HasSuffix(b.Bytes(), []byte(hmpPrompt)) {
		c, err := r.ReadByte()
		if err != nil {
			return b.String(), err
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}

// hmpOutput strips the monitor's echo of the command (its first line,
// written with terminal escapes as it is "typed") and the closing prompt.
func hmpOutput(raw string) string {
	raw = strings.TrimSuffix(raw, hmpPrompt)
	_, out, _ := strings.Cut(strings.ReplaceAll(raw, "\r", ""), "\n")
	return strings.TrimSpace(out)
}

// qcodes names the keys of the characters QEMU's sendkey types without
// shift; shifted lists those typed with shift, by the unshifted key.
var (
	qcodes = map[rune]string{
		' ': "spc", '\n': "ret", '\t': "tab", '-': "minus", '=': "equal", '[': "bracket_left",
		']': "bracket_right", '\\': "backslash", ';': "semicolon", '\'': "apostrophe", '`': "grave_accent",
		',': "comma", '.': "dot", '/': "slash",
	}
	shifted = map[rune]rune{
		'!': '1', '@': '2', '#': '3', '$': '4', '%': '5', '^': '6', '&': '7', '*': '8', '(': '9', ')': '0',
		'_': '-', '+': '=', '{': '[', '}': ']', '|': '\\', ':': ';', '"': '\'', '~': '`', '<': ',', '>': '.', '?': '/',
	}
)

// KeyFor returns the sendkey key combination that types r on a US keyboard
// layout (the console's default), e.g. "shift-a" for 'A', "spc" for ' '.
func KeyFor(r rune) (string, error) {
	switch {
	case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
		return string(r), nil
	case r >= 'A' && r <= 'Z':
		return "shift-" + string(r-'A'+'a'), nil
	}
	if q, ok := qcodes[r]; ok {
		return q, nil
	}
	if base, ok := shifted[r]; ok {
		k, err := KeyFor(base)
		return "shift-" + k, err
	}
	return "", fmt.Errorf("no key types %q", r)
}

// keyGap is the pause between two keys: QEMU queues them, and a guest
// under software emulation reads them at its own pace.
const keyGap = 50 * time.Millisecond

// Type types text on the machine's keyboard, as a person would: one key at
// a time, through the monitor's sendkey. It fails on a character no key
// of a US layout types, before typing anything.
func (m *Machine) Type(ctx context.Context, text string) error {
	var keys []string
	for _, r := range text {
		k, err := KeyFor(r)
		if err != nil {
			return err
		}
		keys = append(keys, k)
	}
	for _, k := range keys {
		out, err := m.Monitor(ctx, "sendkey "+k)
		if err != nil {
			return err
		}
		if out != "" {
			return fmt.Errorf("sendkey %s: %s", k, out)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(keyGap):
		}
	}
	return nil
}

// Screendump returns what the machine's display shows now (its VGA card:
// Spec.VGA), through the monitor's screendump, which writes a PPM file.
func (m *Machine) Screendump(ctx context.Context) (image.Image, error) {
	f, err := os.CreateTemp(m.Spec.Dir, "screendump-*.ppm")
	if err != nil {
		return nil, err
	}
	path := f.Name()
	f.Close()
	defer os.Remove(path)
	out, err := m.Monitor(ctx, "screendump "+path)
	if err != nil {
		return nil, err
	}
	if out != "" {
		return nil, fmt.Errorf("screendump: %s", out)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return DecodePPM(data)
}

// DecodePPM decodes a binary PPM (P6) image with 8-bit samples, as QEMU's
// screendump writes it.
func DecodePPM(data []byte) (image.Image, error) {
	fields := make([]int, 0, 3)
	rest := data
	if !bytes.HasPrefix(rest, []byte("P6")) {
		return nil, errors.New("not a binary PPM (P6) image")
	}
	rest = rest[2:]
	for len(fields) < 3 {
		rest = bytes.TrimLeft(rest, " \t\r\n")
		if len(rest) > 0 && rest[0] == '#' {
			if i := bytes.IndexByte(rest, '\n'); i >= 0 {
				rest = rest[i+1:]
				continue
			}
			return nil, errors.New("PPM: header ends in a comment")
		}
		end := bytes.IndexAny(rest, " \t\r\n")
		if end <= 0 {
			return nil, errors.New("PPM: short header")
		}
		n, err := strconv.Atoi(string(rest[:end]))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("PPM: bad header value %q", rest[:end])
		}
		fields = append(fields, n)
		rest = rest[end:]
	}
	w, h, maxval := fields[0], fields[1], fields[2]
	if maxval != 255 {
		return nil, fmt.Errorf("PPM: samples up to %d, want 8-bit (255)", maxval)
	}
	rest = rest[1:] // the one white space character after maxval
	if len(rest) < w*h*3 {
		return nil, fmt.Errorf("PPM: %d bytes of pixels for %dx%d", len(rest), w, h)
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i := (y*w + x) * 3
			img.Set(x, y, color.RGBA{rest[i], rest[i+1], rest[i+2], 255})
		}
	}
	return img, nil
}

// SysRqKeys returns the sendkey combinations that press Alt-SysRq with each
// of keys in turn ("tw": alt-sysrq-t, alt-sysrq-w). A SysRq command is one
// lower-case letter or digit (the kernel's sysrq key table; "h" lists
// them). It fails on anything else, or on no key at all.
func SysRqKeys(keys string) ([]string, error) {
	if keys == "" {
		return nil, errors.New("no SysRq key (h lists them: t the tasks, w the blocked ones)")
	}
	var out []string
	for _, r := range keys {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') {
			return nil, fmt.Errorf("%q is no SysRq key: a SysRq command is one lower-case letter or digit (h lists them)", r)
		}
		out = append(out, "alt-sysrq-"+string(r))
	}
	return out, nil
}

// sysrqGap is the pause between two SysRq commands: a task dump (t) of a
// guest under software emulation takes a while to reach the serial line,
// and the next command's output should not interleave with it.
const sysrqGap = 2 * time.Second

// SysRq presses Alt-SysRq with each of keys (see SysRqKeys) on the
// machine's keyboard, through the monitor's sendkey. The kernel answers on
// its consoles, so the output lands in the serial log (SerialPath); a
// kernel that has SysRq off says "This sysrq operation is disabled" there
// instead (ClusterDebian's machines boot with contract.ParamSysRq).
func (m *Machine) SysRq(ctx context.Context, keys string) error {
	combos, err := SysRqKeys(keys)
	if err != nil {
		return err
	}
	for i, k := range combos {
		if i > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(sysrqGap):
			}
		}
		out, err := m.Monitor(ctx, "sendkey "+k)
		if err != nil {
			return err
		}
		if out != "" {
			return fmt.Errorf("sendkey %s: %s", k, out)
		}
	}
	return nil
}
