//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/clusterdebian/clusterdebian/internal/agent"
	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/hosttools"
	"github.com/clusterdebian/clusterdebian/internal/netns"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/testsupport"
)

// The status page test loads http://<head>/status in Debian's headless
// Chromium, with the real `clusterdebian head` serving it and simulated
// agents registered, all inside one network namespace. It needs no image:
// the head only checks that its boot folder has a kernel and an initrd.

// The head serves the simulator's subnet, so that the registry names the
// simulated nodes.
var (
	statusSubnet = agent.SimSubnet.String()
	statusHead   = agent.SimHead.String()
)

const statusAgents = 5

// Environment of the simulator process (see init).
const (
	simURLEnv   = "CLUSTERDEBIAN_E2E_SIM_URL"
	simTokenEnv = "CLUSTERDEBIAN_E2E_SIM_TOKEN"
	simCountEnv = "CLUSTERDEBIAN_E2E_SIM_AGENTS"
)

// init turns this test binary into the agent simulator when the status
// page test starts it again inside the namespace: Go cannot move the
// sockets of one goroutine's HTTP client into a namespace (net/http dials
// on other threads), so the simulator runs as a process there instead. It
// runs until SIGTERM and exits before TestMain builds anything.
func init() {
	url := os.Getenv(simURLEnv)
	if url == "" {
		return
	}
	n, err := strconv.Atoi(os.Getenv(simCountEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "simulator:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	res, err := agent.Simulate(ctx, url, os.Getenv(simTokenEnv), n, time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "simulator:", err)
		os.Exit(2)
	}
	fmt.Printf("simulator: %d of %d registered, %d register errors, %d heartbeats, %d heartbeat errors, %d left (first error: %s)\n",
		res.Registered, res.Agents, res.RegisterErrors, res.Heartbeats, res.HeartbeatErrors, res.Left, res.FirstError)
	os.Exit(0)
}

// TestStatusPage checks that the status page, as a real browser runs it,
// draws a row per registered node, and saves a screenshot of it.
func TestStatusPage(t *testing.T) {
	needE2E(t)
	if err := hosttools.Require([]hosttools.Tool{toolNamed(t, "chromium"), toolNamed(t, "curl")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ns := newNS(t)
	// A bridge with no ports: the head needs an interface to own, and
	// everything that talks to it runs in this namespace anyway.
	if err := ns.AddBridge(ctx, "br0"); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	bootDir, stateDir := filepath.Join(tmp, "boot"), filepath.Join(tmp, "state")
	if err := os.Mkdir(bootDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// No node boots here: stand-in files satisfy the head's check.
	for _, f := range []string{contract.KernelFile, contract.InitrdFile, contract.NFSInitrdFile} {
		if err := os.WriteFile(filepath.Join(bootDir, f), []byte("not booted in this test\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	headLog := filepath.Join(tmp, "head.log")
	testsupport.StartProc(t, testsupport.ProcSpec{What: "the head", NS: ns, Log: headLog, MustStopCleanly: true,
		Argv: []string{cdBinary, "head",
			"--interface", "br0", "--subnet", statusSubnet, "--dhcp", "off",
			"--boot-dir", bootDir, "--state-dir", stateDir,
			// Never the host's /etc.
			"--cluster-root", "none",
			// The simulator's nodes all talk from one address.
			"--simulated-nodes"}})
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	err := waitFile(wctx, headLog, `msg="head serving"`)
	wcancel()
	if err != nil {
		t.Fatalf("the head did not start: %v", err)
	}
	token, err := os.ReadFile(filepath.Join(stateDir, contract.TokenFile))
	if err != nil {
		t.Fatal(err)
	}

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	testsupport.StartProc(t, testsupport.ProcSpec{What: "the simulator", NS: ns, Log: filepath.Join(tmp, "simulator.log"), MustStopCleanly: true,
		Env: []string{simURLEnv + "=http://" + statusHead, simTokenEnv + "=" + strings.TrimSpace(string(token)),
			simCountEnv + "=" + strconv.Itoa(statusAgents)},
		Argv: []string{self}})

	want := map[string]string{"node1": statusHead} // the head registers itself
	for i := range statusAgents {
		_, ip := agent.SimNode(i)
		want[contract.Naming{Subnet: agent.SimSubnet, Head: agent.SimHead}.MustName(netip.MustParseAddr(ip))] = ip
	}
	waitNodesUp(t, ctx, ns, len(want))

	// The page draws its table from fetched JSON and polls again every
	// 2 s. A virtual time budget (virtual time stands still while fetches
	// are pending) lets the first poll and the timed re-polls run before
	// the DOM is dumped, without waiting in real time. Virtual time is
	// also the page's clock, so a minute of it puts the browser's clock a
	// minute ahead of the head's, as a viewer's machine may be on a
	// cluster network with no common time: "last seen" must still be
	// reckoned on the head's clock.
	profile := t.TempDir()
	shot := filepath.Join(profile, "statuspage.png")
	cmd := ns.Command(ctx, "chromium", "--headless", "--no-sandbox", "--disable-gpu",
		"--user-data-dir="+filepath.Join(profile, "user-data"), "--no-first-run",
		"--window-size=1280,900", "--virtual-time-budget=60000",
		"--screenshot="+shot, "--dump-dom", "http://"+statusHead+"/status")
	cmd.Env = append(os.Environ(), "HOME="+profile)
	var dom, chromeLog bytes.Buffer
	cmd.Stdout, cmd.Stderr = &dom, &chromeLog
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, tail(chromeLog.String(), 40))
	}

	rows, summary, err := statusRows(dom.Bytes())
	if err != nil {
		t.Fatalf("reading the dumped DOM: %v\n%s", err, dom.String())
	}
	t.Logf("summary line: %q; %d rows", summary, len(rows))
	seen := map[string]bool{}
	for _, r := range rows {
		if len(r) < 3 {
			t.Errorf("row with %d cells: %q", len(r), r)
			continue
		}
		name := strings.TrimSuffix(r[0], " (head)")
		ip, ok := want[name]
		switch {
		case !ok:
			t.Errorf("row for a node nobody registered: %q", r)
		case seen[name]:
			t.Errorf("two rows for %s", name)
		case r[1] != ip || r[2] != registry.StateUp:
			t.Errorf("row %q, want %s at %s, %s", r, name, ip, registry.StateUp)
		case len(r) > lastSeenCol:
			// Agents heartbeat every second; 10 s leaves room for a busy
			// machine, and none for a browser clock taken as the head's.
			if ago, ok := parseAgo(r[lastSeenCol]); !ok || ago > 10*time.Second {
				t.Errorf("%s: last seen %q, want within 10 s", name, r[lastSeenCol])
			}
		}
		seen[name] = true
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("no row for %s", name)
		}
	}
	if w := fmt.Sprintf("%d nodes: %d up, 0 down", len(want), len(want)); !strings.HasPrefix(summary, w) {
		t.Errorf("summary %q, want it to start with %q", summary, w)
	}

	saved := saveArtifact(t, shot, "statuspage.png")
	f, err := os.Open(saved)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("the screenshot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 900 {
		t.Errorf("screenshot is %dx%d, want the window's 1280x900", b.Dx(), b.Dy())
	}
}

// lastSeenCol is the "Last seen" column of the page's node table.
const lastSeenCol = 7

// parseAgo reads the page's "Last seen" text, such as "5s ago" or
// "1m3s ago".
func parseAgo(s string) (time.Duration, bool) {
	m := agoRE.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	var d time.Duration
	for i, unit := range []time.Duration{24 * time.Hour, time.Hour, time.Minute, time.Second} {
		if m[i+1] != "" {
			n, _ := strconv.Atoi(m[i+1])
			d += time.Duration(n) * unit
		}
	}
	return d, true
}

var agoRE = regexp.MustCompile(`^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)? ago$`)

// toolNamed returns the host tool called name.
func toolNamed(t *testing.T, name string) hosttools.Tool {
	t.Helper()
	for _, tool := range hosttools.Tools {
		if tool.Name == name {
			return tool
		}
	}
	t.Fatalf("hosttools has no tool %q", name)
	return hosttools.Tool{}
}

// waitNodesUp waits until the head lists n nodes, all up.
func waitNodesUp(t *testing.T, ctx context.Context, ns *netns.NS, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last string
	for time.Now().Before(deadline) {
		out, err := ns.Output(ctx, "curl", "-sf", "--max-time", "5", "http://"+statusHead+"/api/v1/nodes")
		var nodes []registry.Node
		if err == nil {
			nodes, err = registry.DecodeNodes(out)
		}
		if err == nil {
			up := 0
			for _, nd := range nodes {
				if nd.State == registry.StateUp {
					up++
				}
			}
			if len(nodes) == n && up == n {
				return
			}
			last = fmt.Sprintf("%d nodes, %d up", len(nodes), up)
		} else {
			last = fmt.Sprint(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("the head never listed %d nodes up; last: %s", n, last)
}

// statusRows returns the text of each cell of each row of the page's node
// table (tbody#rows) and the summary line (p#summary).
func statusRows(dom []byte) (rows [][]string, summary string, err error) {
	doc, err := html.Parse(bytes.NewReader(dom))
	if err != nil {
		return nil, "", err
	}
	body := byID(doc, "rows")
	if body == nil {
		return nil, "", fmt.Errorf("no element with id rows")
	}
	if s := byID(doc, "summary"); s != nil {
		summary = strings.TrimSpace(text(s))
	}
	return cellRows(body), summary, nil
}

func byID(n *html.Node, id string) *html.Node {
	if n.Type == html.ElementNode {
		for _, a := range n.Attr {
			if a.Key == "id" && a.Val == id {
				return n
			}
		}
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if f := byID(c, id); f != nil {
			return f
		}
	}
	return nil
}

func text(n *html.Node) string {
	if n.Type == html.TextNode {
		return n.Data
	}
	var b strings.Builder
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		b.WriteString(text(c))
	}
	return b.String()
}

// saveArtifact copies file into the artefact folder as name and returns
// its path there: $CLUSTERDEBIAN_ARTIFACTS, else out/test-artifacts in the
// repository (out/ is ignored by git), so that a person or CI can look at
// what the test saw.
func saveArtifact(t *testing.T, file, name string) string {
	t.Helper()
	dir := os.Getenv("CLUSTERDEBIAN_ARTIFACTS")
	if dir == "" {
		_, src, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(src), "..", "..", "out", "test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("chromium wrote no screenshot: %v", err)
	}
	if len(data) == 0 {
		t.Fatal("chromium wrote an empty screenshot")
	}
	dst, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", dst, len(data))
	return dst
}
