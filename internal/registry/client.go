package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/sshtrust"
)

// MaxAnswer bounds what Client reads of an answer. The node list is the
// largest: about 350 bytes a node, so some 23 MB for the 65533 nodes of a
// full /16.
const MaxAnswer = 64 << 20

// DefaultClientTimeout bounds each request of a Client made without its own
// http.Client: a head that accepted the connection and then hung must not
// stall an agent's heartbeats, or a command, forever.
const DefaultClientTimeout = 10 * time.Second

// Client talks to a head's node API (see NewAPI). It is safe for
// concurrent use.
type Client struct {
	base  string
	token string
	hc    *http.Client
	limit int64 // MaxAnswer; tests lower it
}

// NewClient returns a client of the API at base, the head's base URL
// ("http://10.99.0.1", no path; see HeadURL). token is the cluster token
// the POSTs need; "" for a client that only lists nodes. hc nil means an
// http.Client with DefaultClientTimeout.
func NewClient(base, token string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Timeout: DefaultClientTimeout}
	}
	return &Client{base: strings.TrimRight(base, "/"), token: token, hc: hc, limit: MaxAnswer}
}

// Base is the base URL the client asks.
func (c *Client) Base() string { return c.base }

// HeadURL turns the head's address ("10.99.0.1", "10.99.0.1:8080" or a URL
// like "http://10.99.0.1") into the API's base URL, for NewClient. An error
// says which form was expected.
func HeadURL(head string) (string, error) {
	if strings.Contains(head, "://") {
		u, err := url.Parse(head)
		if err != nil || u.Host == "" {
			return "", fmt.Errorf("%q is not a URL like http://10.99.0.1", head)
		}
		return strings.TrimRight(head, "/"), nil
	}
	if ap, err := netip.ParseAddrPort(head); err == nil {
		return "http://" + ap.String(), nil
	}
	if ip, err := netip.ParseAddr(head); err == nil {
		if ip.Is6() {
			return "http://[" + ip.String() + "]", nil
		}
		return "http://" + ip.String(), nil
	}
	return "", fmt.Errorf("%q is not an IP address", head)
}

// StatusError is an answer of the head other than success: its HTTP status
// and the message of its error body (or the body itself, if it is not one).
type StatusError struct {
	Status int
	Msg    string
}

// Error says what the head answered.
func (e *StatusError) Error() string {
	return fmt.Sprintf("head answered %d %s: %s", e.Status, http.StatusText(e.Status), e.Msg)
}

// Unwrap makes a 404 match ErrUnknownNode, which is what the head means by
// it: register again.
func (e *StatusError) Unwrap() error {
	if e.Status == http.StatusNotFound {
		return ErrUnknownNode
	}
	return nil
}

// Register registers the node req describes and returns the head's answer.
// An answer without a name is an error.
func (c *Client) Register(ctx context.Context, req RegisterRequest) (RegisterResponse, error) {
	var resp RegisterResponse
	_, data, err := c.do(ctx, http.MethodPost, PathRegister, req)
	if err != nil {
		return resp, err
	}
	if err := json.Unmarshal(data, &resp); err != nil {
		return resp, fmt.Errorf("head's answer to %s: %w", PathRegister, err)
	}
	if resp.Name == "" {
		return resp, fmt.Errorf("head's answer to %s has no name", PathRegister)
	}
	return resp, nil
}

// Heartbeat tells the head the node with mac is alive, with its stats, and
// returns the registry's generation (see GenerationHeader; zero from a head
// that does not send it). A head that does not know the node answers an
// error that matches ErrUnknownNode.
func (c *Client) Heartbeat(ctx context.Context, mac string, s Stats) (uint64, error) {
	gen, _, err := c.HeartbeatCA(ctx, mac, s)
	return gen, err
}

// HeartbeatCA is Heartbeat, and also returns the fingerprint of the head's
// SSH CA (sshtrust.CAHeader; "" from a head that signs no certificates or
// does not send it).
func (c *Client) HeartbeatCA(ctx context.Context, mac string, s Stats) (gen uint64, caFingerprint string, err error) {
	h, _, err := c.do(ctx, http.MethodPost, PathHeartbeat, HeartbeatRequest{MAC: mac, Stats: s})
	if err != nil {
		return 0, "", err
	}
	return generation(h), h.Get(sshtrust.CAHeader), nil
}

// leaveTries is how many times Leave asks.
const leaveTries = 3

// Leave tells the head the node with mac is going, retrying a failed
// request (up to three times in all) while ctx allows: at shutdown the
// request races the cancellation of a heartbeat in flight, and a
// connection torn down by that can fail it. A refusal (a 4xx other than
// 404) is not retried: asking again will not help. A 404 (the head did not
// know the node anyway) is success.
func (c *Client) Leave(ctx context.Context, mac string) error {
	var err error
	for range leaveTries {
		_, _, err = c.do(ctx, http.MethodPost, PathLeave, LeaveRequest{MAC: mac})
		if err == nil || errors.Is(err, ErrUnknownNode) || ctx.Err() != nil {
			break
		}
		var se *StatusError
		if errors.As(err, &se) && se.Status != http.StatusServiceUnavailable && se.Status < 500 {
			break
		}
	}
	if errors.Is(err, ErrUnknownNode) {
		return nil
	}
	return err
}

// Nodes returns the head's node list, sorted by address, and the registry's
// generation. It needs no token. An answer that is not a list (JSON null
// included) is an error, never an empty cluster.
func (c *Client) Nodes(ctx context.Context) ([]Node, uint64, error) {
	h, data, err := c.do(ctx, http.MethodGet, PathNodes, nil)
	if err != nil {
		return nil, 0, err
	}
	ns, err := DecodeNodes(data)
	if err != nil {
		return nil, 0, fmt.Errorf("head's answer to %s is %w", PathNodes, err)
	}
	return ns, generation(h), nil
}

// Prune has the head forget its nodes that are down, and returns them
// (none: an empty list).
func (c *Client) Prune(ctx context.Context) ([]Node, error) {
	_, data, err := c.do(ctx, http.MethodPost, PathPrune, nil)
	if err != nil {
		return nil, err
	}
	gone, err := DecodeNodes(data)
	if err != nil {
		return nil, fmt.Errorf("head's answer to %s is %w", PathPrune, err)
	}
	return gone, nil
}

// Call sends a request to another of the head's APIs (the Slurm status,
// verify's results) at path: in, when not nil, as JSON, with the client's
// token; the answer, when out is not nil, is decoded into it. Errors are
// as for the other calls: a *StatusError for an answer other than 2xx.
func (c *Client) Call(ctx context.Context, method, path string, in, out any) error {
	_, data, err := c.do(ctx, method, path, in)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("head's answer to %s: %w", path, err)
	}
	return nil
}

// DecodeNodes reads a node list as the API and `clusterdebian status
// --json` write it. Anything else, JSON null included, is an error: a
// caller must never take a failure for a cluster without nodes.
func DecodeNodes(data []byte) ([]Node, error) {
	var ns []Node
	if err := json.Unmarshal(data, &ns); err != nil {
		return nil, fmt.Errorf("not a node list: %w", err)
	}
	if ns == nil {
		return nil, errors.New("not a node list: null")
	}
	return ns, nil
}

func generation(h http.Header) uint64 {
	gen, _ := strconv.ParseUint(h.Get(GenerationHeader), 10, 64)
	return gen
}

// do sends a request (in as JSON, if not nil) and returns the answer's
// header and body. A transport failure comes back as the http.Client's
// *url.Error, an answer other than 2xx as a *StatusError.
func (c *Client) do(ctx context.Context, method, path string, in any) (http.Header, []byte, error) {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return nil, nil, err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.limit+1))
	if err != nil {
		return nil, nil, fmt.Errorf("reading the head's answer to %s: %w", path, err)
	}
	if int64(len(data)) > c.limit {
		return nil, nil, fmt.Errorf("head's answer to %s is larger than %d bytes", path, c.limit)
	}
	if resp.StatusCode/100 != 2 {
		var e errorResponse
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return nil, nil, &StatusError{Status: resp.StatusCode, Msg: msg}
	}
	return resp.Header, data, nil
}
