"""Evaluators: `common` (the seam: registry, context, schedule) and the built-in ones,
`classification`, `fewshot`, `knn`, `real` (ImageNet-ReaL), `figures` and
`reconstruction` (a self-supervised objective's own loss)."""
