package imagebuild

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/contract"
)

// TestMenuChoosesCard: the boot menu offers node1 on its first, second and
// third wired card, each with the live system's command line and the
// kernel parameter the head reads back (contract.ParseCmdline).
func TestMenuChoosesCard(t *testing.T) {
	cmdline := "console=ttyS0,115200n8 console=tty0 overlay.nfs_export=Y overlay.index=Y quiet"
	cfg, err := render("grub.cfg.tmpl", map[string]any{"Version": "test", "Timeout": 5, "Cmdline": cmdline,
		"InterfaceParam": contract.ParamInterface, "Cards": menuCards})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cfg, "\tlinux /live/vmlinuz boot=live "+cmdline+"\n") {
		t.Errorf("the default entry changed:\n%s", cfg)
	}
	linux := regexp.MustCompile(`(?m)^\t\tlinux /live/vmlinuz (.*)$`).FindAllStringSubmatch(cfg, -1)
	if len(linux) != 3 {
		t.Fatalf("%d card entries, want 3:\n%s", len(linux), cfg)
	}
	for i, m := range linux {
		c, err := contract.ParseCmdline(m[1])
		if err != nil || c.Node || c.Interface != []string{"1", "2", "3"}[i] || !strings.HasPrefix(m[1], "boot=live "+cmdline+" ") {
			t.Errorf("entry %d: %q reads as %+v, %v", i+1, m[1], c, err)
		}
	}
	if !strings.Contains(cfg, `menuentry "Cluster network on the second wired card (clusterdebian.interface=2)"`) {
		t.Errorf("the second card's entry is not named for people:\n%s", cfg)
	}
}

// TestMenuMemtestUnderSecureBoot: with Secure Boot on (Debian's signed GRUB
// sets shim_lock=y) the UEFI memory test entry says why it cannot run
// instead of failing; without, it runs memtest86+'s EFI program; BIOS keeps
// its entry. The menu and the early configuration are valid GRUB scripts.
func TestMenuMemtestUnderSecureBoot(t *testing.T) {
	cfg, err := render("grub.cfg.tmpl", map[string]any{"Version": "test", "Timeout": 5, "Cmdline": "quiet",
		"InterfaceParam": contract.ParamInterface, "Cards": menuCards, "MemtestBIOS": "memtest86+x64.bin", "MemtestEFI": "memtest86+x64.efi"})
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`(?s)"pc" \]; then\s*menuentry "Memory test \(memtest86\+\)"[^{]*\{\s*linux16 /live/memtest86\+x64\.bin\s*\}`,
		`(?s)"efi" \]; then.*if \[ "\$shim_lock" = "y" \]; then\s*menuentry "Memory test \(memtest86\+\): not with Secure Boot on"[^{]*\{[^}]*Secure Boot off in the firmware setup[^}]*\}` +
			`\s*else\s*menuentry "Memory test \(memtest86\+\)"[^{]*\{\s*linux /live/memtest86\+x64\.efi\s*\}\s*fi`,
	} {
		if !regexp.MustCompile(re).MatchString(cfg) {
			t.Errorf("the menu has nothing matching %s:\n%s", re, cfg)
		}
	}
	early, err := render("grub-early.cfg.tmpl", map[string]string{"ID": "clusterdebian-test"})
	if err != nil {
		t.Fatal(err)
	}
	check, err := exec.LookPath("grub-script-check")
	if err != nil {
		t.Skipf("no grub-script-check (grub-common) to check the scripts' syntax: %v", err)
	}
	for name, text := range map[string]string{"grub.cfg": cfg, "early.cfg": early} {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(check, p).CombinedOutput(); err != nil {
			t.Errorf("grub-script-check %s: %v\n%s", name, err, out)
		}
	}
}
