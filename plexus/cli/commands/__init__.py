"""Sub-commands of `plexus`; each module registers itself (see plexus.cli)."""
