package imagebuild

import (
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
