"""Input pipeline: sources (TFDS, image folders, offline digits/MNIST), preprocessing ops,
and the sharded, resumable train/eval streams."""
