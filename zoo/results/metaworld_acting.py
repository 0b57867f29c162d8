"""How a trained Diffusion Policy acts on Meta-World: the acting-time choices, one model, same episodes.

Loads a Diffusion Policy saved by ``diffgym benchmark metaworld --save-models`` and evaluates it on
the benchmark's own episodes (seed ``s``'s final evaluation: episode ``i`` reset with
``10_000 + s + i``, up to 500 steps, ending at the first success) once per variant:

- ``stochastic``: fresh noise per chunk, DDIM 10 steps, 8 of 16 actions executed (the benchmark's);
- ``deterministic``: the same with the policy's fixed noise (``predict(deterministic=True)``);
- ``ddim50``: DDIM with 50 steps; ``ddpm100``: DP's own simulation sampler, DDPM over all 100 steps;
- ``execute4``, ``execute2``, ``execute1``: a new chunk every 4, 2 or 1 steps instead of 8 (more
  feedback, 2, 4 or 8 times the sampling; ``execute1`` acts closed-loop as BC does).

Nothing is retrained: the differences are the acting choices alone. The sampling generator is
seeded as the benchmark seeds it, so ``stochastic`` replays the record's final evaluation.

Usage (from the repository root)::

    python zoo/results/metaworld_acting.py OUT/metaworld/models/diffusion_policy_metaworld-TASK_s0.zip \
        --task TASK [--seed 0] [--episodes 50] [--variants stochastic deterministic ...] \
        >> zoo/results/metaworld_acting.jsonl
"""

import argparse
import json
import time
from typing import Any

import torch

from diffgym.agents.diffusion_policy import DiffusionPolicy
from diffgym.zoo.benchmarks.harness import EVAL_SEED
from diffgym.zoo.benchmarks.metaworld import evaluate_actor, model_actor

#: variant -> (policy_kwargs overrides, deterministic)
VARIANTS: dict[str, tuple[dict[str, Any], bool]] = {
    "stochastic": ({}, False),
    "deterministic": ({}, True),
    "ddim50": ({"sampler": {"name": "ddim", "num_steps": 50}}, False),
    "ddpm100": ({"sampler": {"name": "ddpm"}}, False),
    "execute4": ({"n_action_steps": 4}, False),
    "execute2": ({"n_action_steps": 2}, False),
    "execute1": ({"n_action_steps": 1}, False),
}


def load_for_evaluation(path: str, overrides: dict[str, Any], seed: int) -> DiffusionPolicy:
    """The saved model with ``overrides`` merged over its ``policy_kwargs``, its sampling generator seeded as
    the benchmark's final evaluation of ``seed`` seeds it."""
    model = DiffusionPolicy.load(path, policy_kwargs=overrides)
    model.policy.sampling_generator.manual_seed(EVAL_SEED + seed)
    return model


def evaluate_variant(path: str, task: str, variant: str, episodes: int, seed: int) -> dict[str, Any]:
    overrides, deterministic = VARIANTS[variant]
    model = load_for_evaluation(path, overrides, seed)
    started = time.perf_counter()
    evaluation = evaluate_actor(model_actor(model, deterministic), task, episodes, EVAL_SEED + seed)
    return {
        "task": task,
        "model": path,
        "variant": variant,
        "seed": seed,
        "episodes": episodes,
        **evaluation.metrics,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a Diffusion Policy .zip saved by the benchmark")
    parser.add_argument("--task", required=True, help="its Meta-World task, e.g. peg-insert-side-v3")
    parser.add_argument(
        "--seed", type=int, default=0, help="the benchmark seed whose final episodes to replay"
    )
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    for variant in args.variants:
        print(
            json.dumps(evaluate_variant(args.model, args.task, variant, args.episodes, args.seed)), flush=True
        )


if __name__ == "__main__":
    main()
