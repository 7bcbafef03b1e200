//go:build e2e

package vm

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/netns"
	"github.com/clusterdebian/clusterdebian/internal/syncbuf"
)

// TestClusterHeadOnly boots a virtual cluster of node1 alone from the ISO in
// $CLUSTERDEBIAN_VM_ISO and drives it the way `clusterdebian vm` does: list,
// console, exec, stop, down. The whole
// cluster with nodes is test/e2e's. Root only; TCG, a few minutes.
//
//	sudo CLUSTERDEBIAN_VM_ISO=out/clusterdebian.iso go test -tags e2e -run TestClusterHeadOnly -v ./internal/vm
func TestClusterHeadOnly(t *testing.T) {
	iso := os.Getenv("CLUSTERDEBIAN_VM_ISO")
	if iso == "" {
		t.Skip("set CLUSTERDEBIAN_VM_ISO to a ClusterDebian ISO (scripts/test hands it the e2e suite's)")
	}
	if err := netns.Check(); err != nil {
		t.Skip(err)
	}
	useStateRoot(t)
	// What a run that timed out left (its VMs died with it; its
	// namespace did not).
	if err := Down("smoke"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var progress bytes.Buffer
	c, err := Up(ctx, UpOptions{Name: "smoke", ISO: iso, Nodes: 0, Accel: "tcg", Progress: &progress, Attached: true})
	t.Cleanup(func() {
		if err := Down("smoke"); err != nil {
			t.Errorf("Down: %v", err)
		}
		if netns.Exists(NetNSPrefix + "smoke") {
			t.Error("the namespace survived Down")
		}
		if _, err := os.Stat(ClusterDir("smoke")); !notFound(err) {
			t.Errorf("the state folder survived Down: %v", err)
		}
	})
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(progress.String(), "login prompt after") {
		t.Errorf("no login prompt in the progress")
	}

	// A second Up of the same cluster is refused.
	if _, err := Up(ctx, UpOptions{Name: "smoke", ISO: iso}); err == nil || !strings.Contains(err.Error(), "already up") {
		t.Errorf("second Up: %v", err)
	}

	// Another process sees the cluster through its state file.
	c2, err := LoadCluster("smoke")
	if err != nil {
		t.Fatal(err)
	}
	list := c2.List(ctx)
	if len(list) != 1 || list[0].VM != HeadVM || !list[0].Running {
		t.Fatalf("List: %+v", list)
	}
	t.Logf("list: %+v", list)

	// The console answers Enter with a login prompt.
	sock, _, err := c2.ConsoleSocket(ctx, HeadVM)
	if err != nil {
		t.Fatal(err)
	}
	var shown syncbuf.Buffer
	pr, pw := io.Pipe()
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	done := make(chan error, 1)
	go func() { done <- AttachConsole(cctx, sock, pr, &shown, true) }()
	deadline := time.Now().Add(25 * time.Second)
	for time.Now().Before(deadline) {
		pw.Write([]byte("\r"))
		time.Sleep(2 * time.Second)
		if strings.Contains(shown.String(), "node1 login:") {
			break
		}
	}
	pw.Write([]byte{EscapeByte})
	<-done
	ccancel()
	if !strings.Contains(shown.String(), "node1 login:") {
		t.Errorf("the console did not show a login prompt: %q", shown.String())
	}

	// Exec, through the guest agent every ClusterDebian image has.
	if err := QGAPing(ctx, c2.VMs[0].Dir+"/"+QGASocket); err != nil {
		t.Errorf("node1's guest agent does not answer: %v", err)
	} else {
		stdout, stderr, code, err := c2.Exec(ctx, "node1", "hostname")
		if err != nil || code != 0 || strings.TrimSpace(stdout) != "node1" {
			t.Errorf("exec hostname = %q, %q, %d, %v", stdout, stderr, code, err)
		}
		if _, _, code, err := c2.Exec(ctx, "node1", "sh", "-c", "exit 7"); err != nil || code != 7 {
			t.Errorf("exec exit 7: code %d, %v", code, err)
		}
	}

	if err := c2.Stop("node1"); err != nil {
		t.Fatal(err)
	}
	if l := c2.List(ctx); l[0].Running {
		t.Errorf("node1 still runs after Stop")
	}
	if c.Name != "smoke" || c.VMs[0].MAC != MAC("smoke", 1) {
		t.Errorf("Up returned %+v", c.State)
	}
}
