"""The commands, one module each, all with the same conventions (`common.run`): absl flags,
`--config=FILE[:ARGS]` with `--config.field=value` overrides where a config applies, and
bad input reported as one `error: ...` line with exit status 2.

    python -m vit_jax.main        train or fine-tune (alias of vit_jax.cli.train)
    python -m vit_jax.cli.evaluate   run a saved run's evaluators on its checkpoint
    python -m vit_jax.cli.predict / visualize / benchmark / memory / prepare
    python -m vit_jax.cli.sweep   (or vit_jax.sweep)   grids of runs
    python -m vit_jax.cli.small_data   small data from scratch, augmentation chosen on val
    python -m vit_jax.cli.convert (or vit_jax.convert) checkpoints in and out
    python -m vit_jax.cli.models  (or vit_jax.models)  the presets

Each command imports JAX and the library inside `main`, so that `--help` and a bad flag
answer at once.
"""
