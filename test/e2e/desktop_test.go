//go:build e2e

package e2e

import (
	"context"
	"fmt"
	stdimage "image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/testsupport"
	"github.com/clusterdebian/clusterdebian/internal/vm"
)

// desktopUsers is what TestRAMRootPVM's image adds for the desktop step,
// besides image.desktop = desktopWM: a known password, typed at the
// console as a person would.
const desktopUsers = `
[[users]]
name = "user"
password = "` + desktopPassword + `"
`

const (
	desktopWM       = "icewm"
	desktopPassword = "startx-e2e"
)

// checkDesktop is the desktop step of a cluster whose image has
// image.desktop and whose node1 has a VGA display (vm.UpOptions.Display):
// on node1 (m, g) it logs in as the user on the console (tty1) by typing
// on the VM's keyboard, types startx, and checks that X, the window
// manager and the terminal beside it run; the screen, from QEMU's
// screendump, is saved as a test artefact and must not be blank. Nothing
// starts X before the user does, on node1 or on the nodes (no display
// manager).
func checkDesktop(t *testing.T, ctx context.Context, m *vm.Machine, g testsupport.Guest, nodes ...testsupport.Guest) {
	dir := t.TempDir()
	var state string
	testsupport.WaitFor(t, ctx, "the console's login prompt (getty on tty1)", 2*time.Second, 5*time.Minute, func() bool {
		cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
		defer ccancel()
		stdout, stderr, _, err := g.Exec(cctx, "/bin/sh", "-c", "systemctl is-active getty@tty1")
		state = fmt.Sprint(stdout, stderr, err)
		return err == nil && strings.TrimSpace(stdout) == "active"
	}, func() string { return state })

	for _, n := range nodes {
		if out := n.Sh(t, ctx, "if systemctl cat display-manager.service >/dev/null 2>&1; then echo 'a display manager'; fi; pgrep -a Xorg || true"); strings.TrimSpace(out) != "" {
			t.Errorf("%s runs X or has a display manager:\n%s", n.Name, out)
		}
	}
	// Nothing started X: no display manager, no X server.
	if out := g.Sh(t, ctx, "if systemctl cat display-manager.service >/dev/null 2>&1; then echo 'a display manager'; fi; pgrep -a Xorg || true"); strings.TrimSpace(out) != "" {
		t.Errorf("X or a display manager runs before anyone typed startx:\n%s", out)
	}

	// Log in on tty1 as a person does. login reads the password once it
	// has asked for it; the agent says when login runs on tty1.
	loggedIn := func() bool {
		out, _ := g.Try(t, ctx, "who | grep -E '^user +tty1 ' || true")
		return strings.TrimSpace(out) != ""
	}
	for attempt := 1; attempt <= 3 && !loggedIn(); attempt++ {
		if err := m.Type(ctx, "user\n"); err != nil {
			t.Fatal(err)
		}
		testsupport.WaitFor(t, ctx, "login asking for the password on tty1", time.Second, 2*time.Minute, func() bool {
			_, code := g.Try(t, ctx, "pgrep -t tty1 -x login")
			return code == 0
		}, nil)
		time.Sleep(2 * time.Second) // until login has switched echo off and reads
		if err := m.Type(ctx, desktopPassword+"\n"); err != nil {
			t.Fatal(err)
		}
		_ = testsupport.Poll(ctx, 2*time.Second, time.Minute, loggedIn)
	}
	if !loggedIn() {
		t.Fatalf("the user is not logged in on tty1 after typing the name and password:\n%s", g.Sh(t, ctx, "who; loginctl list-sessions; journalctl -b -u getty@tty1 --no-pager | tail -n 20"))
	}
	t.Logf("logged in on tty1:\n%s", g.Sh(t, ctx, "loginctl list-sessions --no-legend"))

	if err := m.Type(ctx, "startx\n"); err != nil {
		t.Fatal(err)
	}
	running := func(name string) bool {
		_, code := g.Try(t, ctx, "pgrep -u user -x "+name)
		return code == 0
	}
	testsupport.WaitFor(t, ctx, "X, the window manager "+desktopWM+" and a terminal, started by startx", 3*time.Second, 5*time.Minute, func() bool {
		return running("Xorg") && running(desktopWM) && running("xterm")
	}, func() string {
		out, _ := g.Try(t, ctx, "ps -u user -o pid,comm,args; tail -n 30 /home/user/.local/share/xorg/Xorg.0.log; journalctl -b --no-pager | grep -iE 'xorg|dbus|logind' | tail -n 20")
		return out
	})
	t.Logf("running as the user:\n%s", g.Sh(t, ctx, "ps -u user -o pid,comm"))

	// The screen: not blank once the window manager and the terminal have
	// drawn.
	var img stdimage.Image
	var colours, dominant int
	testsupport.WaitFor(t, ctx, "a screen that is not blank", 3*time.Second, 3*time.Minute, func() bool {
		var err error
		if img, err = m.Screendump(ctx); err != nil {
			t.Fatalf("screendump: %v", err)
		}
		colours, dominant = pixelVariety(img)
		b := img.Bounds()
		return colours >= 16 && dominant < b.Dx()*b.Dy()*9/10
	}, func() string { return fmt.Sprintf("%d colours, the commonest on %d pixels", colours, dominant) })
	shot := filepath.Join(dir, "desktop.png")
	f, err := os.Create(shot)
	if err != nil {
		t.Fatal(err)
	}
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
	f.Close()
	saveArtifact(t, shot, "desktop-"+desktopWM+".png")
	b := img.Bounds()
	t.Logf("screen %dx%d: %d colours, the commonest on %.0f%% of it", b.Dx(), b.Dy(), colours, 100*float64(dominant)/float64(b.Dx()*b.Dy()))
}

// pixelVariety counts an image's distinct colours and the pixels of its
// commonest one.
func pixelVariety(img stdimage.Image) (colours, dominant int) {
	count := map[[3]uint32]int{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			count[[3]uint32{r, g, bl}]++
		}
	}
	for _, n := range count {
		dominant = max(dominant, n)
	}
	return len(count), dominant
}
