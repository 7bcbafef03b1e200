package head

import "fmt"

// OptionError is an Options field whose value the head cannot work with:
// New returns one for a bad subnet, a boot folder without a kernel, an
// interface that does not exist, and the like. Field is the field's name in
// Options ("Subnet", "BootDir", "Interface", ...); Err says what is wrong
// with its value. Callers that took the value from elsewhere (the CLI: a
// flag, a cluster.toml key) tell the user where to change it by Field.
type OptionError struct {
	Field string
	Err   error
}

func (e *OptionError) Error() string { return "head option " + e.Field + ": " + e.Err.Error() }

func (e *OptionError) Unwrap() error { return e.Err }

// optionErrorf returns an *OptionError for field.
func optionErrorf(field, format string, args ...any) error {
	return &OptionError{Field: field, Err: fmt.Errorf(format, args...)}
}
