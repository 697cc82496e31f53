"""The CPU training step beside the authors' PyTorch: images/s of one step, in one process.

    pip install -e ".[bench]"      # torch (a CPU build where the index has one)
    python benchmarks/torch_vs_tf_cpu.py [--rounds=5] [--steps=3] [--threads=2]
        [--tf_onednn=default|0|1] [--keras_layers] [--name=SUFFIX]

Times forward + the full loss + backward + SGD (Nesterov, momentum 0.9, coupled weight decay 5e-4)
on a batch of 128 random 32x32x3 images with 100 classes for:
- torch: the authors' branch-based ResNet-32 group (4 branches, OKDDip attention and loss: 4 CE +
  KL at T=3) and one ResNet-32 (CE), re-written from the architecture facts of their code
  (benchmarks/torch_reference.py; parameter counts asserted: 1,554,272 and 472,756), NCHW float
  inputs as their loader gives them, torch.optim.SGD;
- tf: okddip_tf's GroupModel (method okddip, resnet32, branch sharing, 4 students) and the
  baseline, compiled train steps (uint8 NHWC inputs, normalised in the graph, metrics updated),
  okddip_tf.CoupledSGD.
Both frameworks get `--threads` intra-op and inter-op threads. Every round times every setting
once, in a rotating order, so a change of load hits all alike; the JSON has each round, the
medians and the per-round TF/torch ratios. torch is also timed with 1 thread (set at run time): on
a machine shared with other processes, OpenMP's 2-thread barriers can cost torch far more than the
load alone would, and the faster torch setting is the fair reference.
Before timing it checks that the PyTorch loss equals okddip_tf's on the same logits.

TF_ENABLE_ONEDNN_OPTS must be chosen before TensorFlow loads: `--tf_onednn=default` keeps what
okddip_tf sets (1 unless the environment says otherwise). `--keras_layers` also times the group
built from Keras' own BatchNormalization and padding layers (okddip_tf before its speed work).
Writes benchmarks/results/torch_vs_tf_cpu_<cpu kind>[_<name>].json.
"""

import argparse
import os
import sys
import time

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--rounds", type=int, default=5)
parser.add_argument("--steps", type=int, default=3, help="timed steps per setting and round")
parser.add_argument("--warmup", type=int, default=1, help="untimed steps before each timing")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--tf_onednn", choices=["default", "0", "1"], default="default")
parser.add_argument("--keras_layers", action="store_true")
parser.add_argument("--variants", default="okddip_branch_4,single")
parser.add_argument("--name", default="", help="suffix of the result file")
ARGS = parser.parse_args()
if ARGS.tf_onednn != "default":
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = ARGS.tf_onednn
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

torch.set_num_threads(ARGS.threads)
torch.set_num_interop_threads(ARGS.threads)

import numpy as np  # noqa: E402

import tf_group_step  # noqa: E402  (imports okddip_tf, then TensorFlow)
import tensorflow as tf  # noqa: E402
import torch_reference  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(ARGS.threads)
tf.config.threading.set_inter_op_parallelism_threads(ARGS.threads)


def check_same_loss():
    """The PyTorch OKDDip loss and okddip_tf's on the same random logits and attention."""
    rng = np.random.default_rng(0)
    batch, peers, classes = 8, 3, 10
    peer_logits = rng.normal(0, 3, (batch, peers, classes)).astype("float32")
    attention = rng.dirichlet(np.ones(peers), (batch, peers)).astype("float32")  # rows sum to 1
    mixed = np.einsum("bij,bjc->bic", attention, peer_logits)
    leader = rng.normal(0, 3, (batch, classes)).astype("float32")
    labels = rng.integers(0, classes, batch)
    weight = 0.7
    want = torch_reference.okddip_loss(
        (torch.from_numpy(peer_logits.transpose(0, 2, 1).copy()),
         torch.from_numpy(mixed.transpose(0, 2, 1).copy()), torch.from_numpy(leader)),
        torch.from_numpy(labels), distill_weight=weight).item()
    group = tf_group_step.okddip_tf.GroupModel(backbone="tiny", num_classes=classes,
                                               num_students=peers + 1)
    got = float(group.method.loss(
        tf.constant(labels, tf.int32),
        {"peer_logits": tf.constant(peer_logits), "peer_targets": tf.constant(mixed),
         "attention": tf.constant(attention), "leader_logits": tf.constant(leader)},
        temperature=group.temperature, distill_weight=tf.constant(weight))["loss"])
    assert abs(got - want) <= 1e-5 * abs(want), f"loss differs: okddip_tf {got}, torch {want}"
    return {"okddip_tf": got, "torch": want}


def torch_setting(step, threads):
    def run():
        torch.set_num_threads(threads)
        step()
    return run


def build_settings(variants):
    """{(variant, setting): step callable}; every model built and its first step taken."""
    settings, first_step = {}, {}
    for variant in variants:
        _, torch_step = torch_reference.build(variant)
        settings[(variant, f"torch_{ARGS.threads}_threads")] = torch_setting(torch_step,
                                                                             ARGS.threads)
        if ARGS.threads != 1:
            settings[(variant, "torch_1_thread")] = torch_setting(torch_step, 1)
        layer_sets = ["fused", "keras"] if ARGS.keras_layers and variant != "single" else ["fused"]
        for layers in layer_sets:
            group, tf_step, batch = tf_group_step.build(variant, layers=layers)
            count = int(sum(np.prod(v.shape) for v in group.trainable_variables))
            expected = (torch_reference.GL_RESNET32_PARAMS_C100 if variant != "single"
                        else torch_reference.RESNET32_PARAMS_C100)
            assert count == expected, f"okddip_tf {variant}: {count} parameters, want {expected}"
            name = "tf" if layers == "fused" else "tf_keras_layers"
            settings[(variant, name)] = (lambda s, b: lambda: s(b))(tf_step, batch)
    for key, run in settings.items():
        start = time.perf_counter()
        run()  # tracing happens here
        first_step[key] = time.perf_counter() - start
    return settings, first_step


def main():
    variants = ARGS.variants.split(",")
    loss_check = check_same_loss()
    settings, first_step = build_settings(variants)
    keys = list(settings)
    seconds = {key: [] for key in keys}
    loads = [os.getloadavg()]
    for r in range(ARGS.rounds):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for key in order:
            run = settings[key]
            for _ in range(ARGS.warmup):
                run()
            start = time.perf_counter()
            for _ in range(ARGS.steps):
                run()
            seconds[key].append((time.perf_counter() - start) / ARGS.steps)
        loads.append(os.getloadavg())
        print(f"round {r + 1}/{ARGS.rounds}: " + ", ".join(
            f"{v}/{s} {tf_group_step.BATCH / seconds[(v, s)][-1]:.1f}" for v, s in keys), flush=True)
    torch.set_num_threads(ARGS.threads)

    results = {}
    torch_main = f"torch_{ARGS.threads}_threads"
    for variant in variants:
        rows = {}
        for (v, setting), values in seconds.items():
            if v != variant:
                continue
            median = float(np.median(values))
            rows[setting] = {
                "images_per_second_median": tf_group_step.BATCH / median,
                "step_seconds_median": median,
                "step_seconds_per_round": values,
                "first_step_seconds": first_step[(v, setting)],
            }
        torch_settings = [s for s in rows if s.startswith("torch")]
        for setting in [s for s in rows if s.startswith("tf")]:
            per_round = {t: [a / b for a, b in zip(seconds[(variant, t)],
                                                    seconds[(variant, setting)])]
                         for t in torch_settings}
            best_torch = [min(x) for x in zip(*per_round.values())]  # vs the faster torch
            rows[setting]["speed_vs_torch"] = {
                **{f"vs_{t}_median_of_rounds": float(np.median(v)) for t, v in per_round.items()},
                "vs_faster_torch_setting_median_of_rounds": float(np.median(best_torch)),
                "per_round_vs_faster_torch_setting": best_torch,
            }
        results[variant] = rows
        for setting, row in rows.items():
            ratio = row.get("speed_vs_torch", {}).get(f"vs_{torch_main}_median_of_rounds")
            conservative = row.get("speed_vs_torch", {}).get(
                "vs_faster_torch_setting_median_of_rounds")
            extra = (f"  {ratio:.2f}x torch {ARGS.threads} threads, {conservative:.2f}x the faster "
                     "torch" if ratio else "")
            print(f"{variant:<16} {setting:<18} {row['images_per_second_median']:7.1f} img/s{extra}")

    machine = tf_group_step.machine()
    machine.update({
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_mkldnn": torch.backends.mkldnn.is_available(),
        "torch_parallel_info": [line for line in torch.__config__.parallel_info().splitlines()
                                if "OpenMP" in line or "threads" in line.lower()],
    })
    kind = machine["cpu"]["kind"].lower().replace("-", "").replace(" + ", "_")
    name = f"torch_vs_tf_cpu_{tf_group_step.safe_name(kind)}" + (f"_{ARGS.name}" if ARGS.name else "")
    tf_group_step.write_json({
        "command": "python " + " ".join(sys.argv),
        "machine": machine,
        "note": ("One process, interleaved rounds (every setting once per round, rotating order); "
                 "medians over rounds; speed_vs_torch = torch step time / TF step time in the "
                 "same round (>1: TF faster). The machine was shared with other processes: "
                 "load averages (1, 5, 15 min) before timing and after each round are in "
                 "load_averages; absolute images/s are noisy, the same-round ratios are the "
                 "comparison."),
        "threads": {"torch_intra": ARGS.threads, "torch_interop": ARGS.threads,
                    "tf_intra": ARGS.threads, "tf_inter": ARGS.threads},
        "batch_size": tf_group_step.BATCH,
        "num_classes": tf_group_step.CLASSES,
        "rounds": ARGS.rounds,
        "timed_steps_per_round": ARGS.steps,
        "warmup_steps_per_round": ARGS.warmup,
        "loss_check": loss_check,
        "load_averages": loads,
        "results": results,
    }, name + ".json")


if __name__ == "__main__":
    main()
