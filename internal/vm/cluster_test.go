package vm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/inputerr"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// useStateRoot points StateRoot at a fresh folder for one test.
func useStateRoot(t *testing.T) string {
	t.Helper()
	old := StateRoot
	StateRoot = t.TempDir()
	t.Cleanup(func() { StateRoot = old })
	return StateRoot
}

func TestUpOptionsValidate(t *testing.T) {
	dir := t.TempDir()
	iso := filepath.Join(dir, "c.iso")
	if err := os.WriteFile(iso, []byte("iso"), 0o644); err != nil {
		t.Fatal(err)
	}
	ok := UpOptions{ISO: iso, Nodes: 2}
	tests := []struct {
		name  string
		mod   func(*UpOptions)
		input string // the input the error is about; "" for no error
		want  string // a regexp the error must match
	}{
		{"defaults", func(*UpOptions) {}, "", ""},
		{"no ISO", func(o *UpOptions) { o.ISO = "" }, InputISO, `^ISO: give`},
		{"missing ISO", func(o *UpOptions) { o.ISO = filepath.Join(dir, "nope.iso") }, InputISO, `^ISO .*/nope\.iso: no such file$`},
		{"ISO is a folder", func(o *UpOptions) { o.ISO = dir }, InputISO, `^ISO .*: not a regular file`},
		{"head memory", func(o *UpOptions) { o.MemoryMiB = 512 }, InputMemory, `^node1 memory 512: node1 needs at least 1024 MiB`},
		{"node memory", func(o *UpOptions) { o.NodeMemoryMiB = 256 }, InputNodeMemory, `^node memory 256: a node needs at least 512 MiB`},
		{"accel", func(o *UpOptions) { o.Accel = "hvf" }, InputAccel, `^accelerator "hvf": use tcg or kvm`},
		{"negative nodes", func(o *UpOptions) { o.Nodes = -1 }, InputNodes, `^node count -1: give 0 to 250`},
		{"later than nodes", func(o *UpOptions) { o.Nodes, o.Later = 2, 3 }, InputNodes, `^node count 3: the nodes left off`},
		{"negative later", func(o *UpOptions) { o.Later = -1 }, InputNodes, `^node count -1: the nodes left off`},
		{"later all", func(o *UpOptions) { o.Nodes, o.Later = 2, 2 }, "", ""},
		{"too many nodes", func(o *UpOptions) { o.Nodes = 251 }, InputNodes, `^node count 251:`},
		{"zero nodes", func(o *UpOptions) { o.Nodes = 0 }, "", ""},
		{"name", func(o *UpOptions) { o.Name = "a/b" }, InputName, `^cluster name "a/b": use`},
		{"long name", func(o *UpOptions) { o.Name = strings.Repeat("x", 33) }, InputName, `^cluster name`},
		{"cpus", func(o *UpOptions) { o.CPUs = -2 }, InputCPUs, `^CPUs -2`},
		{"LAN", func(o *UpOptions) { o.LAN = DefaultLAN }, "", ""},
		{"uplink", func(o *UpOptions) { o.Uplink = true }, "", ""},
		{"narrow LAN", func(o *UpOptions) { o.LAN = "192.168.50.0/25" }, InputLAN, `^LAN subnet 192\.168\.50\.0/25: give a /24 or wider`},
		{"LAN not a subnet", func(o *UpOptions) { o.LAN = "office" }, InputLAN, `^LAN subnet office: not a subnet`},
		{"LAN and uplink", func(o *UpOptions) { o.LAN, o.Uplink = DefaultLAN, true }, InputLAN, `not both`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ok
			tt.mod(&o)
			err := o.validate()
			if tt.input == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !regexp.MustCompile(tt.want).MatchString(err.Error()) {
				t.Fatalf("error %v, want a match for %s", err, tt.want)
			}
			if es := inputerr.All(err); len(es) != 1 || es[0].Input != tt.input {
				t.Errorf("error %v is not one *inputerr.Error about %s", err, tt.input)
			}
		})
	}

	o := ok
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	if o.Name != "default" || o.Accel != "tcg" || o.MemoryMiB != 2048 || o.NodeMemoryMiB != 1536 || o.CPUs != 1 || o.BootTimeout == 0 {
		t.Errorf("defaults not filled in: %+v", o)
	}

	// Several mistakes: every one is named.
	o = UpOptions{ISO: filepath.Join(dir, "gone.iso"), MemoryMiB: 100, Accel: "x"}
	err := o.validate()
	for _, in := range []string{InputISO, InputMemory, InputAccel} {
		if !inputerr.Is(err, in) {
			t.Errorf("error %v does not name %s", err, in)
		}
	}
}

// Up checks its options before it creates anything, root or not.
func TestUpRejectsBeforeCreating(t *testing.T) {
	root := useStateRoot(t)
	for _, o := range []UpOptions{
		{Name: "t", ISO: filepath.Join(root, "missing.iso")},
		{Name: "t", ISO: "/dev/null", MemoryMiB: 512},
	} {
		c, err := Up(context.Background(), o)
		if err == nil || c != nil {
			t.Fatalf("Up(%+v) = %v, %v; want an error", o, c, err)
		}
		if entries, _ := os.ReadDir(root); len(entries) != 0 {
			t.Fatalf("Up created %v before failing with %v", entries, err)
		}
	}
}

func TestMAC(t *testing.T) {
	a, b := MAC("default", 1), MAC("default", 12)
	// In the contract's one form, which node1's status lists MACs in.
	if m, err := contract.NormalizeMAC(a); err != nil || m != a || !strings.HasPrefix(a, "52:54:00:cd:") || !strings.HasSuffix(b, ":0c") {
		t.Errorf("MACs %s, %s", a, b)
	}
	if a[:14] != b[:14] || MAC("default", 1) != a {
		t.Errorf("MACs of one cluster differ in their prefix or from run to run: %s %s", a, b)
	}
	if MAC("other", 1) == a {
		t.Logf("clusters default and other share a cluster byte (possible, 1 in 256)")
	}
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	st := &State{
		Name: "t", NetNS: "cdvm-t", Bridge: Bridge, ISO: "/x.iso", Accel: "tcg",
		Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		VMs: []VMState{
			{Name: "node1", Role: RoleHead, MAC: MAC("t", 1), Tap: "tap1", Dir: dir + "/node1", MemoryMiB: 2048, CPUs: 1, PID: 123},
			{Name: "vm2", Role: RoleNode, MAC: MAC("t", 2), Tap: "tap2", Dir: dir + "/vm2", Disk: dir + "/vm2/disk.qcow2", MemoryMiB: 1536, CPUs: 2},
		},
	}
	if err := WriteState(dir, st); err != nil {
		t.Fatal(err)
	}
	got, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != st.Name || !got.Created.Equal(st.Created) || !slices.Equal(got.VMs, st.VMs) || got.ISO != st.ISO {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, st)
	}
	// Rewrite: still one file, no temporary left behind.
	st.VMs[1].PID = 456
	if err := WriteState(dir, st); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != StateFile {
		t.Errorf("folder holds %v, want only %s", entries, StateFile)
	}
	if got, _ := ReadState(dir); got.VMs[1].PID != 456 {
		t.Errorf("rewritten pid %d", got.VMs[1].PID)
	}
	// No folder (vm down removed it): no state is written.
	if err := WriteState(filepath.Join(dir, "gone"), st); err == nil {
		t.Error("WriteState created a missing folder")
	}
	// Damaged state: an error, not a zero state.
	os.WriteFile(filepath.Join(dir, StateFile), []byte(`{"name": "t", "vms": [`), 0o644)
	if _, err := ReadState(dir); err == nil {
		t.Error("ReadState accepted a truncated file")
	}
}

func TestLoadClusterMissing(t *testing.T) {
	root := useStateRoot(t)
	os.MkdirAll(filepath.Join(root, "other"), 0o755)
	WriteState(filepath.Join(root, "other"), &State{Name: "other"})
	_, err := LoadCluster("default")
	if !errors.Is(err, ErrNoCluster) || !strings.Contains(err.Error(), "other") {
		t.Errorf("LoadCluster of a missing cluster: %v", err)
	}
	c, err := LoadCluster("other")
	if err != nil || c.Name != "other" {
		t.Errorf("LoadCluster(other) = %v, %v", c, err)
	}
}

// Down of a cluster that is not there, or only partly, succeeds and leaves
// nothing.
func TestDownIdempotent(t *testing.T) {
	root := useStateRoot(t)
	if err := Down("never"); err != nil {
		t.Errorf("Down of a missing cluster: %v", err)
	}
	dir := filepath.Join(root, "half")
	os.MkdirAll(filepath.Join(dir, "node1"), 0o755)
	os.WriteFile(filepath.Join(dir, StateFile), []byte("{damaged"), 0o644)
	if err := Down("half"); err != nil {
		t.Errorf("Down of a damaged cluster: %v", err)
	}
	if _, err := os.Stat(dir); !notFound(err) {
		t.Errorf("Down left %s: %v", dir, err)
	}
	if err := Down("../etc"); err == nil {
		t.Error("Down accepted a name with a path in it")
	}
}

// testCluster is a cluster of three VMs with no QEMU, whose guest agents
// answer with hosts (VM name → host name; missing: no answer).
func testCluster(t *testing.T, hosts map[string]string) *Cluster {
	t.Helper()
	testRunning = func(VMState) bool { return true }
	t.Cleanup(func() { testRunning = nil })
	dir := t.TempDir()
	st := &State{Name: "t", NetNS: "cdvm-t"}
	for i, n := range []string{"node1", "vm2", "vm3"} {
		v := VMState{Name: n, Role: RoleNode, MAC: MAC("t", i+1), Dir: filepath.Join(dir, n)}
		if i == 0 {
			v.Role = RoleHead
		}
		os.MkdirAll(v.Dir, 0o755)
		st.VMs = append(st.VMs, v)
	}
	c := newCluster(dir, st)
	c.hostname = func(ctx context.Context, v VMState) (string, error) {
		if h, ok := hosts[v.Name]; ok {
			return h, nil
		}
		<-ctx.Done() // an agent that is not there never answers
		return "", ErrNoAgent
	}
	return c
}

func TestResolve(t *testing.T) {
	old := hostnameTimeout
	hostnameTimeout = 100 * time.Millisecond
	t.Cleanup(func() { hostnameTimeout = old })
	c := testCluster(t, map[string]string{"node1": "node1", "vm2": "node12"})
	// vm3 has no agent, but its console showed a login prompt.
	os.WriteFile(filepath.Join(c.VMs[2].Dir, SerialLogFile), []byte("Debian\r\nclusterdebian login: \r\n...\r\nnode13 login: "), 0o644)

	ctx := context.Background()
	for node, want := range map[string]string{
		"node1":                       "node1",
		"vm2":                         "vm2",
		"node12":                      "vm2",
		"node13":                      "vm3",
		strings.ToUpper(c.VMs[2].MAC): "vm3",
	} {
		v, err := c.Resolve(ctx, node)
		if err != nil || v.Name != want {
			t.Errorf("Resolve(%s) = %v, %v; want %s", node, v, err, want)
		}
	}
	_, err := c.Resolve(ctx, "node99")
	if err == nil || !strings.Contains(err.Error(), "node1, vm2, vm3") {
		t.Errorf("Resolve(node99): %v", err)
	}

	list := c.List(ctx)
	var nodes []string
	for _, i := range list {
		nodes = append(nodes, i.Node)
	}
	if !slices.Equal(nodes, []string{"node1", "node12", "-"}) || list[0].State() != "running" {
		t.Errorf("List: %+v", list)
	}
}

func TestSpecArgs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a,b")
	s := Spec{Name: "x", Dir: dir, Console: true, GuestAgent: true, Reboot: true, Detach: true}
	args, err := s.Args()
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(args, " ")
	esc := strings.ReplaceAll(dir, ",", ",,")
	for _, want := range []string{
		"-chardev socket,id=ser0,path=" + esc + "/console.sock,server=on,wait=off,logfile=" + esc + "/serial.log -serial chardev:ser0",
		"-chardev socket,id=qga0,path=" + esc + "/qga.sock,server=on,wait=off",
		"name=org.qemu.guest_agent.0",
		// OVMF from Debian 13 offers no PXE boot without an RNG.
		"-object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("command line lacks %q:\n%s", want, line)
		}
	}
	if strings.Contains(line, "-no-reboot") {
		t.Error("-no-reboot with Reboot set")
	}
	// The test-style spec is unchanged: serial to a file, no reboot.
	plain := Spec{Name: "y", Dir: "/tmp/y"}
	args, _ = plain.Args()
	line = strings.Join(args, " ")
	if !strings.Contains(line, "-serial file:/tmp/y/serial.log") || !strings.Contains(line, "-no-reboot") || strings.Contains(line, "qga") {
		t.Errorf("plain spec: %s", line)
	}
}

// A node spec boots from its NIC first, node1's from the CD-ROM.
func TestClusterSpecs(t *testing.T) {
	c := testCluster(t, nil)
	c.ISO = "/x.iso"
	c.Accel = "tcg"
	c.VMs[1].Disk = "/d/disk.qcow2"
	h, n := c.spec(c.VMs[0], "tcg"), c.spec(c.VMs[1], "tcg")
	if h.CDROM != "/x.iso" || h.NICs[0].Boot || h.Disk != "" || !h.Detach || h.NetNS != "cdvm-t" {
		t.Errorf("head spec %+v", h)
	}
	if n.CDROM != "" || !n.NICs[0].Boot || n.Disk == "" || n.NICs[0].MAC != c.VMs[1].MAC {
		t.Errorf("node spec %+v", n)
	}
	if h.VGA || n.VGA {
		t.Errorf("VGA without Display: head %v, node %v", h.VGA, n.VGA)
	}
	// Display gives node1 a screen, and only node1.
	c.Display = true
	if h, n := c.spec(c.VMs[0], "tcg"), c.spec(c.VMs[1], "tcg"); !h.VGA || n.VGA {
		t.Errorf("Display: head VGA %v (want true), node VGA %v (want false)", h.VGA, n.VGA)
	}
	// node1's second NIC, on the uplink, comes after the cluster's and
	// boots nothing.
	c.VMs[0].UplinkTap, c.VMs[0].UplinkMAC = UplinkTap, MAC("t", uplinkNIC)
	if h := c.spec(c.VMs[0], "tcg"); len(h.NICs) != 2 || h.NICs[0].Tap != c.VMs[0].Tap || h.NICs[1].Tap != UplinkTap || h.NICs[1].Boot || h.NICs[1].MAC != "52:54:00:cd:"+MAC("t", 1)[12:14]+":fe" {
		t.Errorf("head spec with an uplink: NICs %+v", h.NICs)
	}
	// A test's cluster (UpOptions.Attached) dies with the test.
	c.attached = true
	if h, n := c.spec(c.VMs[0], "tcg"), c.spec(c.VMs[1], "tcg"); h.Detach || n.Detach {
		t.Errorf("attached cluster: head Detach %v, node Detach %v, want both false", h.Detach, n.Detach)
	}
}

// With Secure Boot, node1 boots the ISO as a USB stick and the nodes with
// OVMF's own PXE client (no option ROM), all on OVMF's Secure Boot build
// with Microsoft's keys, q35 with SMM and the flash for SMM only.
func TestSecureBootSpecs(t *testing.T) {
	if _, _, err := findOVMF(true); err != nil {
		t.Skipf("no OVMF for Secure Boot here: %v", err)
	}
	c := testCluster(t, nil)
	c.ISO, c.Accel, c.SecureBoot = "/x.iso", "tcg", true
	c.VMs[1].Disk = "/d/disk.qcow2"
	h, n := c.spec(c.VMs[0], "tcg"), c.spec(c.VMs[1], "tcg")
	if h.Firmware != UEFI || !h.SecureBoot || h.USBDisk != "/x.iso" || h.CDROM != "" || h.NICs[0].Boot {
		t.Errorf("Secure Boot head spec %+v", h)
	}
	if n.Firmware != UEFI || !n.SecureBoot || !n.NICs[0].Boot || !slices.Contains(n.ExtraArgs, "virtio-net-pci.romfile=") {
		t.Errorf("Secure Boot node spec %+v", n)
	}
	n.Dir, n.Disk = t.TempDir(), ""
	args, err := n.Args()
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(args, " ")
	for _, want := range []string{"-machine q35,smm=on", "-global driver=cfi.pflash01,property=secure,value=on",
		"file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "file=" + filepath.Join(n.Dir, "OVMF_VARS.ms.fd")} {
		if !strings.Contains(line, want) {
			t.Errorf("Secure Boot command line lacks %q:\n%s", want, line)
		}
	}
	// The RNG that OVMF's network boot needs comes after the NIC, so that
	// the NIC keeps its PCI slot.
	if nic, rng := strings.Index(line, "-netdev tap"), strings.Index(line, "virtio-rng-pci"); nic < 0 || rng < nic {
		t.Errorf("want the RNG after the NIC:\n%s", line)
	}
	if vars, err := os.ReadFile(filepath.Join(n.Dir, "OVMF_VARS.ms.fd")); err != nil || len(vars) == 0 {
		t.Errorf("the machine's own copy of the variables with Microsoft's keys: %v", err)
	}
	if _, err := (&Spec{Name: "b", Dir: t.TempDir(), Firmware: BIOS, SecureBoot: true}).Args(); err == nil || !strings.Contains(err.Error(), "UEFI") {
		t.Errorf("Secure Boot on SeaBIOS: %v, want an error", err)
	}
	vga := Spec{Name: "v", Dir: t.TempDir(), VGA: true}
	if args, err := vga.Args(); err != nil || !strings.Contains(strings.Join(args, " "), "-display none -vga std") {
		t.Errorf("VGA spec: %q, %v", args, err)
	}
}

// watchBoot reports milestones in order, once each, also those passed
// between two looks at the log.
func TestWatchBoot(t *testing.T) {
	dir := t.TempDir()
	m := &Machine{Spec: Spec{Name: "n", Dir: dir}, SerialPath: filepath.Join(dir, SerialLogFile), done: make(chan struct{})}
	os.WriteFile(m.SerialPath, []byte("iPXE 1.21\r\n[    0.000000] Linux version 6.12\r\n"), 0o644)
	var got []string
	go func() {
		time.Sleep(1500 * time.Millisecond)
		os.WriteFile(m.SerialPath, []byte("iPXE 1.21\r\n[    0.000000] Linux version 6.12\r\n\r\nnode12 login: "), 0o644)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	match, err := watchBoot(ctx, m, nodeMilestones, func(name string, _ time.Duration) { got = append(got, name) })
	if err != nil || !slices.Equal(got, []string{"PXE", "kernel", "login prompt"}) || anyLoginRe.FindStringSubmatch(match)[1] != "node12" {
		t.Errorf("watchBoot = %q, %v; reported %v", match, err, got)
	}

	// QEMU exits first: an error naming the missing milestone.
	close(m.done)
	os.WriteFile(m.SerialPath, nil, 0o644)
	os.WriteFile(filepath.Join(dir, QEMULogFile), []byte("qemu: could not open tap"), 0o644)
	_, err = watchBoot(ctx, m, headMilestones, func(string, time.Duration) {})
	if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "could not open tap") {
		t.Errorf("watchBoot after exit: %v", err)
	}
}

// A node whose serial getty never shows a prompt counts as joined once it
// has been up in node1's status for promptGrace; with no status to go by
// (fallback), it does not, and the wait ends with ctx.
func TestWatchNodeWithoutPrompt(t *testing.T) {
	oldGrace, oldPoll := promptGrace, statusPoll
	promptGrace, statusPoll = 300*time.Millisecond, 20*time.Millisecond
	t.Cleanup(func() { promptGrace, statusPoll = oldGrace, oldPoll })
	dir := t.TempDir()
	m := &Machine{Spec: Spec{Name: "n", Dir: dir}, SerialPath: filepath.Join(dir, SerialLogFile), done: make(chan struct{})}
	os.WriteFile(m.SerialPath, []byte("iPXE 1.21\r\n[    0.000000] Linux version 6.12\r\n[FAILED] Failed to start serial-getty@ttyS0.service\r\n"), 0o644)
	const mac = "52:54:00:cd:01:02"
	report := func(string, time.Duration) {}

	s := newStatusWatch(nil, nil, func(string, ...any) {})
	s.update(false, map[string]registry.Node{mac: {Name: "node12", MAC: mac, State: registry.StateUp}}, "", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	login, name, err := s.watchNode(ctx, m, mac, report)
	if err != nil || name != "node12" || login != "" {
		t.Errorf("up without a prompt: watchNode = %q, %q, %v; want joined as node12", login, name, err)
	}

	fb := newStatusWatch(nil, nil, func(string, ...any) {})
	fb.update(true, nil, "", nil)
	short, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	if login, name, err := fb.watchNode(short, m, mac, report); err == nil || name != "" {
		t.Errorf("fallback without a prompt: watchNode = %q, %q, %v; want the context's error", login, name, err)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
