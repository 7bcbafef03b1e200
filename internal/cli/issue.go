package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"text/template"

	"github.com/spf13/cobra"

	"github.com/clusterdebian/clusterdebian/imagefiles"
	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/registry"
	"github.com/clusterdebian/clusterdebian/internal/role"
	"github.com/clusterdebian/clusterdebian/internal/version"
)

// renderIssue renders the login banner for a role. agetty fills in the
// escapes: \n the host name, \4 the IPv4 address, \S{VERSION_ID} Debian's.
// A literal backslash is written as two in the template. On node1, net is
// the head's account of its cluster network (contract.NetworkFile), nil
// before the head decided: then agetty's \4 stands for the address.
func renderIssue(r role.Role, net *registry.Network) (string, error) {
	t, err := template.New("issue").Parse(imagefiles.Template("issue.tmpl"))
	if err != nil {
		return "", err
	}
	// Text from elsewhere must not hold agetty escapes.
	esc := strings.NewReplacer(`\`, `\\`).Replace
	data := map[string]string{"Version": version.String(), "Role": r.Describe(), "Hint": "Log in, then read: man 7 cluster"}
	if net != nil && r == role.Head {
		data["Address"] = esc(net.Address)
		data["Network"] = esc(net.Summary)
		data["Warning"] = esc(net.Warning)
	}
	var sb strings.Builder
	err = t.Execute(&sb, data)
	return sb.String(), err
}

// readNetwork reads the head's network account at path; nil when there is
// none (yet) or it is unreadable: the banner then goes without.
func readNetwork(path string) *registry.Network {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var n registry.Network
	if json.Unmarshal(data, &n) != nil || n.Summary == "" {
		return nil
	}
	return &n
}

func newIssueCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:    "issue",
		Short:  "Write the login banner (/etc/issue) for this system's role",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r := role.Detect()
			var net *registry.Network
			if r == role.Head {
				net = readNetwork(filepath.Join(contract.RunDir, contract.NetworkFile))
			}
			text, err := renderIssue(r, net)
			if err != nil {
				return err
			}
			if out == "" {
				_, err := cmd.OutOrStdout().Write([]byte(text))
				return err
			}
			// agetty may read the banner at any moment: whole or not at all.
			return atomicfile.Write(out, []byte(text), 0o644)
		},
	}
	cmd.Flags().StringVar(&out, "write", "", "write the banner to this file instead of standard output")
	return cmd
}
