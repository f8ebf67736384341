"""Choosing hyper-parameters: grid sweeps and the small-data strength search, each run
in its own process."""
