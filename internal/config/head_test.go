package config

import "testing"

func TestHeadKeys(t *testing.T) {
	c := parseOK(t, "")
	if c.Network.Interface != "" || c.Head.BootDir != "" || c.Head.StateDir != "/var/lib/clusterdebian" {
		t.Errorf("defaults: interface %q, boot_dir %q, state_dir %q", c.Network.Interface, c.Head.BootDir, c.Head.StateDir)
	}
	c = parseOK(t, "[network]\ninterface = \"enp3s0\"\n[head]\nboot_dir = \"/srv/boot\"\nstate_dir = \"/srv/state\"\n")
	if c.Network.Interface != "enp3s0" || c.Head.BootDir != "/srv/boot" || c.Head.StateDir != "/srv/state" {
		t.Errorf("parsed: %+v %+v", c.Network, c.Head)
	}
	for _, tc := range []struct {
		text string
		want []string
	}{
		{"[network]\ninterface = \"eth0/1\"\n", []string{"network.interface", "eth0/1"}},
		{"[network]\ninterface = \"averyveryverylongname\"\n", []string{"network.interface"}},
		{"[head]\nboot_dir = \"live\"\n", []string{"head.boot_dir", "absolute"}},
		{"[head]\nstate_dir = \"\"\n", []string{"head.state_dir", "empty"}},
		{"[head]\nstate_dir = \"var/lib\"\n", []string{"head.state_dir", "absolute"}},
		{"[head]\nstatedir = \"/x\"\n", []string{"head.statedir", "did you mean head.state_dir"}},
	} {
		parseErr(t, tc.text, tc.want...)
	}
}
