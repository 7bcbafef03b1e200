package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/inputerr"
	"github.com/clusterdebian/clusterdebian/internal/netboot/dhcp"
	"github.com/clusterdebian/clusterdebian/internal/verify"
)

// parseOK parses text as a config file and fails the test on any error.
func parseOK(t *testing.T, text string) *Config {
	t.Helper()
	c, err := Parse(text, "test.toml", t.TempDir())
	if err != nil {
		t.Fatalf("Parse(%q): unexpected error: %v", text, err)
	}
	return c
}

// parseErr parses text, expects an error and checks that its message holds
// every one of want.
func parseErr(t *testing.T, text string, want ...string) error {
	t.Helper()
	_, err := Parse(text, "test.toml", t.TempDir())
	if err == nil {
		t.Fatalf("Parse(%q): expected an error, got none", text)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Parse(%q): error %q does not contain %q", text, err, w)
		}
	}
	return err
}

// ed25519Key returns a fresh "ssh-ed25519 AAAA... comment" line.
func ed25519Key(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " alice@example"
}

func TestDefaultParsesAndValidates(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	lc, err := Load("")
	if err != nil {
		t.Fatalf(`Load("") = %v`, err)
	}
	if lc.Source != "default config" {
		t.Errorf(`Load("").Source = %q, want "default config"`, lc.Source)
	}
	// The default text, given as a file, gives the same config.
	pc := parseOK(t, DefaultTOML())
	if !slices.Equal(pc.Cluster.Parallel, c.Cluster.Parallel) || pc.Image.Suite != c.Image.Suite ||
		pc.Network.Subnet != c.Network.Subnet || len(pc.Users) != len(c.Users) {
		t.Errorf("parsing DefaultTOML() as a file gives %+v, want %+v", pc, c)
	}
}

func TestDefaultTOMLEveryKeyCommented(t *testing.T) {
	keyLine := regexp.MustCompile(`^\s*([A-Za-z0-9_]+)\s*=`)
	lines := strings.Split(DefaultTOML(), "\n")
	var keys []string
	for i, line := range lines {
		m := keyLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		keys = append(keys, m[1])
		if i == 0 || !strings.HasPrefix(strings.TrimSpace(lines[i-1]), "#") {
			t.Errorf("default.toml line %d (%q) has no comment line directly above it", i+1, line)
		}
	}
	// Every key the program knows appears in the default file.
	for _, k := range knownKeys {
		leaf := k[strings.LastIndex(k, ".")+1:]
		if !slices.Contains(keys, leaf) {
			t.Errorf("known key %s is missing from default.toml", k)
		}
	}
	if len(keys) != len(knownKeys) {
		t.Errorf("default.toml has %d keys %v, knownKeys has %d", len(keys), keys, len(knownKeys))
	}
}

func TestDefaults(t *testing.T) {
	c := Default()
	checks := []struct {
		name      string
		got, want any
	}{
		{"image.suite", c.Image.Suite, "trixie"},
		{"image.mirror", c.Image.Mirror, ""},
		{"image.desktop", c.Image.Desktop, ""},
		{"image.firmware", c.Image.Firmware, true},
		{"image.overlay", c.Image.Overlay, ""},
		{"image.boot_timeout", c.Image.BootTimeout, 5},
		{"image.kernel_cmdline", c.Image.KernelCmdline, ""},
		{"image.packages count", len(c.Image.Packages), 0},
		{"cluster.parallel", strings.Join(c.Cluster.Parallel, ","), "mpi"},
		{"cluster.scheduler", c.Cluster.Scheduler, "slurm"},
		{"slurm.node1_jobs", c.Slurm.RunsJobs(), true},
		{"network.subnet", c.Network.Subnet, "10.99.0.0/24"},
		{"network.dhcp", c.Network.DHCP, "auto"},
		{"network.nat", c.Network.NAT, "auto"},
		{"network.address", c.Network.Address, ""},
		{"network.gateway", c.Network.Gateway, ""},
		{"network.dns count", len(c.Network.DNS), 0},
		{"nodes.root", string(c.Nodes.Root), "shared"},
		{"users count", len(c.Users), 1},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if len(c.Users) == 1 {
		u := c.Users[0]
		if u.Name != "user" || !u.CanSudo() || u.Password != "" || u.PasswordHash != "" || len(u.SSHAuthorizedKeys) != 0 {
			t.Errorf("default user = %+v, want name \"user\" with sudo and no password", u)
		}
	}
	if !c.HasParallel("mpi") || c.HasParallel("pvm") {
		t.Errorf("HasParallel: mpi=%v pvm=%v, want true, false", c.HasParallel("mpi"), c.HasParallel("pvm"))
	}
}

func TestCanSudo(t *testing.T) {
	yes, no := true, false
	for _, tc := range []struct {
		sudo *bool
		want bool
	}{{nil, true}, {&yes, true}, {&no, false}} {
		if got := (User{Name: "a", Sudo: tc.sudo}).CanSudo(); got != tc.want {
			t.Errorf("CanSudo with sudo=%v: %v, want %v", tc.sudo, got, tc.want)
		}
	}
}

func TestPartialFileKeepsDefaults(t *testing.T) {
	c := parseOK(t, `
[image]
packages = ["htop", "python3-numpy"]
desktop = "icewm"

[network]
subnet = "192.168.5.0/28"
`)
	if !slices.Equal(c.Image.Packages, []string{"htop", "python3-numpy"}) {
		t.Errorf("image.packages = %v", c.Image.Packages)
	}
	if c.Image.Desktop != "icewm" {
		t.Errorf("image.desktop = %q", c.Image.Desktop)
	}
	if c.Network.Subnet != "192.168.5.0/28" {
		t.Errorf("network.subnet = %q", c.Network.Subnet)
	}
	// Everything else keeps its default.
	if c.Image.Suite != "trixie" || c.Image.BootTimeout != 5 || c.Network.DHCP != "auto" ||
		c.Nodes.Root != "shared" || !slices.Equal(c.Cluster.Parallel, []string{"mpi"}) {
		t.Errorf("defaults lost: %+v", c)
	}
	if len(c.Users) != 1 || c.Users[0].Name != "user" || !c.Users[0].CanSudo() {
		t.Errorf("default user lost: %+v", c.Users)
	}
	if c.Source != "test.toml" {
		t.Errorf("Source = %q, want test.toml", c.Source)
	}
}

func TestEmptyFileIsDefault(t *testing.T) {
	c := parseOK(t, "")
	d := Default()
	if !reflect.DeepEqual(c.Image, d.Image) || !reflect.DeepEqual(c.Cluster, d.Cluster) || !reflect.DeepEqual(c.Network, d.Network) || c.Network.Subnet != d.Network.Subnet || !reflect.DeepEqual(c.Nodes, d.Nodes) ||
		len(c.Users) != 1 || c.Users[0].Name != "user" {
		t.Errorf("empty file gives %+v, want the defaults %+v", c, d)
	}
}

func TestUsersReplaceDefaultList(t *testing.T) {
	c := parseOK(t, `
[[users]]
name = "alice"
password = "secret"

[[users]]
name = "bob"
sudo = false
`)
	if len(c.Users) != 2 {
		t.Fatalf("users = %+v, want alice and bob only", c.Users)
	}
	if c.Users[0].Name != "alice" || c.Users[0].Password != "secret" || !c.Users[0].CanSudo() {
		t.Errorf("users[0] = %+v", c.Users[0])
	}
	if c.Users[1].Name != "bob" || c.Users[1].CanSudo() || c.Users[1].Password != "" {
		t.Errorf("users[1] = %+v", c.Users[1])
	}
	for _, u := range c.Users {
		if u.Name == "user" {
			t.Errorf("default user kept beside the file's users: %+v", c.Users)
		}
	}
}

func TestUnknownKeys(t *testing.T) {
	for _, tc := range []struct {
		text string
		want []string
	}{
		{"[image]\npakages = [\"htop\"]\n", []string{"image.pakages", "did you mean image.packages?"}},
		{"[image]\nsuit = \"trixie\"\n", []string{"image.suit", "image.suite"}},
		{"[network]\nsubnett = \"10.0.0.0/24\"\n", []string{"network.subnett", "network.subnet"}},
		{"[[users]]\nnme = \"alice\"\n", []string{"users.nme", "users.name"}},
		{"[cluster]\nparalel = [\"mpi\"]\n", []string{"cluster.paralel", "cluster.parallel"}},
		{"[nodes]\nroots = \"ram\"\n", []string{"nodes.roots", "nodes.root"}},
		{"[image]\nsuite = \"trixie\"\ncompletely_unrelated_key = 1\n", []string{"image.completely_unrelated_key"}},
		{"[bogus]\nx = 1\n", []string{"bogus: unknown key"}},
		{"[imag]\nsuite = \"trixie\"\n", []string{"imag: unknown key", "did you mean image?"}},
	} {
		err := parseErr(t, tc.text, tc.want...)
		if !strings.Contains(err.Error(), "unknown key") {
			t.Errorf("%q: error %q does not say \"unknown key\"", tc.text, err)
		}
	}
	// A key far from every known one gets no suggestion.
	err := parseErr(t, "[image]\ncompletely_unrelated_key = 1\n")
	if strings.Contains(err.Error(), "did you mean") {
		t.Errorf("unexpected suggestion in %q", err)
	}
}

func TestTypeErrors(t *testing.T) {
	for _, tc := range []struct {
		text string
		want []string
	}{
		{"[image]\nboot_timeout = \"5\"\n", []string{"image.boot_timeout", "line 2"}},
		{"[image]\npackages = \"htop\"\n", []string{"image.packages"}},
		{"[image]\nsuite = 13\n", []string{"image.suite"}},
		{"[cluster]\nparallel = \"mpi\"\n", []string{"cluster.parallel"}},
		{"[[users]]\nname = \"a\"\nsudo = \"yes\"\n", []string{"users.sudo", "line 3"}},
		{"[network]\ndns = \"1.1.1.1\"\n", []string{"network.dns"}},
		{"image = 3\n", []string{"image"}},
		{"[image\n", []string{"test.toml", "line"}},                                              // syntax error
		{"[image]\nsuite = \"trixie\"\nsuite = \"bookworm\"\n", []string{"test.toml", "line 3"}}, // duplicate key
	} {
		parseErr(t, tc.text, tc.want...)
	}
}

func TestValidationErrorsNameTheirKey(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []string // the key first, then further words of the message
	}{
		{"bad suite", `image.suite = "bullseye"`, []string{"image.suite", `"bullseye"`, `"trixie"`, `"bookworm"`}},
		{"empty suite", `image.suite = ""`, []string{"image.suite"}},
		{"mirror ftp", `image.mirror = "ftp://ftp.debian.org/debian"`, []string{"image.mirror", "ftp://"}},
		{"mirror no scheme", `image.mirror = "deb.debian.org/debian"`, []string{"image.mirror"}},
		{"package upper case", `image.packages = ["HTOP"]`, []string{"image.packages", `"HTOP"`}},
		{"package space", `image.packages = ["htop vim"]`, []string{"image.packages"}},
		{"package one char", `image.packages = ["a"]`, []string{"image.packages"}},
		{"package leading dash", `image.packages = ["-htop"]`, []string{"image.packages"}},
		{"package shell", `image.packages = ["htop;reboot"]`, []string{"image.packages"}},
		{"desktop", `image.desktop = "Ice WM"`, []string{"image.desktop"}},
		{"boot_timeout negative", `image.boot_timeout = -1`, []string{"image.boot_timeout", "-1"}},
		{"boot_timeout huge", `image.boot_timeout = 601`, []string{"image.boot_timeout", "601"}},
		{"kernel_cmdline quote", `image.kernel_cmdline = "quiet init='/bin/sh'"`, []string{"image.kernel_cmdline"}},
		{"kernel_cmdline dollar", `image.kernel_cmdline = "quiet $(reboot)"`, []string{"image.kernel_cmdline"}},
		{"parallel empty", `cluster.parallel = []`, []string{"cluster.parallel"}},
		{"parallel unknown", `cluster.parallel = ["openmp"]`, []string{"cluster.parallel", `"openmp"`}},
		{"parallel twice", `cluster.parallel = ["mpi", "mpi"]`, []string{"cluster.parallel", "twice"}},
		{"scheduler unknown", `cluster.scheduler = "pbs"`, []string{"cluster.scheduler", `"pbs"`, `"slurm"`, `"none"`}},
		{"pvm on trixie", `cluster.parallel = ["mpi", "pvm"]`, []string{"cluster.parallel", `"pvm"`, "bookworm", "trixie"}},
		{"subnet not cidr", `network.subnet = "10.99.0.0"`, []string{"network.subnet", `"10.99.0.0"`}},
		{"subnet garbage", `network.subnet = "cluster"`, []string{"network.subnet"}},
		{"subnet ipv6", `network.subnet = "fd00:99::/64"`, []string{"network.subnet", "IPv4"}},
		{"subnet /7", `network.subnet = "10.0.0.0/7"`, []string{"network.subnet", "/7", "wider than /8"}},
		{"subnet /31", `network.subnet = "10.99.0.0/31"`, []string{"network.subnet", "/31", "too small"}},
		{"subnet host bits", `network.subnet = "10.99.0.7/24"`, []string{"network.subnet", "host bits", "did you mean 10.99.0.0/24?"}},
		{"subnet host bits /28", `network.subnet = "192.168.1.20/28"`, []string{"network.subnet", "192.168.1.16/28"}},
		{"dhcp mode", `network.dhcp = "yes"`, []string{"network.dhcp", `"yes"`, `"auto"`, `"off"`}},
		{"dns name", `network.dns = ["dns.google"]`, []string{"network.dns", `"dns.google"`}},
		{"dns ipv6", `network.dns = ["2001:4860:4860::8888"]`, []string{"network.dns"}},
		{"gateway outside", `network.gateway = "10.98.0.1"`, []string{"network.gateway", "outside", "10.99.0.0/24"}},
		{"gateway not ip", `network.gateway = "router"`, []string{"network.gateway", `"router"`}},
		{"gateway ipv6", `network.gateway = "fe80::1"`, []string{"network.gateway"}},
		{"gateway outside the address's network", "[network]\naddress = \"192.168.50.10/23\"\ngateway = \"10.99.0.254\"", []string{"network.gateway", "outside", "192.168.50.0/23", "network.address"}},
		{"address without length", `network.address = "192.168.50.10"`, []string{"network.address", "prefix length"}},
		{"address ipv6", `network.address = "fd00::10/64"`, []string{"network.address"}},
		{"address is the network", `network.address = "192.168.50.0/23"`, []string{"network.address", "network's own"}},
		{"address is the broadcast", `network.address = "192.168.51.255/23"`, []string{"network.address", "broadcast"}},
		{"address /31", `network.address = "192.168.50.10/31"`, []string{"network.address", "too small"}},
		{"nat mode", `network.nat = "yes"`, []string{"network.nat", `"yes"`, `"auto"`, `"on"`, `"off"`}},
		{"nat on with a gateway", "[network]\nnat = \"on\"\ngateway = \"10.99.0.254\"", []string{"network.nat", "network.gateway", "10.99.0.254"}},
		{"interface index 0", `network.interface = "0"`, []string{"network.interface", "1 to"}},
		{"interface multicast MAC", `network.interface = "01:00:5e:00:00:01"`, []string{"network.interface", "multicast"}},
		{"nodes.root", `nodes.root = "nfs"`, []string{"nodes.root", `"nfs"`, `"shared"`, `"ram"`}},
		{"verify ratio", `verify.min_bandwidth_ratio = 1.5`, []string{"verify.min_bandwidth_ratio", "1.5 is outside 0..1"}},
		{"verify clock", `verify.max_clock_offset_s = 0.0`, []string{"verify.max_clock_offset_s", "positive"}},
		{"kernel_cmdline ours", `image.kernel_cmdline = "quiet clusterdebian.role=node"`, []string{"image.kernel_cmdline", "set by the head"}},
		{"kernel_cmdline chain", `image.kernel_cmdline = "quiet || shell"`, []string{"image.kernel_cmdline"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := parseErr(t, tc.text+"\n", tc.want...)
			var verr *ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("error %q is not a *ValidationError", err)
			}
			if len(verr.Errs) != 1 {
				t.Errorf("want exactly one problem, got %d: %v", len(verr.Errs), verr.Errs)
			}
			if !strings.HasPrefix(verr.Errs[0].Error(), tc.want[0]+":") {
				t.Errorf("problem %q does not start with its key %q", verr.Errs[0], tc.want[0])
			}
			// A command maps the key to its flag through the *inputerr.Error.
			if ie, ok := verr.Errs[0].(*inputerr.Error); !ok || ie.Input != tc.want[0] {
				t.Errorf("problem %q is not an *inputerr.Error about %s", verr.Errs[0], tc.want[0])
			}
			if verr.Source != "test.toml" || !strings.HasPrefix(err.Error(), "test.toml is invalid:") {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

// TestEmptyModesAreDefaults: an empty DHCP or root mode is the default, by
// the rule the head and the kernel command line use (dhcp.ParseMode,
// contract.ParseRootMode).
func TestEmptyModesAreDefaults(t *testing.T) {
	c := parseOK(t, "[network]\ndhcp = \"\"\nnat = \"\"\n[nodes]\nroot = \"\"\n")
	if c.Network.NAT != "auto" {
		t.Errorf("empty NAT mode: %q, want auto", c.Network.NAT)
	}
	if c.Network.DHCP != string(dhcp.ModeAuto) || c.Nodes.Root != contract.RootShared {
		t.Errorf("empty modes: dhcp %q, root %q; want %q and %q", c.Network.DHCP, c.Nodes.Root, dhcp.ModeAuto, contract.RootShared)
	}
}

func TestValidConfigsAccepted(t *testing.T) {
	for _, text := range []string{
		"[image]\nsuite = \"bookworm\"\n[cluster]\nparallel = [\"mpi\", \"pvm\"]\n",
		"[image]\nsuite = \"bookworm\"\n[cluster]\nparallel = [\"pvm\"]\n",
		`image.mirror = "https://deb.debian.org/debian/"`,
		`image.mirror = "file:/srv/mirror/debian"`,
		`image.packages = ["g++", "libc6-dev", "python3.11", "a0"]`,
		`image.desktop = "icewm"`,
		`image.boot_timeout = 0`,
		`image.boot_timeout = 600`,
		`image.kernel_cmdline = "quiet splash console=ttyS0,115200"`,
		`network.subnet = "192.168.10.0/24"`,
		`network.subnet = "192.168.10.8/29"`,
		"[network]\nsubnet = \"10.1.2.0/24\"\ngateway = \"10.1.2.254\"\ndns = [\"10.1.2.254\", \"1.1.1.1\"]\n",
		"[network]\ndhcp = \"proxy\"\n",
		"[network]\ndhcp = \"off\"\n",
		"[network]\ndhcp = \"server\"\n",
		"[network]\naddress = \"192.168.50.10/23\"\ngateway = \"192.168.51.254\"\n",
		"[network]\nnat = \"on\"\n",
		"[network]\nnat = \"off\"\ngateway = \"10.99.0.254\"\n",
		"[network]\ninterface = \"2\"\n",
		"[network]\ninterface = \"52:54:00:12:34:56\"\n",
		"[nodes]\nroot = \"ram\"\n",
		"[[users]]\nname = \"alice\"\npassword_hash = \"!\"\n",
		"[[users]]\nname = \"alice\"\npassword_hash = \"*\"\n",
		"[[users]]\nname = \"_svc-01\"\n",
		"[[users]]\nname = \"alice\"\npassword_hash = \"$6$saltsalt$QW7y8Yh0bXx9rD2cIjYpQb3kGVzVt3zk2W7t2gL3Sx8m0pFZy0v1dXoS0S5lqj8uO7mR1Ue9D6Q2Jq3pXb8bN/\"\n",
		"[[users]]\nname = \"alice\"\npassword_hash = \"$y$j9T$abcdefghijklmnop$ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef\"\n",
	} {
		c := parseOK(t, text)
		if err := c.Validate(); err != nil {
			t.Errorf("Validate after Parse(%q) = %v", text, err)
		}
	}
	c := parseOK(t, "[image]\nsuite = \"bookworm\"\n[cluster]\nparallel = [\"mpi\", \"pvm\"]\n")
	if !c.HasParallel("pvm") || !c.HasParallel("mpi") {
		t.Errorf("HasParallel on mpi+pvm config: mpi=%v pvm=%v", c.HasParallel("mpi"), c.HasParallel("pvm"))
	}
}

func TestUserValidation(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []string
	}{
		{"empty name", "[[users]]\nname = \"\"\n", []string{"users[0].name", "required"}},
		{"missing name", "[[users]]\npassword = \"x\"\n", []string{"users[0].name", "required"}},
		{"upper case", "[[users]]\nname = \"Alice\"\n", []string{"users[0] (Alice).name", `"Alice"`}},
		{"leading digit", "[[users]]\nname = \"1alice\"\n", []string{"users[0] (1alice).name"}},
		{"space", "[[users]]\nname = \"al ice\"\n", []string{"users[0] (al ice).name"}},
		{"colon", "[[users]]\nname = \"al:ice\"\n", []string{"users[0] (al:ice).name"}},
		{"too long", "[[users]]\nname = \"" + strings.Repeat("a", 33) + "\"\n", []string{"users[0]", ".name"}},
		{"reserved root", "[[users]]\nname = \"root\"\n", []string{"users[0] (root).name", "system account"}},
		{"reserved nobody", "[[users]]\nname = \"nobody\"\n", []string{"users[0] (nobody).name", "system account"}},
		{"duplicate", "[[users]]\nname = \"alice\"\n[[users]]\nname = \"alice\"\n", []string{"users[1] (alice).name", "twice"}},
		{"password and hash", "[[users]]\nname = \"alice\"\npassword = \"pw\"\npassword_hash = \"!\"\n", []string{"users[0] (alice).password", "not both"}},
		{"password colon", "[[users]]\nname = \"alice\"\npassword = \"a:b\"\n", []string{"users[0] (alice).password"}},
		{"password newline", "[[users]]\nname = \"alice\"\npassword = \"a\\nb\"\n", []string{"users[0] (alice).password"}},
		{"bad hash", "[[users]]\nname = \"alice\"\npassword_hash = \"secret\"\n", []string{"users[0] (alice).password_hash", "crypt(3)"}},
		{"bad hash md5 prefix only", "[[users]]\nname = \"alice\"\npassword_hash = \"$6$\"\n", []string{"users[0] (alice).password_hash"}},
		{"bad hash colon", "[[users]]\nname = \"alice\"\npassword_hash = \"$6$salt$ab:cd\"\n", []string{"users[0] (alice).password_hash"}},
		{"bad ssh key", "[[users]]\nname = \"alice\"\nssh_authorized_keys = [\"ssh-ed25519 notbase64 alice\"]\n", []string{"users[0] (alice).ssh_authorized_keys", "entry 1"}},
		{"second ssh key bad", "[[users]]\nname = \"alice\"\nssh_authorized_keys = [\"" + ed25519Key(t) + "\", \"garbage\"]\n", []string{"users[0] (alice).ssh_authorized_keys", "entry 2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := parseErr(t, tc.text, tc.want...)
			var verr *ValidationError
			if !errors.As(err, &verr) || len(verr.Errs) != 1 {
				t.Errorf("want one validation problem, got %v", err)
			}
		})
	}
}

func TestValidEd25519KeyAccepted(t *testing.T) {
	k1, k2 := ed25519Key(t), ed25519Key(t)
	c := parseOK(t, "[[users]]\nname = \"alice\"\nssh_authorized_keys = [\""+k1+"\", \""+k2+"\"]\n")
	if len(c.Users) != 1 || !slices.Equal(c.Users[0].SSHAuthorizedKeys, []string{k1, k2}) {
		t.Errorf("users = %+v, want alice with both keys", c.Users)
	}
}

func TestSeveralErrorsAtOnce(t *testing.T) {
	err := parseErr(t, `
[image]
suite = "jessie"
boot_timeout = 9999

[network]
subnet = "10.99.0.0/31"
dhcp = "maybe"

[nodes]
root = "disk"

[[users]]
name = "root"
`, "image.suite", "image.boot_timeout", "network.subnet", "network.dhcp", "nodes.root", "users[0] (root).name")
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("error %q is not a *ValidationError", err)
	}
	if len(verr.Errs) != 6 {
		t.Errorf("got %d problems, want 6: %v", len(verr.Errs), verr.Errs)
	}
	// One problem per line, after the heading.
	if lines := strings.Split(err.Error(), "\n"); len(lines) != 7 {
		t.Errorf("error has %d lines, want 7:\n%s", len(lines), err)
	}
	// errors.Is/As see through to the individual problems.
	if len(verr.Unwrap()) != 6 {
		t.Errorf("Unwrap gives %d errors", len(verr.Unwrap()))
	}
}

func TestSeveralUnknownKeysAtOnce(t *testing.T) {
	err := parseErr(t, "[image]\npakages = []\nsuit = \"trixie\"\n", "image.pakages", "image.suit")
	if n := strings.Count(err.Error(), "unknown key"); n != 2 {
		t.Errorf("error names %d unknown keys, want 2: %q", n, err)
	}
}

func TestOverlay(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "overlay"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "cluster.toml")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(cfgPath, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("relative resolved against the config's folder", func(t *testing.T) {
		write("[image]\noverlay = \"overlay\"\n")
		// Load from another working directory: the path must still resolve.
		t.Chdir(t.TempDir())
		c, err := Load(cfgPath)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if got, want := c.OverlayDir(), filepath.Join(dir, "overlay"); got != want {
			t.Errorf("OverlayDir() = %q, want %q", got, want)
		}
		if c.Dir != dir {
			t.Errorf("Dir = %q, want %q", c.Dir, dir)
		}
	})
	t.Run("relative path to the config from a relative name", func(t *testing.T) {
		write("[image]\noverlay = \"./overlay/\"\n")
		t.Chdir(dir)
		c, err := Load("cluster.toml")
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if got, want := c.OverlayDir(), filepath.Join(dir, "overlay"); got != want {
			t.Errorf("OverlayDir() = %q, want %q", got, want)
		}
	})
	t.Run("absolute", func(t *testing.T) {
		abs := filepath.Join(dir, "overlay")
		c := parseOK(t, "[image]\noverlay = \""+abs+"\"\n")
		if c.OverlayDir() != abs {
			t.Errorf("OverlayDir() = %q, want %q", c.OverlayDir(), abs)
		}
	})
	t.Run("unset", func(t *testing.T) {
		if d := Default().OverlayDir(); d != "" {
			t.Errorf("OverlayDir() = %q, want empty", d)
		}
	})
	t.Run("missing", func(t *testing.T) {
		write("[image]\noverlay = \"nothere\"\n")
		_, err := Load(cfgPath)
		if err == nil {
			t.Fatal("Load: expected an error for a missing overlay")
		}
		for _, w := range []string{"image.overlay", filepath.Join(dir, "nothere"), "no such file"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not contain %q", err, w)
			}
		}
	})
	t.Run("not a folder", func(t *testing.T) {
		write("[image]\noverlay = \"file\"\n")
		_, err := Load(cfgPath)
		if err == nil {
			t.Fatal("Load: expected an error for an overlay that is a file")
		}
		for _, w := range []string{"image.overlay", filepath.Join(dir, "file"), "not a folder"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not contain %q", err, w)
			}
		}
	})
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.toml")); err == nil || !strings.Contains(err.Error(), "reading config") {
		t.Errorf("Load(missing) = %v, want a reading config error", err)
	}
	p := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(p, []byte("image.suite = \"potato\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "image.suite") {
		t.Errorf("Load(bad) = %v, want an error naming the file and image.suite", err)
	}
}

func TestForImageStripsSecrets(t *testing.T) {
	key := ed25519Key(t)
	dir := t.TempDir()
	c, err := Parse(`
[image]
overlay = "."

[[users]]
name = "alice"
password = "TopSecretPassword"
ssh_authorized_keys = ["`+key+`"]

[[users]]
name = "bob"
password_hash = "$6$saltsalt$HashHashHashHashHash"
sudo = false
`, "test.toml", dir)
	if err != nil {
		t.Fatal(err)
	}
	out := c.ForImage()
	for _, secret := range []string{"TopSecretPassword", "$6$saltsalt", "HashHashHash", dir} {
		if strings.Contains(out, secret) {
			t.Errorf("ForImage() leaks %q:\n%s", secret, out)
		}
	}
	for _, keep := range []string{"alice", "bob", key, "10.99.0.0/24", "trixie"} {
		if !strings.Contains(out, keep) {
			t.Errorf("ForImage() lost %q:\n%s", keep, out)
		}
	}
	if !strings.HasPrefix(out, "#") {
		t.Errorf("ForImage() does not start with a comment:\n%s", out)
	}
	// The original is untouched.
	if c.Users[0].Password != "TopSecretPassword" || c.Users[1].PasswordHash == "" || c.Image.Overlay != "." {
		t.Errorf("ForImage() modified the config: %+v", c)
	}
	// What goes into the image is itself a valid config file.
	back, err := Parse(out, "image cluster.toml", t.TempDir())
	if err != nil {
		t.Fatalf("ForImage() output does not parse: %v\n%s", err, out)
	}
	if len(back.Users) != 2 || back.Users[0].Name != "alice" || back.Users[1].CanSudo() ||
		back.Users[0].Password != "" || back.Users[1].PasswordHash != "" ||
		!slices.Equal(back.Users[0].SSHAuthorizedKeys, []string{key}) {
		t.Errorf("ForImage() round trip gives users %+v", back.Users)
	}
}

func TestHeadAddr(t *testing.T) {
	for _, tc := range []struct{ subnet, want string }{
		{"10.99.0.0/24", "10.99.0.1"},
		{"192.168.7.0/24", "192.168.7.1"},
		{"172.16.4.16/28", "172.16.4.17"},
		{"10.0.0.248/29", "10.0.0.249"},
	} {
		c := parseOK(t, "network.subnet = \""+tc.subnet+"\"\n")
		if got := c.HeadAddr(); got != netip.MustParseAddr(tc.want) {
			t.Errorf("HeadAddr() for %s = %s, want %s", tc.subnet, got, tc.want)
		}
		if got := c.Subnet(); got != netip.MustParsePrefix(tc.subnet) {
			t.Errorf("Subnet() = %s, want %s", got, tc.subnet)
		}
	}
	if got := Default().HeadAddr().String(); got != "10.99.0.1" {
		t.Errorf("default HeadAddr() = %s, want 10.99.0.1", got)
	}
}

func TestSuggestAndEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "", 3}, {"", "abc", 3}, {"kitten", "sitting", 3},
		{"image.pakages", "image.packages", 1}, {"flaw", "lawn", 2}, {"same", "same", 0},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
	if got := suggest("network.dhpc"); got != " (did you mean network.dhcp?)" {
		t.Errorf("suggest(network.dhpc) = %q", got)
	}
	if got := suggest("zzzzzzzzzzzz"); got != "" {
		t.Errorf("suggest(zzzz) = %q, want none", got)
	}
}

func TestQuoteList(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"a"}, `"a"`},
		{[]string{"a", "b"}, `"a" or "b"`},
		{[]string{"a", "b", "c"}, `"a", "b" or "c"`},
	} {
		if got := quoteList(tc.in); got != tc.want {
			t.Errorf("quoteList(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestResolvedMirror(t *testing.T) {
	c := parseOK(t, `image.mirror = "http://ftp.de.debian.org/debian/"`)
	if got := c.ResolvedMirror(); got != "http://ftp.de.debian.org/debian" {
		t.Errorf("ResolvedMirror() = %q, want the configured mirror without its trailing /", got)
	}
}

func TestAddress(t *testing.T) {
	c := parseOK(t, "[network]\naddress = \"192.168.50.10/23\"\n")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := c.Address(); got != netip.MustParsePrefix("192.168.50.10/23") {
		t.Errorf("Address() = %v", got)
	}
	if got := Default().Address(); got.IsValid() {
		t.Errorf("default Address() = %v, want none", got)
	}
}

// TestSlurmKeys: slurm.node1_jobs = false keeps node1 out of the
// partition; cluster.scheduler = "none" leaves Slurm out.
func TestSlurmKeys(t *testing.T) {
	c, err := Parse("[cluster]\nscheduler = \"none\"\n\n[slurm]\nnode1_jobs = false\n", "test.toml", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if c.Slurm.RunsJobs() || c.HasScheduler(SchedulerSlurm) || !c.HasScheduler(SchedulerNone) {
		t.Errorf("node1 runs jobs: %v; scheduler %q", c.Slurm.RunsJobs(), c.Cluster.Scheduler)
	}
	// The image's copy, which node1's head reads, keeps them.
	img, err := Parse(c.ForImage(), "image.toml", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if img.Slurm.RunsJobs() || img.Cluster.Scheduler != SchedulerNone {
		t.Errorf("the image's config lost them:\n%s", c.ForImage())
	}
}

func TestVerifyBar(t *testing.T) {
	c, err := Parse("[verify]\nmin_bandwidth_mbit = 100\nmax_clock_offset_s = 2\nmpi = false\n", "test.toml", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	want := verify.DefaultBar()
	want.MinBandwidthMbit, want.MaxClockOffsetSec, want.MPI = 100, 2, false
	if c.Verify != want {
		t.Errorf("[verify]: %+v, want %+v", c.Verify, want)
	}
	if Default().Verify != verify.DefaultBar() {
		t.Errorf("default.toml's [verify] %+v differs from verify.DefaultBar() %+v", Default().Verify, verify.DefaultBar())
	}
}

func TestNodesSwarm(t *testing.T) {
	if !Default().Nodes.SwarmOn() {
		t.Error("the default config has the swarm off")
	}
	if c := parseOK(t, "[nodes]\nroot = \"ram\"\n"); !c.Nodes.SwarmOn() {
		t.Error("nodes.swarm unset is not on")
	}
	if c := parseOK(t, "[nodes]\nswarm = false\n"); c.Nodes.SwarmOn() {
		t.Error("nodes.swarm = false is on")
	}
	for _, bad := range []string{`"yes"`, "1", "[true]"} {
		parseErr(t, "[nodes]\nswarm = "+bad+"\n", "nodes.swarm")
	}
}
