package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// client talks to the head's node API.
type client struct {
	base  string // http://10.99.0.1, no trailing slash
	token string
	hc    *http.Client
}

func newClient(base, token string, hc *http.Client) *client {
	if hc == nil {
		// A timeout per request: a head that accepted the connection and
		// then hung must not stall the heartbeat loop forever.
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return &client{base: strings.TrimRight(base, "/"), token: token, hc: hc}
}

// StatusError is an answer of the head other than success.
type StatusError struct {
	Status int
	Msg    string
}

// Error says what the head answered.
func (e *StatusError) Error() string {
	return fmt.Sprintf("head answered %d %s: %s", e.Status, http.StatusText(e.Status), e.Msg)
}

// Unwrap makes a 404 match registry.ErrUnknownNode, which is what the head
// means by it: register again.
func (e *StatusError) Unwrap() error {
	if e.Status == http.StatusNotFound {
		return registry.ErrUnknownNode
	}
	return nil
}

// post sends in as JSON to path and decodes the answer into out (if not nil).
func (c *client) post(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return &StatusError{Status: resp.StatusCode, Msg: msg}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("head's answer to %s: %w", path, err)
		}
	}
	return nil
}

func (c *client) register(ctx context.Context, req registry.RegisterRequest) (registry.RegisterResponse, error) {
	var resp registry.RegisterResponse
	err := c.post(ctx, registry.PathRegister, req, &resp)
	if err == nil && resp.Name == "" {
		err = fmt.Errorf("head's answer to %s has no name", registry.PathRegister)
	}
	return resp, err
}

func (c *client) heartbeat(ctx context.Context, mac string, s registry.Stats) error {
	return c.post(ctx, registry.PathHeartbeat, registry.HeartbeatRequest{MAC: mac, Stats: s}, nil)
}

// leave tells the head the node is going, retrying a failed request while
// ctx allows: at shutdown the request races the cancellation of a
// heartbeat in flight, and a connection torn down by that can fail it.
// A 404 (the head did not know the node anyway) is success.
func (c *client) leave(ctx context.Context, mac string) error {
	var err error
	for range 3 {
		err = c.post(ctx, registry.PathLeave, registry.LeaveRequest{MAC: mac}, nil)
		if err == nil || errors.Is(err, registry.ErrUnknownNode) || ctx.Err() != nil {
			break
		}
		var se *StatusError
		if errors.As(err, &se) && se.Status != http.StatusServiceUnavailable && se.Status < 500 {
			break // the head refused it; asking again will not help
		}
	}
	if errors.Is(err, registry.ErrUnknownNode) {
		return nil
	}
	return err
}
