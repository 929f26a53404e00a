"""Where an adversarial warm-up iteration's time goes, against a source-only one, for the embedded model
(synthetic GTA5 -> CS: batch 4 at 128x256, ResNet-18 DeepLabV2 in bf16 + channels_last) at 1 torch thread (the
default run's): the generator step, the discriminator step, and the discriminator alone (fp32, as it runs;
with bf16 autocast and a channels_last input for comparison), and the iteration with the option
`warmup.adversarial.discriminator_precision: bf16` (off by default). Random inputs and weights; median of 5
after one warm call. Run from a checkout:

    python benchmarks/scripts/adversarial_parts.py
"""
import dataclasses
import statistics
import time

import torch

from hiast import adversarial, engine, stages
from hiast.scenario import load_scenario
from hiast.supervised import segmentation_ce

torch.set_num_threads(1)
torch.manual_seed(0)
scenario = load_scenario("config/scenarios/synthetic_gta5_to_cityscapes.yaml")
model = stages.new_model(scenario).train()
stage = scenario.warmup.adversarial
discriminator = adversarial.build_discriminator(scenario.num_classes, seed=0).train()
seg_opt, d_opt = adversarial.make_optimizers(model, discriminator, stage)
size = (128, 256)
source = torch.randn(stage.batch_size, 3, *size)
labels = torch.randint(0, scenario.num_classes, (stage.batch_size, *size))
target = torch.randn(stage.batch_size, 3, *size)


def median_ms(fn, repeats=5):
    fn()
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return statistics.median(times) * 1e3


def source_only_step():
    seg_opt.zero_grad(set_to_none=True)
    segmentation_ce(engine.upsample(model(source), size), labels).backward()
    seg_opt.step()


def generator_step():
    return adversarial.generator_step(model, discriminator, seg_opt, source, labels, target, stage)


out = generator_step()
d_input = out.target_input.clone().requires_grad_(True)


def discriminator_step(stage=stage):
    adversarial.discriminator_step(discriminator, d_opt, out.source_input, out.target_input, stage)


bf16_stage = dataclasses.replace(stage, discriminator_precision="bf16")


def bf16_iteration():
    adversarial.generator_step(model, discriminator, seg_opt, source, labels, target, bf16_stage)
    discriminator_step(bf16_stage)


def d_forward(x=d_input, bf16=False):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        discriminator(x)


def d_forward_input_backward():     # what the generator step pays for D: its weights frozen
    adversarial._set_requires_grad(discriminator, False)
    discriminator(d_input).mean().backward()
    adversarial._set_requires_grad(discriminator, True)


parts = {"source-only step": source_only_step, "generator step (source + target + D frozen)": generator_step,
         "discriminator step (D on both, its backward, Adam)": discriminator_step,
         "D forward, fp32 (as run)": d_forward, "D forward + input backward, fp32": d_forward_input_backward,
         "D forward, bf16 autocast": lambda: d_forward(bf16=True),
         "D forward, fp32, channels_last input (not used)":
             lambda: d_forward(d_input.detach().contiguous(memory_format=torch.channels_last)),
         "adversarial iteration, discriminator_precision: bf16": bf16_iteration}
figures = {name: median_ms(fn) for name, fn in parts.items()}
for name, ms in figures.items():
    print(f"{name}: {ms:.0f} ms", flush=True)
whole = figures["generator step (source + target + D frozen)"] + figures["discriminator step (D on both, its backward, Adam)"]
print(f"adversarial iteration {whole:.0f} ms = {whole / figures['source-only step']:.1f}x a source-only one; "
      f"D's part (its forward + input backward in the generator step, and the discriminator step) "
      f"{(figures['D forward + input backward, fp32'] + figures['discriminator step (D on both, its backward, Adam)']) / whole:.0%}")
print(f"with discriminator_precision: bf16 {figures['adversarial iteration, discriminator_precision: bf16']:.0f} ms "
      f"({figures['adversarial iteration, discriminator_precision: bf16'] / whole:.2f}x)")
