"""`python -m vit_jax.sweep`: the sweep command's short name; the command is
`vit_jax.cli.sweep` (run by name: a shim imports nothing of the package)."""
import runpy

if __name__ == "__main__":
  runpy.run_module("vit_jax.cli.sweep", run_name="__main__", alter_sys=True)
