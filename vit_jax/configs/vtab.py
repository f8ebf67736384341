r"""One VTAB-1k task with the ViT paper's fine-tuning settings (Appendix B.1.1): SGD momentum
0.9, batch 512, 2,500 steps, lr 0.01, no weight decay, clipping at global norm 1, 384 px;
random crops and flips for the natural and specialized tasks, none for the structured
ones (their labels are positions, counts, distances and orientations).

    python -m vit_jax.main --config=configs/vtab.py:clevr_count --workdir=DIR \
        --config.pretrained=/path/to/ViT-B_16.npz [--config.model_name=ViT-B_16]

Arguments: <task>[,<phase>]. Phase `select` (default) trains on train800 and evaluates on
val200 (`val_accuracy`), what hyper-parameters are chosen by; `final` trains on
train800val200 and evaluates on test. `python -m vit_jax.cli.transfer` runs the whole
protocol (the grid, the choice, the final runs, the table) over many tasks.
Tasks: vit_jax/data/vtab.py (task_adaptation's definitions).
"""
import ml_collections

from vit_jax import config as config_lib
from vit_jax.data import vtab

PHASES = {"select": ("train800", "val", "val200"), "final": ("train800val200", "test", "test")}


def get_config(arg=None):
  name, _, phase = (arg or "").partition(",")
  task = vtab.task(name)
  phase = phase or "select"
  if phase not in PHASES:
    raise ValueError(f"VTAB phase {phase!r} is not one of {sorted(PHASES)}.")
  train, evaluator, split = PHASES[phase]
  c = config_lib.base_config()
  c.dataset = f"vtab:{task.name}"
  c.train_split, c.val_split, c.test_split = train, "", split
  c.evals = ml_collections.ConfigDict(
      {evaluator: config_lib.classification_eval(every=0, split=split)})
  # The paper's VTAB setting: SGD 0.01 (base_config's momentum, no decay, clipping at 1).
  c.lr, c.total_steps = 0.01, 2500
  c.warmup_steps = c.get_ref("total_steps") // 10
  c.batch_size, c.eval_batch_size = 512, 512
  c.model.dtype, c.optimizer_dtype = "bfloat16", "bfloat16"
  if task.augment:
    c.pp_train = "to_rgb|resize(416)|random_crop(384)|flip_lr|value_range(-1, 1)"
  else:
    c.pp_train = "to_rgb|resize(384)|value_range(-1, 1)"
  c.pp_eval = "to_rgb|resize(384)|value_range(-1, 1)"
  c.checkpoint_every = 500
  c.log_every = 100
  return c.lock()
