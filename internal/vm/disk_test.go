package vm

import (
	"slices"
	"strings"
	"testing"
)

func TestDiskKey(t *testing.T) {
	a := DiskOptions{Suite: "trixie", Mirror: "http://deb.debian.org/debian", Packages: []string{"a", "b"}, Hooks: []string{"x"}}
	b := a
	b.Packages = []string{"b", "a"}
	if a.Key() != b.Key() {
		t.Error("the package order changes the key")
	}
	for _, change := range []func(*DiskOptions){
		func(o *DiskOptions) { o.Suite = "bookworm" },
		func(o *DiskOptions) { o.Mirror = "http://other/debian" },
		func(o *DiskOptions) { o.Packages = []string{"a"} },
		func(o *DiskOptions) { o.Hooks = []string{"y"} },
		func(o *DiskOptions) { o.SizeMiB = 8192 },
	} {
		c := a
		change(&c)
		if c.Key() == a.Key() {
			t.Errorf("%+v has the key of %+v", c, a)
		}
	}
}

func TestDiskArgs(t *testing.T) {
	d := &Disk{Kernel: "/c/vmlinuz", Initrd: "/c/initrd.img"}
	got := d.BootArgs("net.ifnames=0")
	if !slices.Equal(got[:4], []string{"-kernel", "/c/vmlinuz", "-initrd", "/c/initrd.img"}) ||
		!strings.Contains(got[5], "root=/dev/vda") || !strings.HasSuffix(got[5], "net.ifnames=0") {
		t.Errorf("BootArgs = %q", got)
	}
	if nic := strings.Join(UserNIC("up0", "52:54:00:00:00:01"), " "); !strings.Contains(nic, "user,id=up0,restrict=on") || !strings.Contains(nic, "mac=52:54:00:00:00:01") {
		t.Errorf("UserNIC = %s", nic)
	}
	if share := strings.Join(ShareDir("tag", "/a,b"), " "); !strings.Contains(share, "path=/a,,b,mount_tag=tag") || !strings.Contains(share, "readonly=on") {
		t.Errorf("ShareDir = %s", share)
	}
}
