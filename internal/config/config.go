// Package config reads, defaults and validates cluster.toml, the one declarative
// file that describes a ClusterDebian image and its cluster network.
//
// Every error names the key it is about (for example "image.suite"), so that a
// user can find and fix it without reading the code: each is an
// *inputerr.Error whose Input is the key, so that a command can also name
// the flag that overrides it.
//
// A value that another package owns is checked by that package's rule:
// network.subnet by contract.CheckSubnet, network.dhcp by dhcp.ParseMode,
// network.nat by uplink.ParseMode, network.interface by
// contract.ParseInterfaceChoice, nodes.root by contract.ParseRootMode,
// image.kernel_cmdline by contract.CheckExtra.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
	"golang.org/x/crypto/ssh"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/inputerr"
	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcp"
	"github.com/clusterdebian/clusterdebian/internal/uplink"
	"github.com/clusterdebian/clusterdebian/internal/verify"
)

//go:embed default.toml
var defaultTOML string

// DefaultTOML returns the embedded default configuration, with a comment on
// every key.
func DefaultTOML() string { return defaultTOML }

// Suites the image builder knows how to build.
var Suites = []string{"trixie", "bookworm"}

// Parallel stacks and the suites that package them.
var parallelSuites = map[string][]string{
	"mpi": {"trixie", "bookworm"},
	"pvm": {"bookworm"}, // PVM was dropped from Debian after bookworm.
}

// Config is the whole of cluster.toml.
type Config struct {
	Image   Image   `toml:"image"`
	Cluster Cluster `toml:"cluster"`
	Users   []User  `toml:"users"`
	Network Network `toml:"network"`
	Head    Head    `toml:"head"`
	Slurm   Slurm   `toml:"slurm"`
	Nodes   Nodes   `toml:"nodes"`
	// Verify is the bar `clusterdebian verify` judges the cluster by.
	Verify verify.Bar `toml:"verify"`

	// Dir is the folder relative paths are resolved against: the folder of the
	// file, or the working directory for the embedded default.
	Dir string `toml:"-"`
	// Source names where the config came from, for messages.
	Source string `toml:"-"`
}

// Image holds the [image] table.
type Image struct {
	Suite    string   `toml:"suite"`
	Mirror   string   `toml:"mirror"`
	Packages []string `toml:"packages"`
	Desktop  string   `toml:"desktop"`
	// Firmware puts Debian's non-free firmware for common wired network
	// cards and the CPU microcode into the image and its initrds, from
	// the archive component FirmwareComponent.
	Firmware      bool   `toml:"firmware"`
	Overlay       string `toml:"overlay"`
	BootTimeout   int    `toml:"boot_timeout"`
	KernelCmdline string `toml:"kernel_cmdline"`
}

// Cluster holds the [cluster] table.
type Cluster struct {
	Parallel  []string `toml:"parallel"`
	Scheduler string   `toml:"scheduler"`
}

// Schedulers are the values of cluster.scheduler, the default first.
var Schedulers = []string{SchedulerSlurm, SchedulerNone}

// The job schedulers an image can have.
const (
	SchedulerSlurm = "slurm"
	SchedulerNone  = "none"
)

// Slurm holds the [slurm] table.
type Slurm struct {
	// Node1Jobs puts node1 into the partition; nil means true.
	Node1Jobs *bool `toml:"node1_jobs"`
}

// RunsJobs reports whether node1 runs jobs (slurm.node1_jobs, default true).
func (s Slurm) RunsJobs() bool { return s.Node1Jobs == nil || *s.Node1Jobs }

// User is one [[users]] entry.
type User struct {
	Name              string   `toml:"name"`
	Password          string   `toml:"password"`
	PasswordHash      string   `toml:"password_hash"`
	SSHAuthorizedKeys []string `toml:"ssh_authorized_keys"`
	Sudo              *bool    `toml:"sudo"`
}

// CanSudo reports whether the user gets sudo; it defaults to true.
func (u User) CanSudo() bool { return u.Sudo == nil || *u.Sudo }

// Network holds the [network] table.
type Network struct {
	Interface string   `toml:"interface"`
	Subnet    string   `toml:"subnet"`
	Address   string   `toml:"address"`
	DHCP      string   `toml:"dhcp"`
	NAT       string   `toml:"nat"`
	DNS       []string `toml:"dns"`
	Gateway   string   `toml:"gateway"`
}

// Head holds the [head] table: how node1's head daemon runs.
type Head struct {
	BootDir  string `toml:"boot_dir"`
	StateDir string `toml:"state_dir"`
}

// Nodes holds the [nodes] table.
type Nodes struct {
	Root contract.RootMode `toml:"root"`
	// Swarm: RAM-root nodes that hold the image serve it to the nodes that
	// boot after them, node1 redirecting to them (internal/swarm). Unset
	// means on; the shared root has no use for it.
	Swarm *bool `toml:"swarm"`
}

// SwarmOn reports whether the swarm boot is on (nodes.swarm, default true).
func (n Nodes) SwarmOn() bool { return n.Swarm == nil || *n.Swarm }

// Default returns the embedded default configuration.
func Default() *Config {
	c, unknown, err := parse(defaultTOML, "default config", ".")
	if err == nil && len(unknown) > 0 {
		err = errors.Join(unknown...)
	}
	if err != nil {
		panic("embedded default config is invalid: " + err.Error())
	}
	return c
}

// Load reads path, or the embedded default when path is empty, and validates it.
func Load(path string) (*Config, error) {
	if path == "" {
		c := Default()
		return c, c.Validate()
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(string(data), path, filepath.Dir(abs))
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Parse decodes a config file's text over the defaults and validates it.
// name is used in messages; dir resolves relative paths.
func Parse(text, name, dir string) (*Config, error) {
	c, unknown, err := parse(text, name, dir)
	if err != nil {
		return nil, err
	}
	// Unknown keys and bad values are reported together, so one run of
	// `config check` shows every problem.
	err = c.Validate()
	if len(unknown) > 0 {
		var ve *ValidationError
		if errors.As(err, &ve) {
			unknown = append(unknown, ve.Errs...)
		}
		return nil, &ValidationError{Source: name, Errs: unknown}
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

func parse(text, name, dir string) (c *Config, unknown []error, err error) {
	c = &Config{Dir: dir, Source: name}
	if text != defaultTOML {
		// Start from the defaults so that a key left out keeps its default.
		if _, err := toml.Decode(defaultTOML, c); err != nil {
			return nil, nil, fmt.Errorf("embedded default config: %w", err)
		}
	}
	// A file that lists users replaces the default user list entirely.
	defaultUsers := c.Users
	c.Users = nil
	md, err := toml.Decode(text, c)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return nil, nil, fmt.Errorf("%s: line %d: %s", name, perr.Position.Line, perr.Message)
		}
		return nil, nil, fmt.Errorf("%s: %w", name, describeDecodeError(err))
	}
	if !md.IsDefined("users") {
		c.Users = defaultUsers
	}
	reported := map[string]bool{}
	for _, k := range md.Undecoded() {
		// Inside an unknown table, only the table is worth reporting.
		if len(k) > 1 && reported[k[:len(k)-1].String()] {
			reported[k.String()] = true
			continue
		}
		reported[k.String()] = true
		unknown = append(unknown, inputerr.Errorf(k.String(), "", "unknown key%s", suggest(k.String())))
	}
	// An empty mode is the default, as it is for the head and on the
	// kernel command line.
	if m, err := dhcp.ParseMode(c.Network.DHCP); err == nil {
		c.Network.DHCP = string(m)
	}
	if m, err := uplink.ParseMode(c.Network.NAT); err == nil {
		c.Network.NAT = string(m)
	}
	if r, err := contract.ParseRootMode(string(c.Nodes.Root)); err == nil {
		c.Nodes.Root = r
	}
	return c, unknown, nil
}

// describeDecodeError turns BurntSushi's type errors into ones that name the key.
func describeDecodeError(err error) error {
	msg := err.Error()
	// toml: incompatible types: TOML value has type string; destination has type integer
	return errors.New(strings.TrimPrefix(msg, "toml: "))
}

// knownKeys lists every key, for "did you mean" suggestions.
var knownKeys = []string{
	"image.suite", "image.mirror", "image.packages", "image.desktop", "image.firmware", "image.overlay",
	"image.boot_timeout", "image.kernel_cmdline",
	"cluster.parallel", "cluster.scheduler",
	"slurm.node1_jobs",
	"users.name", "users.password", "users.password_hash", "users.ssh_authorized_keys", "users.sudo",
	"network.interface", "network.subnet", "network.address", "network.dhcp", "network.nat", "network.dns", "network.gateway",
	"head.boot_dir", "head.state_dir",
	"nodes.root", "nodes.swarm",
	"verify.min_bandwidth_ratio", "verify.max_latency_ratio", "verify.min_bandwidth_mbit", "verify.min_link_mbit",
	"verify.min_memory_ratio", "verify.max_clock_offset_s", "verify.mpi",
}

func suggest(key string) string {
	best, bestDist := "", 4
	candidates := slices.Clone(knownKeys)
	for _, k := range knownKeys {
		table, _, _ := strings.Cut(k, ".")
		if !slices.Contains(candidates, table) {
			candidates = append(candidates, table)
		}
	}
	for _, k := range candidates {
		if d := editDistance(key, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Debian package names: lower case letters, digits and + - . , at least two
// characters, starting with a letter or digit (Debian policy 5.6.1).
var packageName = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)

// Login names accepted by Debian's adduser by default.
var userName = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// Names the base system already uses; a [[users]] entry must not take them.
var reservedUsers = []string{"root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail",
	"news", "uucp", "proxy", "www-data", "backup", "list", "irc", "nobody", "systemd-network",
	"systemd-timesync", "messagebus", "sshd", "statd", "_rpc", "_apt"}

// Validate checks every key and returns all problems at once, each naming its key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, inputerr.Errorf(key, "", format, args...))
	}

	if !slices.Contains(Suites, c.Image.Suite) {
		bad("image.suite", "%q is not supported; use %s", c.Image.Suite, quoteList(Suites))
	}
	if c.Image.Mirror != "" && !strings.HasPrefix(c.Image.Mirror, "http://") &&
		!strings.HasPrefix(c.Image.Mirror, "https://") && !strings.HasPrefix(c.Image.Mirror, "file:/") {
		bad("image.mirror", "%q is not an http://, https:// or file:/ URL", c.Image.Mirror)
	}
	for _, p := range c.Image.Packages {
		if !packageName.MatchString(p) {
			bad("image.packages", "%q is not a valid Debian package name", p)
		}
	}
	if c.Image.Desktop != "" && !packageName.MatchString(c.Image.Desktop) {
		bad("image.desktop", "%q is not a valid Debian package name (for example \"icewm\")", c.Image.Desktop)
	}
	if c.Image.Overlay != "" {
		dir := c.OverlayDir()
		if fi, err := os.Stat(dir); err != nil {
			bad("image.overlay", "folder %s: %v", dir, errors.Unwrap(err))
		} else if !fi.IsDir() {
			bad("image.overlay", "%s is not a folder", dir)
		}
	}
	if c.Image.BootTimeout < 0 || c.Image.BootTimeout > 600 {
		bad("image.boot_timeout", "%d is out of range (0 to 600 seconds)", c.Image.BootTimeout)
	}
	if err := contract.CheckExtra(c.Image.KernelCmdline); err != nil {
		bad("image.kernel_cmdline", "%v", err)
	}

	if len(c.Cluster.Parallel) == 0 {
		bad("cluster.parallel", "must name at least one of \"mpi\", \"pvm\"")
	}
	seen := map[string]bool{}
	for _, p := range c.Cluster.Parallel {
		suites, ok := parallelSuites[p]
		switch {
		case !ok:
			bad("cluster.parallel", "unknown stack %q; use \"mpi\" and/or \"pvm\"", p)
		case seen[p]:
			bad("cluster.parallel", "%q is listed twice", p)
		case slices.Contains(Suites, c.Image.Suite) && !slices.Contains(suites, c.Image.Suite):
			bad("cluster.parallel", "%q is packaged only in %s, not in %s: set image.suite = %q or remove %q",
				p, strings.Join(suites, ", "), c.Image.Suite, suites[0], p)
		}
		seen[p] = true
	}

	if !slices.Contains(Schedulers, c.Cluster.Scheduler) {
		bad("cluster.scheduler", "%q is not a scheduler; use %s", c.Cluster.Scheduler, quoteList(Schedulers))
	}
	errs = append(errs, c.validateUsers()...)
	errs = append(errs, c.validateNetwork()...)
	errs = append(errs, c.validateHead()...)

	if _, err := contract.ParseRootMode(string(c.Nodes.Root)); err != nil {
		bad("nodes.root", "%v", err)
	}
	if err := c.Verify.Validate(); err != nil {
		var ke *verify.KeyError
		if errors.As(err, &ke) {
			bad("verify."+ke.Key, "%s", ke.Msg)
		} else {
			bad("verify", "%v", err)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return &ValidationError{Source: c.Source, Errs: errs}
}

// ValidationError lists every problem found in one config.
type ValidationError struct {
	Source string
	Errs   []error
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s is invalid:", e.Source)
	for _, err := range e.Errs {
		b.WriteString("\n  ")
		b.WriteString(err.Error())
	}
	return b.String()
}

func (e *ValidationError) Unwrap() []error { return e.Errs }

// HasScheduler reports whether the image gets the job scheduler name
// (cluster.scheduler).
func (c *Config) HasScheduler(name string) bool { return c.Cluster.Scheduler == name }

func (c *Config) validateUsers() []error {
	var errs []error
	names := map[string]bool{}
	for i, u := range c.Users {
		key := fmt.Sprintf("users[%d]", i)
		if u.Name != "" {
			key = fmt.Sprintf("users[%d] (%s)", i, u.Name)
		}
		bad := func(field, format string, args ...any) {
			errs = append(errs, inputerr.Errorf(key+"."+field, "", format, args...))
		}
		switch {
		case u.Name == "":
			bad("name", "is required")
		case !userName.MatchString(u.Name):
			bad("name", "%q is not a valid login name (lower case letters, digits, _ and -, starting with a letter)", u.Name)
		case slices.Contains(reservedUsers, u.Name):
			bad("name", "%q is a system account of the base image; pick another name", u.Name)
		case names[u.Name]:
			bad("name", "%q is listed twice", u.Name)
		}
		names[u.Name] = true
		if u.Password != "" && u.PasswordHash != "" {
			bad("password", "set either password or password_hash, not both")
		}
		if strings.ContainsAny(u.Password, "\n\r:") {
			bad("password", "must not contain newlines or ':'")
		}
		if h := u.PasswordHash; h != "" && h != "!" && h != "*" &&
			!regexp.MustCompile(`^\$(y|gy|7|2b|6|5|1)\$[./A-Za-z0-9$=,+-]+$`).MatchString(h) {
			bad("password_hash", "is not a crypt(3) hash (it should start with $y$, $6$ or similar; make one with `mkpasswd -m yescrypt`), nor \"!\"")
		}
		for j, k := range u.SSHAuthorizedKeys {
			if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil {
				bad("ssh_authorized_keys", "entry %d is not an OpenSSH public key: %v", j+1, err)
			}
		}
	}
	return errs
}

func (c *Config) validateNetwork() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, inputerr.Errorf(key, "", format, args...))
	}
	prefix, err := netip.ParsePrefix(c.Network.Subnet)
	if err != nil {
		bad("network.subnet", "%q is not an IPv4 subnet like \"10.99.0.0/24\"", c.Network.Subnet)
	} else if err := contract.CheckSubnet(prefix); err != nil {
		bad("network.subnet", "%v", err)
		prefix = netip.Prefix{}
	}
	if a := c.Network.Address; a != "" {
		if addr, err := ParseAddress(a); err != nil {
			bad("network.address", "%v", err)
			prefix = netip.Prefix{}
		} else {
			prefix = addr.Masked()
		}
	}
	if _, err := dhcp.ParseMode(c.Network.DHCP); err != nil {
		bad("network.dhcp", "%v", err)
	}
	nat, err := uplink.ParseMode(c.Network.NAT)
	if err != nil {
		bad("network.nat", "%v", err)
	}
	for _, d := range c.Network.DNS {
		if a, err := netip.ParseAddr(d); err != nil || !a.Is4() {
			bad("network.dns", "%q is not an IPv4 address", d)
		}
	}
	if c.Network.Gateway != "" {
		gw, err := netip.ParseAddr(c.Network.Gateway)
		switch {
		case err != nil || !gw.Is4():
			bad("network.gateway", "%q is not an IPv4 address", c.Network.Gateway)
		case prefix.IsValid() && !prefix.Contains(gw):
			bad("network.gateway", "%s is outside the cluster network %s (%s)", gw, prefix, c.networkKey())
		case nat == uplink.ModeOn:
			// Two ways out for the nodes: the head would not know which to
			// hand them.
			bad("network.nat", "\"on\" makes node1 the nodes' router, but network.gateway names %s: set one of them", gw)
		}
	}
	return errs
}

// networkKey names the key the cluster network comes from.
func (c *Config) networkKey() string {
	if c.Network.Address != "" {
		return "network.address"
	}
	return "network.subnet"
}

// ParseAddress reads network.address: node1's address on the cluster
// network with the network's prefix length, "192.168.50.10/23". It must be
// a host address of an IPv4 network from /8 to /30 (contract.CheckSubnet).
func ParseAddress(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%q is not node1's IPv4 address with its prefix length, like \"192.168.50.10/23\"", s)
	}
	if err := contract.CheckSubnet(p.Masked()); err != nil {
		return netip.Prefix{}, err
	}
	if p.Addr() == p.Masked().Addr() || p.Addr() == contract.Broadcast(p) {
		return netip.Prefix{}, fmt.Errorf("%v is the network's own or broadcast address, not a host's", p)
	}
	return p, nil
}

func (c *Config) validateHead() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, inputerr.Errorf(key, "", format, args...))
	}
	if _, err := contract.ParseInterfaceChoice(c.Network.Interface); err != nil {
		bad("network.interface", "%v", err)
	}
	// The head runs as a system service with / as its working folder, so a
	// relative path would mean something else than the user thought.
	if d := c.Head.BootDir; d != "" && !filepath.IsAbs(d) {
		bad("head.boot_dir", "%q is not an absolute path", d)
	}
	switch d := c.Head.StateDir; {
	case d == "":
		bad("head.state_dir", "must not be empty (the default is \"/var/lib/clusterdebian\")")
	case !filepath.IsAbs(d):
		bad("head.state_dir", "%q is not an absolute path", d)
	}
	return errs
}

// OverlayDir returns the overlay folder as an absolute path, or "" when unset.
func (c *Config) OverlayDir() string {
	if c.Image.Overlay == "" {
		return ""
	}
	if filepath.IsAbs(c.Image.Overlay) {
		return c.Image.Overlay
	}
	return filepath.Join(c.Dir, c.Image.Overlay)
}

// Subnet returns the parsed network.subnet. Call only on a validated config.
func (c *Config) Subnet() netip.Prefix { return netip.MustParsePrefix(c.Network.Subnet) }

// Address returns the parsed network.address, the zero Prefix when unset.
// Call only on a validated config.
func (c *Config) Address() netip.Prefix {
	if c.Network.Address == "" {
		return netip.Prefix{}
	}
	p, _ := ParseAddress(c.Network.Address)
	return p
}

// HeadAddr returns the head's (node1's) address: .1 of the subnet.
func (c *Config) HeadAddr() netip.Addr { return c.Subnet().Addr().Next() }

// HasParallel reports whether a parallel stack ("mpi", "pvm") was chosen.
func (c *Config) HasParallel(name string) bool { return slices.Contains(c.Cluster.Parallel, name) }

// ForImage returns a copy of the config fit to store inside the image: users'
// plain passwords and hashes are removed, and the overlay path is dropped.
func (c *Config) ForImage() string {
	cp := *c
	cp.Users = nil
	for _, u := range c.Users {
		u.Password, u.PasswordHash = "", ""
		cp.Users = append(cp.Users, u)
	}
	cp.Image.Overlay = ""
	var b strings.Builder
	b.WriteString("# The configuration this image was built from (passwords removed).\n")
	if err := toml.NewEncoder(&b).Encode(cp); err != nil {
		panic(err)
	}
	return b.String()
}

func quoteList[S ~string](xs []S) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = fmt.Sprintf("%q", x)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}
