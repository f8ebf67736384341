"""`python -m vit_jax.main`: the training command under the official repository's name
(the command is `vit_jax.cli.train`, run by name: a shim imports nothing of the package)."""
import runpy

if __name__ == "__main__":
  runpy.run_module("vit_jax.cli.train", run_name="__main__", alter_sys=True)
