package head

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/swarm"
)

// The swarm boot of RAM-root nodes (internal/swarm): node1 hashes the
// layers it serves and puts the sums on every node's command line, answers
// a node's layer request with a redirect to a peer that holds the layer
// when one is free, serves it itself only within its cap of uploads and
// when no peer has it, holds the request in the broker's queue otherwise,
// and takes the initrd's report of how each fetch ended.

// swarmPart is the head's side of the swarm; nil without the RAM root.
type swarmPart struct {
	manifest *swarm.Manifest
	broker   *swarm.Broker
	// on: redirect to peers (Options.NoSwarm unset, and the layers are
	// hashed). Without it every layer comes from node1.
	on atomic.Bool
	// hashed is closed once the first hashing ended; sums holds its
	// result (nil when it failed).
	hashed chan struct{}
	sums   map[string]string
}

// setupSwarm starts hashing the layers for the RAM root's command line, in
// the background: a layer read from a slow medium must not hold up the
// head's start, only the first node's script. The sums are node1's word on
// what each layer is: a node checks every copy against them, from node1 or
// from a peer.
func (h *Head) setupSwarm() {
	sp := &swarmPart{manifest: swarm.NewManifest(h.opts.BootDir), broker: &swarm.Broker{State: h.peerState}, hashed: make(chan struct{})}
	h.swarm = sp
	layers := append([]string{contract.BaseLayer}, h.cmdline.Layers...)
	go func() {
		defer close(sp.hashed)
		start := time.Now()
		sums, total, err := sp.manifest.Sums(layers)
		if err != nil {
			h.log.Error("cannot hash the image layers: nodes get no sums to check them against, and node1 serves every copy itself", "boot_dir", h.opts.BootDir, "err", err)
			return
		}
		sp.sums = sums
		sp.on.Store(!h.opts.NoSwarm)
		h.log.Info("image layers hashed for the nodes' checks", "layers", len(sums), "bytes", total,
			"duration", time.Since(start).Round(time.Millisecond), "swarm", !h.opts.NoSwarm)
	}()
}

// nodeCmdline is the command line a node gets now: for the RAM root the
// layers and their sums as the boot folder holds them at this moment (a
// layer replaced since the start is hashed again, once). The first node
// waits for the hashing at start.
func (h *Head) nodeCmdline() contract.Cmdline {
	c := h.cmdline
	if h.swarm == nil {
		return c
	}
	<-h.swarm.hashed
	if h.swarm.sums == nil {
		return c
	}
	c.LayerSums, c.Swarm = h.swarm.sums, h.swarm.on.Load()
	layers, err := Layers(h.opts.BootDir)
	if err == nil {
		var sums map[string]string
		if sums, _, err = h.swarm.manifest.Sums(append([]string{contract.BaseLayer}, layers...)); err == nil {
			c.Layers, c.LayerSums = layers, sums
			return c
		}
	}
	h.log.Error("cannot hash the image layers again; the node gets the sums of the head's start", "boot_dir", h.opts.BootDir, "err", err)
	return c
}

// peerState is the registry's word on a peer, for the broker.
func (h *Head) peerState(addr netip.Addr) (bool, time.Time) {
	for _, n := range h.cluster.reg.Nodes() {
		if n.IP == addr.String() && n.Role == registry.RoleNode {
			// A joining node's layer server runs already: it starts
			// before the agent registers.
			return n.State != registry.StateDown, n.Registered
		}
	}
	return false, time.Time{}
}

// isLayerPath reports whether p is a layer's URL path on the head.
func isLayerPath(p string) bool {
	name, ok := strings.CutPrefix(p, contract.NetbootPath)
	return ok && contract.IsLayer(name)
}

// serveLayer answers a request for an image layer. With the swarm on, a
// whole GET from a node is routed by the broker: a redirect to a free
// peer, or node1's own transfer within its cap, after a wait in the
// broker's queue when neither is free (bounded by swarm.DefaultMaxWait,
// below the initrd's 900 s; a client that leaves gives its place up); a
// GET of node1's copy (contract.SwarmDirectQuery, the initrd's retry)
// is served at once and counted in node1's uploads. Anything else, and
// every request with the swarm off, gets the layer at once. node1's bytes
// are counted.
func (h *Head) serveLayer(w http.ResponseWriter, r *http.Request) {
	layer := strings.TrimPrefix(r.URL.Path, contract.NetbootPath)
	remote := remoteAddr(r)
	if h.swarm.on.Load() && r.Method == http.MethodGet && r.Header.Get("Range") == "" &&
		remote.IsValid() && !remote.IsLoopback() {
		var route swarm.Route
		if r.URL.RawQuery == contract.SwarmDirectQuery {
			route = h.swarm.broker.Direct(remote, layer)
		} else {
			var err error
			if route, err = h.swarm.broker.Route(r.Context(), remote, layer); err != nil {
				h.log.Info("swarm: node left while its layer request waited", "layer", layer, "node", remote, "err", err)
				return
			}
		}
		if route.Peer.IsValid() {
			url := swarm.LayerURL(route.Peer.String(), layer)
			h.log.Info("swarm: layer request sent to a peer", "layer", layer, "node", remote, "peer", route.Peer,
				"waited", route.Waited.Round(time.Millisecond))
			http.Redirect(w, r, url, http.StatusFound)
			return
		}
		if route.Waited > 0 || route.Overflow {
			h.log.Info("swarm: node1 serves a layer itself", "layer", layer, "node", remote,
				"waited", route.Waited.Round(time.Millisecond), "past_cap", route.Overflow)
		}
		whole := false
		defer func() { route.Done(whole) }()
		whole = h.serveLayerHere(w, r, layer)
		return
	}
	h.serveLayerHere(w, r, layer)
}

// serveLayerHere sends the layer from node1's boot folder and counts its
// bytes; it reports whether the whole layer went out.
func (h *Head) serveLayerHere(w http.ResponseWriter, r *http.Request, layer string) bool {
	cw := &countingWriter{ResponseWriter: w}
	h.handler.ServeHTTP(cw, r)
	whole := false
	if r.Method == http.MethodGet && cw.n > 0 {
		size := h.swarm.manifest.Size(layer)
		whole = size > 0 && cw.n == size
		h.swarm.broker.ServedByNode1(cw.n, whole)
	}
	return whole
}

// countingWriter counts the body bytes written through it; ReadFrom keeps
// sendfile(2) for the file copy.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) ReadFrom(src io.Reader) (int64, error) {
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		n, err := rf.ReadFrom(src)
		c.n += n
		return n, err
	}
	n, err := io.Copy(struct{ io.Writer }{c}, src)
	return n, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// serveSwarm answers SwarmPath (GET: the swarm's figures) and
// SwarmReportPath (POST with the cluster token: an initrd's report of a
// layer fetch, from the node's own address).
func (h *Head) serveSwarm(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == contract.SwarmReportPath {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h.swarmReport(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	var st swarm.Stats
	if h.swarm != nil {
		st = h.swarm.broker.Stats()
		st.ImageBytes = h.swarm.manifest.Total()
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(struct {
		On bool `json:"on"`
		swarm.Stats
	}{h.swarm != nil && h.swarm.on.Load(), st})
}

func (h *Head) swarmReport(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	got, want := sha256.Sum256([]byte(strings.TrimSpace(tok))), sha256.Sum256([]byte(h.token))
	if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		h.log.Warn("swarm: report without the cluster token refused", "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="clusterdebian"`)
		http.Error(w, "missing or wrong cluster token", http.StatusUnauthorized)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	layer, result := r.PostForm.Get("layer"), r.PostForm.Get("result")
	if !contract.IsLayer(layer) || (result != contract.SwarmOK && result != contract.SwarmBad && result != contract.SwarmFail) {
		http.Error(w, fmt.Sprintf("want layer=<layer name>&result=%s|%s|%s", contract.SwarmOK, contract.SwarmBad, contract.SwarmFail), http.StatusBadRequest)
		return
	}
	node := remoteAddr(r)
	if h.swarm == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	peer := h.swarm.broker.Report(node, layer, result, h.swarm.manifest.Size(layer))
	from := "node1"
	if peer.IsValid() {
		from = peer.String()
	}
	if result == contract.SwarmOK {
		h.log.Info("swarm: node verified a layer", "node", node, "layer", layer, "from", from)
	} else {
		h.log.Warn("swarm: node refused a layer copy; that peer is no longer offered", "node", node, "layer", layer, "from", from, "result", result)
	}
	w.WriteHeader(http.StatusNoContent)
}

// remoteAddr is the request's client address, unmapped.
func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// writeSwarmMetrics writes the swarm's counters in Prometheus' text format.
func (h *Head) writeSwarmMetrics(w io.Writer) {
	if h.swarm == nil {
		return
	}
	s := h.swarm.broker.Stats()
	fmt.Fprintf(w, "# HELP clusterdebian_swarm_layer_bytes_total Image layer bytes sent to RAM-root nodes, by node1 itself or by peers (by the nodes' reports).\n")
	fmt.Fprintf(w, "# TYPE clusterdebian_swarm_layer_bytes_total counter\n")
	fmt.Fprintf(w, "clusterdebian_swarm_layer_bytes_total{from=\"node1\"} %d\n", s.Node1Bytes)
	fmt.Fprintf(w, "clusterdebian_swarm_layer_bytes_total{from=\"peers\"} %d\n", s.PeerBytes)
	fmt.Fprintf(w, "# HELP clusterdebian_swarm_redirects_total Layer requests node1 redirected to a peer.\n")
	fmt.Fprintf(w, "# TYPE clusterdebian_swarm_redirects_total counter\n")
	fmt.Fprintf(w, "clusterdebian_swarm_redirects_total %d\n", s.Redirects)
	fmt.Fprintf(w, "# HELP clusterdebian_swarm_refused_total Layer copies from peers that nodes refused: a wrong checksum (bad) or a broken transfer (fail).\n")
	fmt.Fprintf(w, "# TYPE clusterdebian_swarm_refused_total counter\n")
	fmt.Fprintf(w, "clusterdebian_swarm_refused_total{why=\"bad\"} %d\n", s.BadReports)
	fmt.Fprintf(w, "clusterdebian_swarm_refused_total{why=\"fail\"} %d\n", s.FailReports)
}
