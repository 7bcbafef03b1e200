package bootstorm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/swarm"
)

// The swarm boot of a RAM-root node, as the initramfs hook
// (imagefiles/initramfs/live-layers.sh) and the agent (internal/agent)
// do it: each layer is fetched through node1's URL (node1 may redirect to a
// peer; Go's client follows, as wget does), checked against node1's sums
// from the kernel command line, reported to node1, and fetched again on a
// bad or broken copy, from the third try from node1 itself. A node whose
// command line has the swarm on then serves its verified layers with the
// real peer server (swarm.Server) on contract.SwarmPort in its namespace,
// from before it registers: node1 offers it as a peer once its reports
// said "ok" and it registered after them.

// fetchTries is how often live-layers.sh's clusterdebian_fetch tries a
// layer; failPause is its pause after a transfer that broke off;
// fetchTimeout bounds each try, as its `timeout 900 wget` does (live-boot's
// own fetch of the base layer has busybox wget's read timeout of 900 s). A
// try's time includes a wait in node1's queue (swarm.Broker.Route, bounded
// below it by swarm.DefaultMaxWait): node1 holds the request and answers
// once a peer or one of its own upload slots is free.
const (
	fetchTries   = 5
	failPause    = 2 * time.Second
	fetchTimeout = 900 * time.Second
)

// fetchURL is the URL of the try-th try (1-based) of clusterdebian_fetch
// for layerURL on node1: node1's plain URL twice (it may redirect to a
// peer), then node1 itself (contract.SwarmDirectQuery).
func fetchURL(layerURL string, try int) string {
	if try >= 3 {
		return layerURL + "?" + contract.SwarmDirectQuery
	}
	return layerURL
}

// layerVerdict is the report for a fetch that ended with err (nil: the
// whole body arrived) and a body of SHA-256 got, node1's sum being want
// (empty: no manifest, nothing to check, as live-layers.sh).
func layerVerdict(err error, got, want string) string {
	switch {
	case err != nil:
		return contract.SwarmFail
	case want != "" && got != want:
		return contract.SwarmBad
	}
	return contract.SwarmOK
}

// fetchLayers fetches the RAM root's layers of boot: the base layer
// (fetch=) first, as live-boot's own fetch then the hook's retries, then
// the others. It returns the names verified.
func (n *Node) fetchLayers(ctx context.Context, hc *http.Client, boot BootSet, tr *Trace) ([]string, error) {
	var verified []string
	for i, u := range boot.Fetch()[2:] {
		name := u[strings.LastIndexByte(u, '/')+1:]
		tries := fetchTries
		if i == 0 {
			tries++ // live-boot's fetch, then clusterdebian_fetch's
		}
		if err := n.fetchLayer(ctx, hc, boot, u, name, tries, tr); err != nil {
			return verified, err
		}
		verified = append(verified, name)
	}
	return verified, nil
}

// fetchLayer fetches one layer, up to tries times, checking and reporting
// each copy.
func (n *Node) fetchLayer(ctx context.Context, hc *http.Client, boot BootSet, layerURL, name string, tries int, tr *Trace) error {
	want := boot.Cmdline.LayerSums[name]
	var last error
	for try := 1; try <= tries; try++ {
		// The base layer's first try is live-boot's; the hook's own count
		// from the next.
		t := try
		if tries > fetchTries {
			t = try - 1
		}
		u := layerURL
		if t > 0 {
			u = fetchURL(layerURL, t)
		}
		tctx, cancel := context.WithTimeout(ctx, fetchTimeout)
		got, fromPeer, nbytes, err := n.download(tctx, hc, u, name)
		cancel()
		tr.HTTPBytes += nbytes
		if fromPeer {
			tr.PeerBytes += nbytes
		}
		verdict := layerVerdict(err, got, want)
		if rerr := n.report(ctx, hc, boot, name, verdict); rerr != nil {
			tr.Errors = append(tr.Errors, "swarm report: "+rerr.Error())
		}
		if verdict == contract.SwarmOK {
			return nil
		}
		tr.LayerRefetches++
		if err == nil {
			err = fmt.Errorf("%s has SHA-256 %s, node1's manifest says %s: refused", name, got, want)
		}
		last = err
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if verdict == contract.SwarmFail {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(failPause):
			}
		}
	}
	return fmt.Errorf("cannot fetch %s: %w", name, last)
}

// download GETs u, following node1's redirect, into the node's layer
// folder (or nowhere without one), and returns the body's SHA-256, whether
// a peer (not the URL's host) sent it, and its bytes.
func (n *Node) download(ctx context.Context, hc *http.Client, u, name string) (sum string, fromPeer bool, nbytes int64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", false, 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", false, 0, err
	}
	defer resp.Body.Close()
	fromPeer = resp.Request.URL.Host != req.URL.Host
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", fromPeer, 0, fmt.Errorf("GET %s: %s: %s", resp.Request.URL, resp.Status, bytes.TrimSpace(msg))
	}
	h := sha256.New()
	w := io.Writer(h)
	if n.LayerDir != "" {
		f, err := os.Create(filepath.Join(n.LayerDir, name))
		if err != nil {
			return "", fromPeer, 0, err
		}
		defer f.Close()
		w = io.MultiWriter(h, f)
	}
	nbytes, err = io.Copy(w, resp.Body)
	if err != nil {
		return "", fromPeer, nbytes, fmt.Errorf("GET %s: %w", resp.Request.URL, err)
	}
	return hex.EncodeToString(h.Sum(nil)), fromPeer, nbytes, nil
}

// report tells node1 how a fetch ended, as clusterdebian_report does: a
// POST of layer=&result= with the cluster token, from the node's address.
func (n *Node) report(ctx context.Context, hc *http.Client, boot BootSet, layer, result string) error {
	form := url.Values{"layer": {layer}, "result": {result}}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, boot.Cmdline.HTTPBase()+contract.SwarmReportPath, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+boot.Cmdline.Token)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s", contract.SwarmReportPath, resp.Status)
	}
	return nil
}

// serveLayers starts the node's peer server, as the agent's: the verified
// layers from n.LayerDir with swarm.Server on contract.SwarmPort, listening
// in the node's namespace, until stopPeer.
func (n *Node) serveLayers(layers []string) error {
	var l net.Listener
	if err := n.NS.Do(func() error {
		var err error
		l, err = net.Listen("tcp", swarm.ListenAddr)
		return err
	}); err != nil {
		return fmt.Errorf("swarm: %w", err)
	}
	// Bounded as the agent's (swarm.Server.HTTPServer).
	srv := (&swarm.Server{Dir: n.LayerDir, Layers: layers, Logger: slog.New(slog.DiscardHandler)}).HTTPServer()
	n.peer = srv
	go srv.Serve(l)
	return nil
}

// stopPeer stops the node's peer server, if it runs: the node boots again
// (its RAM is gone) or the storm ended.
func (n *Node) stopPeer() {
	if n.peer != nil {
		n.peer.Close()
		n.peer = nil
	}
}
