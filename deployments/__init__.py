"""The Ray Serve match graph (see the match-service issue)."""
