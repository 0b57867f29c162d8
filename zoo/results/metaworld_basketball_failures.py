"""Where a policy's basketball episodes fail: per episode, whether the hand came near the ball, grasped
it, how high the ball rose and how close it came to the hoop (Meta-World's own ``info`` flags).

Replays the benchmark's final-evaluation episodes of seed ``s`` (episode ``i`` reset with
``10_000 + s + i``, up to 500 steps, ending at the first success) with a Diffusion Policy saved by
``diffgym benchmark metaworld --save-models``, or with the scripted expert (``expert``). Episodes run
one at a time, so a policy's sampled noise is not the benchmark's (it batches them): the successes
are close to the record's, not equal.

Usage (from the repository root)::

    python zoo/results/metaworld_basketball_failures.py MODEL.zip|expert [--seed 0] [--episodes 50] \
        [--n-action-steps K] >> zoo/results/metaworld_basketball_failures.jsonl
"""

import argparse
import json
from typing import Any

import numpy as np
import torch
from metaworld_acting import load_for_evaluation  # beside this script

from diffgym.tasks.metaworld import make_task_env, reset_episode
from diffgym.zoo.benchmarks.harness import EVAL_SEED
from diffgym.zoo.benchmarks.metaworld import Actor, expert_actor, model_actor

TASK = "basketball-v3"
BALL_HEIGHT = 6  # the ball's z in the observation (hand xyz, gripper, ball xyz, ...)


def actor(model: str, seed: int, n_action_steps: int | None) -> Actor:
    if model == "expert":
        return expert_actor(TASK)
    overrides = {} if n_action_steps is None else {"n_action_steps": n_action_steps}
    return model_actor(load_for_evaluation(model, overrides, seed), deterministic=False)


def episode(act: Actor, reset_seed: int) -> dict[str, Any]:
    env = make_task_env(TASK)
    observation = reset_episode(env, reset_seed)
    state, start = None, np.ones(1, dtype=bool)
    near = grasped = False
    closest, highest, success_step = float("inf"), 0.0, 0
    for step in range(1, 501):
        actions, state = act(observation[None], state, start)
        start = np.zeros(1, dtype=bool)
        observation, _, _, _, info = env.step(actions[0])
        near, grasped = near or bool(info["near_object"]), grasped or bool(info["grasp_success"])
        closest, highest = (
            min(closest, float(info["obj_to_target"])),
            max(highest, float(observation[BALL_HEIGHT])),
        )
        if info["success"]:
            success_step = step
            break
    env.close()
    return {"success_step": success_step, "near_ball": near, "grasped": grasped,
            "ball_height_max": round(highest, 3), "ball_to_hoop_min": round(closest, 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a Diffusion Policy .zip saved by the benchmark, or 'expert'")
    parser.add_argument(
        "--seed", type=int, default=0, help="the benchmark seed whose final episodes to replay"
    )
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--n-action-steps", type=int, help="execute this many actions per chunk instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    act = actor(args.model, args.seed, args.n_action_steps)
    rows = [episode(act, EVAL_SEED + args.seed + i) for i in range(args.episodes)]
    failed = [row for row in rows if not row["success_step"]]
    summary = {
        "task": TASK, "model": args.model, "seed": args.seed, "n_action_steps": args.n_action_steps,
        "episodes": len(rows), "successes": len(rows) - len(failed),
        "failed_never_near": sum(not row["near_ball"] for row in failed),
        "failed_never_grasped": sum(row["near_ball"] and not row["grasped"] for row in failed),
        "failed_after_grasp": sum(row["grasped"] for row in failed),
        "episodes_detail": rows,
    }  # fmt: skip
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
