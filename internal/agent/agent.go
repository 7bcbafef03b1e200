// Package agent is the node agent, `clusterdebian node`: it runs on every
// network-booted node and joins it to the cluster. At start it makes the
// node's SSH host key (in RAM: it lives for one boot), registers with the
// head (MAC, address, cores, memory, host key) and writes the host
// certificate the head signs, then tells systemd it is ready, so that sshd
// starts with a certified key. From then on it heartbeats with the node's
// load; when the head has forgotten the node (it answers 404) it registers
// again, and at a clean shutdown it leaves.
//
// Simulate runs many fake agents against a head, for load tests.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/contract"

	"golang.org/x/crypto/ssh"

	"github.com/clusterdebian/clusterdebian/internal/clusterfiles"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/slurm"
	"github.com/clusterdebian/clusterdebian/internal/sshtrust"
)

// Defaults and kernel command-line parameters.
const (
	DefaultRunDir = contract.RunDir
	// DefaultInterval is used when neither the options nor the head say.
	DefaultInterval = 5 * time.Second
	// leaveTimeout bounds the leave request at shutdown: systemd waits for
	// the agent, and a head that is gone must not hold up a poweroff.
	leaveTimeout = 3 * time.Second
	// maxBackoff caps the wait between registration attempts.
	maxBackoff = 30 * time.Second
)

// Options configure the agent.
type Options struct {
	// HeadURL is the head's base URL, like http://10.99.0.1.
	HeadURL string
	// Token is the cluster token (contract.ParamToken).
	Token string
	// Interval between heartbeats; zero: what the head asks for.
	Interval time.Duration
	// RunDir is the per-boot state folder; default DefaultRunDir. The host
	// key and certificate go in RunDir/ssh, where the image's sshd_config.d
	// drop-in looks.
	RunDir string
	// Logger gets the log; default slog.Default().
	Logger *slog.Logger

	// MAC and IP, when both set, are used instead of the interface that
	// reaches the head. Tests set them: loopback has no MAC.
	MAC, IP string
	// Interface, with MAC and IP, names the interface that holds IP (for
	// KeepLease); tests set it.
	Interface string
	// ProcDir is where /proc is; default "/proc".
	ProcDir string
	// CAChanged, if set, is called after a certificate from a different CA
	// than the one before was written: the head's CA was remade, and sshd,
	// which reads its certificate only at start, must reload. The command
	// sets it to reload ssh.service.
	CAChanged func(ctx context.Context)

	// ClusterFilesRoot, when not empty, has the agent keep the cluster
	// files under it ("/" on a node) from the head's node list: /etc/hosts,
	// the MPI and PVM hostfiles, the MPI parameters and the ssh client
	// drop-in for the subnet, and the SSH known hosts. A node with the RAM
	// root needs that, as its /etc is its own; with the shared root it
	// sees the ones the head writes.
	ClusterFilesRoot string
	// Subnet is the cluster subnet, for the cluster files; by default the
	// network of the interface that reaches the head.
	Subnet netip.Prefix

	// SwarmSums, when set, are node1's layer sums (contract.ParamLayerSums,
	// with the swarm on): the agent serves the layers its initrd verified
	// against them to other nodes (swarm.go), from SwarmDir (default
	// contract.LiveMediaDir).
	SwarmSums map[string]string
	SwarmDir  string

	// SlurmRoot, when not empty, has the agent write the machine's Slurm
	// files under it ("/" on a node) when the head sends the cluster's
	// munge key: the key for munged, and the options slurmd registers
	// with (slurm.MachineFiles). The agent registers from a privileged
	// port, so that the head knows the request is root's.
	SlurmRoot string
	// SlurmChanged, if set, is called after those files changed while the
	// agent ran (the head's key or address changed): munged and slurmd,
	// which read them at start, must restart. The command sets it to
	// restart the running ones.
	SlurmChanged func(ctx context.Context)

	// KeepLease keeps the node's address leased while ctx runs, when the
	// head says it serves no addresses (RegisterResponse.KeepLease): iface
	// holds addr, name is the node's name. nil is KeepLANLease. It is not
	// called when MAC and IP were given without Interface.
	KeepLease func(ctx context.Context, log *slog.Logger, iface string, addr netip.Addr, name string)

	// SSHPort, when not 0, is the port of the node's sshd: the node
	// registers as joining (registry.StateJoining), and becomes up with the
	// first heartbeat after its sshd answers there on the node's address.
	// sshd starts only after READY=1 (it needs the host certificate), and
	// a node in the hostfiles before port 22 answers makes mpirun fail.
	// 0: the node is up at once (tests; an agent started by hand).
	SSHPort int
}

// OptionsFromCmdline reads the head's address and the cluster token from a
// kernel command line (the contents of /proc/cmdline; see
// contract.Cmdline). The head puts both on every node's command line; an
// error names what is missing or malformed.
func OptionsFromCmdline(cmdline string) (Options, error) {
	var o Options
	c, err := contract.ParseCmdline(cmdline)
	if err != nil {
		return o, err
	}
	var missing []string
	if !c.Head.IsValid() {
		missing = append(missing, contract.ParamHead+"=<head address>")
	}
	if c.Token == "" {
		missing = append(missing, contract.ParamToken+"=<token>")
	}
	if len(missing) > 0 {
		return o, fmt.Errorf("the kernel command line has no %s; the head puts it on every node it boots",
			strings.Join(missing, " and no "))
	}
	o.HeadURL, o.Token = c.HTTPBase(), c.Token
	o.SlurmRoot = "/"
	if c.Root == contract.RootRAM {
		o.ClusterFilesRoot = "/"
		if c.Swarm {
			o.SwarmSums = c.LayerSums
		}
	}
	return o, nil
}

// Run joins the cluster and heartbeats until ctx is done; then it leaves
// and returns nil. It returns an error only for what retrying cannot fix.
func Run(ctx context.Context, o Options) error {
	if o.HeadURL == "" || o.Token == "" {
		return errors.New("agent: the head URL and the cluster token are needed")
	}
	if o.RunDir == "" {
		o.RunDir = DefaultRunDir
	}
	if o.ProcDir == "" {
		o.ProcDir = "/proc"
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	c := registry.NewClient(o.HeadURL, o.Token, nil)

	mac, ip := o.MAC, o.IP
	iface := o.Interface
	if mac == "" || ip == "" {
		ep, err := waitEndpoint(ctx, o.HeadURL, log)
		if err != nil {
			return err
		}
		if len(ep.MAC) == 0 {
			return fmt.Errorf("interface %s, which reaches the head, has no MAC address", ep.Interface)
		}
		mac, ip, iface = ep.MAC.String(), ep.IP.String(), ep.Interface
		if !o.Subnet.IsValid() {
			o.Subnet = ep.Subnet
		}
		log.Info("cluster interface", "iface", ep.Interface, "ip", ip, "mac", mac)
	}
	if len(o.SwarmSums) > 0 {
		serveLayers(ctx, o, log)
	}
	memTotal, err := MemTotalKiB(o.ProcDir)
	if err != nil {
		log.Warn("memory size unknown", "err", err)
	}
	sshDir := filepath.Join(o.RunDir, "ssh")
	hostKey, err := sshtrust.EnsureHostKey(sshDir)
	if err != nil {
		return fmt.Errorf("SSH host key in %s: %w", sshDir, err)
	}
	req := registry.RegisterRequest{
		MAC: mac, IP: ip, Cores: runtime.NumCPU(), MemTotalKiB: memTotal,
		SSHHostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostKey))),
		Joining:    o.SSHPort != 0,
	}
	a := &agent{o: o, log: log, c: c, req: req, certPath: filepath.Join(sshDir, sshtrust.HostCertFile),
		rc: registry.NewClient(o.HeadURL, o.Token, &http.Client{Timeout: registry.DefaultClientTimeout, Transport: registry.RootTransport()})}
	a.lastCA = certCA(a.certPath)

	resp, err := a.register(ctx)
	if err != nil {
		return nil // ctx ended before the head answered: nothing to leave
	}
	a.syncClusterFiles(ctx, 0)
	if resp.KeepLease && iface != "" {
		// The node's address is a LAN server's lease, made in the
		// initramfs, where no DHCP client stays behind: without renewals
		// the server would give the address away under the running node.
		keep := o.KeepLease
		if keep == nil {
			keep = KeepLANLease
		}
		if addr, err := netip.ParseAddr(ip); err == nil {
			go keep(ctx, log, iface, addr, resp.Name)
		}
	}
	if err := Notify("READY=1\nSTATUS=joined as " + resp.Name); err != nil {
		log.Warn("telling systemd we are ready", "err", err)
	}
	interval := o.Interval
	if interval <= 0 {
		interval = time.Duration(resp.HeartbeatSeconds) * time.Second
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	var sshUp <-chan struct{}
	if o.SSHPort != 0 {
		sshUp = waitSSH(ctx, net.JoinHostPort(ip, strconv.Itoa(o.SSHPort)), log)
	}
	a.heartbeats(ctx, interval, sshUp)

	Notify("STOPPING=1")
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), leaveTimeout)
	defer cancel()
	if err := a.rc.Leave(lctx, mac); err != nil {
		log.Warn("leaving the cluster", "err", err)
	} else {
		log.Info("left the cluster", "node", a.name)
	}
	return nil
}

// agent is one running agent's state.
type agent struct {
	o        Options
	log      *slog.Logger
	c        *registry.Client
	req      registry.RegisterRequest
	certPath string
	lastCA   string
	name     string
	ca       string // the head's SSH CA public key, for the known hosts
	rootKeys string // node1's root's public keys
	synced   uint64 // the registry generation the cluster files were written for
	// rc registers, heartbeats and leaves, from a privileged port
	// (registry.RootTransport): the head takes those only from root on
	// the node (registry.FromNodeRoot).
	rc *registry.Client
	// slurmFiles: the Slurm files were written by this agent.
	slurmFiles bool
}

// syncClusterFiles writes the cluster files under Options.ClusterFilesRoot
// when the registry's generation moved past the one they were written for
// (gen 0: unknown, fetch anyway). A failure is logged and retried at the
// next heartbeat.
func (a *agent) syncClusterFiles(ctx context.Context, gen uint64) {
	root := a.o.ClusterFilesRoot
	if root == "" || (gen != 0 && gen == a.synced) {
		return
	}
	nodes, listGen, err := a.c.Nodes(ctx)
	if err != nil {
		a.log.Warn("fetching the node list for the cluster files", "err", err)
		return
	}
	err = clusterfiles.WriteSystem(root, nodes, a.o.Subnet)
	if a.o.Subnet.IsValid() {
		err = errors.Join(err, sshtrust.WriteClientConfig(root, a.o.Subnet))
	}
	if a.ca != "" {
		line := sshtrust.KnownHostsLine(a.ca, sshtrust.KnownHostsPatterns(a.o.Subnet))
		err = errors.Join(err, sshtrust.WriteKnownHosts(root, line))
	}
	if a.rootKeys != "" {
		err = errors.Join(err, sshtrust.WriteRootAuthorizedKeys(root, a.rootKeys))
	}
	if err != nil {
		a.log.Error("writing the cluster files", "root", root, "err", err)
		return
	}
	if a.synced == 0 {
		a.log.Info("cluster files written from the head's node list", "nodes", len(nodes))
	}
	a.synced = listGen
}

// waitEndpoint finds the interface to the head, waiting for a route: a
// node's network is up from the initramfs, but a hand-started agent may
// race the network.
func waitEndpoint(ctx context.Context, headURL string, log *slog.Logger) (Endpoint, error) {
	delay := time.Second
	for {
		ep, err := LocalEndpoint(ctx, headURL)
		if err == nil {
			return ep, nil
		}
		if _, perr := headHostPort(headURL); perr != nil {
			return ep, perr
		}
		log.Warn("cannot find the interface to the head yet", "head", headURL, "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return ep, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, maxBackoff)
	}
}

// register registers until the head accepts (backing off between attempts,
// logging each failure) or ctx ends, and installs the host certificate.
func (a *agent) register(ctx context.Context) (registry.RegisterResponse, error) {
	delay := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		resp, err := a.rc.Register(ctx, a.req)
		if err == nil {
			a.name = resp.Name
			a.ca = resp.SSHCAPublicKey
			a.rootKeys = resp.RootAuthorizedKeys
			a.log.Info("registered with the head", "node", resp.Name, "head", a.o.HeadURL,
				"heartbeat_s", resp.HeartbeatSeconds, "attempt", attempt)
			a.installCert(ctx, resp)
			a.installSlurm(ctx, resp)
			return resp, nil
		}
		if ctx.Err() != nil {
			return resp, ctx.Err()
		}
		a.log.Warn("registering with the head failed", "head", a.o.HeadURL, "attempt", attempt, "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return resp, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, maxBackoff)
	}
}

// installCert writes the host certificate the head sent, for sshd.
func (a *agent) installCert(ctx context.Context, resp registry.RegisterResponse) {
	if resp.SSHHostCertificate == "" {
		a.log.Warn("the head sent no SSH host certificate; ssh to this node will not be verified")
		return
	}
	if err := writeAtomic(a.certPath, []byte(strings.TrimSpace(resp.SSHHostCertificate)+"\n"), 0o644); err != nil {
		a.log.Error("writing the SSH host certificate", "path", a.certPath, "err", err)
		return
	}
	ca := certCA(a.certPath)
	if a.lastCA != "" && ca != a.lastCA && a.o.CAChanged != nil {
		a.log.Info("the head's SSH CA changed; reloading sshd")
		a.o.CAChanged(ctx)
	}
	a.lastCA = ca
}

// installSlurm writes the machine's Slurm files (slurm.MachineFiles) when
// the head sent the munge key, and has the daemons restarted when the
// files changed under them.
func (a *agent) installSlurm(ctx context.Context, resp registry.RegisterResponse) {
	root := a.o.SlurmRoot
	if root == "" {
		return
	}
	if len(resp.MungeKey) == 0 {
		if !a.slurmFiles {
			a.log.Info("the head sent no munge key: no Slurm on this node (the cluster has none, or this agent could not register from a privileged port)")
		}
		return
	}
	changed, err := slurm.MachineFiles(root, resp.MungeKey, &slurm.SlurmdOptions{Name: resp.Name, Controller: resp.SlurmController, CPUs: a.req.Cores})
	switch {
	case errors.Is(err, slurm.ErrNoMunge):
		a.log.Warn("the head runs Slurm, but this machine has no munge", "err", err)
		return
	case err != nil:
		a.log.Error("writing the munge key and slurmd's options", "err", err)
		return
	}
	if !a.slurmFiles {
		a.log.Info("munge key and slurmd's options written", "controller", resp.SlurmController)
	} else if changed {
		a.log.Info("the head's munge key or address changed: restarting munge and slurmd")
	}
	if changed && a.o.SlurmChanged != nil {
		a.o.SlurmChanged(ctx)
	}
	a.slurmFiles = true
}

// certCA returns the signing key of the certificate at path ("" if none).
func certCA(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return ""
	}
	cert, ok := k.(*ssh.Certificate)
	if !ok {
		return ""
	}
	return string(cert.SignatureKey.Marshal())
}

// heartbeats sends a heartbeat every interval until ctx is done,
// registering again when the head does not know the node. When sshUp is
// closed (the node's sshd answers), it sends one at once that makes the
// node up. Failures are logged when they start and when they end, not
// every interval: a head that is down for a minute should not flood every
// node's journal.
func (a *agent) heartbeats(ctx context.Context, interval time.Duration, sshUp <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-sshUp:
			sshUp = nil // a nil channel is never ready again
			a.req.Joining = false
			a.log.Info("sshd answers; telling the head the node is up", "node", a.name)
		}
		stats, err := ReadStats(a.o.ProcDir)
		if err != nil {
			a.log.Debug("reading load", "err", err)
		}
		stats.Joining = a.req.Joining
		gen, caFP, err := a.rc.HeartbeatCA(ctx, a.req.MAC, stats)
		switch {
		case err == nil && a.caChanged(caFP):
			// node1 made a new CA (its key was damaged): this node's host
			// certificate and known hosts name the old one, so ssh to and
			// from it would fail verification until it registers again.
			a.log.Warn("the head's SSH CA changed; registering again for a new host certificate", "ca", caFP)
			if _, err := a.register(ctx); err != nil {
				return
			}
			a.syncClusterFiles(ctx, 0)
			failing = ""
		case err == nil:
			a.syncClusterFiles(ctx, gen)
			if failing != "" {
				a.log.Info("heartbeats reach the head again")
				failing = ""
			}
		case ctx.Err() != nil:
			return
		case errors.Is(err, registry.ErrUnknownNode):
			a.log.Info("the head does not know this node (restarted or pruned); registering again")
			if _, err := a.register(ctx); err != nil {
				return
			}
			failing = ""
		default:
			if msg := err.Error(); msg != failing {
				a.log.Warn("heartbeat failed; retrying every interval", "err", err, "interval", interval)
				failing = msg
			}
		}
	}
}

// caChanged reports whether the CA fingerprint of a heartbeat answer is
// not that of the CA this node registered under. A head that sends none,
// or a registration that got no CA (no host key to sign), is no change:
// registering again would not get one either.
func (a *agent) caChanged(fp string) bool {
	return fp != "" && a.ca != "" && sshtrust.Fingerprint(a.ca) != fp
}

// writeAtomic replaces path atomically: sshd must never read half a
// certificate.
func writeAtomic(path string, data []byte, mode fs.FileMode) error {
	return atomicfile.Write(path, data, mode)
}
