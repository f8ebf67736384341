"""`python -m vit_jax.main`: the training command under the official repository's name
(the command itself is `vit_jax.cli.train`)."""
from vit_jax.cli import common
from vit_jax.cli.train import main

if __name__ == "__main__":
  common.run(main)
