"""`python -m vit_jax.models --list`: the command is `vit_jax.cli.models` (run by name, so
this package imports no command)."""
import runpy

if __name__ == "__main__":
  runpy.run_module("vit_jax.cli.models", run_name="__main__", alter_sys=True)
