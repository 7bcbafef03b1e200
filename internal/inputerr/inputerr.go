// Package inputerr lets a library say which of its inputs an error is
// about, in the library's own terms ("ISO", "interface", or a cluster.toml
// key such as "network.subnet"), so that the caller that took the value from
// a person can name the flag or key to change. The library knows what is
// wrong; only the command line knows that the value came from --iso.
//
// It is a leaf: it imports nothing of this module.
package inputerr

import "fmt"

// Error says what is wrong with one input.
type Error struct {
	// Input names the input as the library calls it, e.g. "ISO" or
	// "network.subnet"; a library exports its names as constants.
	Input string
	// Value is the value given, as the message shows it ("" when none was
	// given or it adds nothing).
	Value string
	// Err says what is wrong with it.
	Err error
}

// New returns an *Error about input with value.
func New(input, value string, err error) *Error {
	return &Error{Input: input, Value: value, Err: err}
}

// Errorf is New with a formatted message (which may wrap an error with %w).
func Errorf(input, value, format string, args ...any) *Error {
	return New(input, value, fmt.Errorf(format, args...))
}

// Error is "Input Value: Err", e.g. `ISO out/x.iso: no such file`.
func (e *Error) Error() string { return e.Describe(e.Input) }

// Describe is Error with label in place of Input: a caller passes the flag
// or key that sets the input, e.g. `--iso out/x.iso: no such file`.
func (e *Error) Describe(label string) string {
	s := label
	if e.Value != "" {
		s += " " + e.Value
	}
	return s + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// All returns every *Error in err's tree (through Unwrap, errors.Join and
// multiple %w), outermost first.
func All(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if e, ok := err.(*Error); ok {
			out = append(out, e)
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	return out
}

// Is reports whether err is about input.
func Is(err error, input string) bool {
	for _, e := range All(err) {
		if e.Input == input {
			return true
		}
	}
	return false
}
