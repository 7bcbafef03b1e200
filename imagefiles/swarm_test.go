package imagefiles

// TestLiveLayersSwarm runs live-layers.sh's do_httpmount as the RAM root's
// initrd does, with busybox's wget, sha256sum and timeout (the initrd's),
// against a node1 on loopback that redirects to peers as the head does
// (swarm.Broker) and peers that serve with swarm.Server: one serving a
// corrupted copy, one breaking the transfer off, one good. The initrd must
// refuse the bad copy and the broken one, get the layers elsewhere, report
// each fetch, and list exactly the verified layers for the agent.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/swarm"
)

// fakeLiveBoot is live-boot's do_httpmount for a fetch= of a squashfs,
// without the mount: the RAM file system is a folder here.
const fakeLiveBoot = `#!/bin/sh
do_httpmount ()
{
	dest="${mountpoint}/${LIVE_MEDIA_PATH}"
	mkdir -p "${dest}"
	wget "${FETCH}" -O "${dest}/$(basename "${FETCH}")"
}
`

const swarmToken = "t0ken"

// fakeNode1 is the head's layer and report routes on addr, with a broker
// whose peers all run.
type fakeNode1 struct {
	broker *swarm.Broker
	dir    string
}

func (f *fakeNode1) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	remote := netip.MustParseAddrPort(r.RemoteAddr).Addr()
	if r.URL.Path == contract.SwarmReportPath {
		if r.Header.Get("Authorization") != "Bearer "+swarmToken {
			http.Error(w, "token", http.StatusUnauthorized)
			return
		}
		r.ParseForm()
		layer := r.PostForm.Get("layer")
		st, _ := os.Stat(filepath.Join(f.dir, layer))
		var size int64
		if st != nil {
			size = st.Size()
		}
		f.broker.Report(remote, layer, r.PostForm.Get("result"), size)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	layer := strings.TrimPrefix(r.URL.Path, contract.NetbootPath)
	if r.URL.RawQuery != contract.SwarmDirectQuery {
		if p, ok := f.broker.Choose(remote, layer, func(netip.Addr) (bool, time.Time) { return true, time.Now().Add(time.Hour) }); ok {
			http.Redirect(w, r, swarm.LayerURL(p.String(), layer), http.StatusFound)
			return
		}
	}
	http.ServeFile(w, r, filepath.Join(f.dir, layer))
}

// breakOff sends half of a layer under the whole length, then closes.
type breakOff struct{ data []byte }

func (b breakOff) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Length", strconv.Itoa(len(b.data)))
	w.Write(b.data[:len(b.data)/2])
	w.(http.Flusher).Flush()
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		conn.Close()
	}
}

func listen(t *testing.T, addr string, h http.Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("%s: %v (another test holds the swarm port?)", addr, err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestLiveLayersSwarm(t *testing.T) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("busybox is needed: it is the initrd's wget and sha256sum (apt-get install busybox)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	live := filepath.Join(dir, "live-boot")
	for _, d := range []string{bin, live, filepath.Join(dir, "node1"), filepath.Join(dir, "good"), filepath.Join(dir, "bad")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The initrd's tools are busybox's.
	for _, app := range []string{"wget", "sha256sum", "timeout"} {
		if err := os.Symlink(bb, filepath.Join(bin, app)); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(live, "9990-mount-http.sh"), []byte(fakeLiveBoot), 0o644)
	script := filepath.Join(dir, "9995-clusterdebian-layers.sh")
	os.WriteFile(script, []byte(LiveLayersScript), 0o644)

	layers := map[string][]byte{
		contract.BaseLayer:   []byte(strings.Repeat("base layer bytes\n", 20000)),
		contract.CustomLayer: []byte(strings.Repeat("custom layer bytes\n", 5000)),
	}
	sums := map[string]string{}
	for name, data := range layers {
		sums[name] = sum(data)
		os.WriteFile(filepath.Join(dir, "node1", name), data, 0o644)
		os.WriteFile(filepath.Join(dir, "good", name), data, 0o644)
		bad := append([]byte{}, data...)
		bad[len(bad)/3] ^= 0xff
		os.WriteFile(filepath.Join(dir, "bad", name), bad, 0o644)
	}

	// run boots one initrd against node1 at head and returns its output
	// and the verified list it left.
	run := func(t *testing.T, head string) (string, string) {
		medium := filepath.Join(t.TempDir(), "medium")
		run := filepath.Join(t.TempDir(), "run")
		cmdline := fmt.Sprintf("boot=live %s=%s %s=%s %s=%s %s=%s", contract.ParamHead, head, contract.ParamToken, swarmToken,
			contract.ParamLayers, contract.CustomLayer, contract.ParamLayerSums, contract.FormatLayerSums(sums))
		// Functions, not files in PATH: busybox's sh prefers its own
		// applets, and the RAM file system is a folder here.
		sh := `log_begin_msg() { echo "$@"; }; log_end_msg() { :; }
mount() { echo "mount $*"; }; umount() { echo "umount $*"; }
. "$1" && do_httpmount && echo FETCHED`
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bb, "sh", "-c", sh, "sh", script)
		cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin", "CLUSTERDEBIAN_LIVE_BOOT=" + live, "CLUSTERDEBIAN_RUN=" + run,
			"mountpoint=" + medium, "LIVE_MEDIA_PATH=live", "FETCH=http://" + head + contract.NetbootPath + contract.BaseLayer,
			"LIVE_BOOT_CMDLINE=" + cmdline}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "FETCHED") {
			t.Fatalf("do_httpmount: %v\n%s", err, out)
		}
		for name, data := range layers {
			got, err := os.ReadFile(filepath.Join(medium, "live", name))
			if err != nil || sum(got) != sum(data) {
				t.Errorf("%s in the RAM file system is not node1's (%v)", name, err)
			}
		}
		list, _ := os.ReadFile(filepath.Join(run, contract.VerifiedLayersFile))
		if v := swarm.Verified(list, sums); len(v) != len(layers) {
			t.Errorf("the verified list names %v, want every layer:\n%s", v, list)
		}
		return string(out), string(list)
	}

	t.Run("corrupted peer", func(t *testing.T) {
		// 127.0.0.2 serves bad copies, 127.0.0.3 good ones; node1 offers
		// the lower address first.
		port := strconv.Itoa(contract.SwarmPort)
		listen(t, "127.0.0.2:"+port, &swarm.Server{Dir: filepath.Join(dir, "bad"), Layers: []string{contract.BaseLayer, contract.CustomLayer}})
		listen(t, "127.0.0.3:"+port, &swarm.Server{Dir: filepath.Join(dir, "good"), Layers: []string{contract.BaseLayer, contract.CustomLayer}})
		b := &swarm.Broker{}
		for _, p := range []string{"127.0.0.2", "127.0.0.3"} {
			for name := range layers {
				b.Report(netip.MustParseAddr(p), name, contract.SwarmOK, 0)
			}
		}
		head := listen(t, "127.0.0.1:0", &fakeNode1{broker: b, dir: filepath.Join(dir, "node1")})
		out, _ := run(t, head)
		t.Logf("initrd:\n%s", out)
		st := b.Stats()
		if st.BadReports != 1 || st.FromPeers[contract.BaseLayer] != 1 || st.FromPeers[contract.CustomLayer] != 1 {
			t.Errorf("want one bad copy caught and both layers from the good peer: %+v", st)
		}
		for _, p := range st.Peers {
			if (p.Addr == "127.0.0.2") != (p.Bad != "") {
				t.Errorf("peer %s: bad %q", p.Addr, p.Bad)
			}
		}
		if !strings.Contains(out, "refused") {
			t.Errorf("the initrd did not say it refused the bad copy:\n%s", out)
		}
	})

	t.Run("peer breaks off", func(t *testing.T) {
		// 127.0.0.4 alone holds the layers, and breaks every transfer off:
		// a retry, then node1.
		listen(t, "127.0.0.4:"+strconv.Itoa(contract.SwarmPort), breakOff{layers[contract.BaseLayer]})
		b := &swarm.Broker{}
		b.Report(netip.MustParseAddr("127.0.0.4"), contract.BaseLayer, contract.SwarmOK, 0)
		head := listen(t, "127.0.0.1:0", &fakeNode1{broker: b, dir: filepath.Join(dir, "node1")})
		out, _ := run(t, head)
		t.Logf("initrd:\n%s", out)
		st := b.Stats()
		if st.FailReports < 1 || st.PeerBytes != 0 || len(st.Peers) != 2 {
			t.Errorf("want the broken transfer reported, nothing from peers, the node a peer now: %+v", st)
		}
	})
}
