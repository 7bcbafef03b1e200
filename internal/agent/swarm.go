package agent

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/clusterdebian/clusterdebian/internal/contract"
	"github.com/clusterdebian/clusterdebian/internal/swarm"
)

// serveLayers has a RAM-root node serve the image layers its initrd
// fetched and verified against node1's sums (contract.VerifiedLayersFile)
// to the nodes that boot after it, until ctx is done: read-only, those
// files only, on contract.SwarmPort. It starts before the agent registers,
// since node1 offers a node as a peer only once it registered after its
// layers were verified. Without a verified layer it serves nothing.
func serveLayers(ctx context.Context, o Options, log *slog.Logger) {
	list, err := os.ReadFile(filepath.Join(o.RunDir, contract.VerifiedLayersFile))
	if err != nil {
		log.Warn("swarm: the initrd verified no layers; serving none to other nodes", "err", err)
		return
	}
	layers := swarm.Verified(list, o.SwarmSums)
	if len(layers) == 0 {
		log.Warn("swarm: no layer of node1's manifest is verified here; serving none", "file", filepath.Join(o.RunDir, contract.VerifiedLayersFile))
		return
	}
	dir := o.SwarmDir
	if dir == "" {
		dir = contract.LiveMediaDir
	}
	log.Info("swarm: serving the verified layers to other nodes", "layers", layers, "dir", dir, "port", contract.SwarmPort)
	go func() {
		if err := swarm.Serve(ctx, swarm.ListenAddr, &swarm.Server{Dir: dir, Layers: layers, Logger: log}); err != nil {
			log.Error("swarm: cannot serve the layers", "err", err)
		}
	}()
}
