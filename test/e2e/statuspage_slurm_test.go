//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/clusterdebian/clusterdebian/internal/hosttools"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/slurm"
	"github.com/clusterdebian/clusterdebian/internal/statuspage"
)

// TestStatusPageSlurm checks that the status page, as headless Chromium
// runs it, shows each node's Slurm state in its column and Slurm's queue
// in the jobs table: id, user, name, state, nodes and time of each job.
// The page is statuspage.Page; the head's JSON is served as the head
// serves it (registry.Node, slurm.Status) from a server on this machine's
// loopback, since a real Slurm with jobs needs the VM cluster
// (TestVirtualCluster's step "slurm" checks `clusterdebian status` there).
func TestStatusPageSlurm(t *testing.T) {
	needE2E(t)
	if err := hosttools.Require([]hosttools.Tool{toolNamed(t, "chromium")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	now := time.Now().UTC()
	nodes := []registry.Node{
		{Name: "node1", IP: "10.99.0.1", Role: registry.RoleHead, State: registry.StateUp, Cores: 2, LastSeen: now},
		{Name: "node7", IP: "10.99.0.7", State: registry.StateUp, Cores: 4, LastSeen: now},
		{Name: "node9", IP: "10.99.0.9", State: registry.StateDown, Cores: 4, LastSeen: now.Add(-time.Hour)},
	}
	st := slurm.Status{Enabled: true, Updated: now,
		Nodes: []slurm.NodeState{
			{Name: "node1", State: "mixed", CPUs: 2, CPUsAlloc: 1},
			{Name: "node7", State: "allocated", CPUs: 4, CPUsAlloc: 4},
			{Name: "node9", State: "down*", Reason: slurm.DownReason, CPUs: 4},
		},
		Jobs: []slurm.Job{
			{ID: "41", User: "alice", Name: "mpi-run", State: "RUNNING", Nodes: "node[1,7]", NumNodes: 2, Elapsed: "12:03"},
			{ID: "42", User: "bob", Name: "wait<b>me</b>", State: "PENDING", Nodes: "(Resources)", NumNodes: 1, Elapsed: "0:00"},
		}}
	mux := http.NewServeMux()
	mux.Handle(statuspage.PathStatus, statuspage.Page())
	serveJSON := func(path string, v any) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(v)
		})
	}
	serveJSON("/api/v1/nodes", nodes)
	serveJSON("/api/v1/boot", []any{})
	serveJSON(slurm.PathStatus, st)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	profile := t.TempDir()
	// No background fetches: the browser talks to the test's server only.
	cmd := exec.CommandContext(ctx, "chromium", "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--no-proxy-server",
		"--user-data-dir="+filepath.Join(profile, "user-data"), "--no-first-run",
		"--virtual-time-budget=5000", "--dump-dom", srv.URL+statuspage.PathStatus)
	cmd.Env = append(os.Environ(), "HOME="+profile)
	var dom, chromeLog bytes.Buffer
	cmd.Stdout, cmd.Stderr = &dom, &chromeLog
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, tail(chromeLog.String(), 40))
	}
	doc, err := html.Parse(bytes.NewReader(dom.Bytes()))
	if err != nil {
		t.Fatal(err)
	}

	// The node table's last column is each node's Slurm state, with the
	// reason of a down one.
	nodeRows := tableRows(t, doc, "rows")
	wantSlurm := map[string]string{"node1 (head)": "mixed", "node7": "allocated", "node9": "down* (" + slurm.DownReason + ")"}
	for _, r := range nodeRows {
		if len(r) == 0 {
			continue
		}
		want, ok := wantSlurm[r[0]]
		if !ok {
			t.Errorf("node row %q for no node served", r)
			continue
		}
		if !slices.Contains(r, want) {
			t.Errorf("node row %q lacks the Slurm state %q", r, want)
		}
		delete(wantSlurm, r[0])
	}
	for name := range wantSlurm {
		t.Errorf("no node row for %s:\n%v", name, nodeRows)
	}

	// The jobs table: one row per job, as served (the name as text, not
	// markup).
	if sec := byID(doc, "slurm"); sec == nil || hasAttr(sec, "hidden") {
		t.Errorf("the Slurm jobs section is missing or hidden")
	}
	jobs := tableRows(t, doc, "jobrows")
	want := [][]string{
		{"41", "alice", "mpi-run", "RUNNING", "2: node[1,7]", "12:03"},
		{"42", "bob", "wait<b>me</b>", "PENDING", "1: (Resources)", "0:00"},
	}
	if !slices.EqualFunc(jobs, want, slices.Equal[[]string]) {
		t.Errorf("jobs table:\n%q\nwant\n%q", jobs, want)
	}
	if s := byID(doc, "summary"); s == nil {
		t.Error("the page has no summary")
	} else if !strings.Contains(text(s), "Slurm: 2 job(s), 1 running") {
		t.Errorf("summary does not count the jobs: %q", text(s))
	}
}

// tableRows returns the cells' text of each row of the tbody with id.
func tableRows(t *testing.T, doc *html.Node, id string) [][]string {
	t.Helper()
	body := byID(doc, id)
	if body == nil {
		t.Fatalf("the page has no element with id %q", id)
	}
	return cellRows(body)
}

// cellRows returns the text of the td cells of each tr child of body.
func cellRows(body *html.Node) [][]string {
	var rows [][]string
	for tr := body.FirstChild; tr != nil; tr = tr.NextSibling {
		if tr.Type != html.ElementNode || tr.Data != "tr" {
			continue
		}
		var cells []string
		for td := tr.FirstChild; td != nil; td = td.NextSibling {
			if td.Type == html.ElementNode && td.Data == "td" {
				cells = append(cells, strings.TrimSpace(text(td)))
			}
		}
		rows = append(rows, cells)
	}
	return rows
}

func hasAttr(n *html.Node, key string) bool {
	return slices.ContainsFunc(n.Attr, func(a html.Attribute) bool { return a.Key == key })
}
