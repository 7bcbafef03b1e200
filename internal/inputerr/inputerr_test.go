package inputerr

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"testing"
)

func TestErrorAndDescribe(t *testing.T) {
	e := Errorf("ISO", "out/x.iso", "no such file: %w", fs.ErrNotExist)
	if got, want := e.Error(), "ISO out/x.iso: no such file: file does not exist"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got, want := e.Describe("--iso"), "--iso out/x.iso: no such file: file does not exist"; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
	if !errors.Is(e, fs.ErrNotExist) {
		t.Error("Error does not unwrap to its cause")
	}
	if got, want := New("ISO", "", errors.New("give one")).Error(), "ISO: give one"; got != want {
		t.Errorf("without a value: %q, want %q", got, want)
	}
}

func TestAll(t *testing.T) {
	a := Errorf("a", "1", "bad")
	b := Errorf("b", "", "worse")
	c := Errorf("c", "", "inner")
	outer := Errorf("d", "", "wraps %w", c)
	err := fmt.Errorf("vm up: %w", errors.Join(a, fmt.Errorf("%w and %w", b, outer)))
	var inputs []string
	for _, e := range All(err) {
		inputs = append(inputs, e.Input)
	}
	if want := []string{"a", "b", "d", "c"}; !slices.Equal(inputs, want) {
		t.Errorf("All found %q, want %q", inputs, want)
	}
	if !Is(err, "c") || Is(err, "x") {
		t.Errorf("Is(c) = %v, Is(x) = %v; want true, false", Is(err, "c"), Is(err, "x"))
	}
	if All(nil) != nil || All(errors.New("plain")) != nil {
		t.Error("All of an error without inputs is not empty")
	}
}
