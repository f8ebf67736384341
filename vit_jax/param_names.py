"""Parameter names, in one place: every leaf of a parameter tree is named by its '/'-joined
path (`Transformer/encoderblock_3/MlpBlock_3/Dense_0/kernel`), the names of parameters.txt,
of checksums and sharding logs, and of every regex in the config (`frozen`, `lr_mults`,
`lora.targets`); and `FamilyNames`, what a model family's names mean (which block a
parameter belongs to, which come after the blocks), so that layer decay, `last<N>`
fine-tuning, LoRA and freezing ask the family instead of matching its names themselves.
(big_vision's `tree_flatten_with_names`, on JAX's own key paths.)
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Optional

import jax

HEADS = ("head/", "head_dist/")  # what fine-tuning replaces, in every family.


def name_of(path) -> str:
  """A JAX key path -> its '/'-joined name."""
  return jax.tree_util.keystr(tuple(path), simple=True, separator="/")


def named_leaves(tree, is_leaf=None) -> list[tuple[str, Any]]:
  return [(name_of(path), leaf) for path, leaf in
          jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]]


def names(tree) -> list[str]:
  return [name for name, _ in named_leaves(tree)]


def map_named(fn: Callable[..., Any], tree, *rest, is_leaf=None) -> Any:
  """fn(name, leaf, *leaves of `rest` at the same place) over every leaf."""
  return jax.tree_util.tree_map_with_path(lambda path, *leaves: fn(name_of(path), *leaves),
                                          tree, *rest, is_leaf=is_leaf)


@dataclasses.dataclass(frozen=True)
class FamilyNames:
  """What a family's parameter names mean (its module's `NAMES`; the default: no blocks)."""
  block: Optional[str] = None           # a block's prefix, '{}' its index.
  first_block: int = 0                  # the first block's index in its name.
  scanned_block: Optional[str] = None   # the scanned blocks' prefix (leading layer axis).
  top: tuple[str, ...] = HEADS          # prefixes of what comes after the blocks.
  input_kernel: str = "embedding/kernel"  # the first layer's (RGB filters in figures).
  lora_targets: str = r"(query|key|value|out|Dense_0|Dense_1)/kernel$"

  def _block_parts(self) -> tuple[str, str]:
    """The block prefix around its index, as regexes ('Transformer/encoderblock_', '/')."""
    before, after = self.block.split("{}")
    return re.escape(before), re.escape(after)

  def _block_regex(self) -> Optional[re.Pattern]:
    if self.block is None:
      return None
    before, after = self._block_parts()
    return re.compile(rf"(?:^|/){before}(\d+){after}")

  def block_index(self, name: str) -> Optional[int]:
    """The block a parameter belongs to (None: embeddings, the top, or a scanned block)."""
    regex = self._block_regex()
    found = regex.search(name) if regex is not None else None
    return int(found.group(1)) - self.first_block if found else None

  def is_scanned(self, name: str) -> bool:
    return self.scanned_block is not None and (
        name.startswith(self.scanned_block) or f"/{self.scanned_block}" in name)

  def is_top(self, name: str) -> bool:
    return name.startswith(self.top)

  def num_blocks(self, tree, *, numbered_only: bool = False) -> int:
    """Blocks in a parameter tree: numbered ones, or a scanned block's layer axis."""
    leaves = named_leaves(tree)
    indices = {i for name, _ in leaves if (i := self.block_index(name)) is not None}
    if indices or numbered_only:
      return max(indices, default=-1) + 1
    return next((int(leaf.shape[0]) for name, leaf in leaves if self.is_scanned(name)), 0)

  def trained_last(self, count: int, num_blocks: int) -> str:
    """The `frozen` regex that trains only the last `count` blocks and the top."""
    trained = "|".join(str(i + self.first_block)
                       for i in range(num_blocks - count, num_blocks))
    before, after = self._block_parts()
    top = "|".join(re.escape(prefix) for prefix in self.top)
    return rf"^(?!{top}|{before}(?:{trained}){after})"
