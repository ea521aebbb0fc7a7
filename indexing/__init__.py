"""Ray Data jobs: signals, training, sharding, publish."""
