//go:build e2e

package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
	"github.com/clusterdebian/clusterdebian/internal/vm"
)

func TestDefaultImageBuilds(t *testing.T) {
	out, rep := defaultImage(t)
	if len(rep.Stages) != len(imagebuild.Stages) {
		t.Fatalf("report lists %d stages, want %d", len(rep.Stages), len(imagebuild.Stages))
	}
	for _, f := range []string{imagebuild.ISOName, "netboot/vmlinuz", "netboot/initrd.img", "netboot/" + contract.NFSInitrdFile,
		"netboot/" + contract.BaseLayer, "netboot/" + contract.CustomLayer, "credentials.txt", "build.log"} {
		fi, err := os.Stat(filepath.Join(out, f))
		if err != nil {
			t.Errorf("output %s: %v", f, err)
		} else if fi.Size() == 0 && f != "build.log" {
			t.Errorf("output %s is empty", f)
		}
	}
	creds, _ := os.ReadFile(filepath.Join(out, "credentials.txt"))
	if !regexp.MustCompile(`(?m)^user: \S{12,}$`).Match(creds) {
		t.Errorf("credentials.txt has no generated password for the default user:\n%s", creds)
	}
	if fi, err := os.Stat(filepath.Join(out, "credentials.txt")); err == nil && fi.Mode().Perm() != 0o600 {
		t.Errorf("credentials.txt mode %v, want 0600", fi.Mode().Perm())
	}
	// The image holds what a user expects: man pages generated from the
	// commands, cluster(7), the banner unit, the static binary.
	custom := filepath.Join(out, "netboot", contract.CustomLayer)
	for _, want := range []string{"/usr/share/man/man1/clusterdebian.1", "/usr/share/man/man1/clusterdebian-build.1",
		"/usr/share/man/man7/cluster.7", "/usr/local/bin/clusterdebian", "/etc/systemd/system/clusterdebian-issue.service",
		"/etc/systemd/system/clusterdebian-head.service", "/etc/systemd/system/clusterdebian-node.service",
		"/home/user/.bashrc", "/etc/clusterdebian/cluster.toml"} {
		if _, err := layerFile(custom, want); err != nil {
			t.Errorf("custom layer lacks %s: %v", want, err)
		}
	}
	// The user's home is the user's.
	if st, err := exec.Command("debugfs", "-R", "stat /home/user", custom).CombinedOutput(); err != nil || !regexp.MustCompile(`User:\s+1000\b`).Match(st) {
		t.Errorf("/home/user is not owned by uid 1000: %v\n%s", err, st)
	}
	cfg, err := layerFile(custom, "/etc/clusterdebian/cluster.toml")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^user: (\S+)$`).FindSubmatch(creds); m == nil || strings.Contains(string(cfg), string(m[1])) {
		t.Error("the image's cluster.toml contains the generated password (or credentials.txt has none)")
	}
	pkgs, _ := exec.Command("unsquashfs", "-l", filepath.Join(out, "netboot", contract.BaseLayer), "usr/bin/mpicc").Output()
	if !strings.Contains(string(pkgs), "usr/bin/mpicc") {
		t.Error("base layer has no mpicc (Open MPI dev files)")
	}
}

// TestISOLayout checks that one image boots from CD and USB stick, on BIOS
// and UEFI: El Torito entries for both, an MBR partition table with an EFI
// system partition, and the live files.
func TestISOLayout(t *testing.T) {
	out, _ := defaultImage(t)
	iso := filepath.Join(out, imagebuild.ISOName)

	report, err := exec.Command("xorriso", "-indev", iso, "-report_el_torito", "plain").CombinedOutput()
	if err != nil {
		t.Fatalf("xorriso: %v\n%s", err, report)
	}
	for _, re := range []string{`El Torito boot img :\s+1\s+BIOS\s+y`, `El Torito boot img :\s+2\s+UEFI\s+y`} {
		if !regexp.MustCompile(re).Match(report) {
			t.Errorf("no El Torito entry matching %q:\n%s", re, report)
		}
	}

	f, err := os.Open(iso)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mbr := make([]byte, 512)
	if _, err := f.ReadAt(mbr, 0); err != nil {
		t.Fatal(err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		t.Fatalf("no MBR boot signature: % x", mbr[510:])
	}
	var espStart, espSectors uint32
	var sawISO bool
	for i := 0; i < 4; i++ {
		e := mbr[446+16*i : 446+16*(i+1)]
		typ := e[4]
		start := binary.LittleEndian.Uint32(e[8:12])
		size := binary.LittleEndian.Uint32(e[12:16])
		t.Logf("MBR partition %d: type %#02x start %d sectors %d boot %#02x", i+1, typ, start, size, e[0])
		switch typ {
		case 0xef:
			espStart, espSectors = start, size
		case 0x00:
		default:
			sawISO = sawISO || size > 0
		}
		if typ == 0xee {
			t.Errorf("partition %d is a GPT protective entry: want a plain MBR table", i+1)
		}
	}
	if !sawISO {
		t.Error("no MBR partition covers the ISO file system")
	}
	if espSectors == 0 {
		t.Fatal("no EFI system partition (type 0xef) in the MBR")
	}
	// The ESP is a FAT file system holding the removable-media boot path.
	dir, err := exec.Command("mdir", "-i", fmt.Sprintf("%s@@%d", iso, int64(espStart)*512), "::/EFI/BOOT").CombinedOutput()
	if err != nil || !strings.Contains(strings.ToUpper(string(dir)), "BOOTX64  EFI") {
		t.Errorf("ESP lacks \\EFI\\BOOT\\BOOTX64.EFI: %v\n%s", err, dir)
	}

	ls, err := exec.Command("xorriso", "-indev", iso, "-find", "/live", "-type", "f").CombinedOutput()
	if err != nil {
		t.Fatalf("xorriso -find: %v\n%s", err, ls)
	}
	for _, want := range []string{"vmlinuz", "initrd.img", contract.NFSInitrdFile, contract.BaseLayer, contract.CustomLayer, "memtest86+x64.bin", "memtest86+x64.efi"} {
		if !strings.Contains(string(ls), "'/live/"+want+"'") {
			t.Errorf("ISO lacks /live/%s:\n%s", want, ls)
		}
	}
	cfg, err := exec.Command("xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/boot/grub/grub.cfg", filepath.Join(t.TempDir(), "grub.cfg")).CombinedOutput()
	if err != nil {
		t.Fatalf("extracting grub.cfg: %v\n%s", err, cfg)
	}
}

// bootPattern is what the serial console shows at the login prompt: the
// ClusterDebian banner with the node's name and role, then getty's prompt.
var bootPattern = regexp.MustCompile(`(?s)ClusterDebian \S+ on Debian.*Node: node1\s+Address: .*Role: head \(node1\).*node1 login:`)

func TestBootBIOSFromCD(t *testing.T) {
	t.Parallel()
	out, _ := defaultImage(t)
	bootAndWait(t, vm.Spec{Name: "bios-cd", Firmware: vm.BIOS, CDROM: filepath.Join(out, imagebuild.ISOName)})
}

func TestBootUEFIFromUSB(t *testing.T) {
	t.Parallel()
	out, _ := defaultImage(t)
	bootAndWait(t, vm.Spec{Name: "uefi-usb", Firmware: vm.UEFI, USBDisk: filepath.Join(out, imagebuild.ISOName)})
}

func bootAndWait(t *testing.T, spec vm.Spec) {
	t.Helper()
	spec.Dir = t.TempDir()
	spec.MemoryMiB = 2048
	m, err := vm.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	// Under TCG a live system takes about 90 s to its login prompt; the
	// deadline is a guard against a hang, not a speed requirement.
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	if _, err := m.WaitFor(ctx, bootPattern); err != nil {
		t.Fatalf("%v\nserial console tail:\n%s", err, tail(m.Serial(), 40))
	}
	t.Logf("%s reached the login prompt:\n%s", spec.Name, tail(m.Serial(), 14))
}

// TestOverlayRebuild changes one overlay file: only the stages after bootstrap
// run again, and the new content is in the image.
func TestOverlayRebuild(t *testing.T) {
	defaultImage(t) // the bootstrap is cached by now
	dir := t.TempDir()
	overlay := filepath.Join(dir, "overlay")
	if err := os.MkdirAll(filepath.Join(overlay, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	note := filepath.Join(overlay, "etc", "lab-note")
	cfg := filepath.Join(dir, "cluster.toml")
	if err := os.WriteFile(cfg, []byte("[image]\noverlay = \"overlay\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")

	os.WriteFile(note, []byte("first\n"), 0o644)
	build(t, out, "--config", cfg)
	os.WriteFile(note, []byte("second\n"), 0o644)
	rep := build(t, out, "--config", cfg)

	ran := map[string]bool{}
	for _, s := range rep.Stages {
		ran[s.Name] = s.Ran
	}
	want := map[string]bool{"bootstrap": false, "customize": true, "layer": true, "iso": true}
	for st, w := range want {
		if ran[st] != w {
			t.Errorf("stage %s ran=%v, want %v (report %+v)", st, ran[st], w, rep.Stages)
		}
	}
	got, err := layerFile(filepath.Join(out, "netboot", contract.CustomLayer), "/etc/lab-note")
	if err != nil || string(got) != "second\n" {
		t.Errorf("etc/lab-note in the image = %q (%v), want \"second\\n\"", got, err)
	}

	// Unchanged inputs: nothing runs.
	rep = build(t, out, "--config", cfg)
	for _, s := range rep.Stages {
		if s.Ran {
			t.Errorf("stage %s ran again with unchanged inputs", s.Name)
		}
	}
}

// TestBuildBadInput: each kind of bad input gets an error that names its cause.
func TestBuildBadInput(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(text), 0o644)
		return p
	}

	t.Run("invalid config", func(t *testing.T) {
		r := run(t, ctx, "build", "--config", write("bad.toml", "[image]\nsuite = \"sid\"\npakages = [\"x\"]\n"), "--output", filepath.Join(dir, "o1"))
		if r.code == 0 || !strings.Contains(r.out, "image.pakages") || !strings.Contains(r.out, "image.suite") {
			t.Errorf("want an error naming image.pakages and image.suite, got exit %d:\n%s", r.code, r.out)
		}
	})
	t.Run("pvm on trixie", func(t *testing.T) {
		r := run(t, ctx, "build", "--config", write("pvm.toml", "[cluster]\nparallel = [\"mpi\", \"pvm\"]\n"), "--output", filepath.Join(dir, "o2"))
		if r.code == 0 || !strings.Contains(r.out, "cluster.parallel") || !strings.Contains(r.out, "bookworm") {
			t.Errorf("want an error naming cluster.parallel and bookworm, got exit %d:\n%s", r.code, r.out)
		}
	})
	t.Run("unknown package", func(t *testing.T) {
		r := run(t, ctx, "build", "--config", write("pkg.toml", "[image]\npackages = [\"no-such-package-cdtest\"]\n"),
			"--output", filepath.Join(dir, "o3"), "--cache-dir", filepath.Join(dir, "cache3"))
		if r.code == 0 || !strings.Contains(r.out, `"no-such-package-cdtest"`) || !strings.Contains(r.out, "build.log") {
			t.Errorf("want an error naming the package and the log, got exit %d:\n%s", r.code, r.out)
		}
		assertNoMounts(t, filepath.Join(dir, "cache3"))
	})
	t.Run("missing tool", func(t *testing.T) {
		cmd := exec.CommandContext(ctx, cdBinary, "build", "--output", filepath.Join(dir, "o4"))
		cmd.Env = []string{"PATH=" + filepath.Dir(cdBinary)} // nothing else on PATH
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "mmdebstrap") || !strings.Contains(string(out), "apt-get install") {
			t.Errorf("want an error listing mmdebstrap and the apt-get command, got %v:\n%s", err, out)
		}
	})
	t.Run("not root", func(t *testing.T) {
		cmd := exec.CommandContext(ctx, cdBinary, "build", "--output", filepath.Join(dir, "o5"))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "must run as root") {
			t.Errorf("want a 'must run as root' error, got %v:\n%s", err, out)
		}
	})
	t.Run("no disk space", func(t *testing.T) {
		small := filepath.Join(dir, "small")
		os.MkdirAll(small, 0o755)
		if err := syscall.Mount("tmpfs", small, "tmpfs", 0, "size=64m"); err != nil {
			t.Skipf("cannot mount a small tmpfs: %v", err)
		}
		defer syscall.Unmount(small, syscall.MNT_DETACH)
		r := run(t, ctx, "build", "--output", filepath.Join(dir, "o6"), "--cache-dir", small, "--force")
		if r.code == 0 || !strings.Contains(r.out, "not enough disk space") || !strings.Contains(r.out, small) {
			t.Errorf("want a disk space error naming %s, got exit %d:\n%s", small, r.code, r.out)
		}
	})
}

// assertNoMounts fails when anything is still mounted below dir.
func assertNoMounts(t *testing.T, dir string) {
	t.Helper()
	data, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir) {
			t.Errorf("left mounted: %s", f[4])
		}
	}
}

// TestInterruptedBuild: Ctrl-C during the bootstrap leaves no mounts, no stray
// processes and an intact cache, and the next build succeeds.
func TestInterruptedBuild(t *testing.T) {
	defaultImage(t)
	out := filepath.Join(t.TempDir(), "out")
	cmd := exec.Command(cdBinary, "build", "--output", out, "--cache-dir", cacheDir(), "--from", "bootstrap")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until mmdebstrap is installing packages inside its chroot.
	logPath := filepath.Join(out, imagebuild.LogName)
	deadline := time.Now().Add(10 * time.Minute)
	for {
		log, _ := os.ReadFile(logPath)
		if strings.Contains(string(log), "I: installing remaining packages") || strings.Contains(string(log), "I: extracting archives") {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("mmdebstrap never got going:\n%s", tail(string(log), 30))
		}
		time.Sleep(time.Second)
	}
	time.Sleep(3 * time.Second)
	// Ctrl-C reaches the whole foreground process group.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
	err := cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 130 {
		t.Errorf("interrupted build: %v, want exit code 130", err)
	}
	assertNoMounts(t, cacheDir())
	// No process of the build may survive it.
	// (Matched by this build's scratch folder, so that an unrelated build
	// elsewhere on the machine does not count.)
	if out, _ := exec.Command("pgrep", "-f", filepath.Join(cacheDir(), "tmp")+"/").Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("processes left behind: %s", out)
	}
	// Nor any process chrooted into its scratch folder (apt, dpkg).
	roots, _ := filepath.Glob("/proc/[0-9]*/root")
	for _, r := range roots {
		if target, err := os.Readlink(r); err == nil && strings.HasPrefix(target, filepath.Join(cacheDir(), "tmp")+"/") {
			t.Errorf("process %s left behind, chrooted in %s", filepath.Base(filepath.Dir(r)), target)
		}
	}
	// The cache still serves the old bootstrap, and the next build succeeds.
	rep := build(t, out)
	for _, s := range rep.Stages {
		if s.Name == imagebuild.StageBootstrap && s.Ran {
			t.Errorf("the next build ran the bootstrap again: the interrupted build damaged the cache (%s)", s.Reason)
		}
	}
}

// layerFile reads a file from the custom layer (an ext4 image) with debugfs.
func layerFile(img, path string) ([]byte, error) {
	if out, err := exec.Command("debugfs", "-R", "stat "+path, img).CombinedOutput(); err != nil || strings.Contains(string(out), "File not found") {
		return nil, fmt.Errorf("%s not in %s: %v %s", path, img, err, out)
	}
	return exec.Command("debugfs", "-R", "cat "+path, img).Output()
}
