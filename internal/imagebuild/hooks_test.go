package imagebuild

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/imagefiles"
	"github.com/clusterdebian/clusterdebian/internal/contract"
)

// TestHookArguments checks the hook options given to mmdebstrap: every shell
// hook is the text of its file in imagefiles/hooks, the uploads stand
// between them, in that order, PVM's hook is there only with PVM, and the
// microcode's only with image.firmware, before the nodes' initrd is made.
func TestHookArguments(t *testing.T) {
	script, layers := "/build/clusterdebian-node.initramfs", "/build/clusterdebian-layers.sh"
	want := []string{
		"--essential-hook=" + imagefiles.Hook("live-initramfs-dirs.sh"),
		"--essential-hook=upload " + layers + " /usr/lib/live/boot/9995-clusterdebian-layers.sh",
		"--essential-hook=upload " + script + " /etc/initramfs-tools/scripts/live-bottom/clusterdebian-node",
		"--essential-hook=" + imagefiles.Hook("live-initramfs-modes.sh"),
	}
	rest := []string{
		"--customize-hook=" + imagefiles.Hook("nfs-initramfs-conf.sh"),
		"--customize-hook=upload " + script + " /etc/clusterdebian/initramfs-nfs/scripts/nfs-bottom/clusterdebian-node",
		"--customize-hook=" + imagefiles.Hook("nfs-initrd.sh"),
		"--customize-hook=" + imagefiles.Hook("no-ssh-host-keys.sh"),
		"--customize-hook=" + imagefiles.Hook("efi-signed.sh"),
	}
	plain := append(slices.Clone(want), rest...)
	if got := hooks(script, layers, false, false); !slices.Equal(got, plain) {
		t.Errorf("hooks without PVM:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(plain, "\n"))
	}
	want = append(append(append(want, "--customize-hook="+imagefiles.Hook("microcode-initramfs.sh")), rest...),
		"--customize-hook="+imagefiles.Hook("pvm-ssh-rsh.sh"))
	if got := hooks(script, layers, true, true); !slices.Equal(got, want) {
		t.Errorf("hooks with PVM and firmware:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// mmdebstrap runs a hook with sh -c only when it is not one of its
	// special commands and not an executable file: each file's text must
	// read as a shell command.
	for _, h := range want {
		cmd := h[strings.Index(h, "=")+1:]
		if !strings.HasPrefix(cmd, "upload ") && !strings.HasPrefix(cmd, "#!/bin/sh\n") {
			t.Errorf("hook %.40q... is neither an upload nor a sh script", cmd)
		}
	}
}

// TestHooksRun runs the hooks on a stand-in root as mmdebstrap does in root
// mode (uploads copy a host file into the root; the rest run as
// `sh -c HOOK exec ROOT`), with a chroot on PATH that records its
// arguments, and checks what they leave: the RAM-root pieces of the live
// initrd, executable; the nodes' initramfs-tools configuration, with its
// node script; the command that makes contract.NFSInitrdFile; no SSH host
// keys; PVM's remote shell; every CPU's microcode in the initrds (the
// live one made again); and Debian's signed shim and GRUB, fetched and
// unpacked in the root and taken out of its way into /boot.
func TestHooksRun(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	// What the packages have put into the root by the customize hooks.
	writeTree(t, root, map[string]string{
		"etc/initramfs-tools/initramfs.conf":    "MODULES=most\nBUSYBOX=auto\nBOOT=local\n",
		"etc/initramfs-tools/modules":           "# modules\n",
		"etc/initramfs-tools/scripts/init-top/": "",
		"etc/ssh/sshd_config":                   "# sshd\n",
		"etc/ssh/ssh_host_ed25519_key":          "secret",
		"etc/ssh/ssh_host_ed25519_key.pub":      "public",
		"etc/default/intel-microcode":           "#IUCODE_TOOL_INITRAMFS=auto\n",
		"etc/default/amd64-microcode":           "#AMD64UCODE_INITRAMFS=auto\n",
		// What apt-get download and dpkg-deb -x leave, inside the root.
		"tmp/clusterdebian-efi/x/usr/lib/shim/shimx64.efi.signed":                      "shim",
		"tmp/clusterdebian-efi/x/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed":     "gcd",
		"tmp/clusterdebian-efi/x/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed": "grubnet",
	})
	script, layers := filepath.Join(dir, "node-script"), filepath.Join(dir, "layers")
	writeTree(t, dir, map[string]string{"node-script": imagefiles.NodeInitramfsScript, "layers": imagefiles.LiveLayersScript})

	bin, calls := filepath.Join(dir, "bin"), filepath.Join(dir, "chroot-calls")
	writeTree(t, dir, map[string]string{"chroot-calls/": ""})
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	// Each call writes its arguments, NUL-terminated, to a file of its own.
	recorder := "#!/bin/sh\nprintf '%s\\0' \"$@\" > \"" + calls + "/$(ls \"" + calls + "\" | wc -l)\"\n"
	if err := os.WriteFile(filepath.Join(bin, "chroot"), []byte(recorder), 0o755); err != nil {
		t.Fatal(err)
	}

	customize := false
	for _, h := range hooks(script, layers, true, true) {
		phase, cmd, _ := strings.Cut(h, "=")
		if phase == "--customize-hook" {
			customize = true
		} else if customize {
			t.Errorf("%s after a customize hook", phase)
		}
		if args, ok := strings.CutPrefix(cmd, "upload "); ok {
			src, dst, _ := strings.Cut(args, " ")
			data, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			// mmdebstrap's upload does not make folders: the hook before it must.
			if err := os.WriteFile(filepath.Join(root, dst), data, 0o644); err != nil {
				t.Fatalf("upload to %s: %v", dst, err)
			}
			continue
		}
		sh := exec.Command("sh", "-c", cmd, "exec", root)
		sh.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
		if out, err := sh.CombinedOutput(); err != nil {
			t.Fatalf("%s %.60q...: %v\n%s", phase, cmd, err, out)
		}
	}

	for path, want := range map[string]string{
		"usr/lib/live/boot/9995-clusterdebian-layers.sh":                        imagefiles.LiveLayersScript,
		"etc/initramfs-tools/scripts/live-bottom/clusterdebian-node":            imagefiles.NodeInitramfsScript,
		"etc/clusterdebian/initramfs-nfs/scripts/nfs-bottom/clusterdebian-node": imagefiles.NodeInitramfsScript,
	} {
		fi, err := os.Stat(filepath.Join(root, path))
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if fi.Mode().Perm() != 0o755 || readFile(t, filepath.Join(root, path)) != want {
			t.Errorf("%s: mode %v, or not the embedded script", path, fi.Mode().Perm())
		}
	}
	conf := filepath.Join(root, "etc/clusterdebian/initramfs-nfs")
	if got := readFile(t, filepath.Join(conf, "initramfs.conf")); got != "MODULES=netboot\nBUSYBOX=auto\nBOOT=nfs\n" {
		t.Errorf("the nodes' initramfs.conf:\n%s", got)
	}
	if !exists(filepath.Join(conf, "modules")) || !exists(filepath.Join(conf, "scripts/init-top")) {
		t.Errorf("the nodes' configuration lacks the rest of /etc/initramfs-tools: %v", dirNames(t, conf))
	}
	if got := dirNames(t, filepath.Join(root, "etc/ssh")); !slices.Equal(got, []string{"sshd_config"}) {
		t.Errorf("/etc/ssh holds %v, want no host keys", got)
	}

	var chroots [][]string
	for i := range len(dirNames(t, calls)) {
		data := readFile(t, filepath.Join(calls, strconv.Itoa(i)))
		chroots = append(chroots, strings.Split(strings.TrimSuffix(data, "\x00"), "\x00"))
	}
	want := [][]string{
		{root, "update-initramfs", "-u", "-k", "all"},
		{root, "sh", "-c", `mkinitramfs -d /etc/clusterdebian/initramfs-nfs -o /boot/` + contract.NFSInitrdFile + ` "$(ls /lib/modules | sort -V | tail -n 1)"`},
		{root, "sh", "-c", `cd /tmp/clusterdebian-efi && apt-get -q -o APT::Sandbox::User=root download shim-signed grub-efi-amd64-signed && for deb in *.deb; do dpkg-deb -x "$deb" x; done`},
		{root, "sh", "-c", "update-alternatives --install /usr/lib/pvm3/bin/rsh pvm-rsh /usr/bin/ssh 50 && update-alternatives --set pvm-rsh /usr/bin/ssh"},
	}
	if !slices.EqualFunc(chroots, want, slices.Equal) {
		t.Errorf("chroot ran %q\nwant %q", chroots, want)
	}

	// Every CPU's microcode, early: the settings come after the
	// packages' commented defaults, so they win when the hooks source them.
	if got := readFile(t, filepath.Join(root, "etc/default/intel-microcode")); !strings.HasSuffix(got, "\nIUCODE_TOOL_INITRAMFS=early\nIUCODE_TOOL_SCANCPUS=no\n") {
		t.Errorf("/etc/default/intel-microcode:\n%s", got)
	}
	if got := readFile(t, filepath.Join(root, "etc/default/amd64-microcode")); !strings.HasSuffix(got, "\nAMD64UCODE_INITRAMFS=early\n") {
		t.Errorf("/etc/default/amd64-microcode:\n%s", got)
	}
	// The signed binaries, where the bootstrap takes them from; nothing
	// of the download is left in the root.
	efi := filepath.Join(root, efiDir)
	for name, want := range map[string]string{shimEFI: "shim", grubCDEFI: "gcd", grubNetEFI: "grubnet"} {
		if got := readFile(t, filepath.Join(efi, name)); got != want {
			t.Errorf("%s/%s = %q, want %q", efiDir, name, got, want)
		}
	}
	if exists(filepath.Join(root, "tmp/clusterdebian-efi")) {
		t.Error("the download of shim and GRUB is left in the root's /tmp")
	}
}

// TestPackageHooksRun runs the hooks that packages bring on a stand-in
// root, as TestHooksRun does: with munge, the key its installation made is
// gone, and munge's other files stay. Without munge there is no such hook.
func TestPackageHooksRun(t *testing.T) {
	if hs := packageHooks([]string{"openssh-server", "openmpi-bin"}); len(hs) != 0 {
		t.Errorf("hooks without munge: %q", hs)
	}
	root := filepath.Join(t.TempDir(), "root")
	writeTree(t, root, map[string]string{"etc/munge/munge.key": "secret", "etc/munge/other": "x"})
	hs := packageHooks([]string{"munge", "slurmd"})
	if len(hs) != 1 {
		t.Fatalf("hooks with munge: %q, want one", hs)
	}
	for _, h := range hs {
		phase, cmd, _ := strings.Cut(h, "=")
		if phase != "--customize-hook" {
			t.Errorf("%s: want customize hooks only", phase)
		}
		if out, err := exec.Command("sh", "-c", cmd, "exec", root).CombinedOutput(); err != nil {
			t.Fatalf("%.60q...: %v\n%s", cmd, err, out)
		}
	}
	if got := dirNames(t, filepath.Join(root, "etc/munge")); !slices.Equal(got, []string{"other"}) {
		t.Errorf("/etc/munge holds %v, want no key", got)
	}
}
