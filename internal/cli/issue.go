package cli

import (
	"strings"
	"text/template"

	"github.com/spf13/cobra"

	"github.com/clusterdebian/clusterdebian/imagefiles"
	"github.com/clusterdebian/clusterdebian/internal/atomicfile"
	"github.com/clusterdebian/clusterdebian/internal/role"
	"github.com/clusterdebian/clusterdebian/internal/version"
)

// renderIssue renders the login banner for a role. agetty fills in the
// escapes: \n the host name, \4 the IPv4 address, \S{VERSION_ID} Debian's.
// A literal backslash is written as two in the template.
func renderIssue(r role.Role) (string, error) {
	t, err := template.New("issue").Parse(imagefiles.Template("issue.tmpl"))
	if err != nil {
		return "", err
	}
	hint := "Log in, then read: man 7 cluster"
	var sb strings.Builder
	err = t.Execute(&sb, map[string]string{"Version": version.String(), "Role": r.Describe(), "Hint": hint})
	return sb.String(), err
}

func newIssueCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:    "issue",
		Short:  "Write the login banner (/etc/issue) for this system's role",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			text, err := renderIssue(role.Detect())
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
