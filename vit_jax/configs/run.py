r"""The config of an existing run (its workdir's config.json), to change on the command line.

    python -m vit_jax.cli.evaluate --config=configs/run.py:/tmp/vit_quickstart \
        --config.mesh.data=1 --config.mesh.fsdp=-1
    python -m vit_jax.main --config=configs/run.py:/tmp/vit_quickstart --workdir=/tmp/longer \
        --config.total_steps=1600 --config.pretrained=/tmp/vit_quickstart
"""
from vit_jax import config as config_lib
from vit_jax.runtime import workdir
from vit_jax.errors import UserError


def get_config(arg=None):
  if not arg:
    raise UserError("configs/run.py needs the run's workdir: --config=configs/run.py:/path/to/run")
  return config_lib.from_stored(workdir.read_config(arg)).lock()
