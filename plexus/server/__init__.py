"""The block server: `plexus serve` runs a span of blocks for the swarm's clients."""
