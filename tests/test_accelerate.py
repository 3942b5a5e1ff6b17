"""Scale-out on accelerate: the rm and dpo commands under `accelerate launch` with 2 CPU processes (gloo)
reproduce one process on the same global batch, and every config in configs/accelerate/ is one that
accelerate 1.15 accepts and routes to the intended launcher.

Why the runs line up: the Trainer's sampler draws one seeded permutation (data_seed) in every process and
accelerate deals its per-device batches out round robin, so with per-device batch B the 2-process global
batch k is examples [2kB, 2kB + 2B) of that permutation, in rank order: exactly the k-th batch of a
single process run with batch 2B. Dropout is off in TRL's trainers. What remains is float32 rounding
(other padding lengths and reduction orders: half-batch forwards, a gloo all-reduce of two
half-gradients), measured at <= 1.4e-6 relative on the per-step losses (rm <= 1.7e-7, dpo <= 1.4e-6,
over 3-4 Adam steps).
LOSS_RTOL = 1e-4 leaves a 70x margin and still catches a wrong worst case: an rm run whose worst case was
over 4 examples instead of the 8 of the global batch (a launch that silently started one process) moved
the per-step losses by up to 1.7e-2. The weights are piecewise constant in the
losses, so they agree exactly unless two losses nearly tie.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from drostudy.io import cache_dir

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs" / "accelerate"
ACCELERATE = Path(sys.executable).parent / "accelerate"
LOSS_RTOL = 1e-4  # float32 rounding measured <= 1.4e-6 relative; a wrong worst case moves losses 1e-2
SHARED_CACHE = ("suite", "tokenizers", "models")  # built once, read only by the runs
DPO_REF_CACHE = "dpo_ref_logps"

# Tiny models, a few steps. tiny-llama: its random reward head already separates the pairs (tiny-bert's
# rewards tie to 1e-6 at the start, which would leave the worst case to rounding). tv radius 0.3: with a
# global batch of 8 (rm) or 4 (dpo) the weights are far from uniform (max weight 1/N + 0.3).
RM_ARGS = (
    "--model tiny-llama --train-domains math,code --eval-domains reasoning "
    "--n-train 32 --n-eval 4 --divergence tv --radius 0.3 --learning-rate 3e-3 "
    "--truncate-length 64 --steps 4 --logging-steps 1"
).split()
RM_GLOBAL_BATCH = 8
DPO_ARGS = (
    "--model tiny-llama --loss robust --divergence tv --radius 0.3 "
    "--train-domains math --eval-domains code --n-train 12 --n-eval 4 --n-generate 1 "
    "--max-new-tokens 2 --lora-layers 2 --learning-rate 1e-2"
).split()
DPO_GLOBAL_BATCH = 4
DPO_STEPS = 3  # step 1 has policy == reference: every loss is log 2, the weights uniform
DRO_KEYS = ("dro/robust_loss", "dro/mean_loss", "dro/max_weight", "dro/effective_sample_size")


# --- running the commands ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fresh_cache(root: Path) -> Path:
    """A DROSTUDY_CACHE linking the built suite, tokenizers and models; nothing that a run computes."""
    root.mkdir(parents=True)
    for name in SHARED_CACHE:
        if (cache_dir() / name).exists():
            (root / name).symlink_to(cache_dir() / name)
    return root


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, DROSTUDY_CACHE=str(cache), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.update(TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return env


def _run(command: list[str], cache: Path) -> None:
    done = subprocess.run(
        command, env=_env(cache), cwd=REPO, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if re.search(r"\w(Error|Exception): ", line)]
        summary = "\n".join(dict.fromkeys(errors))  # each process prints its own; keep one of each
        pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{summary}\n{done.stderr[-4000:]}")


def one_process(cmd: str, args: list[str], out: Path, cache: Path) -> dict:
    """metrics.json of `python -m drostudy CMD ARGS --out OUT`."""
    _run([sys.executable, "-m", "drostudy", cmd, *args, "--out", str(out)], cache)
    return json.loads((out / "metrics.json").read_text())


def two_processes(cmd: str, args: list[str], out: Path, cache: Path) -> dict:
    """metrics.json of the command under `accelerate launch` with configs/accelerate/cpu_2proc.yaml."""
    config = str(CONFIGS / "cpu_2proc.yaml")
    launch = [
        str(ACCELERATE),
        "launch",
        "--config_file",
        config,
        "--main_process_port",
        str(_free_port()),
    ]
    _run([*launch, "-m", "drostudy", cmd, *args, "--out", str(out)], cache)
    return json.loads((out / "metrics.json").read_text())


# --- comparing runs ------------------------------------------------------------------------------------


def assert_same_history(one: dict, two: dict, keys: dict[str, float], steps: int) -> None:
    """Same number of steps (a second process that silently did not start doubles them), same values.

    keys: metric -> absolute tolerance (on top of LOSS_RTOL): DPO's implicit rewards are beta times a
    difference of log-probs of size ~100, so their rounding is absolute (measured <= 1.7e-6), not
    relative to the margin.
    """
    assert [row["step"] for row in two["history"]] == list(range(1, steps + 1))
    assert [row["step"] for row in one["history"]] == list(range(1, steps + 1))
    for row_1, row_2 in zip(one["history"], two["history"], strict=True):
        for key, atol in keys.items():
            np.testing.assert_allclose(
                row_2[key], row_1[key], rtol=LOSS_RTOL, atol=atol, err_msg=f"{key} @ {row_1['step']}"
            )


def assert_robust(history: list[dict], global_batch: int) -> None:
    """The weights were those of the global batch and not uniform (tv: max weight 1/N + radius)."""
    assert max(row["dro/max_weight"] for row in history) == pytest.approx(1 / global_batch + 0.3)
    assert min(row["dro/effective_sample_size"] for row in history) < 0.7 * global_batch


def assert_same_per_domain(one: dict, two: dict, close: tuple[str, ...], exact: tuple[str, ...]) -> None:
    assert one["per_domain"].keys() == two["per_domain"].keys()
    for domain, row_1 in one["per_domain"].items():
        row_2 = two["per_domain"][domain]
        for key in close:
            np.testing.assert_allclose(row_2[key], row_1[key], rtol=1e-4, atol=1e-5, err_msg=domain)
        assert {k: row_2[k] for k in exact} == {k: row_1[k] for k in exact}, domain


# --- rm ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rm_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rm")
    cache = _fresh_cache(root / "cache")
    one = one_process("rm", [*RM_ARGS, "--batch-size", str(RM_GLOBAL_BATCH)], root / "one", cache)
    two = two_processes("rm", [*RM_ARGS, "--batch-size", str(RM_GLOBAL_BATCH // 2)], root / "two", cache)
    return one, two


@pytest.mark.slow
def test_rm_two_processes_train_like_one_on_the_global_batch(rm_runs):
    one, two = rm_runs
    keys = ("loss", *DRO_KEYS, "dro/weight_mass/math", "dro/weight_mass/code", "accuracy")
    assert_same_history(
        one, two, dict.fromkeys(keys, 1e-7) | {"margin": 1e-6}, steps=32 // RM_GLOBAL_BATCH
    )
    assert_robust(two["history"], RM_GLOBAL_BATCH)
    for row_1, row_2 in zip(one["history"], two["history"], strict=True):
        assert row_2["num_tokens"] == row_1["num_tokens"]  # the same examples in each global batch
        np.testing.assert_allclose(row_2["grad_norm"], row_1["grad_norm"], rtol=1e-4)


@pytest.mark.slow
def test_rm_two_processes_evaluate_like_one(rm_runs):
    one, two = rm_runs
    assert_same_per_domain(one, two, close=("margin",), exact=("accuracy", "n"))


# --- dpo -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dpo_two_processes_train_and_evaluate_like_one(tmp_path):
    """Robust DPO from scratch on 2 processes (reference log-probs included) and on 1, same global batch.

    Each run gets its own empty cache, so the 2-process run also precomputes the reference log-probs of
    the training pairs itself; the cache files of the two runs are compared too. TRL 1.16's
    DPOTrainer._precompute_ref_logps hands them from the main process to the others through an Arrow
    file that, for an in-memory dataset (ours: Dataset.from_list), lies in each process's own temporary
    folder: the other processes then fail with FileNotFoundError (see docs/scaling.md).
    """
    args = [*DPO_ARGS, "--steps", str(DPO_STEPS)]
    caches = [_fresh_cache(tmp_path / f"cache{p}") for p in (1, 2)]
    one = one_process("dpo", [*args, "--batch-size", str(DPO_GLOBAL_BATCH)], tmp_path / "one", caches[0])
    two = two_processes(
        "dpo", [*args, "--batch-size", str(DPO_GLOBAL_BATCH // 2)], tmp_path / "two", caches[1]
    )
    (file_one,) = (caches[0] / DPO_REF_CACHE).glob("*.json")  # same key: same pairs, same reference
    ref_two = json.loads((caches[1] / DPO_REF_CACHE / file_one.name).read_text())
    for column, values in json.loads(file_one.read_text()).items():  # log-probs of size ~100
        np.testing.assert_allclose(ref_two[column], values, rtol=1e-5, atol=1e-4, err_msg=column)
    keys = dict.fromkeys(
        ("loss", *DRO_KEYS, "rewards/accuracies", "logps/chosen", "logps/rejected"), 1e-7
    )
    keys |= dict.fromkeys(("rewards/chosen", "rewards/rejected", "rewards/margins"), 2e-5)
    assert_same_history(one, two, keys, steps=DPO_STEPS)
    assert_robust(two["history"], DPO_GLOBAL_BATCH)
    assert_same_per_domain(one, two, close=("margin", "kl"), exact=("accuracy", "correct", "n"))


# --- rl ------------------------------------------------------------------------------------------------

RL_ARGS = (
    "--model tiny-llama --reward-model tiny-bert --train-domains math "
    "--eval-domains code --n-train 8 --steps 2 --num-generations 2 "
    "--max-completion-length 4 --n-eval 2 --max-new-tokens 2 --lora-layers 2 "
    "--divergence tv --radius 0.3 --batch-size 2"
).split()


@pytest.mark.slow
def test_rl_two_processes_weight_the_prompts_of_both(tmp_path):
    """rl runs unchanged on 2 processes, its worst case over the 2 x 2 prompts of the global batch (tv:
    max weight 1/4 + 0.3; a per-process worst case over 2 prompts would give 1/2 + 0.3).

    Not compared with one process: TRL's RLOOTrainer seeds sampling per process (set_seed(seed,
    device_specific=True)), so 2 processes draw other completions than one process does.
    """
    cache = _fresh_cache(tmp_path / "cache")
    history = two_processes("rl", RL_ARGS, tmp_path / "two", cache)["history"]
    assert [row["step"] for row in history] == [1, 2]
    assert max(row["dro/max_weight"] for row in history) == pytest.approx(1 / 4 + 0.3)


# GRPO: 1 prompt x 2 completions per micro-batch and process, 2 micro-batches per generation
# (steps_per_generation 2 != gradient_accumulation_steps 1): one generation batch of 2 x 2 = 4 prompts
# serves the run's 2 optimizer steps.
GRPO_ARGS = (
    "--trainer grpo --model tiny-llama --reward-model tiny-bert --train-domains math "
    "--eval-domains code --n-train 8 --steps 2 --num-generations 2 "
    "--max-completion-length 4 --n-eval 2 --max-new-tokens 2 --lora-layers 2 "
    "--divergence tv --radius 0.3 --batch-size 1 --trl-args steps_per_generation=2"
).split()
GRPO_GLOBAL_PROMPTS = 4


@pytest.mark.slow
def test_grpo_two_processes_weight_the_prompts_of_both_over_the_generation_batch(tmp_path):
    """rl --trainer grpo on 2 processes takes its worst case once per generation batch, over the 2 x 2
    prompts of both processes' micro-batches (tv: max weight 1/4 + 0.3).

    What a wrong batch would log instead: weights over one process's generation batch (2 prompts) or
    over one micro-batch of both processes (2 prompts) give max weight 1/2 + 0.3 and an effective
    sample size <= 2 (it is at most the number of weights); here it is above 2 (measured 2.47). Weights
    recomputed at every step would log dro/ at step 2 too; GRPO generates (and logs dro/) at step 1 only.
    Checked: the same run with steps_per_generation 1 (a 2-prompt generation batch) logs max weight 0.8,
    effective sample size 1.47, and dro/ at both steps, failing all three assertions.
    """
    cache = _fresh_cache(tmp_path / "cache")
    history = two_processes("rl", GRPO_ARGS, tmp_path / "two", cache)["history"]
    assert [row["step"] for row in history] == [1, 2]
    assert ["dro/max_weight" in row for row in history] == [True, False]
    weighted = history[0]
    assert weighted["dro/max_weight"] == pytest.approx(1 / GRPO_GLOBAL_PROMPTS + 0.3)
    assert 2 < weighted["dro/effective_sample_size"] < 0.7 * GRPO_GLOBAL_PROMPTS


# --- the configs ---------------------------------------------------------------------------------------

# config -> (launcher accelerate 1.15 picks, processes in all, processes per machine)
EXPECTED = {
    "cpu_2proc.yaml": ("multi_gpu_launcher", 2, 2),
    "one_gpu.yaml": ("simple_launcher", 1, None),
    "multi_gpu.yaml": ("multi_gpu_launcher", 8, 8),
    "multi_node.yaml": ("multi_gpu_launcher", 16, 8),
    "deepspeed_zero3.yaml": ("deepspeed_launcher", 8, 8),
    "fsdp.yaml": ("multi_gpu_launcher", 8, 8),
}
LAUNCHERS = ("multi_gpu_launcher", "deepspeed_launcher", "simple_launcher")


def _launched(argv: list[str]):
    """(launcher, its args) that `accelerate launch ARGV -m drostudy rm` would use; starts nothing."""
    from accelerate.commands import launch

    calls = {}
    patches = [
        mock.patch.object(launch, name, lambda a, n=name: calls.setdefault(n, a)) for name in LAUNCHERS
    ]
    for patch in patches:
        patch.start()
    try:
        launch.launch_command(launch.launch_command_parser().parse_args([*argv, "-m", "drostudy", "rm"]))
    finally:
        for patch in patches:
            patch.stop()
    ((name, args),) = calls.items()
    return name, args


def test_every_config_is_listed():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_and_launches_as_intended(name):
    """Each YAML parses with accelerate's loader, passes `accelerate launch`'s checks and goes to the
    intended launcher with the intended process counts; its environment builds the FSDP / DeepSpeed
    plugin."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    config = load_config_from_file(str(CONFIGS / name))
    # accelerate copies these sections onto the launch arguments without checking the names: a typo would
    # be ignored silently, so every key must be one of `accelerate launch`'s options.
    options = vars(launch_command_parser().parse_args(["x.py"]))
    for section in (config.deepspeed_config, config.fsdp_config):
        assert not set(section or {}) - set(options), f"unknown keys in {name}"
    launcher, processes, per_machine = EXPECTED[name]
    used, args = _launched(["--config_file", str(CONFIGS / name)])
    assert used == launcher
    assert args.num_processes == processes
    assert args.mixed_precision == "no"  # the commands train in fp32
    if launcher == "multi_gpu_launcher":
        env = prepare_multi_gpu_env(args)
        assert int(args.nproc_per_node) == per_machine
    elif launcher == "deepspeed_launcher":
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = {}
    with mock.patch.dict(os.environ, env):
        if name == "fsdp.yaml":
            plugin = FullyShardedDataParallelPlugin()
            assert plugin.fsdp_version == 2
            assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
        if name == "deepspeed_zero3.yaml":
            assert DeepSpeedPlugin().zero_stage == 3


def test_cpu_flag_starts_one_process():
    """Why cpu_2proc.yaml says MULTI_GPU: `--cpu --num_processes 2` goes to the simple launcher, which
    starts ONE process (mpirun only when a hostfile is given); `--cpu` ignores default config files."""
    from accelerate.utils.launch import prepare_simple_launcher_cmd_env

    used, args = _launched(
        ["--cpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    )
    assert used == "simple_launcher"
    command, _ = prepare_simple_launcher_cmd_env(args)
    assert command[:3] == [sys.executable, "-m", "drostudy"]  # one python process, no mpirun in front
