// Package scripts holds no Go code: its tests run the shell functions of
// lib.sh (beside them) under bash, above all ensure_go, which installs the Go
// toolchain that go.mod asks for on a machine that has none.
package scripts
