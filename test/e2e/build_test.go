//go:build e2e

package e2e

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
	"github.com/clusterdebian/clusterdebian/internal/testsupport"
	"github.com/clusterdebian/clusterdebian/internal/tether"
	"github.com/clusterdebian/clusterdebian/internal/vm"
)

func TestDefaultImageBuilds(t *testing.T) {
	needE2E(t)
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
	checkSlurmInImage(t, out)
}

// TestISOLayout checks that one image boots from CD and USB stick, on BIOS
// and UEFI: El Torito entries for both, an MBR partition table with an EFI
// system partition, and the live files.
func TestISOLayout(t *testing.T) {
	needE2E(t)
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
	// The ESP is a FAT file system holding the removable-media boot path:
	// Debian's shim, signed by Microsoft, the signed GRUB CD image it
	// loads, and the early configuration that finds the menu.
	esp := fmt.Sprintf("%s@@%d", iso, int64(espStart)*512)
	dir, err := exec.Command("mdir", "-i", esp, "::/EFI/BOOT").CombinedOutput()
	if err != nil || !strings.Contains(strings.ToUpper(string(dir)), "BOOTX64  EFI") || !strings.Contains(strings.ToUpper(string(dir)), "GRUBX64  EFI") {
		t.Errorf("ESP lacks \\EFI\\BOOT\\BOOTX64.EFI or grubx64.efi: %v\n%s", err, dir)
	}
	netboot := filepath.Join(out, imagebuild.NetbootDir)
	for espFile, signed := range map[string]string{"::/EFI/BOOT/BOOTX64.EFI": contract.UEFIPXEBootFile, "::/EFI/BOOT/grubx64.efi": ""} {
		data, err := exec.Command("mtype", "-i", esp, espFile).Output()
		if err != nil {
			t.Errorf("reading %s from the ESP: %v", espFile, err)
			continue
		}
		// A PE file with an Authenticode signature (its certificate
		// table, the security directory, is not empty).
		if !signedPE(data) {
			t.Errorf("%s in the ESP is not a signed EFI program", espFile)
		}
		if signed != "" {
			if want, err := os.ReadFile(filepath.Join(netboot, signed)); err != nil || string(want) != string(data) {
				t.Errorf("%s in the ESP is not the shim published as netboot/%s (%v)", espFile, signed, err)
			}
		}
	}
	if early, err := exec.Command("mtype", "-i", esp, "::/boot/grub/grub.cfg").Output(); err != nil || !strings.Contains(string(early), "search --no-floppy --file --set=root /.disk/clusterdebian-") {
		t.Errorf("the ESP's /boot/grub/grub.cfg does not find this build's medium: %v\n%s", err, early)
	}
	for _, f := range []string{contract.UEFIPXEBootFile, contract.GRUBNetFile} {
		data, err := os.ReadFile(filepath.Join(netboot, f))
		if err != nil || !signedPE(data) {
			t.Errorf("netboot/%s is not a signed EFI program: %v", f, err)
		}
	}

	ls, err := exec.Command("xorriso", "-indev", iso, "-find", "/live", "-type", "f").CombinedOutput()
	if err != nil {
		t.Fatalf("xorriso -find: %v\n%s", err, ls)
	}
	for _, want := range []string{"vmlinuz", "initrd.img", contract.NFSInitrdFile, contract.BaseLayer, contract.CustomLayer, "memtest86+x64.bin", "memtest86+x64.efi",
		contract.UEFIPXEBootFile, contract.GRUBNetFile} {
		if !strings.Contains(string(ls), "'/live/"+want+"'") {
			t.Errorf("ISO lacks /live/%s:\n%s", want, ls)
		}
	}
	grubCfg := filepath.Join(t.TempDir(), "grub.cfg")
	if out, err := exec.Command("xorriso", "-osirrox", "on", "-indev", iso, "-extract", "/boot/grub/grub.cfg", grubCfg).CombinedOutput(); err != nil {
		t.Fatalf("extracting grub.cfg: %v\n%s", err, out)
	}
	cfg, err := os.ReadFile(grubCfg)
	if err != nil {
		t.Fatal(err)
	}
	checkBootMenu(t, string(cfg))
}

// checkBootMenu checks the boot menu the README promises: ClusterDebian,
// the default, after 5 seconds; a memory test on BIOS and on UEFI, each
// with a program the ISO has; booting from the first hard disk.
// (TestBootBIOSFromCD and TestBootUEFIFromUSB see the menu on the screen.)
func checkBootMenu(t *testing.T, cfg string) {
	t.Helper()
	setting := func(name string) string {
		m := regexp.MustCompile(`(?m)^\s*set ` + name + `=(\S+)\s*$`).FindStringSubmatch(cfg)
		if m == nil {
			return ""
		}
		return m[1]
	}
	entries := regexp.MustCompile(`(?m)^\s*menuentry "([^"]+)"`).FindAllStringSubmatch(cfg, -1)
	if len(entries) == 0 {
		t.Fatalf("grub.cfg has no menu entries:\n%s", cfg)
	}
	if def := setting("default"); def != "0" && def != "clusterdebian" {
		t.Errorf("grub.cfg: default=%q, want the first entry (0)", def)
	}
	if !strings.HasPrefix(entries[0][1], "ClusterDebian") {
		t.Errorf("grub.cfg: the first (default) entry is %q, want ClusterDebian", entries[0][1])
	}
	if got := setting("timeout"); got != "5" {
		t.Errorf("grub.cfg: timeout=%q, want 5 (seconds)", got)
	}
	if !regexp.MustCompile(`(?s)menuentry "ClusterDebian[^{]*\{[^}]*linux /live/vmlinuz boot=live[^}]*initrd /live/initrd\.img`).MatchString(cfg) {
		t.Errorf("grub.cfg: the ClusterDebian entry does not boot /live/vmlinuz with /live/initrd.img:\n%s", cfg)
	}
	for _, re := range []string{
		// BIOS: memtest86+'s 16-bit entry; UEFI: its EFI program.
		`(?s)"pc" \]; then\s*menuentry "Memory test[^{]*\{\s*linux16 /live/memtest86\+x64\.bin\s*\}`,
		// UEFI: its EFI program, or under Secure Boot (Debian's signed GRUB
		// sets shim_lock) an entry that says why it cannot run.
		`(?s)"efi" \]; then.*"\$shim_lock" = "y" \]; then\s*menuentry "Memory test \(memtest86\+\): not with Secure Boot on"[^{]*\{[^}]*Secure Boot[^}]*\}` +
			`\s*else\s*menuentry "Memory test \(memtest86\+\)"[^{]*\{\s*linux /live/memtest86\+x64\.efi\s*\}`,
		// The first hard disk: chainloaded on BIOS, back to the
		// firmware's next boot entry on UEFI.
		`(?s)menuentry "Boot from the first hard disk"[^{]*\{.*exit.*chainloader \+1`,
	} {
		if !regexp.MustCompile(re).MatchString(cfg) {
			t.Errorf("grub.cfg has nothing matching %s:\n%s", re, cfg)
		}
	}
}

// menuShown checks the boot menu on a machine's serial console: GRUB drew
// the three entries with ClusterDebian highlighted, counted down from 5 s
// and booted ClusterDebian.
func menuShown(t *testing.T, serial string) {
	t.Helper()
	for _, want := range []string{"*ClusterDebian (node1, the head)", "Memory test (memtest86+)", "Boot from the first hard disk",
		"executed automatically in 5s", "Booting `ClusterDebian (node1, the head)'"} {
		if !strings.Contains(serial, want) {
			t.Errorf("the boot menu on the console lacks %q", want)
		}
	}
}

// bootPattern is what the serial console shows at the login prompt: the
// ClusterDebian banner with the node's name and role, then getty's prompt.
var bootPattern = regexp.MustCompile(`(?s)ClusterDebian \S+ on Debian.*Node: node1\s+Address: .*Role: head \(node1\).*node1 login:`)

func TestBootBIOSFromCD(t *testing.T) {
	needE2E(t)
	t.Parallel()
	out, _ := defaultImage(t)
	bootAndWait(t, vm.Spec{Name: "bios-cd", Firmware: vm.BIOS, CDROM: filepath.Join(out, imagebuild.ISOName)})
}

func TestBootUEFIFromUSB(t *testing.T) {
	needE2E(t)
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
	menuShown(t, m.Serial())
}

// TestOverlayRebuild changes one overlay file: only the stages after bootstrap
// run again, and the new content is in the image.
func TestOverlayRebuild(t *testing.T) {
	needE2E(t)
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
	needE2E(t)
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

// mountsUnder returns the mount points below dir that any process on this
// machine sees, with a process that sees each, from every
// /proc/PID/mountinfo: the bootstrap mounts in a mount namespace of its
// own, which this test's /proc/self/mountinfo never shows.
func mountsUnder(dir string) (map[string]string, error) {
	dir = filepath.Clean(dir) + "/"
	infos, err := filepath.Glob("/proc/[0-9]*/mountinfo")
	if err != nil {
		return nil, err
	}
	found := map[string]string{}
	for _, info := range infos {
		data, err := os.ReadFile(info)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) || errors.Is(err, syscall.EINVAL) {
			continue // the process ended meanwhile
		}
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4]+"/", dir) {
				found[f[4]] = filepath.Base(filepath.Dir(info))
			}
		}
	}
	return found, nil
}

// assertNoMounts fails when any process still sees anything mounted below
// dir.
func assertNoMounts(t *testing.T, dir string) {
	t.Helper()
	left, err := mountsUnder(dir)
	if err != nil {
		t.Fatalf("reading the mount tables: %v", err)
	}
	for m, pid := range left {
		t.Errorf("left mounted: %s (seen by process %s)", m, pid)
	}
}

// processesIn returns the processes whose command line or root is below
// dir, from /proc: the processes of a build, by its scratch folder, so that
// an unrelated build elsewhere on the machine does not count.
func processesIn(dir string) ([]string, error) {
	dir = filepath.Clean(dir) + "/"
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return nil, err
	}
	self := strconv.Itoa(os.Getpid())
	var found []string
	for _, p := range procs {
		pid := filepath.Base(p)
		if pid == self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join(p, "cmdline"))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			continue // ended meanwhile
		}
		if err != nil {
			return nil, err
		}
		args := strings.ReplaceAll(string(cmdline), "\x00", " ")
		root, _ := os.Readlink(filepath.Join(p, "root")) // gone meanwhile: ""
		if strings.Contains(args, dir) || strings.HasPrefix(root+"/", dir) {
			found = append(found, fmt.Sprintf("%s (%s, root %s)", pid, strings.TrimSpace(args), root))
		}
	}
	return found, nil
}

// TestInterruptedBuild: Ctrl-C during the bootstrap leaves no mounts, no stray
// processes and an intact cache, and the next build succeeds.
func TestInterruptedBuild(t *testing.T) {
	needE2E(t)
	defaultImage(t)
	out := filepath.Join(t.TempDir(), "out")
	scratch := filepath.Join(cacheDir(), "tmp")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cdBinary, "build", "--output", out, "--cache-dir", cacheDir(), "--from", "bootstrap")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := tether.Start(cmd); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	// Wait until mmdebstrap is installing packages inside its chroot, and
	// the bootstrap's mounts are there to see: the checks below can see
	// them, so their absence afterwards means something.
	logPath := filepath.Join(out, imagebuild.LogName)
	var seen map[string]string
	testsupport.WaitFor(t, ctx, "mmdebstrap's mounts", time.Second, 10*time.Minute, func() bool {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(logPath)
			t.Fatalf("the build ended (%v) before its bootstrap was seen mounting:\n%s", err, tail(string(log), 30))
		default:
		}
		log, _ := os.ReadFile(logPath)
		if !strings.Contains(string(log), "I: installing remaining packages") && !strings.Contains(string(log), "I: extracting archives") {
			return false
		}
		var err error
		if seen, err = mountsUnder(scratch); err != nil {
			t.Fatalf("reading the mount tables: %v", err)
		}
		return len(seen) > 0
	}, func() string {
		log, _ := os.ReadFile(logPath)
		return tail(string(log), 30)
	})
	t.Logf("the bootstrap has %d mounts below %s, for example %s", len(seen), scratch, slices.Sorted(maps.Keys(seen))[0])
	if procs, err := processesIn(scratch); err != nil || len(procs) == 0 {
		t.Fatalf("no process of the running build found below %s (%v): the check for leftovers could not see one either", scratch, err)
	}
	// Ctrl-C reaches the whole foreground process group.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
	err := <-exited
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 130 {
		t.Errorf("interrupted build: %v, want exit code 130", err)
	}
	assertNoMounts(t, scratch)
	// No process of the build may survive it, nor any process chrooted
	// into its scratch folder (apt, dpkg).
	procs, err := processesIn(scratch)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		t.Errorf("process left behind: %s", p)
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

// signedPE reports whether data is a PE (EFI) program with an Authenticode
// signature: the PE optional header's security directory (data directory
// 4) is not empty.
func signedPE(data []byte) bool {
	if len(data) < 0x40 || string(data[:2]) != "MZ" {
		return false
	}
	pe := int(binary.LittleEndian.Uint32(data[0x3c:]))
	if pe+24+2 > len(data) || string(data[pe:pe+4]) != "PE\x00\x00" {
		return false
	}
	opt := pe + 24
	var dirs int
	switch binary.LittleEndian.Uint16(data[opt:]) {
	case 0x20b: // PE32+
		dirs = opt + 112
	case 0x10b: // PE32
		dirs = opt + 96
	default:
		return false
	}
	sec := dirs + 4*8
	if sec+8 > len(data) {
		return false
	}
	addr, size := binary.LittleEndian.Uint32(data[sec:]), binary.LittleEndian.Uint32(data[sec+4:])
	return addr != 0 && size != 0 && int(addr)+int(size) <= len(data)
}
