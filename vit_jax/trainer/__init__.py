"""The trainer: `loop.train_and_evaluate(config, workdir)` and the parts it is made of
(setup, build, steps, optimizer and parameter groups, checkpoints, recovery, metrics)."""
