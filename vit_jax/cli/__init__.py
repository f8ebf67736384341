"""The commands, one module each, all with the same conventions (`common.run`): absl flags,
`--config=FILE[:ARGS]` with `--config.field=value` overrides where a config applies, and
bad input reported as one `error: ...` line with exit status 2.

    python -m vit_jax.main        train or fine-tune (alias of vit_jax.cli.train)
    python -m vit_jax.cli.evaluate   run a saved run's evaluators on its checkpoint
    python -m vit_jax.cli.predict / visualize / benchmark / memory / prepare
"""
