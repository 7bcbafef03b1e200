package verify

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// fakeSystem is a host with one card, eth7, holding 127.0.0.1.
type fakeSystem map[string]string

func (s fakeSystem) InterfaceOf(ip net.IP) (string, error) {
	if ip.Equal(net.IPv4(127, 0, 0, 1)) {
		return "eth7", nil
	}
	return "", fmt.Errorf("no network card holds %s", ip)
}

func (s fakeSystem) ReadFile(p string) ([]byte, error) {
	if v, ok := s[p]; ok {
		return []byte(v), nil
	}
	return nil, os.ErrNotExist
}

func (fakeSystem) Cores() int { return 3 }

var virtio = fakeSystem{"/sys/class/net/eth7/speed": "-1\n", "/sys/class/net/eth7/mtu": "1500\n",
	"/proc/meminfo": "MemTotal:        2014088 kB\nMemFree:  1000 kB\n"}

func TestReadFacts(t *testing.T) {
	f, err := ReadFacts(virtio, net.IPv4(127, 0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	if f.Interface != "eth7" || f.SpeedMbit != 0 || f.Duplex != "" || f.MTU != 1500 || f.Cores != 3 || f.MemTotalKiB != 2014088 {
		t.Errorf("virtio: %+v", f)
	}
	gig := fakeSystem{"/sys/class/net/eth7/speed": "100\n", "/sys/class/net/eth7/duplex": "half\n",
		"/sys/class/net/eth7/mtu": "9000\n", "/proc/meminfo": "MemTotal: 8 kB\n"}
	if f, err = ReadFacts(gig, net.IPv4(127, 0, 0, 1)); err != nil || f.SpeedMbit != 100 || f.Duplex != "half" || f.MTU != 9000 {
		t.Errorf("100 Mbit/s half duplex: %+v, %v", f, err)
	}
	if _, err := ReadFacts(virtio, net.IPv4(10, 0, 0, 9)); err == nil || !strings.Contains(err.Error(), "10.0.0.9") {
		t.Errorf("an address no card holds: %v", err)
	}
	if _, err := ReadFacts(fakeSystem{"/sys/class/net/eth7/mtu": "x"}, net.IPv4(127, 0, 0, 1)); err == nil || !strings.Contains(err.Error(), "/sys/class/net/eth7/mtu") {
		t.Errorf("an unreadable MTU: %v", err)
	}
}

// startProbes serves n probes on loopback, for the test's length.
func startProbes(t *testing.T, n int, token string) []Node {
	t.Helper()
	var nodes []Node
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := &Probe{Token: token, Pings: 3, Facts: func() (Facts, error) { return ReadFacts(virtio, net.IPv4(127, 0, 0, 1)) }}
		done := make(chan error, 1)
		ctx, cancel := context.WithCancel(context.Background())
		go func() { done <- p.Serve(ctx, ln, time.Minute) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("probe %d: %v", i, err)
			}
		})
		nodes = append(nodes, Node{Name: fmt.Sprintf("node%d", i+1), Addr: ln.Addr().String()})
	}
	return nodes
}

func TestRunOverLoopback(t *testing.T) {
	nodes := startProbes(t, 3, "s3cret")
	ran := false
	r := Run(context.Background(), nodes, "s3cret", DefaultBar(), Options{Duration: 50 * time.Millisecond,
		MPI: func(context.Context) *MPIResult { ran = true; return &MPIResult{Ranks: 3, OK: true} }})
	if len(r.Nodes) != 3 || len(r.Links) != 3 || r.Rounds != 3 || !ran {
		t.Fatalf("report: %+v", r)
	}
	for _, n := range r.Nodes {
		if n.Error != "" || n.Interface != "eth7" || n.MTU != 1500 || n.IP != "127.0.0.1" || !strings.HasPrefix(n.Name, "node") {
			t.Errorf("node: %+v", n)
		}
	}
	for _, l := range r.Links {
		if l.Error != "" || l.MbitAB <= 0 || l.MbitBA <= 0 || l.RTTMicros <= 0 {
			t.Errorf("link: %+v", l)
		}
	}
	if l, ok := r.Link("node3", "node1"); !ok || l.A != "node1" {
		t.Errorf("Link(node3, node1) = %+v, %v", l, ok)
	}
}

func TestProbeRefusesAnotherToken(t *testing.T) {
	nodes := startProbes(t, 2, "right")
	pc, err := DialProbe(context.Background(), nodes[0].Addr, "wrong")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.Facts(); err == nil || !strings.Contains(err.Error(), "wrong token") {
		t.Errorf("facts with the wrong token: %v", err)
	}
	// A run with a node whose probe does not answer names that node.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	r := Run(context.Background(), append(nodes, Node{Name: "node9", Addr: dead}), "right", DefaultBar(), Options{Duration: 20 * time.Millisecond})
	found := false
	for _, f := range r.Findings {
		found = found || (f.Node == "node9" && f.What == "not measured" && strings.Contains(f.Cause, "refused"))
	}
	if r.Pass || !found || len(r.Findings) != 1 {
		t.Errorf("a dead probe: pass=%v findings %+v", r.Pass, r.Findings)
	}
}

func TestProbeQuit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- (&Probe{Token: "t"}).Serve(context.Background(), ln, time.Hour) }()
	pc, err := DialProbe(context.Background(), ln.Addr().String(), "t")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := pc.Quit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve after quit: %v", err)
	}
}
