package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/clusterdebian/clusterdebian/internal/agent"
	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// headBase returns the head's base URL: the --head flag's value if given,
// else defaultHeadURL.
func headBase(flag string) (string, error) {
	if flag == "" {
		return defaultHeadURL(), nil
	}
	u, err := agent.HeadURL(flag)
	if err != nil {
		return "", fmt.Errorf("--head: %w", err)
	}
	return u, nil
}

// fetchNodes asks the head at base for its node list, and returns it with
// the raw answer.
func fetchNodes(base string) ([]registry.Node, []byte, error) {
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get(strings.TrimRight(base, "/") + registry.PathNodes)
	if err != nil {
		return nil, nil, fmt.Errorf("asking the head: %w (is clusterdebian-head running? try --head)", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("the head answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var nodes []registry.Node
	if err := json.Unmarshal(body, &nodes); err != nil {
		return nil, nil, fmt.Errorf("the head's answer is not a node list: %w", err)
	}
	return nodes, body, nil
}
