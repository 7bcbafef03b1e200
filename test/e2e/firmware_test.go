//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/imagebuild"
)

// TestImageFirmware checks image.firmware (on by default) in the built
// default image: the firmware of common wired network cards is in node1's
// root and in the nodes' NFS-root initrd, which also holds those cards'
// drivers, so a node whose card needs firmware has a network before it
// mounts its root; every CPU's microcode is in both initrds, loaded
// early; and the build report lists the packages with their size.
func TestImageFirmware(t *testing.T) {
	needE2E(t)
	out, rep := defaultImage(t)
	netboot := filepath.Join(out, imagebuild.NetbootDir)

	// The firmware each driver asks for (modinfo -F firmware), by folder.
	firmware := []string{"rtl_nic/", "bnx2/", "bnx2x/", "tigon/"}
	drivers := []string{"r8169", "bnx2", "bnx2x", "tg3", "e1000e", "igb"}

	root, err := exec.Command("unsquashfs", "-l", filepath.Join(netboot, contract.BaseLayer), "usr/lib/firmware").Output()
	if err != nil {
		t.Fatalf("listing the base layer: %v", err)
	}
	for _, fw := range firmware {
		if n := countPrefix(strings.Split(string(root), "\n"), "squashfs-root/usr/lib/firmware/"+fw); n == 0 {
			t.Errorf("node1's root has no /usr/lib/firmware/%s", fw)
		} else {
			t.Logf("node1's root: %d files in /usr/lib/firmware/%s", n, fw)
		}
	}

	for _, initrd := range []string{contract.NFSInitrdFile, contract.InitrdFile} {
		files, err := initrdFiles(filepath.Join(netboot, initrd))
		if err != nil {
			t.Fatalf("%s: %v", initrd, err)
		}
		t.Logf("%s holds %d files", initrd, len(files))
		// /lib is /usr/lib in a merged-/usr root; either may be named.
		for i, f := range files {
			files[i] = strings.TrimPrefix(f, "usr/")
		}
		for _, fw := range firmware {
			if n := countPrefix(files, "lib/firmware/"+fw); n == 0 {
				t.Errorf("%s has no firmware in /usr/lib/firmware/%s", initrd, fw)
			}
		}
		for _, d := range drivers {
			re := regexp.MustCompile(`^lib/modules/[^/]+/kernel/drivers/net/ethernet/.*/` + d + `\.ko(\.[a-z]+)?$`)
			if !slices.ContainsFunc(files, re.MatchString) {
				t.Errorf("%s lacks the %s driver", initrd, d)
			}
		}
		for _, mc := range []string{"kernel/x86/microcode/GenuineIntel.bin", "kernel/x86/microcode/AuthenticAMD.bin"} {
			if !slices.Contains(files, mc) {
				t.Errorf("%s lacks the early microcode %s", initrd, mc)
			}
		}
	}

	if rep.Firmware == nil {
		t.Fatal("the build report lists no firmware")
	}
	var names []string
	for _, p := range rep.Firmware.Packages {
		names = append(names, p.Name)
		if p.Version == "" || p.InstalledKiB <= 0 {
			t.Errorf("report: %+v", p)
		}
	}
	for _, want := range []string{"firmware-realtek", "firmware-bnx2", "firmware-bnx2x", "firmware-misc-nonfree", "intel-microcode", "amd64-microcode"} {
		if !slices.Contains(names, want) {
			t.Errorf("the build report's firmware lacks %s: %v", want, names)
		}
	}
	t.Logf("image.firmware: %s, %.0f MiB installed", strings.Join(names, ", "), float64(rep.Firmware.InstalledKiB)/1024)
}

func countPrefix(list []string, prefix string) int {
	n := 0
	for _, s := range list {
		if strings.HasPrefix(s, prefix) && !strings.HasSuffix(s, "/") && len(s) > len(prefix) {
			n++
		}
	}
	return n
}

// initrdFiles lists the files of an initrd as initramfs-tools makes it:
// cpio archives one after the other, the first ones uncompressed (the
// early microcode), the last compressed (zstd, xz or gzip, which the
// host's tools unpack).
func initrdFiles(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var files []string
	for len(data) > 0 {
		data = bytes.TrimLeft(data, "\x00")
		if len(data) == 0 {
			break
		}
		if bytes.HasPrefix(data, []byte("070701")) {
			names, rest, err := cpioNames(data)
			if err != nil {
				return nil, err
			}
			files = append(files, names...)
			data = rest
			continue
		}
		var tool string
		switch {
		case bytes.HasPrefix(data, []byte{0x28, 0xb5, 0x2f, 0xfd}):
			tool = "zstd"
		case bytes.HasPrefix(data, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
			tool = "xz"
		case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
			tool = "gzip"
		default:
			return nil, fmt.Errorf("%s: neither cpio nor a compression known here at % x", path, data[:min(8, len(data))])
		}
		cmd := exec.Command(tool, "-dc")
		cmd.Stdin = bytes.NewReader(data)
		unpacked, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("%s: %s -dc: %v", path, tool, err)
		}
		for len(unpacked) > 0 {
			unpacked = bytes.TrimLeft(unpacked, "\x00")
			if len(unpacked) == 0 {
				break
			}
			names, rest, err := cpioNames(unpacked)
			if err != nil {
				return nil, fmt.Errorf("%s (%s): %w", path, tool, err)
			}
			files = append(files, names...)
			unpacked = rest
		}
		break // the compressed archive is the last part
	}
	return files, nil
}

// cpioNames reads one "newc" cpio archive from data up to its trailer and
// returns its entries' names (without a leading "./") and what follows it.
func cpioNames(data []byte) (names []string, rest []byte, err error) {
	pad := func(n int) int { return (n + 3) &^ 3 }
	for {
		if len(data) < 110 || string(data[:6]) != "070701" {
			return nil, nil, fmt.Errorf("bad cpio header at % x", data[:min(8, len(data))])
		}
		field := func(i int) (int, error) {
			v, err := strconv.ParseUint(string(data[6+8*i:6+8*i+8]), 16, 32)
			return int(v), err
		}
		size, err1 := field(6)
		nameSize, err2 := field(11)
		if err1 != nil || err2 != nil || 110+nameSize > len(data) {
			return nil, nil, fmt.Errorf("bad cpio header %q", data[:110])
		}
		name := strings.TrimPrefix(string(data[110:110+nameSize-1]), "./")
		next := pad(110+nameSize) + pad(size)
		if next > len(data) {
			next = len(data)
		}
		data = data[next:]
		if name == "TRAILER!!!" {
			return names, data, nil
		}
		names = append(names, name)
	}
}
