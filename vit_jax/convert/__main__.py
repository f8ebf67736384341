"""`python -m vit_jax.convert`: the converter's historical name; the command is
`vit_jax.cli.convert` (run by name, so this package imports no command)."""
import runpy

if __name__ == "__main__":
  runpy.run_module("vit_jax.cli.convert", run_name="__main__", alter_sys=True)
