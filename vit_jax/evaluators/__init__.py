"""Evaluators: `common` (the seam: registry, context, schedule) and the built-in ones,
`classification`, `fewshot`, `real` (ImageNet-ReaL) and `figures`."""
