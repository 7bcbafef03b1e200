package imagebuild

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/clusterdebian/clusterdebian/internal/contract"
)

// layerRecipe changes whenever the custom layer's format changes.
const layerRecipe = 2

func (b *build) layerKey() string {
	return Key(StageLayer, layerRecipe, b.keys[StageCustomize])
}

// layer packs the customization into its own small layer, which live-boot
// stacks over the base (live-boot stacks every image in live/ in name order,
// so 02-custom lies over 01-base).
//
// The layer is an ext4 image, not a second squashfs: node1 exports its root
// over NFS, and overlayfs exports only when every lower file system can be
// told apart by its UUID. Squashfs has none, so two squashfs layers make the
// kernel fall back to nfs_export=off; one squashfs plus an ext4 layer (with a
// UUID derived from the build key) keeps the root exportable. The big base
// stays squashfs, compressed on all cores.
func (b *build) layer(ctx context.Context, dir string, r *runner) error {
	src := filepath.Join(b.dirs[StageCustomize], "root")
	var bytes, files int64
	err := filepath.WalkDir(src, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		files++
		if fi, err := d.Info(); err == nil && fi.Mode().IsRegular() {
			bytes += (fi.Size() + 4095) / 4096 * 4096
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Room for metadata; the image is read-only, so no journal and no
	// reserved blocks.
	kib := (bytes*5/4+files*4096)/1024 + 8192
	key := b.keys[StageLayer]
	uuid := fmt.Sprintf("%s-%s-4%s-8%s-%s", key[0:8], key[8:12], key[13:16], key[17:20], key[12:13]+key[16:17]+key[20:24]+"000000")
	return r.run(ctx, "mkfs.ext4", "-q", "-F", "-L", "CDCUSTOM", "-U", uuid,
		"-E", "root_owner=0:0,hash_seed="+uuid, "-O", "^has_journal", "-m", "0",
		"-N", fmt.Sprint(files+1024), "-d", src, filepath.Join(dir, contract.CustomLayer), fmt.Sprintf("%dk", kib))
}
