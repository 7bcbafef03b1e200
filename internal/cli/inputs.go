package cli

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/clusterdebian/clusterdebian/internal/inputerr"
)

// Library packages say which of their inputs is wrong in their own terms
// (an *inputerr.Error about "ISO", "interface" or "network.subnet"); each
// command maps those names to the flag and cluster.toml key a person sets
// them with, so that the message names what to change.

// setting is where a person sets one input: a flag, a cluster.toml key, or
// both.
type setting struct{ flag, key string }

// String is "--subnet / network.subnet", "--iso" or "network.subnet".
func (s setting) String() string {
	switch {
	case s.flag != "" && s.key != "":
		return s.flag + " / " + s.key
	case s.flag != "":
		return s.flag
	}
	return s.key
}

// inputs maps the input names of the library errors one command can get
// to the command's settings.
type inputs map[string]setting

// explain rewrites every *inputerr.Error in err's tree whose input is in
// in, so that the message names its setting ("--iso x.iso: no such file"
// for "ISO x.iso: no such file"). The result still unwraps to err.
func (in inputs) explain(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	orig := msg
	// Outer errors first: an outer message holds an inner one verbatim, and
	// keeps it when its own label is replaced.
	for _, e := range inputerr.All(err) {
		if s, ok := in[e.Input]; ok {
			msg = strings.ReplaceAll(msg, e.Error(), e.Describe(s.String()))
		}
	}
	if msg == orig {
		return err
	}
	return &explained{msg: msg, err: err}
}

// explained is an error with a message that names flags and keys.
type explained struct {
	msg string
	err error
}

func (e *explained) Error() string { return e.msg }
func (e *explained) Unwrap() error { return e.err }

// explainErrors has cmd's errors name its flags and keys (see
// inputs.explain); it returns cmd.
func explainErrors(cmd *cobra.Command, in inputs) *cobra.Command {
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		return in.explain(run(c, args))
	}
	return cmd
}
