package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
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
	_, err := c.do(ctx, http.MethodPost, path, in, out)
	return err
}

// do sends a request (in as JSON, if not nil), decodes the answer into out
// (if not nil) and returns the answer's header.
func (c *client) do(ctx context.Context, method, path string, in, out any) (http.Header, error) {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	// The node list of a large cluster is the largest answer: about 300
	// bytes a node.
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return nil, &StatusError{Status: resp.StatusCode, Msg: msg}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return nil, fmt.Errorf("head's answer to %s: %w", path, err)
		}
	}
	return resp.Header, nil
}

func (c *client) register(ctx context.Context, req registry.RegisterRequest) (registry.RegisterResponse, error) {
	var resp registry.RegisterResponse
	err := c.post(ctx, registry.PathRegister, req, &resp)
	if err == nil && resp.Name == "" {
		err = fmt.Errorf("head's answer to %s has no name", registry.PathRegister)
	}
	return resp, err
}

// heartbeat returns the registry's generation (see registry.GenerationHeader;
// zero from a head that does not send it).
func (c *client) heartbeat(ctx context.Context, mac string, s registry.Stats) (uint64, error) {
	h, err := c.do(ctx, http.MethodPost, registry.PathHeartbeat, registry.HeartbeatRequest{MAC: mac, Stats: s}, nil)
	if err != nil {
		return 0, err
	}
	gen, _ := strconv.ParseUint(h.Get(registry.GenerationHeader), 10, 64)
	return gen, nil
}

// nodes returns the head's node list and its generation.
func (c *client) nodes(ctx context.Context) ([]registry.Node, uint64, error) {
	var ns []registry.Node
	h, err := c.do(ctx, http.MethodGet, registry.PathNodes, nil, &ns)
	if err != nil {
		return nil, 0, err
	}
	gen, _ := strconv.ParseUint(h.Get(registry.GenerationHeader), 10, 64)
	return ns, gen, nil
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
