package imagebuild

import (
	"context"
	"path/filepath"
)

func (b *build) squashfsKey() string {
	return Key("squashfs", b.keys[StageCustomize], MksquashfsArgs("", ""))
}

// squashfs packs the customization into its own layer. live-boot stacks every
// squashfs in live/ in name order, so 02-custom lies over 01-base.
func (b *build) squashfs(ctx context.Context, dir string, r *runner) error {
	src := filepath.Join(b.dirs[StageCustomize], "root")
	return r.run(ctx, "mksquashfs", MksquashfsArgs(src, filepath.Join(dir, CustomLayer))...)
}
