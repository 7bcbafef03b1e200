package imagebuild

import (
	"context"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/clusterdebian/clusterdebian/imagefiles"
	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
)

// customizeRecipe changes whenever the customize stage changes what it writes
// beyond its inputs.
const customizeRecipe = 1

// enabledUnits are the systemd units of imagefiles/ that start at boot.
var enabledUnits = map[string]string{
	"clusterdebian-issue.service": "multi-user.target",
	"clusterdebian-head.service":  "multi-user.target",
	"clusterdebian-node.service":  "multi-user.target",
}

func (b *build) customizeKey() string {
	c := b.Config
	// Hash plain passwords instead of keeping them in the key material.
	type acct struct {
		Name, Pass, Hash string
		Keys             []string
		Sudo             bool
	}
	var accts []acct
	for _, a := range b.accounts {
		accts = append(accts, acct{a.Name, Key(a.Password), a.Hash, a.Keys, a.Sudo})
	}
	return Key("customize", customizeRecipe, b.keys[StageBootstrap], b.binHash, embeddedHash(),
		accts, b.overlay, c.ForImage())
}

// embeddedHash fingerprints imagefiles/, which is compiled into the binary
// (so binHash covers it too); kept explicit for clarity.
func embeddedHash() string {
	var parts []string
	fs.WalkDir(imagefiles.Root(), ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			data, _ := fs.ReadFile(imagefiles.Root(), p)
			parts = append(parts, p, Key(string(data)))
		}
		return nil
	})
	return Key(parts)
}

// checkStatic makes sure the binary runs on the image without the host's
// libraries: it must be statically linked (CGO_ENABLED=0).
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("clusterdebian binary %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("clusterdebian binary %s is dynamically linked; build it with CGO_ENABLED=0 (scripts/build-iso does)", path)
		}
	}
	return nil
}

func (b *build) customize(ctx context.Context, dir string, r *runner) error {
	layer := filepath.Join(dir, "root")
	if err := os.MkdirAll(layer, 0o755); err != nil {
		return err
	}
	base := b.dirs[StageBootstrap]

	r.stage.Status("systemd units, banner and man pages")
	if err := writeEmbedded(layer); err != nil {
		return err
	}
	for unit, target := range enabledUnits {
		wants := filepath.Join(layer, "etc/systemd/system", target+".wants")
		if err := os.MkdirAll(wants, 0o755); err != nil {
			return err
		}
		if err := os.Symlink("/etc/systemd/system/"+unit, filepath.Join(wants, unit)); err != nil {
			return err
		}
	}
	// agetty shows the banner that clusterdebian-issue.service renders at boot.
	if err := os.Symlink("/run/clusterdebian/issue", filepath.Join(layer, "etc/issue")); err != nil {
		return err
	}
	if err := writeFiles(layer, map[string]string{
		"etc/hostname": "node1\n",
		// No line for node1: its address is the head's decision at boot (a
		// LAN's DHCP server may lease it any), and the head's block in this
		// file names it from the start.
		"etc/hosts":                      "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
		"etc/clusterdebian/cluster.toml": b.Config.ForImage(),
		"etc/clusterdebian/version":      b.version + "\n",
	}); err != nil {
		return err
	}

	if b.Config.Image.Desktop != "" {
		if err := writeFiles(layer, map[string]string{imagefiles.XsessionTerminalPath: imagefiles.XsessionTerminal}); err != nil {
			return err
		}
	}

	r.stage.Status("clusterdebian binary")
	if err := checkStatic(b.Binary); err != nil {
		return err
	}
	bin := filepath.Join(layer, "usr/local/bin/clusterdebian")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return err
	}
	if err := atomicfile.Copy(b.Binary, bin, atomicfile.CopyOptions{Mode: 0o755}); err != nil {
		return err
	}
	if b.ManPages != nil {
		if err := b.ManPages(filepath.Join(layer, "usr/share/man/man1")); err != nil {
			return fmt.Errorf("man pages: %w", err)
		}
	}

	r.stage.Status("users")
	if err := installAccounts(ctx, filepath.Join(base, "etc"), layer, b.accounts); err != nil {
		return err
	}

	if ov := b.Config.OverlayDir(); ov != "" {
		r.stage.Status("overlay " + ov)
		if err := copyTree(ov, layer, 0, 0); err != nil {
			return fmt.Errorf("image.overlay: %w", err)
		}
	}
	return nil
}

// writeEmbedded copies imagefiles.Root() into layer.
func writeEmbedded(layer string) error {
	root := imagefiles.Root()
	return fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(layer, p)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := fs.ReadFile(root, p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, imagefiles.Mode(p))
	})
}

func writeFiles(layer string, files map[string]string) error {
	for p, content := range files {
		target := filepath.Join(layer, p)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(target, []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}
