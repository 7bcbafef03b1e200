package registry

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/clusterdebian/clusterdebian/internal/sshtrust"
)

// API paths. The head mounts the handler at PathNodes and PathNodes+"/".
const (
	PathNodes     = "/api/v1/nodes"
	PathRegister  = PathNodes + "/register"
	PathHeartbeat = PathNodes + "/heartbeat"
	PathLeave     = PathNodes + "/leave"
	// PathPrune forgets the nodes that are down (clusterdebian prune).
	PathPrune = PathNodes + "/prune"
)

// GenerationHeader carries Registry.Generation on heartbeat answers and on
// the node list, so that an agent knows when to fetch the list again.
const GenerationHeader = "Clusterdebian-Generation"

// maxBody bounds request bodies: the largest legitimate one, a register
// request with an RSA host key, is about 1 KiB.
const maxBody = 64 << 10

// HostCertValidity is the validity the API signs host certificates with:
// none (see sshtrust.CA.SignHost for why).
const HostCertValidity = 0

// RegisterResponse answers a registration.
type RegisterResponse struct {
	// Name is the node's name, node<N>.
	Name string `json:"name"`
	// HeartbeatSeconds is how often the head expects a heartbeat.
	HeartbeatSeconds int `json:"heartbeat_seconds"`
	// SSHHostCertificate certifies the node's SSHHostKey (authorized_keys
	// format, for sshd's HostCertificate); empty without a key or a CA.
	SSHHostCertificate string `json:"ssh_host_certificate,omitempty"`
	// SSHCAPublicKey is the CA that signed it.
	SSHCAPublicKey string `json:"ssh_ca_public_key,omitempty"`
	// RootAuthorizedKeys are the public keys (authorized_keys lines) of
	// root on node1, which a node with its own root authorizes so that
	// node1 can run exec and shutdown on it.
	RootAuthorizedKeys string `json:"root_authorized_keys,omitempty"`
	// MungeKey is the cluster's munge key (Slurm's authentication, see
	// internal/slurm), for the node's munged. Only root on the node may
	// have it, and the cluster token is on every node's kernel command
	// line, which any user there can read: so the head sends the key only
	// to a registration that comes from the address it registers and from
	// a privileged port (below 1024), which only root there can bind (as
	// NFS's "secure" exports trust it).
	MungeKey []byte `json:"munge_key,omitempty"`
	// SlurmController is node1's address, where the node's slurmd fetches
	// Slurm's configuration; set with MungeKey.
	SlurmController string `json:"slurm_controller,omitempty"`
	// KeepLease says that node1 hands out no addresses (it serves
	// proxyDHCP beside a LAN's DHCP server, or no DHCP): the node's
	// address is a lease from another server, which the node must renew
	// itself (RFC 2131 section 4.4.5), or the server may give it away.
	KeepLease bool `json:"keep_lease,omitempty"`
}

// HeartbeatRequest is a node's periodic sign of life.
type HeartbeatRequest struct {
	MAC string `json:"mac"`
	Stats
}

// LeaveRequest is sent by a node shutting down cleanly.
type LeaveRequest struct {
	MAC string `json:"mac"`
}

// errorResponse is the body of every error answer.
type errorResponse struct {
	Error string `json:"error"`
}

// APIOption changes how NewAPI's handler checks requests.
type APIOption func(*api)

// RootKeys has registrations answered with node1's root public keys
// (RegisterResponse.RootAuthorizedKeys).
func RootKeys(keys string) APIOption {
	return func(a *api) { a.rootKeys = keys }
}

// OnPrune has fn called after each prune request (with the token) with the
// nodes it removed, possibly none, once the registry forgot them: the head
// takes them, and the machines that are gone without being registered,
// out of its NFS exports.
func OnPrune(fn func(gone []Node)) APIOption {
	return func(a *api) { a.onPrune = fn }
}

// Slurm has registrations from root on the node answered with the
// cluster's munge key and the Slurm controller's address
// (RegisterResponse.MungeKey, SlurmController).
func Slurm(mungeKey []byte, controller string) APIOption {
	return func(a *api) { a.mungeKey, a.slurmController = mungeKey, controller }
}

// KeepLeases has registrations answered with KeepLease: node1 serves no
// addresses, so each node renews its own lease.
func KeepLeases() APIOption {
	return func(a *api) { a.keepLease = true }
}

// FromNodeRoot has the API take a node's registration, heartbeats and
// leave only from root on that node: from its address (the one it
// registers, then the one the registry holds for its MAC) and from a
// privileged port, which only root binds (as NFS's "secure" exports trust
// it). The cluster token alone is not enough for those: it is on every
// node's kernel command line, which any user there can read, and with it
// a user could make another node leave (out of the hostfiles, its Slurm
// jobs ended) or take its record and a host certificate for its name.
// Others get 403. Unknown MACs still get 404: the agent registers again.
func FromNodeRoot() APIOption {
	return func(a *api) { a.fromNode = true }
}

type api struct {
	keepLease bool
	fromNode  bool // see FromNodeRoot
	onPrune   func([]Node)
	mungeKey  []byte
	// slurmController is node1's address, for slurmd.
	slurmController string
	rootKeys        string
	reg             *Registry
	token           [sha256.Size]byte
	hasTok          bool
	trust           *sshtrust.CA
	log             *slog.Logger
}

// NewAPI returns the HTTP handler of the node API:
//
//	POST /api/v1/nodes/register   RegisterRequest  -> RegisterResponse
//	POST /api/v1/nodes/heartbeat  HeartbeatRequest -> 204; 404 if unknown
//	POST /api/v1/nodes/leave      LeaveRequest     -> 204; 404 if unknown
//	POST /api/v1/nodes/prune      (no body)        -> []Node removed
//	GET  /api/v1/nodes            []Node
//
// The POSTs need "Authorization: Bearer <token>", the cluster token every
// node gets on its kernel command line; without it they answer 401 and
// change nothing. An empty token refuses every POST: a head that lost its
// token must not accept anyone. The GET is open, for `clusterdebian
// status` on any node, and shows nothing secret. trust signs the nodes' SSH
// host keys; nil signs nothing. logger nil means slog.Default().
func NewAPI(reg *Registry, token string, trust *sshtrust.CA, logger *slog.Logger, opts ...APIOption) http.Handler {
	if logger == nil {
		logger = slog.Default()
	}
	a := &api{reg: reg, trust: trust, log: logger, hasTok: token != ""}
	// Comparing hashes makes the comparison's time independent of the
	// token's length too, not only of its content.
	a.token = sha256.Sum256([]byte(token))
	for _, o := range opts {
		o(a)
	}
	mux := http.NewServeMux()
	for _, rt := range Routes() {
		h := a.handlerFor(rt)
		if rt.NeedsToken {
			h = a.authed(h)
		}
		mux.HandleFunc(rt.Method+" "+rt.Pattern, h)
	}
	return mux
}

// Route is one route of the node API: the method and http.ServeMux
// pattern it is served at, and whether it needs the cluster token.
type Route struct {
	Method, Pattern string
	NeedsToken      bool
}

// Routes is every route NewAPI serves, the one list that both NewAPI and
// the head's access audit read. Every route that changes state needs the
// token.
func Routes() []Route {
	return []Route{
		{http.MethodGet, PathNodes, false},
		{http.MethodGet, PathNodes + "/{$}", false},
		{http.MethodPost, PathRegister, true},
		{http.MethodPost, PathHeartbeat, true},
		{http.MethodPost, PathLeave, true},
		{http.MethodPost, PathPrune, true},
	}
}

// handlerFor is the handler of a route of Routes.
func (a *api) handlerFor(rt Route) http.HandlerFunc {
	switch rt.Pattern {
	case PathNodes, PathNodes + "/{$}":
		return a.list
	case PathRegister:
		return a.register
	case PathHeartbeat:
		return a.heartbeat
	case PathLeave:
		return a.leave
	case PathPrune:
		return a.prune
	}
	panic("registry: no handler for route " + rt.Pattern)
}

// authed wraps a handler with the token check.
func (a *api) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if !ok || !a.hasTok || subtle.ConstantTimeCompare(got[:], a.token[:]) != 1 {
			a.log.Warn("node API: request without the cluster token refused", "path", r.URL.Path, "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="clusterdebian"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong cluster token (clusterdebian.token= on the kernel command line)")
			return
		}
		h(w, r)
	}
}

func (a *api) list(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set(GenerationHeader, strconv.FormatUint(a.reg.Generation(), 10))
	writeJSON(w, http.StatusOK, a.reg.Nodes())
}

func (a *api) register(w http.ResponseWriter, r *http.Request) {
	var req RegisterRequest
	if !decode(w, r, &req) {
		return
	}
	req.Role = RoleNode // only the head registers as the head, in process
	if !a.nodeRoot(w, r, "register", req.MAC, req.IP) {
		return
	}
	var hostKey ssh.PublicKey
	if strings.TrimSpace(req.SSHHostKey) != "" {
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(req.SSHHostKey))
		if err != nil {
			writeError(w, http.StatusBadRequest, "ssh_host_key: "+err.Error())
			return
		}
		if _, isCert := k.(*ssh.Certificate); isCert {
			writeError(w, http.StatusBadRequest, "ssh_host_key: a plain public key is needed, not a certificate")
			return
		}
		hostKey = k
	}
	node, err := a.reg.Register(req)
	if !a.regError(w, err, "register", req.MAC) {
		return
	}
	resp := RegisterResponse{
		Name:               node.Name,
		HeartbeatSeconds:   int(math.Ceil(a.reg.Interval().Seconds())),
		RootAuthorizedKeys: a.rootKeys,
		KeepLease:          a.keepLease,
	}
	if len(a.mungeKey) > 0 {
		if fromRoot(r, node.IP) {
			resp.MungeKey, resp.SlurmController = a.mungeKey, a.slurmController
		} else {
			a.log.Warn("node API: no munge key for a registration that is not root's (from an unprivileged port, or another address); Slurm will not run there",
				"node", node.Name, "remote", r.RemoteAddr)
		}
	}
	if a.trust != nil && hostKey != nil {
		cert, err := a.trust.SignHost(hostKey, sshtrust.HostPrincipals(node.Name, node.IP), HostCertValidity)
		if err != nil {
			a.log.Error("node API: signing host key", "node", node.Name, "err", err)
			writeError(w, http.StatusInternalServerError, "signing the host key failed")
			return
		}
		resp.SSHHostCertificate = cert
		resp.SSHCAPublicKey = a.trust.PublicKey()
	}
	a.log.Info("node registered", "node", node.Name, "mac", node.MAC, "ip", node.IP, "cores", node.Cores,
		"mem_kib", node.MemTotalKiB, "host_cert", resp.SSHHostCertificate != "")
	writeJSON(w, http.StatusOK, resp)
}

// ownNode checks, under FromNodeRoot, that a request about the node with
// mac comes from root on that node, and answers 403 if not. A MAC the
// registry does not know passes: the registry answers 404 for it.
func (a *api) ownNode(w http.ResponseWriter, r *http.Request, what, mac string) bool {
	if !a.fromNode {
		return true
	}
	n, ok := a.reg.Lookup(mac)
	if !ok {
		return true
	}
	return a.nodeRoot(w, r, what, mac, n.IP)
}

// nodeRoot checks, under FromNodeRoot, that r comes from root at ip, and
// answers 403 if not.
func (a *api) nodeRoot(w http.ResponseWriter, r *http.Request, what, mac, ip string) bool {
	if !a.fromNode || fromRoot(r, ip) {
		return true
	}
	a.log.Warn("node API: request refused: not from root on the node it is about", "request", what, "mac", mac, "node_ip", ip, "remote", r.RemoteAddr)
	writeError(w, http.StatusForbidden, what+" for "+ip+" must come from root on that node (its address, a source port below 1024)")
	return false
}

// fromRoot reports whether a request comes from root on the machine at ip:
// from that address, and from a privileged port, which only root binds.
func fromRoot(r *http.Request, ip string) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && ap.Addr().Unmap().String() == ip && ap.Port() > 0 && ap.Port() < 1024
}

func (a *api) heartbeat(w http.ResponseWriter, r *http.Request) {
	var req HeartbeatRequest
	if !decode(w, r, &req) {
		return
	}
	if !a.ownNode(w, r, "heartbeat", req.MAC) {
		return
	}
	if !a.regError(w, a.reg.Heartbeat(req.MAC, req.Stats), "heartbeat", req.MAC) {
		return
	}
	w.Header().Set(GenerationHeader, strconv.FormatUint(a.reg.Generation(), 10))
	if a.trust != nil {
		// A node whose certificate is from another CA (node1's was
		// damaged and made anew) sees it here, and registers again.
		w.Header().Set(sshtrust.CAHeader, a.trust.Fingerprint())
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *api) leave(w http.ResponseWriter, r *http.Request) {
	var req LeaveRequest
	if !decode(w, r, &req) {
		return
	}
	if !a.ownNode(w, r, "leave", req.MAC) {
		return
	}
	if !a.regError(w, a.reg.Leave(req.MAC), "leave", req.MAC) {
		return
	}
	a.log.Info("node left", "mac", req.MAC)
	w.WriteHeader(http.StatusNoContent)
}

// prune forgets the nodes that are down. It takes the cluster token like
// the nodes' requests: the token file is root's on node1, so only root there
// (`clusterdebian prune`) or a node holding the token can prune, and a node
// can only remove nodes that stopped heartbeating anyway.
func (a *api) prune(w http.ResponseWriter, _ *http.Request) {
	gone := a.reg.Prune()
	if gone == nil {
		gone = []Node{}
	}
	for _, n := range gone {
		a.log.Info("node pruned", "node", n.Name, "mac", n.MAC, "ip", n.IP)
	}
	if a.onPrune != nil {
		a.onPrune(gone)
	}
	writeJSON(w, http.StatusOK, gone)
}

// regError answers a registry error and reports whether the request may go
// on.
func (a *api) regError(w http.ResponseWriter, err error, what, mac string) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, ErrUnknownNode):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrConflict):
		a.log.Warn("node API: "+what+" refused", "mac", mac, "err", err)
		writeError(w, http.StatusConflict, err.Error())
	default:
		a.log.Error("node API: "+what, "mac", mac, "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
	}
	return false
}

// decode reads one JSON value of at most maxBody bytes into v, answering
// 413, 408 (the body's deadline passed) or 400 itself when it cannot. Anything after the value but white
// space is refused too: a body that is not exactly one request was not
// written by a Client.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	err := dec.Decode(v)
	if err == nil {
		if dec.Decode(&json.RawMessage{}) != io.EOF {
			err = errors.New("more than one JSON value in the body")
		}
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", maxBody))
		case errors.Is(err, os.ErrDeadlineExceeded):
			// The server's body deadline (internal/httpguard): the client
			// sent its headers, then too little of its body.
			writeError(w, http.StatusRequestTimeout, "the request body did not arrive in time")
		default:
			writeError(w, http.StatusBadRequest, "bad JSON: "+err.Error())
		}
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorResponse{Error: msg})
}
