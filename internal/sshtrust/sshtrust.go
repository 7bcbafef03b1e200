// Package sshtrust makes ssh between cluster nodes work without passwords
// and without "authenticity of host can't be established" prompts, which
// would stop mpirun and pvm dead:
//
//   - the head keeps one SSH certificate authority (CA) key in its state
//     folder, made at its first start and never shipped in the image (an ISO
//     may be given away; a CA inside it would let anyone impersonate nodes);
//   - every node makes a fresh host key in RAM at boot and the head signs it
//     into a host certificate naming the node (node<N>, node<N>.cluster and
//     its address);
//   - /etc/ssh/ssh_known_hosts, shared by all nodes, trusts that CA for the
//     cluster's names (@cert-authority), so each host key is verified
//     rather than blindly accepted;
//   - every user gets one key pair in their shared home, authorized for
//     themselves, so ssh from any node to any other logs straight in.
package sshtrust

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/markedblock"

	"golang.org/x/crypto/ssh"
)

// File names, in the head's state folder (CA) and a node's run folder
// (host key). The host key names are the ones the image's sshd_config.d
// drop-in points sshd at.
const (
	CAKeyFile       = contract.CAKeyFile
	HostKeyFile     = "ssh_host_ed25519_key"
	HostCertFile    = "ssh_host_ed25519_key-cert.pub"
	KnownHostsPath  = "etc/ssh/ssh_known_hosts"
	UserKeyFile     = "id_ed25519"
	AuthorizedKeys  = "authorized_keys"
	caKeyComment    = "clusterdebian-ca"
	hostKeyComment  = "clusterdebian-host"
	beginMarker     = markedblock.Begin
	endMarker       = markedblock.End
	clockSkewMargin = 5 * time.Minute
)

// CA is the cluster's SSH certificate authority.
type CA struct {
	signer ssh.Signer
	// keptAs and damage: OpenCA found the key damaged, set it aside there
	// and made a new one (Damaged).
	keptAs string
	damage error
	// pubKept: the key was good but its .pub was not; set aside there, and
	// made again (PubRepaired).
	pubKept string
}

// OpenCA loads the CA key from dir, or makes it on first use. The key is
// kept (mode 0600) so that a restarted head signs with the same CA and the
// certificates nodes already hold stay valid.
//
// A key file that does not parse (truncated, overwritten) is renamed to
// <path>.corrupt-<UTC time> (atomicfile.SetAside), its .pub beside it
// likewise, and a new CA made, so the head starts rather than failing at
// every restart; Damaged says so. Certificates signed by the old CA are no
// longer trusted: nodes need new ones (the head's heartbeat answers carry
// the CA's fingerprint, CAHeader, and agents register again when it
// changes). Only a key that cannot be read, or set aside, is an error.
func OpenCA(dir string) (*CA, error) {
	path := filepath.Join(dir, CAKeyFile)
	data, err := os.ReadFile(path)
	var keptAs string
	var damage error
	switch {
	case err == nil:
		signer, err := ssh.ParsePrivateKey(data)
		if err != nil {
			damage = err
			if keptAs, err = atomicfile.SetAside(path, time.Now()); err != nil {
				return nil, fmt.Errorf("SSH CA key %s is damaged (%v), and it cannot be set aside: %w", path, damage, err)
			}
			// The public half goes with it: it names the lost key, for
			// whoever looks into what happened.
			if _, err := os.Lstat(path + ".pub"); err == nil {
				if err := os.Rename(path+".pub", keptAs+".pub"); err != nil {
					return nil, fmt.Errorf("SSH CA key %s is damaged (%v), and its public half cannot be set aside: %w", path, damage, err)
				}
			}
			break
		}
		// A CA key others can read lets them forge host certificates.
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(path, 0o600); err != nil {
				return nil, err
			}
		}
		ca := &CA{signer: signer}
		// The public half is what doctor checks certificates against: one
		// lost or damaged is made again from the key (a damaged one kept).
		if pub, err := os.ReadFile(path + ".pub"); err != nil || Fingerprint(string(pub)) != ca.Fingerprint() {
			if err == nil {
				if ca.pubKept, err = atomicfile.SetAside(path+".pub", time.Now()); err != nil {
					return nil, err
				}
			}
			line := ca.PublicKey() + " " + caKeyComment + "\n"
			if err := writeAtomic(path+".pub", []byte(line), 0o644, -1, -1); err != nil {
				return nil, fmt.Errorf("SSH CA public key: %w", err)
			}
		}
		return ca, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("SSH CA key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("SSH CA folder: %w", err)
	}
	_, signer, err := writeKeyPair(path, caKeyComment)
	if err != nil {
		return nil, fmt.Errorf("SSH CA key: %w", err)
	}
	return &CA{signer: signer, keptAs: keptAs, damage: damage}, nil
}

// Damaged reports whether OpenCA found the key damaged and made a new CA:
// the path the bad key was renamed to, and the parse error; "" and nil if
// it did not.
func (ca *CA) Damaged() (keptAs string, cause error) {
	return ca.keptAs, ca.damage
}

// PubRepaired reports where OpenCA set aside a public key file that did not
// match the (good) CA key before making it again; "" if it did not. The CA
// is the same, so no certificate changes.
func (ca *CA) PubRepaired() string {
	return ca.pubKept
}

// CAHeader carries the CA's Fingerprint on the head's heartbeat answers,
// so that an agent whose certificate is from another CA registers again.
const CAHeader = "Clusterdebian-SSH-CA"

// Fingerprint is the CA public key's SHA256 fingerprint ("SHA256:...").
func (ca *CA) Fingerprint() string {
	return ssh.FingerprintSHA256(ca.signer.PublicKey())
}

// Fingerprint returns the SHA256 fingerprint of a public key in
// authorized_keys format (what the head sends as the CA's), "" if it does
// not parse.
func Fingerprint(pub string) string {
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pub))
	if err != nil {
		return ""
	}
	return ssh.FingerprintSHA256(k)
}

// PublicKey returns the CA's public key in authorized_keys format, without
// a line break.
func (ca *CA) PublicKey() string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ca.signer.PublicKey())))
}

// SignHost signs a host key into a host certificate valid for principals
// (the names clients will type, see HostPrincipals) and returns it in
// authorized_keys format, ready for sshd's HostCertificate file.
//
// A zero validity means no expiry. That is what the head uses: host keys
// live in a node's RAM for one boot and the CA lives with the head, and the
// nodes' clocks are not synchronized, so a validity window would only break
// ssh on a machine whose battery-backed clock is off. A non-zero validity
// starts a few minutes in the past for the same reason.
func (ca *CA) SignHost(pub ssh.PublicKey, principals []string, validity time.Duration) (string, error) {
	if pub == nil {
		return "", errors.New("no host key to sign")
	}
	if _, ok := pub.(*ssh.Certificate); ok {
		return "", errors.New("host key is already a certificate")
	}
	if len(principals) == 0 {
		return "", errors.New("a host certificate needs at least one principal")
	}
	var serial [8]byte
	if _, err := rand.Read(serial[:]); err != nil {
		return "", err
	}
	cert := &ssh.Certificate{
		Key:             pub,
		Serial:          binary.BigEndian.Uint64(serial[:]),
		CertType:        ssh.HostCert,
		KeyId:           principals[0],
		ValidPrincipals: append([]string(nil), principals...),
		ValidAfter:      0,
		ValidBefore:     ssh.CertTimeInfinity,
	}
	if validity > 0 {
		now := time.Now()
		cert.ValidAfter = uint64(now.Add(-clockSkewMargin).Unix())
		cert.ValidBefore = uint64(now.Add(validity).Unix())
	}
	if err := cert.SignCert(rand.Reader, ca.signer); err != nil {
		return "", fmt.Errorf("signing host certificate: %w", err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert))), nil
}

// KnownHostsLine returns the known_hosts line that trusts the CA for hosts
// matching patterns (ssh patterns such as "node*" or "10.99.0.*";
// KnownHostsPatterns).
func (ca *CA) KnownHostsLine(patterns []string) string {
	return KnownHostsLine(ca.PublicKey(), patterns)
}

// KnownHostsLine returns the known_hosts line that trusts the CA with
// public key caPub (authorized_keys format) for hosts matching patterns.
func KnownHostsLine(caPub string, patterns []string) string {
	return "@cert-authority " + strings.Join(patterns, ",") + " " + strings.TrimSpace(caPub)
}

// HostPrincipals are the names a node's host certificate is valid for: what
// a user or a hostfile may call it.
func HostPrincipals(name, ip string) []string {
	return []string{name, name + "." + contract.Domain, ip}
}

// KnownHostsPatterns returns the host patterns the CA is trusted for on a
// cluster subnet: the node names and the subnet's addresses, in the tightest
// ssh wildcards that cover them: one a.b.c.* for a /24 or smaller, one per
// /24 for a /22 or /23 (a LAN's subnet), a.b.* up to a /16 and a.* beyond.
// Trusting the CA for a few addresses outside the subnet is harmless,
// because a certificate still has to name the very address connected to.
// The ssh client configuration (ClientConfig) uses the same patterns.
func KnownHostsPatterns(subnet netip.Prefix) []string {
	p := []string{contract.NamePattern, "*." + contract.Domain}
	if !subnet.IsValid() || !subnet.Addr().Is4() {
		return p
	}
	a := subnet.Masked().Addr().As4()
	switch bits := subnet.Bits(); {
	case bits >= 24:
		p = append(p, fmt.Sprintf("%d.%d.%d.*", a[0], a[1], a[2]))
	case bits >= 22:
		for i := range 1 << (24 - bits) {
			p = append(p, fmt.Sprintf("%d.%d.%d.*", a[0], a[1], int(a[2])+i))
		}
	case bits >= 16:
		p = append(p, fmt.Sprintf("%d.%d.*", a[0], a[1]))
	default:
		p = append(p, fmt.Sprintf("%d.*", a[0]))
	}
	return p
}

// ClientConfigPath is the ssh client drop-in that makes ssh between nodes
// verify host keys against the cluster CA without asking (ClientConfig).
const ClientConfigPath = "etc/ssh/ssh_config.d/clusterdebian.conf"

// ClientConfig returns the ssh client drop-in for a cluster subnet: for the
// node names and the subnet's addresses (KnownHostsPatterns, the same
// patterns as the known hosts line), host keys are checked strictly against
// ssh_known_hosts, where the CA is, and never learned per host. The head
// writes it at run time, not the image, because the subnet may change from
// one boot to the next (a node1 on a LAN takes that LAN's subnet).
func ClientConfig(subnet netip.Prefix) string {
	return `# Written by clusterdebian (the head on node1, the agent on a node with its
# own root) for this boot's cluster network; changes are lost. Put your own
# settings into another file of this folder.
#
# ssh between cluster nodes: host keys are verified, not skipped.
# /etc/ssh/ssh_known_hosts trusts the cluster's SSH CA (@cert-authority) for
# these names and addresses, and every node's host certificate is signed by
# it. So no prompt appears, and a machine that is not a certified node is
# refused instead of silently trusted.
Host ` + strings.Join(KnownHostsPatterns(subnet), " ") + `
	# The CA line covers every node; learning per-host keys would only
	# fill ~/.ssh/known_hosts with keys that change at every boot.
	UpdateHostKeys no
	HashKnownHosts no
	# An unknown key is an error, not a question nobody (mpirun) answers.
	StrictHostKeyChecking yes
	# Host keys are per boot; stale learned entries must not get in the way.
	UserKnownHostsFile /dev/null
`
}

// WriteClientConfig writes ClientConfig(subnet) to root/ClientConfigPath,
// atomically (ssh clients read it at any time) and only when it changes.
func WriteClientConfig(root string, subnet netip.Prefix) error {
	path := filepath.Join(root, ClientConfigPath)
	data := []byte(ClientConfig(subnet))
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return writeAtomic(path, data, 0o644, -1, -1)
}

// WriteKnownHosts puts line into root/etc/ssh/ssh_known_hosts, in a marked
// block so that entries an administrator added outside it survive. The file
// is replaced atomically (ssh clients on every node read it at any time) and
// only when it changes.
func WriteKnownHosts(root string, line string) error {
	return writeBlock(filepath.Join(root, KnownHostsPath), line, 0o755, 0o644)
}

// RootAuthorizedKeysPath is root's authorized_keys under a root.
const RootAuthorizedKeysPath = "root/.ssh/authorized_keys"

// WriteRootAuthorizedKeys authorizes keys (authorized_keys lines) for root
// under root, in a marked block: a node with its own root (the RAM root)
// lets node1's root in for exec and shutdown this way, as nodes sharing
// node1's root do through its shared /root.
func WriteRootAuthorizedKeys(root, keys string) error {
	return writeBlock(filepath.Join(root, RootAuthorizedKeysPath), keys, 0o700, 0o600)
}

// writeBlock puts body into the clusterdebian block of the file at path,
// replacing the file atomically and only when it changes.
func writeBlock(path, body string, dirMode, mode fs.FileMode) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	data := replaceBlock(old, strings.TrimSpace(body)+"\n")
	if bytes.Equal(old, data) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
		return err
	}
	return writeAtomic(path, data, mode, -1, -1)
}

// replaceBlock returns text with the clusterdebian block holding body:
// in place of an existing block, else appended.
func replaceBlock(text []byte, body string) []byte {
	block := beginMarker + " (written by clusterdebian; changes inside are lost)\n" + body + endMarker + "\n"
	return markedblock.Replace(text, block, false)
}

// NewHostKey makes a new ed25519 host key in dir: HostKeyFile (mode 0600,
// OpenSSH format, as sshd reads it) and HostKeyFile.pub. It replaces any key
// there.
func NewHostKey(dir string) (ssh.PublicKey, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	pub, _, err := writeKeyPair(filepath.Join(dir, HostKeyFile), hostKeyComment)
	return pub, err
}

// EnsureHostKey returns the host key in dir, making it with NewHostKey if
// there is none. A restarted agent must keep the key sshd already loaded,
// or the certificate it fetches would not match what sshd presents.
func EnsureHostKey(dir string) (ssh.PublicKey, error) {
	data, err := os.ReadFile(filepath.Join(dir, HostKeyFile))
	if err == nil {
		signer, err := ssh.ParsePrivateKey(data)
		if err == nil {
			return signer.PublicKey(), nil
		}
		// A damaged key (a crash mid-write cannot do this, writes are atomic,
		// but a full tmpfs could) is simply replaced: it is per boot anyway.
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return NewHostKey(dir)
}

// writeKeyPair makes an ed25519 key and writes path (0600) and path.pub
// (0644) atomically, owned by the caller.
func writeKeyPair(path, comment string) (ssh.PublicKey, ssh.Signer, error) {
	return writeKeyPairOwned(path, comment, -1, -1)
}

// writeKeyPairOwned is writeKeyPair with the files chowned to uid:gid
// (-1 keeps the caller's).
func writeKeyPairOwned(path, comment string, uid, gid int) (ssh.PublicKey, ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, err
	}
	pub := signer.PublicKey()
	pubLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))) + " " + comment + "\n"
	if err := writeAtomic(path, pem.EncodeToMemory(block), 0o600, uid, gid); err != nil {
		return nil, nil, err
	}
	if err := writeAtomic(path+".pub", []byte(pubLine), 0o644, uid, gid); err != nil {
		return nil, nil, err
	}
	return pub, signer, nil
}
