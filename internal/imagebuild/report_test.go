package imagebuild

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFirmwareReport: the report lists image.firmware's packages from the
// bootstrap's package list, with their installed size and the total, and
// says which list lacks one.
func TestFirmwareReport(t *testing.T) {
	list := filepath.Join(t.TempDir(), PackageList)
	if err := os.WriteFile(list, []byte("bash\t5.2.37-2\t7444\nfirmware-realtek\t20250410-2\t19187\nintel-microcode\t3.20250512.1\t22103\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := firmwareReport(list, []string{"firmware-realtek", "intel-microcode"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Packages) != 2 || rep.Packages[0] != (InstalledPackage{"firmware-realtek", "20250410-2", 19187}) ||
		rep.Packages[1].Name != "intel-microcode" || rep.InstalledKiB != 19187+22103 {
		t.Errorf("report %+v", rep)
	}
	if rep, err := firmwareReport(list, nil); rep != nil || err != nil {
		t.Errorf("without image.firmware: %+v, %v; want no report", rep, err)
	}
	if _, err := firmwareReport(list, []string{"firmware-realtek", "firmware-bnx2"}); err == nil || !strings.Contains(err.Error(), "packages firmware-bnx2 (") {
		t.Errorf("a package missing from the list: %v, want an error naming it", err)
	}
}
