"""Self-supervised objectives: MAE against transformers' ViTMAEForPreTraining (same weights,
same noise), MAE and masked patch prediction runs in the trainer, their encoders
fine-tuned through --config.pretrained, and the bad-input lines."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from tests.test_convert import nchw, photos, randomise, save_hf
from tests.test_train import final_params, tiny
from tests.torch_refs import import_references
from vit_jax import config as config_lib
from vit_jax import convert, objectives
from vit_jax.errors import UserError
from vit_jax.models import create_model
from vit_jax.models import mae as mae_lib
from vit_jax.models import masked_patch
from vit_jax.models import posemb as posemb_lib
from vit_jax.trainer import loop

torch, _, transformers = import_references()


def _hf_mae(norm_pix_loss: bool, size: int = 32, fixed_tables: bool = True):
  t = transformers
  config = t.ViTMAEConfig(image_size=size, patch_size=8, hidden_size=64, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=128, mask_ratio=0.75,
                          decoder_num_hidden_layers=2, decoder_hidden_size=32,
                          decoder_num_attention_heads=4, decoder_intermediate_size=48,
                          norm_pix_loss=norm_pix_loss)
  reference = randomise(t.ViTMAEForPreTraining(config))
  if not fixed_tables:  # random position tables: read as learned ones.
    return reference
  with torch.no_grad():  # MAE's fixed tables, as the Hub's checkpoints hold them.
    grid = size // 8
    reference.vit.embeddings.position_embeddings.copy_(torch.from_numpy(
        np.concatenate([np.zeros((1, 64)), posemb_lib.sincos_2d(grid, grid, 64, mae=True)])[None]))
    reference.decoder.decoder_pos_embed.copy_(torch.from_numpy(
        np.concatenate([np.zeros((1, 32)), posemb_lib.sincos_2d(grid, grid, 32, mae=True)])[None]))
  return reference


def test_mae_position_table_is_transformers_own():
  from transformers.models.vit_mae import modeling_vit_mae as hf
  table = hf.build_2d_sinusoidal_position_embedding(5, 5, 32, cls_token=True).numpy()
  half = table.shape[-1] // 2  # transformers rotates the halves to MAE's released layout.
  table = np.concatenate([table[:, half:], table[:, :half]], -1)
  np.testing.assert_allclose(table[1:], posemb_lib.sincos_2d(5, 5, 32, mae=True), atol=1e-6)
  assert not np.allclose(table[1:], posemb_lib.sincos_2d(5, 5, 32), atol=1e-3)


@pytest.mark.parametrize("norm_pix_loss, fixed_tables", [(True, True), (False, False)])
def test_mae_loss_and_reconstruction_match_transformers(tmp_path, norm_pix_loss,
                                                        fixed_tables):
  """A ViTMAEForPreTraining (random weights; MAE's fixed position tables, or random ones
  read as learned) read with its decoder; the same images and noise: the loss and every
  predicted patch agree to <= 1e-4."""
  reference = _hf_mae(norm_pix_loss, fixed_tables=fixed_tables)
  checkpoint = convert.read(save_hf(reference, str(tmp_path / "hf")))
  assert checkpoint.objective == "mae"
  assert checkpoint.arch.get("posemb", "learned") == (
      "sincos2d_mae" if fixed_tables else "learned")
  assert checkpoint.objective_config["mae"]["decoder"]["posemb"] == (
      "sincos2d_mae" if fixed_tables else "learned")
  assert "Transformer" in checkpoint.params and "decoder" not in checkpoint.params
  config = config_lib.base_config()
  config.objective = "mae"
  config.mae.update(checkpoint.objective_config["mae"])
  objective = objectives.create(config)
  arch = dict(checkpoint.arch)
  model = objective.wrap(create_model(arch.pop("family"), num_classes=None, **arch))
  params = {**checkpoint.params, **checkpoint.objective_params}
  images = photos(32, count=3)
  noise = np.random.default_rng(0).random((3, 16)).astype(np.float32)
  with torch.no_grad():
    theirs = reference(pixel_values=nchw(images), noise=torch.from_numpy(noise))
  out = model.apply({"params": params}, images, noise=noise)
  np.testing.assert_array_equal(np.asarray(out["mask"]), theirs.mask.numpy())
  diff = np.abs(np.asarray(out["pred"]) - theirs.logits.numpy()).max()
  assert diff <= 1e-4, diff
  losses, _ = objective._losses(model, params, images, noise, train=False)
  assert abs(float(losses.mean()) - float(theirs.loss)) <= 1e-4
  # The encoder saw 4 of the 16 patches: its output is [class] + 4 tokens.
  tokens = model.encoder.apply({"params": checkpoint.params}, images, return_tokens=True,
                               visible=mae_lib.random_masking(noise, 0.75)[0])
  assert tokens.shape == (3, 5, 64)


def test_mae_decoder_with_learned_positions():
  config = config_lib.base_config()
  config.objective = "mae"
  config.mae.decoder.update(width=18, depth=1, heads=3, posemb="learned")
  objective = objectives.create(config)
  model = objective.wrap(create_model("ViT-test", num_classes=None))
  params = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))["params"]
  assert nn.unbox(params)["decoder"]["pos_embedding"].shape == (1 + 16, 18)  # [class] too.


def test_mae_masks_each_example_differently_and_every_step_anew():
  config = config_lib.base_config()
  config.objective = "mae"
  config.mae.decoder.update(width=16, depth=1, heads=2)
  objective = objectives.create(config)
  model = objective.wrap(create_model("ViT-test", num_classes=None))
  images = jnp.zeros((4, 16, 16, 3))
  masks = [mae_lib.random_masking(objective.noise(model, images, jax.random.key(s)), 0.75)[1]
           for s in (0, 1)]
  assert all(float(m.sum()) == 4 * 12 for m in masks)        # 75% of 16 per image.
  assert len({tuple(row) for row in np.asarray(masks[0])}) > 1  # per example.
  assert not np.array_equal(masks[0], masks[1])                 # per step.


def test_masked_patch_prediction_corrupts_as_the_paper_says():
  corruption = masked_patch.sample_corruption(jax.random.key(0), 64, 256)
  corrupted = np.asarray(corruption["corrupted"])
  assert 0.48 < corrupted.mean() < 0.52
  share = lambda k: np.asarray(corruption[k]).sum() / corrupted.sum()  # noqa: E731
  assert 0.78 < share("use_mask") < 0.82 and 0.08 < share("use_random") < 0.12
  assert not np.any(np.asarray(corruption["use_mask"]) & ~corrupted)
  # 3-bit mean colours: a pure red patch and a mid-grey one.
  images = np.zeros((1, 8, 8, 3), np.float32)
  images[:, :4, :4, 0] = 1.0
  images[:, 4:, 4:] = 0.5
  classes = np.asarray(masked_patch.colour_classes(images, 4))[0]
  assert classes.tolist() == [7 * 64, 0, 0, 4 * 64 + 4 * 8 + 4]


def test_classification_objective_is_the_plain_cross_entropy_bit_for_bit():
  """The seam leaves supervised training as it was: the classification objective's loss
  and gradient equal the cross-entropy written out here, bit for bit (and a run's whole
  metrics and checkpoints were compared before and after the seam: identical)."""
  from vit_jax.losses import loss_fn
  model = create_model("ViT-test", num_classes=10)
  x = jax.random.normal(jax.random.key(0), (8, 8, 8, 3))
  y = jnp.arange(8) % 10
  params = nn.unbox(model.init(jax.random.key(1), x)["params"])
  rng = jax.random.key(2)
  seam = objectives.create(config_lib.base_config()).batch_loss(model)

  def by_hand(params, images, labels, rng):
    logits = model.apply({"params": params}, images, train=True, rngs={"dropout": rng})
    return loss_fn(logits, labels, kind="softmax").mean()
  ours = jax.jit(jax.value_and_grad(seam))(params, x, y, rng)
  plain = jax.jit(jax.value_and_grad(by_hand))(params, x, y, rng)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(plain)):
    np.testing.assert_array_equal(a, b)


def _mae_run(tfds_dir, **overrides):
  return tiny(tfds_dir, objective="mae", pp_train="to_rgb|resize(8)|value_range(-1, 1)",
              total_steps=4, checkpoint_every=4,
              **{"model.posemb": "sincos2d_mae", "mae.decoder.width": 16,
                 "mae.decoder.depth": 1, "mae.decoder.heads": 2},
              evals={"val": config_lib.reconstruction_eval(every=2, num_images=2),
                     "knn": config_lib.knn_eval(every=0, k=(5,))}, **overrides)


def test_mae_run_trains_evaluates_and_its_encoder_fine_tunes(tfds_dir, tmp_path, capsys):
  """An MAE run (no labels used): train loss, reconstruction loss on the held-out split
  and a k-NN accuracy in metrics.jsonl, a reconstruction picture in figures/; then
  --config.pretrained=<the run> fine-tunes its encoder with no other flag (decoder
  dropped, with a note) and `convert --to=hf` writes a ViTMAEModel transformers loads."""
  mae_dir = tmp_path / "mae"
  capsys.readouterr()
  loop.train_and_evaluate(_mae_run(tfds_dir), str(mae_dir))
  assert "| objective mae (labels unused) |" in capsys.readouterr().out
  records = [json.loads(line) for line in (mae_dir / "metrics.jsonl").read_text().splitlines()]
  final = {k: v for r in records for k, v in r.items()}
  assert {"train_loss", "val_loss", "knn_5nn_accuracy"} <= set(final)
  assert 0 < final["val_loss"] < 10
  assert list((mae_dir / "figures").glob("val_reconstruction*.png"))
  saved = final_params(mae_dir)
  assert "decoder" in saved and "head" not in saved

  ft_dir = tmp_path / "ft"
  capsys.readouterr()
  state = loop.train_and_evaluate(tiny(tfds_dir, total_steps=2, warmup_steps=0,
                                       pretrained=str(mae_dir)),
                                  str(ft_dir))
  out = capsys.readouterr().out
  assert "dropped the checkpoint's mae parameters (decoder" in out
  assert "decoder" not in state.params and "head" in state.params
  # The fine-tuned model started from the MAE encoder: its patch embedding after 2 steps
  # is near the MAE one, far from a fresh initialisation.
  start = saved["embedding"]["kernel"]
  assert np.abs(np.asarray(state.params["embedding"]["kernel"]) - start).max() < 0.05

  # A run without a head predicts no classes: one line, not features read as logits.
  from PIL import Image
  from vit_jax.cli import predict
  from vit_jax.convert import inference
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
  with pytest.raises(UserError, match="this checkpoint has no classification head"):
    list(predict.predict_batches(inference.load(str(mae_dir)), [str(tmp_path / "x.png")], 1, 1))

  from vit_jax.convert import writers
  checkpoint = convert.read(str(mae_dir))
  assert writers.write_hf(checkpoint, str(tmp_path / "hf")) == "ViTMAEModel"
  hf = transformers.ViTMAEModel.from_pretrained(str(tmp_path / "hf")).eval()
  images = photos(8, count=2)
  noise = torch.arange(4.0).expand(2, 4)  # mask_ratio 0.75 of 4: the first patch visible.
  with torch.no_grad():
    theirs = hf(pixel_values=nchw(images), noise=noise).last_hidden_state.numpy()
  config = config_lib.base_config()
  config.objective = "mae"
  arch = dict(checkpoint.arch)
  encoder = create_model(arch.pop("family"), num_classes=None, **arch)
  ours = encoder.apply({"params": checkpoint.params}, images, return_tokens=True,
                       visible=jnp.zeros((2, 1), jnp.int32))
  assert np.abs(np.asarray(ours) - theirs).max() <= 1e-4


def test_masked_patch_prediction_run(tfds_dir, tmp_path):
  """The paper's objective trains in the same trainer; its evaluator reports the colour
  accuracy on the corrupted patches."""
  workdir = tmp_path / "mpp"
  loop.train_and_evaluate(tiny(tfds_dir, objective="masked_patch_prediction", total_steps=3,
                               checkpoint_every=3,
                               evals={"val": config_lib.reconstruction_eval(every=0,
                                                                            num_images=2)}),
                          str(workdir))
  assert list((workdir / "figures").glob("val_reconstruction*.png"))
  final = json.loads((workdir / "final.json").read_text())
  assert 0 <= final["val_colour_accuracy"] <= 1 and final["val_loss"] > 0
  assert {"mpp_head", "mpp_mask_embedding"} <= set(final_params(workdir))


@pytest.mark.parametrize("overrides, message", [
    ({"objective": "mae", "mae.mask_ratio": 1.0}, r"mae.mask_ratio=1.0 must be in \(0, 1\)"),
    ({"objective": "mae", "mae.mask_ratio": 0.0}, r"mae.mask_ratio=0.0 must be in \(0, 1\)"),
    ({"objective": "mea"}, r"Objective 'mea' is not a built-in one \(classification, mae"),
    ({"objective": "mae", "mae.decoder.posemb": "rope"},
     r"mae.decoder.posemb='rope' is not one of 'sincos2d_mae'"),
    ({"objective": "mae"}, r"evals.test is a 'classification' evaluator, but objective='mae'"),
    ({"objective": "mae", "evals": {}, "mae.decoder.width": 20, "mae.decoder.heads": 5,
      "mesh": {"data": -1, "fsdp": 1, "model": 2}},
     r"mae.decoder \(width 20, 5 heads\) cannot be split over the mesh's 2-way 'model' axis"),
])
def test_bad_objective_settings_are_one_line_before_compiling(tfds_dir, tmp_path, overrides,
                                                              message):
  config = tiny(tfds_dir, **overrides)
  with pytest.raises(UserError, match=message):
    loop.train_and_evaluate(config, str(tmp_path / "w"))
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_small_data_probes_mae_pretraining_like_a_strength(tmp_path, monkeypatch):
  """`cli.small_data --mae`: the MAE run on the training images is trained once, before
  the first `,mae` probe; those probes and the final run start from it; the choice is
  made on validation accuracy like any other option's. (The trainer is replaced by one
  that writes scores; MAE training and fine-tuning are tested above.)"""
  from etils import epath
  from vit_jax.configs import small_data as recipe
  from vit_jax.tuning import grid as grid_lib
  from vit_jax.tuning import small_data
  calls = []

  def fake_run_point(config_arg, workdir, point, passthrough):
    option = config_arg.split(":", 1)[1].split(",", 1)[1]
    calls.append((option, point))
    workdir.mkdir(parents=True, exist_ok=True)
    val = {"light,noflip": 0.7, "light,noflip,mae": 0.8}.get(option)
    row = {"step": 1} if val is None else {"step": 1, "val_accuracy": val, "test_accuracy": val}
    (workdir / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    (workdir / "sweep_result.json").write_text('{"wall_seconds": 1.0}')
    return 1.0

  monkeypatch.setattr(grid_lib, "run_point", fake_run_point)
  options = small_data.candidates("digits", ["light"], ["auto"], mae=True)
  assert options == ["light,noflip", "light,noflip,mae"]
  text = small_data.run(small_data.CONFIG_FILE, "digits", epath.Path(tmp_path), options, 5, [])
  assert [c[0] for c in calls] == ["light,noflip", "pretrain", "light,noflip,mae",
                                   "light,noflip,mae"]
  mae_run = str(tmp_path / "mae_pretrain")
  assert calls[2][1]["pretrained"] == calls[3][1]["pretrained"] == mae_run
  assert "| light,noflip,mae (chosen) | 0.8000 |" in text and "MAE pre-training" in text
  # The two stages' configs: MAE without labels on the recipe's training split; the
  # fine-tuning the recipe's, shorter.
  pretrain, finetune = (recipe.get_config(a)
                        for a in ("digits,pretrain", "digits,light,noflip,mae"))
  assert pretrain.objective == "mae" and pretrain.train_split == finetune.train_split
  assert finetune.objective == "classification"
  assert finetune.total_steps == recipe.MAE_FINETUNE_STEPS


def test_mae_pretraining_continues_from_a_transformers_checkpoint(tfds_dir, tmp_path, capsys):
  """--config.objective=mae --config.pretrained=<ViTMAEForPreTraining>: the encoder and
  the decoder (its shape read from the file, not the config) are where training starts."""
  t = transformers
  reference = randomise(t.ViTMAEForPreTraining(t.ViTMAEConfig(
      image_size=8, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
      intermediate_size=64, decoder_num_hidden_layers=1, decoder_hidden_size=24,
      decoder_num_attention_heads=3, decoder_intermediate_size=40)))
  with torch.no_grad():
    reference.decoder.decoder_pos_embed.copy_(torch.from_numpy(np.concatenate(
        [np.zeros((1, 24)), posemb_lib.sincos_2d(2, 2, 24, mae=True)])[None]))
  directory = save_hf(reference, str(tmp_path / "hf"))
  config = tiny(tfds_dir, objective="mae", total_steps=1, warmup_steps=0, lr=0.0,
                pretrained=directory, checkpoint_every=1,
                evals={"val": config_lib.reconstruction_eval(every=0, num_images=0)})
  capsys.readouterr()
  state = loop.train_and_evaluate(config, str(tmp_path / "w"))
  assert "MAE's pre-training decoder from the checkpoint" in capsys.readouterr().out
  stored = json.loads((tmp_path / "w" / "config.json").read_text())
  assert stored["mae"]["decoder"] == {"width": 24, "depth": 1, "heads": 3, "mlp_dim": 40,
                                     "posemb": "sincos2d_mae"}
  theirs = reference.decoder.decoder_pred.weight.detach().numpy().T
  np.testing.assert_allclose(state.params["decoder"]["decoder_pred"]["kernel"], theirs,
                             atol=1e-6)  # lr 0: unchanged by the step.
