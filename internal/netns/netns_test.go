package netns

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// newNS makes a namespace for one test and deletes it when the test ends,
// even when it fails.
func newNS(t *testing.T, ctx context.Context) *NS {
	t.Helper()
	if err := Check(); err != nil {
		t.Skip(err)
	}
	ns, err := New(ctx, UniqueName(TestPrefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Delete(context.Background()); err != nil {
			t.Error(err)
		}
		if Exists(ns.Name) {
			t.Errorf("namespace %s still exists after Delete", ns.Name)
		}
	})
	return ns
}

func TestUniqueName(t *testing.T) {
	a, b := UniqueName(TestPrefix), UniqueName(TestPrefix)
	if a == b || !strings.HasPrefix(a, TestPrefix) || len(a) > 15 {
		t.Errorf("UniqueName gave %q and %q", a, b)
	}
}

func TestNetwork(t *testing.T) {
	ctx := context.Background()
	head := newNS(t, ctx)
	other := newNS(t, ctx)

	if err := head.AddBridge(ctx, "br0", netip.MustParsePrefix("10.99.0.1/24")); err != nil {
		t.Fatal(err)
	}
	if err := head.AddTap(ctx, "tap0", "br0"); err != nil {
		t.Fatal(err)
	}
	if err := AddVeth(ctx, head, "vhead", other, "vother"); err != nil {
		t.Fatal(err)
	}
	if err := head.SetMaster(ctx, "vhead", "br0"); err != nil {
		t.Fatal(err)
	}
	if err := other.AddAddr(ctx, "vother", netip.MustParsePrefix("10.99.0.2/24")); err != nil {
		t.Fatal(err)
	}

	out, err := head.Output(ctx, "ip", "-br", "link")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"br0", "tap0", "vhead"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("namespace %s lacks %s:\n%s", head.Name, want, out)
		}
	}
	// Traffic crosses the veth and the bridge: a listener opened inside one
	// namespace is reached from the other.
	var ln net.Listener
	if err := head.Do(func() (err error) {
		ln, err = net.Listen("tcp", "10.99.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("hello"))
			c.Close()
		}
	}()
	var got []byte
	if err := other.Do(func() error {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		got, err = io.ReadAll(c)
		return err
	}); err != nil || string(got) != "hello" {
		t.Errorf("across the veth: read %q, %v", got, err)
	}

	// Go code inside the namespace sees its interfaces, not ours.
	var names []string
	err = head.Do(func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names, " "); !strings.Contains(got, "br0") || !strings.Contains(got, "tap0") {
		t.Errorf("interfaces seen by Do: %s", got)
	}
}
