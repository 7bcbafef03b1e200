package imagebuild

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/clusterdebian/clusterdebian/internal/config"
)

var generatedPassword = regexp.MustCompile(`^[abcdefghijkmnpqrstuvwxyzACDEFGHJKLMNPQRSTUVWXYZ23456789]{14}$`)

func TestGeneratePassword(t *testing.T) {
	seen := map[string]bool{}
	for range 20 {
		pw := generatePassword()
		if !generatedPassword.MatchString(pw) {
			t.Errorf("generatePassword() = %q: want 14 characters without look-alikes", pw)
		}
		if seen[pw] {
			t.Errorf("generatePassword() repeated %q", pw)
		}
		seen[pw] = true
	}
}

func TestResolveAccounts(t *testing.T) {
	no := false
	users := []config.User{
		{Name: "alice", SSHAuthorizedKeys: []string{"ssh-ed25519 AAAA alice"}},
		{Name: "bob", Password: "bobs-explicit-pw", Sudo: &no},
		{Name: "carol", PasswordHash: "$6$salt$hash"},
		{Name: "dave", PasswordHash: "!"},
	}
	out := filepath.Join(t.TempDir(), "out") // not there yet
	credPath := filepath.Join(out, credentialsFile)

	accts, generated, err := resolveAccounts(users, out)
	if err != nil {
		t.Fatalf("resolveAccounts: %v", err)
	}
	if len(accts) != 4 {
		t.Fatalf("got %d accounts, want 4: %+v", len(accts), accts)
	}
	alice, bob, carol, dave := accts[0], accts[1], accts[2], accts[3]
	if alice.Name != "alice" || !generatedPassword.MatchString(alice.Password) || alice.Hash != "" || !alice.Sudo ||
		!slices.Equal(alice.Keys, []string{"ssh-ed25519 AAAA alice"}) {
		t.Errorf("alice = %+v, want a generated password, sudo and her key", alice)
	}
	if bob.Password != "bobs-explicit-pw" || bob.Hash != "" || bob.Sudo {
		t.Errorf("bob = %+v, want his own password and no sudo", bob)
	}
	if carol.Password != "" || carol.Hash != "$6$salt$hash" {
		t.Errorf("carol = %+v, want her hash and no password", carol)
	}
	if dave.Password != "" || dave.Hash != "!" {
		t.Errorf("dave = %+v, want a locked password", dave)
	}
	if len(generated) != 1 || generated["alice"] != alice.Password {
		t.Errorf("generated = %v, want only alice's password", generated)
	}

	fi, err := os.Stat(credPath)
	if err != nil {
		t.Fatalf("credentials file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("credentials.txt mode %o, want 600", fi.Mode().Perm())
	}
	creds := readFile(t, credPath)
	if !strings.Contains(creds, "alice: "+alice.Password+"\n") {
		t.Errorf("credentials.txt lacks alice's password:\n%s", creds)
	}
	for _, secret := range []string{"bob", "bobs-explicit-pw", "carol", "dave"} {
		if strings.Contains(creds, secret) {
			t.Errorf("credentials.txt holds %q, which was not generated:\n%s", secret, creds)
		}
	}
	if names := dirNames(t, out); !slices.Equal(names, []string{credentialsFile}) {
		t.Errorf("output folder holds %v", names)
	}

	// A second build reuses the password and generates nothing.
	before := fi.ModTime()
	accts2, generated2, err := resolveAccounts(users, out)
	if err != nil {
		t.Fatal(err)
	}
	if accts2[0].Password != alice.Password {
		t.Errorf("second call gave alice %q, want the stored %q", accts2[0].Password, alice.Password)
	}
	if len(generated2) != 0 {
		t.Errorf("second call generated %v", generated2)
	}
	if got := readFile(t, credPath); got != creds {
		t.Errorf("credentials.txt changed on the second call:\n%s", got)
	}
	if fi2, _ := os.Stat(credPath); !fi2.ModTime().Equal(before) {
		t.Error("credentials.txt was rewritten on the second call")
	}

	// A new user gets a password; the known ones are kept in the file.
	users = append(users, config.User{Name: "erin"})
	accts3, generated3, err := resolveAccounts(users, out)
	if err != nil {
		t.Fatal(err)
	}
	if accts3[0].Password != alice.Password || len(generated3) != 1 || generated3["erin"] != accts3[4].Password {
		t.Errorf("third call: alice %q, generated %v", accts3[0].Password, generated3)
	}
	creds3 := readFile(t, credPath)
	if !strings.Contains(creds3, "alice: "+alice.Password+"\n") || !strings.Contains(creds3, "erin: "+accts3[4].Password+"\n") {
		t.Errorf("credentials.txt after a new user:\n%s", creds3)
	}
	if strings.Index(creds3, "alice:") > strings.Index(creds3, "erin:") {
		t.Errorf("credentials.txt is not sorted by name:\n%s", creds3)
	}
	if fi, _ := os.Stat(credPath); fi.Mode().Perm() != 0o600 {
		t.Errorf("rewritten credentials.txt mode %o, want 600", fi.Mode().Perm())
	}
}

func TestResolveAccountsNothingGenerated(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	accts, generated, err := resolveAccounts([]config.User{{Name: "bob", Password: "pw"}}, out)
	if err != nil || len(accts) != 1 || len(generated) != 0 {
		t.Fatalf("resolveAccounts = %+v, %v, %v", accts, generated, err)
	}
	if exists(out) {
		t.Error("output folder created although no password was generated")
	}
}

func TestReadCredentials(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.txt")
	if err := os.WriteFile(p, []byte("# comment: not a user\nalice: pw1\nbroken line\nbob:nospace\n: nouser\ncarol: \ndave: p w: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got := readCredentials(p)
	want := map[string]string{"alice": "pw1", "dave": "p w: x"}
	if len(got) != len(want) {
		t.Errorf("readCredentials = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("readCredentials[%q] = %q, want %q", k, got[k], v)
		}
	}
	if m := readCredentials(filepath.Join(t.TempDir(), "missing")); m == nil || len(m) != 0 {
		t.Errorf("readCredentials(missing) = %v, want an empty map", m)
	}
}

// fakeEtc makes a small base-image /etc with account files and a skel.
func fakeEtc(t *testing.T) string {
	t.Helper()
	etc := filepath.Join(t.TempDir(), "etc")
	writeTree(t, etc, map[string]string{
		"passwd": "root:x:0:0:root:/root:/bin/bash\n" +
			"daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n" +
			"old:x:1000:1000:Old:/home/old:/bin/bash\n" +
			"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
		"group": "root:x:0:\n" +
			"shadow:x:42:\n" +
			"sudo:x:27:old\n" +
			"users:x:100:\n" +
			"old:x:1000:\n" +
			"taken:x:1001:\n" +
			"nogroup:x:65534:\n",
		"shadow": "root:*:19000:0:99999:7:::\n" +
			"daemon:*:19000:0:99999:7:::\n" +
			"old:!:19000:0:99999:7:::\n" +
			"nobody:*:19000:0:99999:7:::\n",
		"gshadow": "root:*::\n" +
			"shadow:*::\n" +
			"sudo:*::old\n" +
			"users:*::\n" +
			"old:!::\n" +
			"taken:!::\n" +
			"nogroup:*::\n",
		"skel/.bashrc":           "# ~/.bashrc\n",
		"skel/.profile":          "# ~/.profile\n",
		"skel/.config/app/rc":    "x=1\n",
		"skel/.local/share/link": "->../../.profile",
	})
	return etc
}

// lineOf returns the fields of the line of name in an account file.
func lineOf(t *testing.T, path, name string) []string {
	t.Helper()
	for _, line := range strings.Split(readFile(t, path), "\n") {
		if f := strings.Split(line, ":"); f[0] == name {
			return f
		}
	}
	t.Fatalf("%s has no line for %s", filepath.Base(path), name)
	return nil
}

func TestAccountDB(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown the account files")
	}
	etc := fakeEtc(t)
	db, err := readDB(etc)
	if err != nil {
		t.Fatal(err)
	}
	if len(db.passwd) != 4 || len(db.group) != 7 || len(db.shadow) != 4 || len(db.gshadow) != 7 {
		t.Fatalf("readDB: %d passwd, %d group, %d shadow, %d gshadow lines",
			len(db.passwd), len(db.group), len(db.shadow), len(db.gshadow))
	}
	if id, ok := db.groupID("shadow"); !ok || id != 42 {
		t.Errorf("groupID(shadow) = %d, %v", id, ok)
	}
	if _, ok := db.groupID("nope"); ok {
		t.Error("groupID of a missing group succeeded")
	}

	// 1000 is a uid and 1001 a gid: the first id free in both is 1002.
	uid, gid := db.add("alice", "$6$s$h")
	if uid != 1002 || gid != 1002 {
		t.Errorf("add(alice) = %d:%d, want 1002:1002", uid, gid)
	}
	uid2, gid2 := db.add("bob", "!")
	if uid2 != 1003 || gid2 != 1003 {
		t.Errorf("add(bob) = %d:%d, want 1003:1003", uid2, gid2)
	}
	db.addToGroup("sudo", "alice")
	db.addToGroup("sudo", "alice") // twice: listed once
	db.addToGroup("users", "alice")
	db.addToGroup("users", "bob")
	db.addToGroup("no-such-group", "bob") // ignored

	out := t.TempDir()
	if err := db.write(out); err != nil {
		t.Fatalf("write: %v", err)
	}
	for _, f := range []struct {
		name string
		mode os.FileMode
		gid  uint32
	}{{"passwd", 0o644, 0}, {"group", 0o644, 0}, {"shadow", 0o640, 42}, {"gshadow", 0o640, 42}} {
		fi, err := os.Stat(filepath.Join(out, f.name))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != f.mode || st.Uid != 0 || st.Gid != f.gid {
			t.Errorf("%s: mode %o owner %d:%d, want %o 0:%d", f.name, fi.Mode().Perm(), st.Uid, st.Gid, f.mode, f.gid)
		}
		if data := readFile(t, filepath.Join(out, f.name)); !strings.HasSuffix(data, "\n") || strings.Contains(data, "\n\n") {
			t.Errorf("%s is not one entry a line:\n%s", f.name, data)
		}
	}

	if got := lineOf(t, filepath.Join(out, "passwd"), "alice"); !slices.Equal(got, []string{"alice", "x", "1002", "1002", "alice", "/home/alice", "/bin/bash"}) {
		t.Errorf("passwd alice = %v", got)
	}
	if got := lineOf(t, filepath.Join(out, "group"), "alice"); !slices.Equal(got, []string{"alice", "x", "1002", ""}) {
		t.Errorf("group alice = %v", got)
	}
	if got := lineOf(t, filepath.Join(out, "shadow"), "alice"); len(got) != 9 || got[1] != "$6$s$h" {
		t.Errorf("shadow alice = %v, want 9 fields with the hash", got)
	}
	if got := lineOf(t, filepath.Join(out, "shadow"), "bob"); got[1] != "!" {
		t.Errorf("shadow bob = %v", got)
	}
	if got := lineOf(t, filepath.Join(out, "gshadow"), "alice"); !slices.Equal(got, []string{"alice", "!", "", ""}) {
		t.Errorf("gshadow alice = %v", got)
	}
	for file, want := range map[string]map[string]string{
		"group":   {"sudo": "old,alice", "users": "alice,bob", "taken": ""},
		"gshadow": {"sudo": "old,alice", "users": "alice,bob", "taken": ""},
	} {
		for g, members := range want {
			if got := lineOf(t, filepath.Join(out, file), g); got[3] != members {
				t.Errorf("%s %s members = %q, want %q", file, g, got[3], members)
			}
		}
	}
	// The untouched lines are kept as they were.
	for _, f := range []string{"passwd", "shadow"} {
		for _, line := range strings.Split(strings.TrimSpace(readFile(t, filepath.Join(etc, f))), "\n") {
			if !strings.Contains(readFile(t, filepath.Join(out, f)), line+"\n") {
				t.Errorf("%s lost %q", f, line)
			}
		}
	}

	// Read back, the database holds the new users; ids stay unique.
	back, err := readDB(out)
	if err != nil {
		t.Fatal(err)
	}
	if id := back.freeID(); id != 1004 {
		t.Errorf("freeID after two users = %d, want 1004", id)
	}
	if _, err := readDB(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("readDB of a missing folder succeeded")
	}
}

func TestFreeIDSkipsTakenIDs(t *testing.T) {
	db := &accountDB{}
	if id := db.freeID(); id != 1000 {
		t.Errorf("freeID on an empty database = %d, want 1000", id)
	}
	db.passwd = [][]string{{"a", "x", "1000", "1000"}, {"b", "x", "1002", "100"}}
	db.group = [][]string{{"g", "x", "1001", ""}, {"short"}}
	if id := db.freeID(); id != 1003 {
		t.Errorf("freeID = %d, want 1003", id)
	}
}

func TestHashPassword(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	ctx := context.Background()
	h, err := hashPassword(ctx, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	checkSHA512Crypt(t, h, "correct horse")
	h2, _ := hashPassword(ctx, "correct horse")
	if h2 == h {
		t.Error("two hashes of one password are equal: no random salt")
	}
}

// checkSHA512Crypt verifies that hash is a $6$ crypt of pw, by having openssl
// hash pw again with the same salt.
func checkSHA512Crypt(t *testing.T, hash, pw string) {
	t.Helper()
	m := regexp.MustCompile(`^\$6\$([./A-Za-z0-9]{1,16})\$[./A-Za-z0-9]{86}$`).FindStringSubmatch(hash)
	if m == nil {
		t.Errorf("%q is not a SHA-512 crypt hash", hash)
		return
	}
	cmd := exec.Command("openssl", "passwd", "-6", "-salt", m[1], "-stdin")
	cmd.Stdin = strings.NewReader(pw + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl passwd: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != hash {
		t.Errorf("hash %q does not verify for %q: openssl gives %q", hash, pw, got)
	}
	cmd = exec.Command("openssl", "passwd", "-6", "-salt", m[1], "-stdin")
	cmd.Stdin = strings.NewReader(pw + "x\n")
	if out, _ := cmd.Output(); strings.TrimSpace(string(out)) == hash {
		t.Errorf("hash %q also verifies for a wrong password", hash)
	}
}

func TestInstallAccounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	etc := fakeEtc(t)
	layer := t.TempDir()
	keys := []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample alice@a", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther alice@b"}
	accts := []account{
		{Name: "alice", Password: "alice pw 1", Keys: keys, Sudo: true},
		{Name: "bob", Hash: "!", Sudo: false},
	}
	if err := installAccounts(context.Background(), etc, layer, accts); err != nil {
		t.Fatalf("installAccounts: %v", err)
	}

	owner := func(p string) (uint32, uint32, os.FileMode) {
		t.Helper()
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		return st.Uid, st.Gid, fi.Mode()
	}
	ids := map[string]uint32{"alice": 1002, "bob": 1003}
	for name, id := range ids {
		home := filepath.Join(layer, "home", name)
		if uid, gid, mode := owner(home); uid != id || gid != id || mode != os.ModeDir|0o700 {
			t.Errorf("home of %s: owner %d:%d mode %v, want %d:%d drwx------", name, uid, gid, mode, id, id)
		}
		// Everything from skel, owned by the user.
		for p, mode := range map[string]os.FileMode{
			".bashrc": 0o644, ".profile": 0o644, ".config": os.ModeDir | 0o755, ".config/app/rc": 0o644,
			".local/share/link": os.ModeSymlink | 0o777,
		} {
			uid, gid, m := owner(filepath.Join(home, p))
			if uid != id || gid != id || m != mode {
				t.Errorf("%s/%s: owner %d:%d mode %v, want %d:%d %v", name, p, uid, gid, m, id, id, mode)
			}
		}
		if got := readFile(t, filepath.Join(home, ".bashrc")); got != "# ~/.bashrc\n" {
			t.Errorf("%s/.bashrc = %q", name, got)
		}
	}
	home := filepath.Join(layer, "home", "alice")
	if uid, gid, mode := owner(filepath.Join(home, ".ssh")); uid != 1002 || gid != 1002 || mode != os.ModeDir|0o700 {
		t.Errorf(".ssh: %d:%d %v, want 1002:1002 drwx------", uid, gid, mode)
	}
	ak := filepath.Join(home, ".ssh", "authorized_keys")
	if uid, gid, mode := owner(ak); uid != 1002 || gid != 1002 || mode != 0o600 {
		t.Errorf("authorized_keys: %d:%d %v, want 1002:1002 -rw-------", uid, gid, mode)
	}
	if got, want := readFile(t, ak), strings.Join(keys, "\n")+"\n"; got != want {
		t.Errorf("authorized_keys = %q, want %q", got, want)
	}
	if exists(filepath.Join(layer, "home", "bob", ".ssh")) {
		t.Error("bob, without keys, got a .ssh folder")
	}

	out := filepath.Join(layer, "etc")
	checkSHA512Crypt(t, lineOf(t, filepath.Join(out, "shadow"), "alice")[1], "alice pw 1")
	if h := lineOf(t, filepath.Join(out, "shadow"), "bob")[1]; h != "!" {
		t.Errorf("bob's shadow hash = %q, want !", h)
	}
	if fi, err := os.Stat(filepath.Join(out, "shadow")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("shadow: %v, mode want 640", err)
	}
	if got := lineOf(t, filepath.Join(out, "passwd"), "alice"); got[2] != "1002" || got[5] != "/home/alice" {
		t.Errorf("passwd alice = %v", got)
	}
	for _, file := range []string{"group", "gshadow"} {
		if m := lineOf(t, filepath.Join(out, file), "sudo")[3]; m != "old,alice" {
			t.Errorf("%s sudo members = %q, want old,alice (bob has no sudo)", file, m)
		}
		if m := lineOf(t, filepath.Join(out, file), "users")[3]; m != "alice,bob" {
			t.Errorf("%s users members = %q, want alice,bob", file, m)
		}
	}
	// The base image's files are not modified.
	if strings.Contains(readFile(t, filepath.Join(etc, "passwd")), "alice") {
		t.Error("installAccounts wrote into the base etc")
	}
}

func TestInstallAccountsErrors(t *testing.T) {
	if err := installAccounts(context.Background(), filepath.Join(t.TempDir(), "missing"), t.TempDir(), nil); err == nil ||
		!strings.Contains(err.Error(), "base image's accounts") {
		t.Errorf("installAccounts without account files = %v", err)
	}
	if os.Geteuid() != 0 {
		return
	}
	// A home that already exists in the layer is an error, not a silent merge.
	etc := fakeEtc(t)
	layer := t.TempDir()
	writeTree(t, layer, map[string]string{"home/alice/": ""})
	if err := installAccounts(context.Background(), etc, layer, []account{{Name: "alice", Hash: "!"}}); err == nil {
		t.Error("installAccounts over an existing home succeeded")
	}
}
