"""A discrete-event simulator of a Plexus swarm that runs the project's real planner, span
choice, audit policy and ledger code. See docs/simulations.md."""
