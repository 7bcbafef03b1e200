package sshtrust

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/crypto/ssh"
)

func mustCA(t *testing.T, dir string) *CA {
	t.Helper()
	ca, err := OpenCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestCAPersists(t *testing.T) {
	dir := t.TempDir()
	a := mustCA(t, dir)
	b := mustCA(t, dir)
	if a.PublicKey() != b.PublicKey() {
		t.Fatalf("CA changed across OpenCA:\n%s\n%s", a.PublicKey(), b.PublicKey())
	}
	fi, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("CA key mode %v, want 0600", fi.Mode().Perm())
	}
	// A key made readable by others is tightened again.
	os.Chmod(filepath.Join(dir, CAKeyFile), 0o644)
	mustCA(t, dir)
	fi, _ = os.Stat(filepath.Join(dir, CAKeyFile))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("CA key mode %v after reopen, want 0600", fi.Mode().Perm())
	}
	if !strings.HasPrefix(a.PublicKey(), "ssh-ed25519 ") {
		t.Errorf("PublicKey = %q", a.PublicKey())
	}
}

// A damaged CA key (truncated, or garbage) does not stop the head: it is
// set aside with its public half, byte for byte, and a new CA made, which
// Damaged reports, and which a reopen keeps.
func TestDamagedCA(t *testing.T) {
	good := t.TempDir()
	orig := mustCA(t, good)
	key, err := os.ReadFile(filepath.Join(good, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]byte{
		"truncated": key[:len(key)/2],
		"garbage":   []byte("garbage\x00\xff not a key\n"),
		"empty":     {},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, CAKeyFile)
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			oldPub := []byte(orig.PublicKey() + " " + caKeyComment + "\n")
			if err := os.WriteFile(path+".pub", oldPub, 0o644); err != nil {
				t.Fatal(err)
			}
			ca, err := OpenCA(dir)
			if err != nil {
				t.Fatalf("a %s CA key stops the head: %v", name, err)
			}
			kept, cause := ca.Damaged()
			if kept == "" || cause == nil {
				t.Fatalf("Damaged() = %q, %v; want where the key went and why", kept, cause)
			}
			if !strings.HasPrefix(kept, path+".corrupt-") {
				t.Errorf("kept as %s, want %s.corrupt-<time>", kept, path)
			}
			if got, _ := os.ReadFile(kept); !bytes.Equal(got, bad) {
				t.Errorf("%s holds %q, want the bad key %q", kept, got, bad)
			}
			if got, _ := os.ReadFile(kept + ".pub"); !bytes.Equal(got, oldPub) {
				t.Errorf("%s.pub holds %q, want the old public half", kept, got)
			}
			if ca.PublicKey() == orig.PublicKey() {
				t.Error("the new CA has the old key")
			}
			pub, err := os.ReadFile(path + ".pub")
			if err != nil || Fingerprint(string(pub)) != ca.Fingerprint() {
				t.Errorf("%s.pub (%v) is not the new CA's public key %s", path, err, ca.PublicKey())
			}
			again := mustCA(t, dir)
			if again.PublicKey() != ca.PublicKey() {
				t.Error("a reopen did not keep the new CA")
			}
			if k, c := again.Damaged(); k != "" || c != nil {
				t.Errorf("a reopen of the new CA reports damage: %q, %v", k, c)
			}
		})
	}
}

// A good CA key beside a damaged or missing .pub keeps the CA; the .pub is
// made again from the key (a damaged one kept), so doctor checks
// certificates against the right key.
func TestDamagedCAPub(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, dir)
	pubFile := filepath.Join(dir, CAKeyFile+".pub")
	for name, bad := range map[string][]byte{"truncated": []byte("ssh-ed25519 AAAAC3Nza"), "missing": nil} {
		t.Run(name, func(t *testing.T) {
			if bad == nil {
				os.Remove(pubFile)
			} else if err := os.WriteFile(pubFile, bad, 0o644); err != nil {
				t.Fatal(err)
			}
			again := mustCA(t, dir)
			if again.PublicKey() != ca.PublicKey() {
				t.Fatal("a damaged .pub changed the CA")
			}
			if k, c := again.Damaged(); k != "" || c != nil {
				t.Errorf("Damaged() = %q, %v; the key is good", k, c)
			}
			if got, err := os.ReadFile(pubFile); err != nil || Fingerprint(string(got)) != ca.Fingerprint() {
				t.Errorf("%s after the repair: %q, %v", pubFile, got, err)
			}
			kept := again.PubRepaired()
			switch {
			case bad == nil && kept != "":
				t.Errorf("a missing .pub reported as kept at %s", kept)
			case bad != nil:
				if got, _ := os.ReadFile(kept); !bytes.Equal(got, bad) {
					t.Errorf("the damaged .pub kept at %q holds %q, want %q", kept, got, bad)
				}
			}
			if mustCA(t, dir).PubRepaired() != "" {
				t.Error("a reopen repaired a good .pub")
			}
		})
	}
}

// A CA key that cannot be read is an error, not a reason for a new CA.
func TestUnreadableCA(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, CAKeyFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenCA(dir); err == nil {
		t.Fatal("OpenCA made a CA beside a key path it cannot read")
	}
}

// signedHost makes a host key in dir and a certificate for it.
func signedHost(t *testing.T, ca *CA, dir string, principals []string) (ssh.PublicKey, *ssh.Certificate, string) {
	t.Helper()
	pub, err := NewHostKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	text, err := ca.SignHost(pub, principals, 0)
	if err != nil {
		t.Fatal(err)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(text))
	if err != nil {
		t.Fatalf("certificate does not parse: %v\n%s", err, text)
	}
	cert, ok := k.(*ssh.Certificate)
	if !ok {
		t.Fatalf("SignHost returned a %T, not a certificate", k)
	}
	return pub, cert, text
}

func TestSignHostVerifies(t *testing.T) {
	ca := mustCA(t, t.TempDir())
	principals := HostPrincipals("node7", "10.99.0.7")
	pub, cert, _ := signedHost(t, ca, t.TempDir(), principals)

	if !bytes.Equal(cert.Key.Marshal(), pub.Marshal()) {
		t.Error("certificate is for another key")
	}
	if cert.CertType != ssh.HostCert {
		t.Errorf("CertType = %d, want host", cert.CertType)
	}
	caKey, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(ca.PublicKey()))
	checker := &ssh.CertChecker{
		IsHostAuthority: func(auth ssh.PublicKey, address string) bool {
			return bytes.Equal(auth.Marshal(), caKey.Marshal())
		},
	}
	addr := &net.TCPAddr{IP: net.IPv4(10, 99, 0, 7), Port: 22}
	for _, host := range []string{"node7:22", "node7.cluster:22", "10.99.0.7:22"} {
		if err := checker.CheckHostKey(host, addr, cert); err != nil {
			t.Errorf("CheckHostKey(%s): %v", host, err)
		}
	}
	if err := checker.CheckHostKey("node8:22", addr, cert); err == nil {
		t.Error("certificate for node7 accepted for node8")
	}
	other := mustCA(t, t.TempDir())
	_, foreign, _ := signedHost(t, other, t.TempDir(), principals)
	if err := checker.CheckHostKey("node7:22", addr, foreign); err == nil {
		t.Error("certificate of another CA accepted")
	}
}

func TestSignHostRefuses(t *testing.T) {
	ca := mustCA(t, t.TempDir())
	pub, _, text := signedHost(t, ca, t.TempDir(), []string{"node2"})
	if _, err := ca.SignHost(pub, nil, 0); err == nil {
		t.Error("signed without principals")
	}
	certKey, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(text))
	if _, err := ca.SignHost(certKey, []string{"node2"}, 0); err == nil {
		t.Error("signed a certificate")
	}
}

// TestSignHostOpenSSH checks the certificate with OpenSSH's own parser.
func TestSignHostOpenSSH(t *testing.T) {
	keygen, err := exec.LookPath("ssh-keygen")
	if err != nil {
		t.Skip("ssh-keygen not installed (apt-get install openssh-client)")
	}
	ca := mustCA(t, t.TempDir())
	dir := t.TempDir()
	_, _, text := signedHost(t, ca, dir, HostPrincipals("node12", "10.99.0.12"))
	certPath := filepath.Join(dir, HostCertFile)
	os.WriteFile(certPath, []byte(text+"\n"), 0o644)
	out, err := exec.Command(keygen, "-L", "-f", certPath).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -L: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{"ssh-ed25519-cert-v01@openssh.com host certificate", "node12\n", "node12.cluster\n", "10.99.0.12\n", "Valid: forever"} {
		if !strings.Contains(s, want) {
			t.Errorf("ssh-keygen -L output lacks %q:\n%s", want, s)
		}
	}
	caFP := fingerprint(t, ca.PublicKey())
	if !strings.Contains(s, "Signing CA: ED25519 "+caFP) {
		t.Errorf("ssh-keygen -L names another signing CA than %s:\n%s", caFP, s)
	}
}

func fingerprint(t *testing.T, authorized string) string {
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(authorized))
	if err != nil {
		t.Fatal(err)
	}
	return ssh.FingerprintSHA256(k)
}

func TestHostKeyFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ssh")
	pub, err := NewHostKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, HostKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("host key: %v, mode %v", err, fi.Mode())
	}
	data, _ := os.ReadFile(filepath.Join(dir, HostKeyFile))
	if !strings.HasPrefix(string(data), "-----BEGIN OPENSSH PRIVATE KEY-----") {
		t.Errorf("host key is not in OpenSSH format:\n%s", data)
	}
	pubText, _ := os.ReadFile(filepath.Join(dir, HostKeyFile+".pub"))
	k, _, _, _, err := ssh.ParseAuthorizedKey(pubText)
	if err != nil || !bytes.Equal(k.Marshal(), pub.Marshal()) {
		t.Errorf(".pub does not hold the key: %v", err)
	}
	again, err := EnsureHostKey(dir)
	if err != nil || !bytes.Equal(again.Marshal(), pub.Marshal()) {
		t.Errorf("EnsureHostKey made a new key instead of keeping the one there (%v)", err)
	}
	fresh, err := EnsureHostKey(t.TempDir())
	if err != nil || bytes.Equal(fresh.Marshal(), pub.Marshal()) {
		t.Errorf("EnsureHostKey in an empty folder: %v", err)
	}
}

func TestKnownHosts(t *testing.T) {
	ca := mustCA(t, t.TempDir())
	patterns := KnownHostsPatterns(netip.MustParsePrefix("10.99.0.0/24"))
	if !slices.Equal(patterns, []string{"node*", "*.cluster", "10.99.0.*"}) {
		t.Errorf("patterns = %q", patterns)
	}
	for subnet, want := range map[string][]string{
		"192.168.7.64/27": {"192.168.7.*"},
		"192.168.50.0/23": {"192.168.50.*", "192.168.51.*"},
		"10.20.4.0/22":    {"10.20.4.*", "10.20.5.*", "10.20.6.*", "10.20.7.*"},
		"172.16.0.0/21":   {"172.16.*"},
		"10.20.0.0/16":    {"10.20.*"},
		"10.0.0.0/8":      {"10.*"},
	} {
		p := KnownHostsPatterns(netip.MustParsePrefix(subnet))
		if !slices.Equal(p, append([]string{"node*", "*.cluster"}, want...)) {
			t.Errorf("patterns for %s = %q, want node names and %q", subnet, p, want)
		}
	}
	line := ca.KnownHostsLine(patterns)
	if want := "@cert-authority node*,*.cluster,10.99.0.* " + ca.PublicKey(); line != want {
		t.Errorf("line = %q, want %q", line, want)
	}

	root := t.TempDir()
	path := filepath.Join(root, KnownHostsPath)
	os.MkdirAll(filepath.Dir(path), 0o755)
	mine := "gateway ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
	os.WriteFile(path, []byte(mine), 0o644)
	if err := WriteKnownHosts(root, line); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), mine) || !strings.Contains(string(data), line+"\n") {
		t.Fatalf("known_hosts:\n%s", data)
	}
	// A new CA replaces the line rather than adding one.
	ca2 := mustCA(t, t.TempDir())
	line2 := ca2.KnownHostsLine(patterns)
	if err := WriteKnownHosts(root, line2); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(path)
	if strings.Contains(string(data), ca.PublicKey()) || strings.Count(string(data), "@cert-authority") != 1 || !strings.HasPrefix(string(data), mine) {
		t.Fatalf("known_hosts after a CA change:\n%s", data)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("known_hosts mode %v", fi.Mode().Perm())
	}

	// ssh-keygen agrees the file trusts the CA for node names.
	if keygen, err := exec.LookPath("ssh-keygen"); err == nil {
		out, err := exec.Command(keygen, "-F", "node5", "-f", path).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "@cert-authority") {
			t.Errorf("ssh-keygen -F node5: %v\n%s", err, out)
		}
	}
}

func TestReplaceBlockUnterminated(t *testing.T) {
	in := "a\n" + beginMarker + "\nb\n"
	out := string(replaceBlock([]byte(in), "x\n"))
	if !strings.HasPrefix(out, "a\nb\n") || !strings.Contains(out, "x\n"+endMarker) {
		t.Errorf("replaceBlock(%q) = %q; lines outside must survive", in, out)
	}
}

func owner(t *testing.T, path string) (int, int, os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid), fi.Mode().Perm()
}

func TestEnsureUserKeys(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give homes to other users")
	}
	root := t.TempDir()
	rootHome := filepath.Join(root, "root")
	user := filepath.Join(root, "home", "alice")
	os.MkdirAll(rootHome, 0o700)
	os.MkdirAll(user, 0o755)
	if err := os.Chown(user, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	// bob already has a key and an authorized_keys with another key.
	bob := filepath.Join(root, "home", "bob")
	os.MkdirAll(filepath.Join(bob, ".ssh"), 0o755)
	os.Chown(bob, 1001, 1001)
	bobPub, err := NewHostKey(filepath.Join(bob, ".ssh"))
	if err != nil {
		t.Fatal(err)
	}
	os.Rename(filepath.Join(bob, ".ssh", HostKeyFile), filepath.Join(bob, ".ssh", UserKeyFile))
	os.Remove(filepath.Join(bob, ".ssh", HostKeyFile+".pub"))
	other := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl laptop"
	os.WriteFile(filepath.Join(bob, ".ssh", AuthorizedKeys), []byte(other), 0o644)
	// A link where .ssh would be is not followed.
	mallory := filepath.Join(root, "home", "mallory")
	os.MkdirAll(mallory, 0o755)
	os.Chown(mallory, 1002, 1002)
	target := t.TempDir()
	os.Symlink(target, filepath.Join(mallory, ".ssh"))

	err = EnsureUserKeys(root)
	if err == nil || !strings.Contains(err.Error(), "mallory") {
		t.Errorf("EnsureUserKeys: %v; want an error about mallory's linked .ssh", err)
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Errorf("wrote through mallory's link: %v", entries)
	}

	check := func(home string, uid int) []byte {
		t.Helper()
		sshDir := filepath.Join(home, ".ssh")
		if u, g, m := owner(t, sshDir); u != uid || g != uid || m != 0o700 {
			t.Errorf("%s: owner %d:%d mode %v", sshDir, u, g, m)
		}
		for name, mode := range map[string]os.FileMode{UserKeyFile: 0o600, UserKeyFile + ".pub": 0o644, AuthorizedKeys: 0o600} {
			if u, g, m := owner(t, filepath.Join(sshDir, name)); u != uid || g != uid || m != mode {
				t.Errorf("%s: owner %d:%d mode %v, want %d:%d %v", name, u, g, m, uid, uid, mode)
			}
		}
		pubText, _ := os.ReadFile(filepath.Join(sshDir, UserKeyFile+".pub"))
		pub, _, _, _, err := ssh.ParseAuthorizedKey(pubText)
		if err != nil {
			t.Fatalf("%s: %v", home, err)
		}
		auth, _ := os.ReadFile(filepath.Join(sshDir, AuthorizedKeys))
		if !hasKey(auth, pub) {
			t.Errorf("%s: own key not authorized:\n%s", home, auth)
		}
		// The private key matches the public one.
		priv, _ := os.ReadFile(filepath.Join(sshDir, UserKeyFile))
		signer, err := ssh.ParsePrivateKey(priv)
		if err != nil || !bytes.Equal(signer.PublicKey().Marshal(), pub.Marshal()) {
			t.Errorf("%s: private key does not match .pub (%v)", home, err)
		}
		return auth
	}
	check(rootHome, 0)
	aliceAuth := check(user, 1000)
	bobAuth := check(bob, 1001)
	if !strings.HasPrefix(string(bobAuth), other+"\n") {
		t.Errorf("bob's existing authorized key lost:\n%s", bobAuth)
	}
	bobNow, _ := os.ReadFile(filepath.Join(bob, ".ssh", UserKeyFile+".pub"))
	if k, _, _, _, _ := ssh.ParseAuthorizedKey(bobNow); k == nil || !bytes.Equal(k.Marshal(), bobPub.Marshal()) {
		t.Error("bob's existing key was replaced")
	}

	// Idempotent: a second run changes nothing.
	before, _ := os.ReadFile(filepath.Join(user, ".ssh", UserKeyFile))
	EnsureUserKeys(root)
	after, _ := os.ReadFile(filepath.Join(user, ".ssh", UserKeyFile))
	afterAuth, _ := os.ReadFile(filepath.Join(user, ".ssh", AuthorizedKeys))
	if !bytes.Equal(before, after) || !bytes.Equal(aliceAuth, afterAuth) {
		t.Errorf("second run changed alice's keys:\n%s\n%s", aliceAuth, afterAuth)
	}
}

// TestClientConfig: the ssh client drop-in names the node patterns and the
// subnet's addresses, the same as the known hosts line, and nothing of the
// default subnet when the cluster runs on another one.
func TestClientConfig(t *testing.T) {
	root := t.TempDir()
	lan := netip.MustParsePrefix("192.168.50.0/23")
	if err := WriteClientConfig(root, lan); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, ClientConfigPath)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	conf := string(data)
	if !strings.Contains(conf, "\nHost node* *.cluster 192.168.50.* 192.168.51.*\n") || strings.Contains(conf, "10.99.0") {
		t.Errorf("client config for %v:\n%s", lan, conf)
	}
	for _, opt := range []string{"\tStrictHostKeyChecking yes\n", "\tUserKnownHostsFile /dev/null\n", "\tUpdateHostKeys no\n"} {
		if !strings.Contains(conf, opt) {
			t.Errorf("client config lacks %q", opt)
		}
	}
	fi, _ := os.Stat(path)
	// Unchanged: the file is left alone (same inode).
	if err := WriteClientConfig(root, lan); err != nil {
		t.Fatal(err)
	}
	if fi2, _ := os.Stat(path); !os.SameFile(fi, fi2) {
		t.Error("an unchanged client config was rewritten")
	}
	// The subnet of another boot replaces the patterns.
	if err := WriteClientConfig(root, netip.MustParsePrefix("10.99.0.0/24")); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(path)
	if !strings.Contains(string(data), "\nHost node* *.cluster 10.99.0.*\n") || strings.Contains(string(data), "192.168") {
		t.Errorf("client config after a new subnet:\n%s", data)
	}
}
