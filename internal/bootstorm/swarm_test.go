package bootstorm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/swarm"
)

// The hook's retry order: node1's plain URL twice, then node1 itself.
func TestFetchURLGoesDirectFromTheThirdTry(t *testing.T) {
	const u = "http://10.0.0.1/netboot/01-base.squashfs"
	for try, want := range map[int]string{1: u, 2: u, 3: u + "?direct=1", 5: u + "?direct=1"} {
		if got := fetchURL(u, try); got != want {
			t.Errorf("try %d: %s, want %s", try, got, want)
		}
	}
}

func TestLayerVerdict(t *testing.T) {
	for _, c := range []struct {
		err       error
		got, want string
		verdict   string
	}{
		{nil, "aa", "aa", contract.SwarmOK},
		{nil, "aa", "", contract.SwarmOK}, // no manifest: nothing to check
		{nil, "ab", "aa", contract.SwarmBad},
		{errors.New("connection reset"), "", "aa", contract.SwarmFail},
	} {
		if v := layerVerdict(c.err, c.got, c.want); v != c.verdict {
			t.Errorf("layerVerdict(%v, %q, %q) = %s, want %s", c.err, c.got, c.want, v, c.verdict)
		}
	}
}

// A node redirected to a peer that serves a bad copy refuses it, reports
// it, and ends with node1's copy, fetched directly from the third try.
func TestFetchLayerRefusesABadPeerCopy(t *testing.T) {
	good := []byte("the real base layer")
	bad := []byte("a rogue peer's copy")
	sum := sha256.Sum256(good)
	peerDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(peerDir, contract.BaseLayer), bad, 0o644); err != nil {
		t.Fatal(err)
	}
	peer := httptest.NewServer(&swarm.Server{Dir: peerDir, Layers: []string{contract.BaseLayer}})
	defer peer.Close()

	var mu sync.Mutex
	var reports []string
	head := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == contract.SwarmReportPath:
			if r.Header.Get("Authorization") != "Bearer tok" {
				http.Error(w, "no token", http.StatusUnauthorized)
				return
			}
			r.ParseForm()
			mu.Lock()
			reports = append(reports, r.PostForm.Get("layer")+"="+r.PostForm.Get("result"))
			mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		case r.URL.RawQuery == contract.SwarmDirectQuery:
			w.Write(good)
		default:
			http.Redirect(w, r, peer.URL+"/"+contract.BaseLayer, http.StatusFound)
		}
	}))
	defer head.Close()
	hu, _ := url.Parse(head.URL)
	port, _ := strconv.Atoi(hu.Port())
	boot := BootSet{Cmdline: contract.Cmdline{Head: netip.MustParseAddr("127.0.0.1"), HTTPPort: uint16(port), Token: "tok",
		Root: contract.RootRAM, LayerSums: map[string]string{contract.BaseLayer: hex.EncodeToString(sum[:])}}}

	n := &Node{LayerDir: t.TempDir()}
	tr := &Trace{}
	if err := n.fetchLayer(context.Background(), head.Client(), boot, head.URL+contract.NetbootPath+contract.BaseLayer, contract.BaseLayer, fetchTries, tr); err != nil {
		t.Fatal(err)
	}
	b := contract.BaseLayer
	if want := []string{b + "=bad", b + "=bad", b + "=ok"}; !slices.Equal(reports, want) {
		t.Errorf("reports %q, want %q", reports, want)
	}
	if tr.LayerRefetches != 2 || tr.PeerBytes != int64(2*len(bad)) || tr.HTTPBytes != int64(2*len(bad)+len(good)) {
		t.Errorf("trace: %d refetches, %d bytes from peers, %d in all; want 2, %d, %d",
			tr.LayerRefetches, tr.PeerBytes, tr.HTTPBytes, 2*len(bad), 2*len(bad)+len(good))
	}
	got, err := os.ReadFile(filepath.Join(n.LayerDir, b))
	if err != nil || string(got) != string(good) {
		t.Errorf("the node keeps %q (%v), want node1's copy", got, err)
	}
}
