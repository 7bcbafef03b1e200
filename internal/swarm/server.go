package swarm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/httpguard"
)

// Verified reads the initrd's list of verified layers
// (contract.VerifiedLayersFile, sha256sum's format) and returns the names
// whose sum is the one in node1's manifest (sums); a name that is not a
// layer, not in the manifest, or with another sum is left out.
func Verified(list []byte, sums map[string]string) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(list))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		sum, name := f[0], strings.TrimPrefix(f[1], "*")
		if contract.IsLayer(name) && sums[name] == sum {
			out = append(out, name)
		}
	}
	return out
}

// Server serves a node's verified layers to the nodes that boot after it:
// GET and HEAD of /<layer name>, for the named layers only, from Dir.
type Server struct {
	// Dir holds the layers (contract.LiveMediaDir on a node).
	Dir string
	// Layers are the names it may serve.
	Layers []string
	// Logger gets a line per transfer; nil means slog.Default().
	Logger *slog.Logger
}

// ServeHTTP serves one layer, with Range; anything else is 404, other
// methods 405.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, "/")
	if !ok || !contract.IsLayer(name) || !contains(s.Layers, name) {
		http.NotFound(w, r)
		return
	}
	f, err := os.Open(filepath.Join(s.Dir, name))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	start := time.Now()
	http.ServeContent(w, r, "", st.ModTime(), f)
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	log.Info("swarm: served a layer", "layer", name, "to", r.RemoteAddr, "method", r.Method,
		"duration", time.Since(start).Round(time.Millisecond))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Serve listens on addr (":"+SwarmPort on a node) and serves s until ctx
// is done.
func Serve(ctx context.Context, addr string, s *Server) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("swarm: %w", err)
	}
	srv := s.HTTPServer()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// HTTPServer returns the HTTP server of a node's layer server, under
// httpguard's default limits: a peer that stalls must not hold it (the
// progress bounds cut it off), while a slow but moving one is served.
func (s *Server) HTTPServer() *http.Server {
	return httpguard.Limits{}.Server(s, nil)
}

// ListenAddr is the address a node's layer server listens on.
var ListenAddr = ":" + strconv.Itoa(contract.SwarmPort)
