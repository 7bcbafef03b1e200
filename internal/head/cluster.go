package head

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/clusterdebian/clusterdebian/internal/agent"
	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/clusterfiles"
	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/netboot/bootstage"
	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcp"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/slurm"
	"github.com/clusterdebian/clusterdebian/internal/sshtrust"
	"github.com/clusterdebian/clusterdebian/internal/statuspage"
	"github.com/clusterdebian/clusterdebian/internal/verify"
)

// The head's cluster part: the node registry and its API, the cluster files
// (/etc/hosts, hostfiles), SSH trust, and the NFS export of node1's root.

const (
	// HeartbeatInterval is how often agents report; a node that misses
	// registry.MissedHeartbeats of them is marked down.
	HeartbeatInterval = 5 * time.Second
	// ExportsFile exports node1's live root (or /home) to the nodes that
	// booted from the head, each by its address (ExportsText).
	ExportsFile = "/etc/exports.d/clusterdebian.exports"
)

// cluster is the state of the head's cluster part.
type cluster struct {
	reg *registry.Registry
	ca  *sshtrust.CA
	api http.Handler
	mac string
}

// setupCluster opens the registry and the SSH CA (made at first start, in the
// state folder: never baked into the image), and, when the head manages a
// root file system (Options.ClusterRoot), writes the cluster files there,
// gives users their keys, makes node1's own host certificate and exports the
// root to the nodes that booted from the head (exportSet).
func (h *Head) setupCluster() error {
	o := h.opts
	ca, err := sshtrust.OpenCA(o.StateDir)
	if err != nil {
		return fmt.Errorf("SSH CA in %s: %w", o.StateDir, err)
	}
	if kept, cause := ca.Damaged(); kept != "" {
		h.log.Error("SSH CA key was damaged: set aside, and a new CA made; node1's host certificate and the known hosts now name the new CA, and running nodes register again for new host certificates when their heartbeat answer shows it",
			"file", filepath.Join(o.StateDir, contract.CAKeyFile), "kept_as", kept, "err", cause, "new_ca", ca.Fingerprint())
	}
	if kept := ca.PubRepaired(); kept != "" {
		h.log.Warn("SSH CA public key file did not match the CA key: set aside, and written again from the key; the CA is unchanged",
			"file", filepath.Join(o.StateDir, contract.CAKeyFile+".pub"), "kept_as", kept, "ca", ca.Fingerprint())
	}
	root := o.ClusterRoot
	if h.machineRoot() {
		if ok, err := h.sys.OverlayNFSExport(); o.Root == contract.RootShared && err == nil && !ok {
			h.log.Warn("overlayfs NFS export is off: nodes cannot mount this root; boot with overlay.nfs_export=Y overlay.index=Y")
		}
		if h.exports, err = newExportSet(filepath.Join(o.StateDir, contract.BootedFile), o.Root, h.sys, h.log); err != nil {
			return optionError(InputStateDir, err)
		}
	}
	// The registry calls onChange from its saver, one call at a time, but
	// setupCluster also calls it below, when the saver may be running
	// (node1's own registration started it): changeMu keeps the two apart,
	// and marked and the cluster files with them.
	var changeMu sync.Mutex
	marked := map[string]time.Time{}
	onChange := func(ns []registry.Node) {
		changeMu.Lock()
		defer changeMu.Unlock()
		h.setHolders(ns)
		h.markRegistered(ns, marked)
		if h.swarm != nil {
			// A node that reported layers may have registered: the
			// layer requests waiting for a peer look again.
			h.swarm.broker.Wake()
		}
		if h.exports != nil {
			h.exports.sync(ns, h.naming.Subnet)
		}
		if root == "" {
			return
		}
		if err := clusterfiles.Write(root, ns, h.naming.Subnet); err != nil {
			h.log.Error("cannot write the cluster files", "root", root, "err", err)
		}
	}
	reg, err := registry.Open(filepath.Join(o.StateDir, contract.RegistryFile), h.naming, HeartbeatInterval, onChange)
	if err != nil {
		return fmt.Errorf("node registry: %w", err)
	}
	reg.SetLogger(h.log)
	if kept, cause := reg.Damaged(); kept != "" {
		h.log.Error("node registry file was damaged: set aside, starting with an empty registry; running nodes register again at their next heartbeat, and keep their addresses (leases, ARP check)",
			"file", filepath.Join(o.StateDir, contract.RegistryFile), "kept_as", kept, "err", cause)
	}
	c := &cluster{reg: reg, ca: ca}
	var apiOpts []registry.APIOption
	if root != "" {
		if err := sshtrust.EnsureUserKeys(root); err != nil {
			h.log.Warn("user SSH keys", "err", err)
		}
		// Nodes with their own root do not share node1's /root: they
		// get root's key to authorize, for exec and shutdown.
		if o.Root == contract.RootRAM {
			if pub, err := os.ReadFile(filepath.Join(root, "root", ".ssh", "id_ed25519.pub")); err == nil {
				apiOpts = append(apiOpts, registry.RootKeys(string(pub)))
			} else {
				h.log.Warn("root's SSH key: exec and shutdown will not reach the nodes", "err", err)
			}
		}
	}
	if o.Slurm != nil && root != "" {
		// Without Slurm the cluster still boots and runs MPI: a Slurm
		// that cannot be set up is logged, not fatal.
		if key, err := h.setupSlurm(root); err != nil {
			h.log.Error("Slurm: not started", "err", err)
		} else {
			apiOpts = append(apiOpts, registry.Slurm(key, h.addr.String()))
		}
	}
	if h.plan.mode != dhcp.ModeServer {
		// The nodes' addresses are another server's leases (a LAN's):
		// each node renews its own, as node1 does.
		apiOpts = append(apiOpts, registry.KeepLeases())
	}
	if o.SimulatedNodes {
		h.log.Warn("simulated nodes: node requests are taken from any address and port; never run a real cluster like this")
	} else {
		apiOpts = append(apiOpts, registry.FromNodeRoot())
	}
	apiOpts = append(apiOpts, registry.OnPrune(func(gone []registry.Node) {
		if h.exports != nil {
			for _, ip := range h.exports.prune(gone, reg.Nodes()) {
				h.log.Info("NFS: export withdrawn", "ip", ip)
			}
		}
		h.slurmPruned(gone)
		if h.swarm != nil {
			for _, n := range gone {
				if ip, err := netip.ParseAddr(n.IP); err == nil {
					h.swarm.broker.Forget(ip)
				}
			}
		}
	}))
	c.api = registry.NewAPI(reg, h.token, ca, h.log, apiOpts...)
	if hw, err := h.sys.HardwareAddr(h.iface); err == nil {
		c.mac = contract.MACString(hw)
	}
	h.cluster = c

	h.setHolders(reg.Nodes())
	// node1 is in the registry, and so in /etc/hosts, from the start: the
	// image's /etc/hosts has no line for it, since its address is the
	// head's decision (a LAN may lease it any).
	if c.mac != "" {
		if _, err := reg.Register(h.selfRequest()); err != nil {
			h.log.Error("registering node1 itself", "err", err)
		}
	}
	if root != "" {
		line := ca.KnownHostsLine(sshtrust.KnownHostsPatterns(h.naming.Subnet))
		if err := sshtrust.WriteKnownHosts(root, line); err != nil {
			return fmt.Errorf("SSH known hosts: %w", err)
		}
		if err := sshtrust.WriteClientConfig(root, h.naming.Subnet); err != nil {
			return fmt.Errorf("ssh client configuration: %w", err)
		}
		if err := h.hostCertificate(); err != nil {
			return err
		}
		onChange(reg.Nodes())
	}
	if h.exports != nil {
		// The nodes running from this head keep their export across its
		// restart; a stale line of an older head goes.
		h.exports.sync(reg.Nodes(), h.naming.Subnet)
		ctx, cancel := context.WithTimeout(context.Background(), exportApplyTimeout)
		defer cancel()
		if err := h.exports.apply(ctx); err != nil {
			h.log.Error("NFS export not in place", "err", err)
		}
	}
	return nil
}

// machineRoot reports whether the cluster root is the root of the machine
// the head runs on ("/" on node1): only then do its NFS server and sshd
// serve it.
func (h *Head) machineRoot() bool {
	root := h.opts.ClusterRoot
	if root == "" {
		return false
	}
	a, err1 := filepath.Abs(root)
	b, err2 := filepath.Abs(h.sys.Root())
	return err1 == nil && err2 == nil && a == b
}

// markRegistered records in the boot stages that a node's agent registered,
// and so that its root was there: the agent runs from it. For the shared root
// the NFS mount itself is not seen by the head, so this is where it shows.
func (h *Head) markRegistered(ns []registry.Node, marked map[string]time.Time) {
	for _, n := range ns {
		if n.Role != registry.RoleNode || marked[n.MAC].Equal(n.Registered) {
			continue
		}
		mac, err := net.ParseMAC(n.MAC)
		ip, err2 := netip.ParseAddr(n.IP)
		if err != nil || err2 != nil {
			continue
		}
		marked[n.MAC] = n.Registered
		if h.opts.Root == contract.RootShared {
			h.tracker.Mark(mac, ip, bootstage.RootFetched, "NFS root mounted")
		}
		h.tracker.Mark(mac, ip, bootstage.Registered, n.Name)
	}
}

// hostCertificate gives node1's sshd a host key of its own for this boot and
// a certificate from the cluster CA, so every node verifies it.
//
// On an installed machine (localnode1) sshd keeps the host keys its users
// already trust: the head certifies the existing ed25519 key instead, next to
// it (InstalledHostCert), for the sshd_config.d drop-in localnode1 installs,
// and has sshd reload when the certificate changed.
func (h *Head) hostCertificate() error {
	root := h.opts.ClusterRoot
	principals := sshtrust.HostPrincipals(contract.HeadName, h.addr.String())
	if _, err := os.Stat(filepath.Join(root, LiveSSHDConfig)); err != nil {
		if pub, err := os.ReadFile(filepath.Join(root, InstalledHostKey+".pub")); err == nil {
			key, _, _, _, err := ssh.ParseAuthorizedKey(pub)
			if err != nil {
				return fmt.Errorf("SSH host key %s.pub: %w", InstalledHostKey, err)
			}
			if name, err := h.sys.Hostname(); err == nil && name != contract.HeadName {
				principals = append(principals, name)
			}
			cert, err := h.cluster.ca.SignHost(key, principals, registry.HostCertValidity)
			if err != nil {
				return err
			}
			path := filepath.Join(root, InstalledHostCert)
			if old, err := os.ReadFile(path); err == nil && sameCertKey(old, cert) {
				return nil
			}
			if err := atomicfile.Write(path, []byte(cert), 0o644); err != nil {
				return err
			}
			if h.machineRoot() {
				if err := h.sys.ReloadSSH(context.Background()); err != nil {
					h.log.Warn("reloading sshd for its host certificate", "err", err)
				}
			}
			h.log.Info("SSH: certified this machine's own host key", "cert", path)
			return nil
		}
	}
	dir := filepath.Join(root, contract.RunDir, "ssh")
	pub, err := sshtrust.EnsureHostKey(dir)
	if err != nil {
		return fmt.Errorf("SSH host key: %w", err)
	}
	cert, err := h.cluster.ca.SignHost(pub, principals, registry.HostCertValidity)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, sshtrust.HostCertFile), []byte(cert), 0o644)
}

// Host key paths: the live image's sshd drop-in (keys made per boot in
// RunDir), and an installed machine's own key and its certificate.
const (
	LiveSSHDConfig    = "etc/ssh/sshd_config.d/clusterdebian.conf"
	InstalledHostKey  = "etc/ssh/ssh_host_ed25519_key"
	InstalledHostCert = "etc/ssh/ssh_host_ed25519_key-cert.pub"
)

// sameCertKey reports whether two certificates certify the same key with the
// same signer and principals: a restarted head then leaves sshd alone.
func sameCertKey(a []byte, b string) bool {
	ka, _, _, _, err1 := ssh.ParseAuthorizedKey(a)
	kb, _, _, _, err2 := ssh.ParseAuthorizedKey([]byte(b))
	ca, ok1 := ka.(*ssh.Certificate)
	cb, ok2 := kb.(*ssh.Certificate)
	if err1 != nil || err2 != nil || !ok1 || !ok2 {
		return false
	}
	return string(ca.Key.Marshal()) == string(cb.Key.Marshal()) &&
		string(ca.SignatureKey.Marshal()) == string(cb.SignatureKey.Marshal()) &&
		strings.Join(ca.ValidPrincipals, ",") == strings.Join(cb.ValidPrincipals, ",")
}

// setHolders records which node holds which address, for inUse.
func (h *Head) setHolders(ns []registry.Node) {
	m := make(map[netip.Addr]string, len(ns))
	for _, n := range ns {
		if ip, err := netip.ParseAddr(n.IP); err == nil && n.Role == registry.RoleNode {
			m[ip] = n.MAC
		}
	}
	h.holders.Store(&m)
}

// knownAddrs is the registered nodes' MAC → address, which DHCP leases
// again when its lease file lacks them (dhcp.Config.Known).
func (h *Head) knownAddrs() map[string]netip.Addr {
	m := h.holders.Load()
	if m == nil {
		return nil
	}
	out := make(map[string]netip.Addr, len(*m))
	for ip, mac := range *m {
		out[mac] = ip
	}
	return out
}

// selfRequest is node1's own registration.
func (h *Head) selfRequest() registry.RegisterRequest {
	mem, _ := agent.MemTotalKiB("/proc")
	return registry.RegisterRequest{MAC: h.cluster.mac, IP: h.addr.String(), Cores: runtime.NumCPU(),
		MemTotalKiB: mem, Role: registry.RoleHead}
}

// flushCluster saves the registry, and then waits for the export set to
// apply what the registry's last change told it (the booted-nodes file in
// the state folder, the NFS server), within exportApplyTimeout.
func (h *Head) flushCluster() {
	if err := h.cluster.reg.Flush(); err != nil {
		h.log.Error("saving the registry", "err", err)
	}
	if h.exports == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), exportApplyTimeout)
	defer cancel()
	if err := h.exports.settle(ctx); err != nil {
		h.log.Error("the exported nodes may not be saved", "file", h.exports.path, "err", err)
	}
}

// runCluster keeps node1's figures current (setupCluster registered it),
// marks silent nodes down, and flushes the registry when ctx ends.
func (h *Head) runCluster(ctx context.Context) {
	c := h.cluster
	self := h.selfRequest()
	go c.reg.SweepEvery(ctx)
	t := time.NewTicker(HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			h.flushCluster()
			return
		case <-t.C:
			if c.mac == "" {
				continue
			}
			if st, err := agent.ReadStats("/proc"); err == nil {
				if err := c.reg.Heartbeat(c.mac, st); err != nil {
					c.reg.Register(self)
				}
			}
		}
	}
}

// Access is who may use a route of the head's HTTP server (or a port):
// the rules of docs/architecture.md's threat model, which the access audit
// test checks route by route.
type Access int

const (
	// AccessUnset is no rule; the audit test fails on it.
	AccessUnset Access = iota
	// AccessOpen: anyone who reaches the port, GET and HEAD only; it shows
	// nothing secret and changes nothing.
	AccessOpen
	// AccessPerAPIRoute: the node API, whose routes each say whether they
	// need the cluster token (registry.Routes): reads are open, every
	// change needs "Authorization: Bearer <token>".
	AccessPerAPIRoute
	// AccessTokenWrite: GET and HEAD open, POST needs the cluster token
	// (the swarm's figures and the initrd's fetch reports).
	AccessTokenWrite
	// AccessBooted: only a machine that did DHCP with this head lately,
	// asking from the address the head gave it (bootgate.go); these
	// answers carry the cluster token.
	AccessBooted
)

func (a Access) String() string {
	switch a {
	case AccessOpen:
		return "open, read-only"
	case AccessPerAPIRoute:
		return "reads open; changes need the cluster token"
	case AccessTokenWrite:
		return "reads open; reports need the cluster token"
	case AccessBooted:
		return "booted-machine gate"
	}
	return "unset"
}

// route is one entry of the head's HTTP routes.
type route struct {
	// name says what the route serves; example is a path it matches.
	name, example string
	match         func(path string) bool
	access        Access
	handler       http.Handler
}

// routeTable is every route of the head's HTTP server, in the order they
// are tried; the last matches every path. The registry API, the status
// page and the metrics sit beside the boot server. The status page is at
// "/" too, for a person who types the head's name into a browser. The boot
// handler gets its paths with nothing in front, because it checks raw
// paths itself.
func (h *Head) routeTable() []route {
	boot := []route{
		{"boot scripts, which carry the token", contract.ScriptPathPrefix + "52:54:00:00:00:01" + contract.IPXEScriptSuffix,
			func(p string) bool { return strings.HasPrefix(p, contract.ScriptPathPrefix) }, AccessBooted, h.handler},
		{"boot files and progress", contract.NetbootPath + "vmlinuz", func(string) bool { return true }, AccessOpen, h.handler},
	}
	if h.swarm != nil {
		// Before the boot files: with the swarm on, node1 may answer a
		// layer request with a redirect to a peer.
		boot = append([]route{{"image layers (swarm redirect)", contract.NetbootPath + contract.BaseLayer,
			isLayerPath, AccessOpen, http.HandlerFunc(h.serveLayer)}}, boot...)
	}
	if h.cluster == nil {
		return boot
	}
	return append([]route{
		{"node API", registry.PathNodes,
			func(p string) bool { return p == registry.PathNodes || strings.HasPrefix(p, registry.PathNodes+"/") },
			AccessPerAPIRoute, h.cluster.api},
		{"network", registry.PathNetwork, func(p string) bool { return p == registry.PathNetwork },
			AccessOpen, http.HandlerFunc(h.serveNetwork)},
		{"status page", statuspage.PathStatus,
			func(p string) bool { return p == "/" || p == statuspage.PathStatus || p == statuspage.PathStatus+"/" },
			AccessOpen, statuspage.Page()},
		{"Slurm's state", slurm.PathStatus, func(p string) bool { return p == slurm.PathStatus },
			AccessOpen, http.HandlerFunc(h.serveSlurm)},
		{"swarm figures and fetch reports", contract.SwarmReportPath,
			func(p string) bool { return p == contract.SwarmPath || p == contract.SwarmReportPath },
			AccessTokenWrite, http.HandlerFunc(h.serveSwarm)},
		{"metrics", statuspage.PathMetrics, func(p string) bool { return p == statuspage.PathMetrics },
			AccessOpen, h.metrics()},
		{"the last verify report", verify.PathReport, func(p string) bool { return p == verify.PathReport },
			AccessOpen, verify.Handler(h.verifyFile())},
	}, boot...)
}

// metrics serves the registry's figures, and Slurm's when the head runs
// it.
func (h *Head) metrics() http.Handler {
	nodes := statuspage.Metrics(h.cluster.reg.Nodes, nil)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nodes.ServeHTTP(w, r)
		if r.Method == http.MethodGet {
			h.writeSwarmMetrics(w)
		}
		if r.Method == http.MethodGet && h.slurm != nil {
			slurm.WriteMetrics(w, h.SlurmStatus())
		}
		if r.Method == http.MethodGet {
			if rep, err := verify.ReadReport(h.verifyFile()); err == nil {
				verify.WriteMetrics(w, rep)
			}
		}
	})
}

// verifyFile is where clusterdebian verify keeps its last report.
func (h *Head) verifyFile() string { return filepath.Join(h.opts.StateDir, contract.VerifyFile) }

// routes serves the route table.
func (h *Head) routes() http.Handler {
	table := h.routeTable()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, rt := range table {
			if rt.match(r.URL.Path) {
				rt.handler.ServeHTTP(w, r)
				return
			}
		}
	})
}
