r"""Runs `vit_jax.cli.benchmark` for several models (one process each, so peak memory and
compile caches do not mix) and prints one table: the BENCHMARKS.md GPU table.

    python scripts/benchmark_table.py --runs=ViT-S_16:512,ViT-B_16:256,ViT-L_16:128 \
        --out=/tmp/bench -- --config.model.attention_implementation=cudnn --compare --host_input

Arguments after `--` go to every benchmark run. Each run's JSON and log land in --out.
"""
import argparse
import json
import os
import subprocess
import sys

from vit_jax.bench import step_timing


def run_one(model: str, batch: int, extra: list[str], out: str, timeout: int) -> dict:
  name = f"{model}_b{batch}"
  json_path = os.path.join(out, f"{name}.json")
  command = [sys.executable, "-m", "vit_jax.cli.benchmark",
             f"--config=configs/benchmark.py:{model}", f"--config.batch_size={batch}",
             f"--json={json_path}", *extra]
  print("+", " ".join(command), flush=True)
  with open(os.path.join(out, f"{name}.log"), "w") as log:
    try:
      code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                            check=False).returncode
    except subprocess.TimeoutExpired:
      code = "timeout"
  if code != 0 or not os.path.exists(json_path):
    print(f"  {name}: failed ({code}); see {log.name}", flush=True)
    return {}
  with open(json_path) as f:
    return json.load(f)


def table(results: list[dict]) -> str:
  lines = ["| model | batch | vit_jax img/s | step ms min / median | MFU | peak GiB | "
           "host-fed img/s | minimal JAX img/s | timm img/s | vit_jax / timm |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    batch, ours = r["batch"], r["ours"]["train_step_s"]
    flops_step = 3 * r["forward_gflops_per_image"] * 1e9 * batch
    mfu = f"{flops_step / ours['median'] / r['peak_flops']:.1%}" if r["peak_flops"] else "n/a"
    def rate(key):
      if "train_step_s" not in r.get(key, {}):
        return "-"
      return f"{batch / step_timing.typical_seconds(r[key]['train_step_s']):,.0f}"
    ratio = f"{r['speedup_vs_timm']:.2f}x" if "speedup_vs_timm" in r else "-"
    memory = r["ours"].get("peak_memory_bytes")
    lines.append(
        f"| {r['model']} | {batch} | {batch / ours['median']:,.0f} | {ours['min'] * 1e3:.1f} / "
        f"{ours['median'] * 1e3:.1f} | {mfu} | {memory / 2**30 if memory else 0:.1f} | "
        f"{rate('host_fed')} | {rate('minimal_jax')} | {rate('timm')} | "
        f"{ratio} |")
  return "\n".join(lines)


def main():
  argv = sys.argv[1:]
  extra = argv[argv.index("--") + 1:] if "--" in argv else []
  argv = argv[:argv.index("--")] if "--" in argv else argv
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--runs", default="ViT-S_16:512,ViT-B_16:256,ViT-L_16:128")
  parser.add_argument("--out", default="/tmp/vit_jax_bench")
  parser.add_argument("--timeout", type=int, default=400, help="seconds per run")
  args = parser.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  results = []
  for spec in args.runs.split(","):
    model, batch = spec.split(":")
    result = run_one(model, int(batch), extra, args.out, args.timeout)
    if result:
      results.append(result)
  if results:
    first = results[0]
    print(f"\n{first['device']}, jax {first['jax']}, {first['dtype']}, attention "
          f"{first['attention']}, XLA_FLAGS={first['xla_flags'] or '(none)'}; "
          f"{(first.get('timm') or {}).get('version', 'timm not run')}\n")
    print(table(results))


if __name__ == "__main__":
  main()
