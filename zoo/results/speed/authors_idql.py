"""Training speed and acting latency of the AUTHORS' released IDQL code (JAX), on CPU, 1 thread.

Their code: github.com/philippe-eecs/IDQL at commit 7582571ce686c77b4ee0f592dd639ab8151295fa
(2023-12-05, "IDQL Bug Fixes and Simplfication"). Get it with::

    git clone https://github.com/philippe-eecs/IDQL idql-authors
    git -C idql-authors checkout 7582571ce686c77b4ee0f592dd639ab8151295fa

and pass that folder as ``--src``. It runs in its own environment (their code needs JAX, not our
torch)::

    python -m venv ../idql-venv
    ../idql-venv/bin/pip install "jax[cpu]==0.4.30" flax==0.8.5 optax==0.2.2 "numpy<2" h5py gymnasium

Patches to their source: NONE. Shims, all in this script:
  - their launcher (``launcher/examples/train_ddpm_iql_offline.py``) and its training loop
    (``examples/states/train_diffusion_offline.py``) are not imported (wandb, old gym, d4rl); this
    script builds their ``DDPMIQLLearner`` (``jaxrl5/agents/ddpm_iql_simple``, the one
    ``jaxrl5.agents`` exports) with the launcher's ``rl_config`` and hopper's critic_hyperparam 0.7,
    and times its jitted ``update`` on batches of 512, as that loop does;
  - ``gym`` is Gymnasium under the old name (their learner only reads ``gym.spaces`` types and
    ``gym.utils.seeding``);
  - the packages ``jaxrl5.agents`` and ``jaxrl5.data`` are entered without their ``__init__``,
    which imports every other agent (TensorFlow Probability) and the replay buffers;
  - batches are drawn with numpy from the local D4RL-layout file (their ``D4RLDataset`` needs d4rl);
    rewards are not normalised (the values do not change the cost of a step);
  - XLA runs on one thread (``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``);
    pin the process to one core (``taskset -c 1``) to compare with ours on one torch thread.

Usage (from the repository root)::

    taskset -c 1 ../idql-venv/bin/python zoo/results/speed/authors_idql.py --src DIR [--data FILE] [--steps N]

Prints one JSON line:
{"code": "authors-idql", "steps_per_second": ..., "ms_per_action": ..., "n_steps": N, "jax": "..."}
"""

import argparse
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path

os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import gymnasium
import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[3]  # the repository root
DATA = Path("../shared/datasets/hopper-medium.hdf5")  # from the repository root
#: their launcher's rl_config (train_ddpm_iql_offline.py), hopper's critic_hyperparam, batch 512
RL_CONFIG = dict(actor_lr=3e-4, critic_lr=3e-4, value_lr=3e-4, T=5, N=64, M=0, actor_dropout_rate=0.1,
                 actor_num_blocks=3, decay_steps=int(3e6), actor_layer_norm=True, value_layer_norm=True,
                 actor_tau=0.001, beta_schedule="vp", critic_hyperparam=0.7)  # fmt: skip
BATCH_SIZE = 512


def shim_imports(src: Path) -> None:
    """``gym`` as Gymnasium, and ``jaxrl5.agents`` / ``jaxrl5.data`` entered without their ``__init__``."""
    gym = types.ModuleType("gym")
    gym.spaces, gym.utils = gymnasium.spaces, gymnasium.utils  # type: ignore[attr-defined]
    sys.modules |= {"gym": gym, "gym.spaces": gymnasium.spaces, "gym.utils": gymnasium.utils,
                    "gym.utils.seeding": gymnasium.utils.seeding}  # fmt: skip
    sys.path.insert(0, str(src.resolve()))
    for package in ("jaxrl5.agents", "jaxrl5.agents.ddpm_iql_simple", "jaxrl5.data"):
        module = types.ModuleType(package)
        module.__path__ = [str(src.resolve().joinpath(*package.split(".")))]  # type: ignore[attr-defined]
        sys.modules[package] = module


def load_batches(path: Path) -> dict[str, np.ndarray]:
    keys = ("observations", "actions", "rewards", "next_observations", "terminals")
    with h5py.File(path, "r") as f:
        data = {k: f[k][:].astype(np.float32) for k in keys}
    data["masks"] = 1.0 - data.pop("terminals")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description="Steps/s and acting latency of the authors' IDQL.")
    parser.add_argument("--src", type=Path, required=True, help="checkout of the authors' repository")
    parser.add_argument(
        "--data", type=Path, default=DATA, help="D4RL-layout HDF5 file (relative: from the repo root)"
    )
    parser.add_argument("--steps", type=int, default=300, help="timed gradient steps")
    args = parser.parse_args()

    shim_imports(args.src)
    import jax
    import jax.numpy as jnp
    from jaxrl5.agents.ddpm_iql_simple.ddpm_iql_learner import DDPMIQLLearner

    data = load_batches(ROOT / args.data)
    n, obs_dim = data["observations"].shape
    act_dim = data["actions"].shape[1]
    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    action_space = gymnasium.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
    agent = DDPMIQLLearner.create(0, observation_space, action_space, **RL_CONFIG)
    rng = np.random.default_rng(0)

    def batch() -> dict:
        index = rng.integers(0, n, BATCH_SIZE)
        return {key: jnp.asarray(value[index]) for key, value in data.items()}

    for _ in range(20):  # compile and warm up
        agent, info = agent.update(batch())
    jax.block_until_ready(info)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        agent, info = agent.update(batch())
    jax.block_until_ready(info)
    train_s = time.perf_counter() - t0

    # acting: their eval_actions (N = 64 candidates through the DDPM chain, argmax of min-Q), batch 1
    states = data["observations"]
    for i in range(20):
        _, agent = agent.eval_actions(states[i])
    times = []
    for i in range(200):
        t0 = time.perf_counter()
        _, agent = agent.eval_actions(states[1000 + i])
        times.append(time.perf_counter() - t0)

    print(json.dumps({
        "code": "authors-idql",
        "steps_per_second": args.steps / train_s,
        "ms_per_action": 1000 * statistics.median(times),
        "n_steps": args.steps,
        "jax": jax.__version__,
    }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
