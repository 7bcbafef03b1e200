package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/clusterdebian/clusterdebian/internal/registry"
)

// headClient returns a client of the head named by the --head flag's value
// (flag; default defaultHeadURL), with the cluster token (token; "" to
// only list nodes) and hc (nil: registry.NewClient's default).
func headClient(flag, token string, hc *http.Client) (*registry.Client, error) {
	base := defaultHeadURL()
	if flag != "" {
		u, err := registry.HeadURL(flag)
		if err != nil {
			return nil, fmt.Errorf("--head: %w", err)
		}
		base = u
	}
	return registry.NewClient(base, token, hc), nil
}

// listNodes asks the head for its node list.
func listNodes(ctx context.Context, c *registry.Client) ([]registry.Node, error) {
	nodes, _, err := c.Nodes(ctx)
	if err != nil {
		return nil, askError(err)
	}
	return nodes, nil
}

// askError adds to a failed request what the user can check: a head that
// cannot be reached is most likely not running, or not where --head says.
func askError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("asking the head: %w (is clusterdebian-head running? try --head)", err)
	}
	return err
}
