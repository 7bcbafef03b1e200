package imagebuild

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/clusterdebian/clusterdebian/internal/config"
)

// account is a login user as it goes into the image.
type account struct {
	Name     string
	Password string // plain text, hashed when the image is made
	Hash     string // crypt(3) hash given in the config
	Keys     []string
	Sudo     bool
}

// credentialsFile lists the generated passwords, beside the ISO.
const credentialsFile = "credentials.txt"

// resolveAccounts turns the config's users into accounts. A user with neither a
// password nor a hash gets a generated password, kept in outDir/credentials.txt
// so that the next build reuses it (and its cache entry). The new passwords
// are returned so that the caller prints them once.
func resolveAccounts(users []config.User, outDir string) (accts []account, generated map[string]string, err error) {
	credPath := filepath.Join(outDir, credentialsFile)
	known := readCredentials(credPath)
	generated = map[string]string{}
	for _, u := range users {
		a := account{Name: u.Name, Password: u.Password, Hash: u.PasswordHash, Keys: u.SSHAuthorizedKeys, Sudo: u.CanSudo()}
		if a.Password == "" && a.Hash == "" {
			if pw, ok := known[u.Name]; ok {
				a.Password = pw
			} else {
				a.Password = generatePassword()
				generated[u.Name] = a.Password
				known[u.Name] = a.Password
			}
		}
		accts = append(accts, a)
	}
	if len(generated) > 0 {
		if err := os.MkdirAll(outDir, 0o755); err != nil {
			return nil, nil, err
		}
		var b strings.Builder
		b.WriteString("# Generated ClusterDebian passwords (user: password). Keep this file private.\n")
		names := make([]string, 0, len(known))
		for n := range known {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			fmt.Fprintf(&b, "%s: %s\n", n, known[n])
		}
		if err := writeFileAtomic(credPath, []byte(b.String()), 0o600); err != nil {
			return nil, nil, fmt.Errorf("writing %s: %w", credPath, err)
		}
	}
	return accts, generated, nil
}

func readCredentials(path string) map[string]string {
	out := map[string]string{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		if name, pw, ok := strings.Cut(line, ": "); ok && name != "" && pw != "" {
			out[name] = pw
		}
	}
	return out
}

// generatePassword returns 14 characters from an alphabet without look-alikes.
func generatePassword() string {
	const alphabet = "abcdefghijkmnpqrstuvwxyzACDEFGHJKLMNPQRSTUVWXYZ23456789"
	var b strings.Builder
	for i := 0; i < 14; i++ {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		if err != nil {
			panic(err)
		}
		b.WriteByte(alphabet[n.Int64()])
	}
	return b.String()
}

// hashPassword returns a SHA-512 crypt(3) hash, made by openssl.
func hashPassword(ctx context.Context, pw string) (string, error) {
	cmd := exec.CommandContext(ctx, "openssl", "passwd", "-6", "-stdin")
	cmd.Stdin = strings.NewReader(pw + "\n")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("openssl passwd: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// accountDB is the image's /etc/passwd, group, shadow and gshadow, as fields.
type accountDB struct {
	passwd, group, shadow, gshadow [][]string
}

func readDB(etc string) (*accountDB, error) {
	db := &accountDB{}
	for name, dst := range map[string]*[][]string{"passwd": &db.passwd, "group": &db.group, "shadow": &db.shadow, "gshadow": &db.gshadow} {
		data, err := os.ReadFile(filepath.Join(etc, name))
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
			if line != "" {
				*dst = append(*dst, strings.Split(line, ":"))
			}
		}
	}
	return db, nil
}

func (db *accountDB) idTaken(table [][]string, id int) bool {
	for _, f := range table {
		if len(f) > 2 && f[2] == strconv.Itoa(id) {
			return true
		}
	}
	return false
}

func (db *accountDB) freeID() int {
	for id := 1000; ; id++ {
		if !db.idTaken(db.passwd, id) && !db.idTaken(db.group, id) {
			return id
		}
	}
}

func (db *accountDB) groupID(name string) (int, bool) {
	for _, f := range db.group {
		if f[0] == name && len(f) > 2 {
			id, err := strconv.Atoi(f[2])
			return id, err == nil
		}
	}
	return 0, false
}

// addToGroup appends user to a supplementary group, in group and gshadow.
func (db *accountDB) addToGroup(group, user string) {
	add := func(table [][]string, field int) {
		for _, f := range table {
			if f[0] == group && len(f) > field {
				members := strings.FieldsFunc(f[field], func(r rune) bool { return r == ',' })
				if !slices.Contains(members, user) {
					f[field] = strings.Join(append(members, user), ",")
				}
			}
		}
	}
	add(db.group, 3)
	add(db.gshadow, 3)
}

// add creates the user with its own group and returns its uid and gid.
func (db *accountDB) add(name, hash string) (uid, gid int) {
	uid = db.freeID()
	gid = uid
	db.group = append(db.group, []string{name, "x", strconv.Itoa(gid), ""})
	db.gshadow = append(db.gshadow, []string{name, "!", "", ""})
	db.passwd = append(db.passwd, []string{name, "x", strconv.Itoa(uid), strconv.Itoa(gid), name, "/home/" + name, "/bin/bash"})
	// Fields: name, hash, last change (days; 1 = long ago, no forced change), min, max, warn, inactive, expire, reserved.
	db.shadow = append(db.shadow, []string{name, hash, "19000", "0", "99999", "7", "", "", ""})
	return uid, gid
}

func (db *accountDB) write(etc string) error {
	shadowGID, ok := db.groupID("shadow")
	if !ok {
		shadowGID = 0
	}
	for _, t := range []struct {
		name  string
		table [][]string
		mode  os.FileMode
		gid   int
	}{
		{"passwd", db.passwd, 0o644, 0},
		{"group", db.group, 0o644, 0},
		{"shadow", db.shadow, 0o640, shadowGID},
		{"gshadow", db.gshadow, 0o640, shadowGID},
	} {
		var b strings.Builder
		for _, f := range t.table {
			b.WriteString(strings.Join(f, ":"))
			b.WriteByte('\n')
		}
		path := filepath.Join(etc, t.name)
		if err := os.WriteFile(path, []byte(b.String()), t.mode); err != nil {
			return err
		}
		if err := os.Chmod(path, t.mode); err != nil {
			return err
		}
		if err := os.Chown(path, 0, t.gid); err != nil {
			return err
		}
	}
	return nil
}

// installAccounts writes the account files with the users added into
// layer/etc, and makes each user's home from the image's /etc/skel.
func installAccounts(ctx context.Context, baseEtc, layer string, accts []account) error {
	db, err := readDB(baseEtc)
	if err != nil {
		return fmt.Errorf("reading the base image's accounts: %w", err)
	}
	for _, a := range accts {
		hash := a.Hash
		if hash == "" {
			if hash, err = hashPassword(ctx, a.Password); err != nil {
				return err
			}
		}
		uid, gid := db.add(a.Name, hash)
		db.addToGroup("users", a.Name)
		if a.Sudo {
			db.addToGroup("sudo", a.Name)
		}
		home := filepath.Join(layer, "home", a.Name)
		if err := os.MkdirAll(filepath.Dir(home), 0o755); err != nil {
			return err
		}
		if err := os.Mkdir(home, 0o700); err != nil {
			return err
		}
		if err := copyTree(filepath.Join(baseEtc, "skel"), home, uid, gid); err != nil {
			return fmt.Errorf("home of %s: %w", a.Name, err)
		}
		if err := os.Chmod(home, 0o700); err != nil {
			return err
		}
		// copyTree keeps an existing folder's owner, so set the home's here.
		if err := os.Chown(home, uid, gid); err != nil {
			return err
		}
		if len(a.Keys) > 0 {
			sshDir := filepath.Join(home, ".ssh")
			if err := os.MkdirAll(sshDir, 0o700); err != nil {
				return err
			}
			keys := strings.Join(a.Keys, "\n") + "\n"
			if err := os.WriteFile(filepath.Join(sshDir, "authorized_keys"), []byte(keys), 0o600); err != nil {
				return err
			}
			for _, p := range []string{sshDir, filepath.Join(sshDir, "authorized_keys")} {
				if err := os.Lchown(p, uid, gid); err != nil {
					return err
				}
			}
		}
	}
	if err := os.MkdirAll(filepath.Join(layer, "etc"), 0o755); err != nil {
		return err
	}
	return db.write(filepath.Join(layer, "etc"))
}
