package swarm

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
)

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestManifestRehashesChangedLayers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, contract.BaseLayer)
	if err := os.WriteFile(path, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := NewManifest(dir)
	sums, total, err := m.Sums([]string{contract.BaseLayer})
	if err != nil || sums[contract.BaseLayer] != hexSum([]byte("one")) || total != 3 {
		t.Fatalf("Sums = %v, %d, %v", sums, total, err)
	}
	// A new build replaces the layer: the next Sums hashes it again.
	if err := os.WriteFile(path, []byte("two!"), 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	os.Chtimes(path, later, later)
	sums, total, err = m.Sums([]string{contract.BaseLayer})
	if err != nil || sums[contract.BaseLayer] != hexSum([]byte("two!")) || total != 4 || m.Total() != 4 || m.Size(contract.BaseLayer) != 4 {
		t.Fatalf("after the change: %v, %d, %v", sums, total, err)
	}
	if _, _, err := m.Sums([]string{contract.CustomLayer}); err == nil {
		t.Error("a missing layer hashed without an error")
	}
}

func TestServerServesVerifiedLayersOnly(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{contract.BaseLayer, contract.CustomLayer, "vmlinuz"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("data of "+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sums := map[string]string{contract.BaseLayer: hexSum([]byte("data of " + contract.BaseLayer)), contract.CustomLayer: hexSum([]byte("x"))}
	list := []byte(sums[contract.BaseLayer] + "  " + contract.BaseLayer + "\n" +
		hexSum([]byte("data of "+contract.CustomLayer)) + "  " + contract.CustomLayer + "\n" + // not node1's sum
		hexSum([]byte("data of vmlinuz")) + "  vmlinuz\n")
	layers := Verified(list, sums)
	if len(layers) != 1 || layers[0] != contract.BaseLayer {
		t.Fatalf("Verified = %v, want the base layer alone", layers)
	}
	s := &Server{Dir: dir, Layers: layers}
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/" + contract.BaseLayer, http.StatusOK},
		{http.MethodHead, "/" + contract.BaseLayer, http.StatusOK},
		{http.MethodGet, "/" + contract.CustomLayer, http.StatusNotFound},
		{http.MethodGet, "/vmlinuz", http.StatusNotFound},
		{http.MethodGet, "/../" + contract.BaseLayer, http.StatusNotFound},
		{http.MethodGet, "/", http.StatusNotFound},
		{http.MethodPut, "/" + contract.BaseLayer, http.StatusMethodNotAllowed},
		{http.MethodPost, "/" + contract.BaseLayer, http.StatusMethodNotAllowed},
	} {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
		if rec.Code != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, rec.Code, tc.want)
		}
		if tc.want == http.StatusOK && tc.method == http.MethodGet && rec.Body.String() != "data of "+contract.BaseLayer {
			t.Errorf("GET %s served %q", tc.path, rec.Body.String())
		}
	}
}
