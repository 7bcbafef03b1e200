package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
	"github.com/clusterdebian/clusterdebian/internal/inputerr"
	"github.com/clusterdebian/clusterdebian/internal/localnode1"
	"github.com/clusterdebian/clusterdebian/internal/vm"
)

// run runs the command line args and returns its error.
func run(t *testing.T, args ...string) error {
	t.Helper()
	root := NewRootCommand()
	root.SetArgs(args)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	return root.ExecuteContext(context.Background())
}

// wantAll fails unless err's message holds every want.
func wantAll(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one with %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
}

func TestExplain(t *testing.T) {
	in := inputs{"ISO": {flag: "--iso"}, "network.subnet": {"--subnet", "network.subnet"}, "node1 memory": {flag: "--memory"}}
	lib := fmt.Errorf("vm up: %w", errors.Join(
		inputerr.Errorf("ISO", "x.iso", "no such file"),
		inputerr.Errorf("network.subnet", "", "too small"),
		inputerr.Errorf("accelerator", "hvf", "use tcg or kvm"), // no flag given: left as it is
	))
	err := in.explain(lib)
	if got, want := err.Error(), "vm up: --iso x.iso: no such file\n--subnet / network.subnet: too small\naccelerator hvf: use tcg or kvm"; got != want {
		t.Errorf("explain = %q, want %q", got, want)
	}
	if !errors.Is(err, lib) || !inputerr.Is(err, "ISO") {
		t.Error("the explained error does not unwrap to the library's")
	}
	plain := errors.New("plain")
	if in.explain(plain) != plain || in.explain(nil) != nil {
		t.Error("explain changed an error without inputs")
	}
}

// TestHeadErrorsNameFlagAndKey runs the head command with bad flags: each
// error names the flag and the cluster.toml key.
func TestHeadErrorsNameFlagAndKey(t *testing.T) {
	err := run(t, "head", "--subnet", "10.0.0.0/7", "--dhcp", "sometimes", "--interface", "a/b")
	wantAll(t, err, "--subnet / network.subnet: 10.0.0.0/7 is wider than /8",
		`--dhcp / network.dhcp: DHCP mode "sometimes"`, "--interface / network.interface:")
	if strings.Contains(err.Error(), "is invalid") {
		t.Errorf("a bad flag is reported as a bad file:\n%v", err)
	}
}

// TestVMErrorsNameFlags runs vm up with bad flags (it checks them before it
// needs root or QEMU), and explains the vm package's state errors.
func TestVMErrorsNameFlags(t *testing.T) {
	err := run(t, "vm", "up", "--name", "a/b", "--memory", "100", "--nodes", "300", "--accel", "hvf", "--cpus", "0", "--node-memory", "1")
	wantAll(t, err, "--iso: give the ClusterDebian ISO", `--name "a/b": use 1 to 32`, "--memory 100: node1 needs at least",
		"--nodes 300: give 0 to", `--accel "hvf": use tcg or kvm`, "--node-memory 1: a node needs")
	// --lan takes its subnet after "=", and alone the default.
	wantAll(t, run(t, "vm", "up", "--lan=192.168.50.0/25"), "--lan 192.168.50.0/25: give a /24 or wider")
	wantAll(t, run(t, "vm", "up", "--lan", "--uplink"), "--lan "+vm.DefaultLAN+": give the LAN or the uplink, not both")

	old := vm.StateRoot
	vm.StateRoot = t.TempDir()
	t.Cleanup(func() { vm.StateRoot = old })
	_, err = vm.LoadCluster("lab")
	wantAll(t, vmHint(err, "lab"), "no such virtual cluster", "start one with clusterdebian vm up --name lab --iso FILE")
	wantAll(t, vmHint(&vm.StoppedError{VM: "vm2"}, "lab"), "vm2 is stopped (clusterdebian vm start --name lab vm2)")
	wantAll(t, vmHint(fmt.Errorf("cluster lab: %w", vm.ErrNetNSGone), "lab"), "clusterdebian vm down --name lab")
}

func TestBuildErrorsNameFlags(t *testing.T) {
	_, err := imagebuild.Build(context.Background(), imagebuild.Options{From: "squash"}, "test")
	if !inputerr.Is(err, imagebuild.InputFrom) {
		t.Fatalf("Build with an unknown stage: %v, want an error about %s", err, imagebuild.InputFrom)
	}
	wantAll(t, inputs{imagebuild.InputFrom: {flag: "--from"}}.explain(err), `--from "squash": no such stage; the stages are bootstrap`)
}

// TestLocalNode1Hints: the refusals that a flag gets past name the flag.
func TestLocalNode1Hints(t *testing.T) {
	lib := inputerr.Errorf(localnode1.InputInterface, "eth0", "%w: ...; use a second network card for the cluster", localnode1.ErrDefaultRoute)
	wantAll(t, localnode1Inputs.explain(localnode1Hint(lib)), "--interface eth0: ", "or --force if that network is the private cluster network")
	lib = inputerr.Errorf(localnode1.InputInterface, "eth1", "%w: take its stanza out first", localnode1.ErrIfupdownStanza)
	wantAll(t, localnode1Inputs.explain(localnode1Hint(lib)), "--interface eth1: ", "--force")
	wantAll(t, localnode1Hint(fmt.Errorf("step: %w", localnode1.ErrPartial)), "clusterdebian localnode1 --remove undoes it")
	wantAll(t, localnode1Inputs.explain(inputerr.Errorf(localnode1.InputFrom, "/x", "no vmlinuz")), "--from /x: no vmlinuz")
}
