package imagebuild

import (
	"slices"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/config"
)

func parseConfig(t *testing.T, text string) *config.Config {
	t.Helper()
	c, err := config.Parse(text, "test.toml", t.TempDir())
	if err != nil {
		t.Fatalf("config.Parse(%q): %v", text, err)
	}
	return c
}

func TestImagePackages(t *testing.T) {
	always := []string{"linux-image-amd64", "live-boot", "systemd-sysv", "openssh-server", "nfs-kernel-server", "sudo", "build-essential", "nftables"}
	mpi := []string{"openmpi-bin", "libopenmpi-dev"}
	pvm := []string{"pvm", "pvm-dev"}
	desktop := []string{"xserver-xorg", "xinit", "x11-xserver-utils", "xterm", "dbus", "libpam-systemd"}
	firmware := []string{"firmware-realtek", "firmware-bnx2", "firmware-bnx2x", "firmware-misc-nonfree", "intel-microcode", "amd64-microcode"}
	slurm := []string{"slurmctld", "slurmd", "slurm-client", "munge"}

	tests := []struct {
		name      string
		text      string
		want      []string
		wantNot   []string
		wantCount int // 0: not checked
	}{
		{
			name:    "default",
			text:    "",
			want:    append(append(append(slices.Clone(always), mpi...), slurm...), append(slices.Clone(firmware), "firmware-intel-misc", "mokutil")...),
			wantNot: append(append(slices.Clone(pvm), desktop...), "icewm"),
		},
		{
			name:    "no firmware",
			text:    "[image]\nfirmware = false\n",
			want:    append(slices.Clone(always), mpi...),
			wantNot: append(slices.Clone(firmware), "firmware-intel-misc"),
		},
		{
			// bookworm has e100's firmware in firmware-misc-nonfree and no
			// firmware-intel-misc.
			name:    "bookworm firmware",
			text:    "[image]\nsuite = \"bookworm\"\n",
			want:    firmware,
			wantNot: []string{"firmware-intel-misc"},
		},
		{
			name:    "pvm only",
			text:    "[image]\nsuite = \"bookworm\"\n[cluster]\nparallel = [\"pvm\"]\n",
			want:    append(slices.Clone(always), pvm...),
			wantNot: append(slices.Clone(mpi), desktop...),
		},
		{
			name: "mpi and pvm",
			text: "[image]\nsuite = \"bookworm\"\n[cluster]\nparallel = [\"mpi\", \"pvm\"]\n",
			want: append(append(slices.Clone(always), mpi...), pvm...),
		},
		{
			name:    "desktop",
			text:    "[image]\ndesktop = \"icewm\"\n",
			want:    append(append(slices.Clone(always), mpi...), append(slices.Clone(desktop), "icewm")...),
			wantNot: pvm,
		},
		{
			name:      "extra packages, overlapping the base list",
			text:      "[image]\npackages = [\"htop\", \"sudo\", \"htop\", \"openmpi-bin\", \"python3-numpy\"]\n",
			want:      append(slices.Clone(always), "htop", "python3-numpy"),
			wantCount: len(basePackages) + len(mpi) + len(slurm) + 1 + 2 + len(firmware) + 1, // + build-essential, htop, python3-numpy, firmware-intel-misc
		},
		{
			name:    "no scheduler",
			text:    "[cluster]\nscheduler = \"none\"\n",
			want:    append(slices.Clone(always), mpi...),
			wantNot: slurm,
		},
		{
			name: "desktop package also listed",
			text: "[image]\ndesktop = \"xterm\"\npackages = [\"xinit\"]\n",
			want: desktop,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := parseConfig(t, tc.text)
			got := ImagePackages(cfg)
			for _, p := range tc.want {
				if !slices.Contains(got, p) {
					t.Errorf("ImagePackages lacks %s: %v", p, got)
				}
			}
			for _, p := range tc.wantNot {
				if slices.Contains(got, p) {
					t.Errorf("ImagePackages has %s: %v", p, got)
				}
			}
			if !slices.IsSorted(got) {
				t.Errorf("ImagePackages is not sorted: %v", got)
			}
			if len(slices.Compact(slices.Clone(got))) != len(got) {
				t.Errorf("ImagePackages has duplicates: %v", got)
			}
			if tc.wantCount != 0 && len(got) != tc.wantCount {
				t.Errorf("ImagePackages has %d packages, want %d: %v", len(got), tc.wantCount, got)
			}
			// Every base package is there, whatever the config.
			for _, p := range basePackages {
				if !slices.Contains(got, p) {
					t.Errorf("base package %s missing", p)
				}
			}
			// The config is not modified.
			if tc.name == "extra packages, overlapping the base list" &&
				!slices.Equal(cfg.Image.Packages, []string{"htop", "sudo", "htop", "openmpi-bin", "python3-numpy"}) {
				t.Errorf("ImagePackages changed image.packages to %v", cfg.Image.Packages)
			}
		})
	}
}

func TestDevelopmentPackages(t *testing.T) {
	for _, tc := range []struct {
		text string
		want []string
	}{
		{"", []string{"openmpi-bin", "libopenmpi-dev", "build-essential"}},
		{"[image]\nsuite = \"bookworm\"\n[cluster]\nparallel = [\"pvm\"]\n", []string{"pvm", "pvm-dev", "build-essential"}},
		{"[image]\nsuite = \"bookworm\"\n[cluster]\nparallel = [\"pvm\", \"mpi\"]\n", []string{"openmpi-bin", "libopenmpi-dev", "pvm", "pvm-dev", "build-essential"}},
	} {
		if got := DevelopmentPackages(parseConfig(t, tc.text)); !slices.Equal(got, tc.want) {
			t.Errorf("DevelopmentPackages(%q) = %v, want %v", tc.text, got, tc.want)
		}
	}
}

func TestDesktopPackages(t *testing.T) {
	if got := desktopPackages(""); got != nil {
		t.Errorf(`desktopPackages("") = %v, want nil`, got)
	}
	got := desktopPackages("fluxbox")
	for _, p := range []string{"xserver-xorg", "xinit", "fluxbox"} {
		if !slices.Contains(got, p) {
			t.Errorf("desktopPackages(fluxbox) lacks %s: %v", p, got)
		}
	}
}

func TestImagePackagesDoesNotAliasBaseList(t *testing.T) {
	before := slices.Clone(basePackages)
	cfg := parseConfig(t, "[image]\npackages = [\"aaa-first\"]\ndesktop = \"icewm\"\n")
	_ = ImagePackages(cfg)
	_ = ImagePackages(cfg)
	if !slices.Equal(basePackages, before) {
		t.Errorf("ImagePackages modified basePackages: %v", basePackages)
	}
}
