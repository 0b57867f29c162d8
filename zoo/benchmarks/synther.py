"""SynthER offline: TD3+BC on a D4RL-style dataset and on its synthetic upsampling, same budget, same run.

1. Upsample the dataset with :func:`~diffgym.wrappers.synthesize_dataset` (SynthER's offline
   recipe: a diffusion model of ``[s, a, r, s', done]``, the agent then trains on synthetic data
   only) into a Minari dataset in the session's scratch store: the dataset ``<name>-synther``,
   ``suite:synthetic`` transitions from a model trained ``suite:diffusion_steps`` steps.
2. Quality of the synthetic transitions (a study): for synthetic (s, a), how far is synthetic s'
   from the simulator's s'? MuJoCo locomotion observations omit the x position and the dynamics
   do not depend on it, so the simulator is put in the state ``qpos = [0, obs[:nq-1]]``,
   ``qvel = obs[nq-1:]`` and stepped with a. The same figure for real dataset transitions is the
   floor (float32 storage, Hopper's velocity clip), and ``s' = s`` on the synthetic (s, a) a naive
   baseline. Also: reward error, agreement of ``done`` with the simulator's termination, and how
   far each dimension's mean and spread are from the real data's.
3. TD3+BC (``zoo/hyperparams/td3bc.yml``) on the real and on the synthetic data, the same gradient
   steps and seeds, evaluated as the d4rl suite does (D4RL-normalised). On the synthetic data its
   observations are standardised with the real data's mean and std, as SynthER's TD3+BC does
   (:func:`~diffgym.wrappers.fit_observation_normalizer`).

    diffgym benchmark synther --steps 40000 --seeds 2 --set suite:synthetic=200000
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from diffgym.data import load_dataset, load_transitions
from diffgym.wrappers import SynthERConfig, fit_observation_normalizer, synthesize_dataset
from diffgym.wrappers.synther import fit_on_dataset
from diffgym.zoo.benchmarks.harness import (
    Budget,
    Dataset,
    Report,
    Run,
    Session,
    Suite,
    read_d4rl_file,
    train_and_evaluate,
)
from diffgym.zoo.benchmarks.report import markdown_table
from diffgym.zoo.download import file_sha256

Arrays = dict[str, np.ndarray]
SUFFIX = "-synther"  # dataset name of the synthetic upsampling of a file

# --------------------------------------------------------------------------- simulator check


def simulate(env: gym.Env, obs: np.ndarray, actions: np.ndarray) -> Arrays:
    """The simulator's ``(next_obs, reward, terminated)`` for each row of ``obs`` (N, nq-1+nv) and ``actions``."""
    sim: Any = env.unwrapped
    n_pos = sim.model.nq - 1
    if obs.shape[1] != n_pos + sim.model.nv:
        raise ValueError(f"observations of size {obs.shape[1]} are not qpos[1:] + qvel of {env.spec}")
    next_obs = np.empty_like(obs, dtype=np.float64)
    rewards, terminated = np.empty(len(obs)), np.empty(len(obs), dtype=bool)
    for i in range(len(obs)):
        sim.set_state(np.concatenate([[0.0], obs[i, :n_pos]]), obs[i, n_pos:].astype(np.float64))
        next_obs[i], rewards[i], terminated[i], _, _ = sim.step(actions[i])
    return {"next_obs": next_obs, "rewards": rewards, "terminated": terminated}


def quality(rows: Arrays, truth: Arrays, scale: np.ndarray, predicted_next: np.ndarray | None = None) -> dict:
    """How close ``rows``' s' (or ``predicted_next``), r and done are to the simulator's ``truth``.

    ``next_obs_error``: squared error of s' per dimension in units of the real s' spread (``scale``),
    averaged over dimensions: the mean over rows and the median row.
    """
    predicted = rows["next_obs"] if predicted_next is None else predicted_next
    per_row = (((predicted - truth["next_obs"]) / scale) ** 2).mean(axis=1)
    result = {
        "next_obs_error_mean": float(per_row.mean()),
        "next_obs_error_median": float(np.median(per_row)),
    }
    if predicted_next is None:
        result |= {
            "reward_abs_error": float(np.abs(rows["rewards"] - truth["rewards"]).mean()),
            "done_agreement": float(np.mean(rows["dones"].astype(bool) == truth["terminated"])),
            "done_rate": float(rows["dones"].mean()),
            "simulator_done_rate": float(truth["terminated"].mean()),
        }
    return result


def marginals(synthetic: Arrays, real: Arrays) -> dict[str, float]:
    """Largest per-dimension mean gap (in real std) and the range of std ratios over s, a, r, s'."""

    def matrix(rows: Arrays) -> np.ndarray:
        return np.concatenate([rows["obs"], rows["actions"], rows["rewards"][:, None], rows["next_obs"]], 1)

    fake, true = matrix(synthetic), matrix(real)
    std = true.std(0).clip(1e-6)
    ratio = fake.std(0) / std
    return {
        "max_mean_gap_in_std": float((np.abs(fake.mean(0) - true.mean(0)) / std).max()),
        "std_ratio_min": float(ratio.min()),
        "std_ratio_max": float(ratio.max()),
    }


def read_synthetic(dataset_id: str, n: int) -> Arrays:
    """The first ``n`` one-step episodes of a synthetic dataset as transition arrays."""
    episodes = list(load_dataset(dataset_id).iterate_episodes(episode_indices=list(range(n))))
    return {
        "obs": np.stack([e.observations[0] for e in episodes]),
        "actions": np.stack([e.actions[0] for e in episodes]),
        "rewards": np.array([e.rewards[0] for e in episodes]),
        "next_obs": np.stack([e.observations[1] for e in episodes]),
        "dones": np.array([e.terminations[0] for e in episodes]),
    }


def real_sample(dataset: str, n: int, seed: int) -> Arrays:
    data = load_transitions(dataset)
    index = np.random.default_rng(seed).choice(len(data.rewards), size=n, replace=False)
    return {
        "obs": np.asarray(data.observations)[index],
        "actions": data.actions[index],
        "rewards": data.rewards[index],
        "next_obs": np.asarray(data.next_observations)[index],
        "dones": data.terminals[index],
    }


def quality_table(env_id: str, synthetic: Arrays, real: Arrays) -> dict[str, Any]:
    env = gym.make(env_id)
    env.reset(seed=0)
    scale = real["next_obs"].std(0).clip(1e-6)
    fake_truth = simulate(env, synthetic["obs"], synthetic["actions"])
    real_truth = simulate(env, real["obs"], real["actions"])
    return {
        "synthetic": quality(synthetic, fake_truth, scale),
        "real (floor)": quality(real, real_truth, scale),
        "naive s' = s on synthetic (s, a)": quality(synthetic, fake_truth, scale, synthetic["obs"]),
        "marginals": marginals(synthetic, real),
        "n": len(synthetic["obs"]),
    }


# --------------------------------------------------------------------------- the suite


def prepare(name: str, session: Session) -> Dataset:
    """A data file, or (``<file>-synther``) its synthetic upsampling, made in the session's Minari store."""
    if not name.endswith(SUFFIX):
        return read_d4rl_file(name, session)
    source = read_d4rl_file(name.removesuffix(SUFFIX), session)
    n = session.params["synthetic"]
    config = SynthERConfig(train_steps=session.params["diffusion_steps"])
    generator = fit_on_dataset(load_dataset(source.data), config, seed=0)
    synthetic = synthesize_dataset(source.data, f"synther/{source.name}-{n}-v0", n, seed=0, model=generator)
    synthesis = {**synthetic.storage.metadata["synthesis"], "config": config.to_json()}
    info = {"source": source.info["file"], "env_id": source.info["env_id"], "transitions": n}
    if session.save_models:  # the transition model, which the zoo publishes
        path = session.folder / "models" / f"{name}.safetensors"
        generator.save(path)
        info["generator"] = {"file": path.name, "sha256": file_sha256(path)}
    return Dataset(name, synthetic, info | {"mean_return": None, "synthesis": synthesis})


def train_with_real_statistics(model: Any, run: Run) -> dict[str, Any]:
    """:func:`~diffgym.zoo.benchmarks.harness.train_and_evaluate`; on a synthetic dataset the agent's
    observation normaliser is first refitted to the real source (SynthER's agents standardise with
    the real data's statistics, not the synthetic data's)."""
    if run.dataset.name.endswith(SUFFIX):
        fit_observation_normalizer(model, run.dataset.info["source"])
    return train_and_evaluate(model, run)


def quality_study(session: Session, dataset: Dataset) -> dict[str, Any] | None:
    """:func:`quality_table` of a synthetic dataset against a sample of its source (None: a real one)."""
    if not dataset.name.endswith(SUFFIX):
        return None
    n = min(session.params["quality_samples"], dataset.info["transitions"])
    synthetic = read_synthetic(dataset.data.id, n)
    return quality_table(dataset.info["env_id"], synthetic, real_sample(dataset.info["source"], n, 0))


def synthesis_section(report: Report) -> str:
    """How each synthetic dataset was made and how close its transitions are to the simulator's."""
    quality = report.study("quality") or {}
    parts = []
    for run in {
        r["config"]["dataset"]: r for r in report.runs if r["config"]["dataset"].endswith(SUFFIX)
    }.values():
        parts += [_synthesis_text(run["data"]), *_quality_text(quality.get(run["config"]["dataset"]))]
    return "\n\n".join(parts)


def _synthesis_text(data: dict[str, Any]) -> str:
    synthesis, config = data["synthesis"], data["synthesis"]["config"]
    return (
        f"## Synthetic data\n\n{data['transitions']:,} transitions from `diffgym.wrappers.synthesize_dataset` "
        f"(SynthER's offline recipe: the agent sees synthetic data only) fitted on the {synthesis['source_transitions']:,} "
        f"transitions of `{data['source']}`: a residual MLP of width {config['hidden_dim']} × {config['num_blocks']} "
        f"blocks (expansion {config['expansion']}) trained {config['train_steps']:,} steps at batch "
        f"{config['batch_size']} ({synthesis['fit_seconds'] / 60:.1f} min, final loss {synthesis['fit_loss']:.3f}), "
        f"sampled with {config['sampler']} ({synthesis['generate_seconds'] / 60:.1f} min); writing the Minari dataset "
        f"took {synthesis['store_seconds'] / 60:.1f} min. SynthER: width 2048 × 6, 100k steps, 5M samples, GPU."
    )


def _quality_text(q: dict[str, Any] | None) -> list[str]:
    if q is None:
        return []
    rows = [
        [name, f"{q[name]['next_obs_error_mean']:.4f}", f"{q[name]['next_obs_error_median']:.4f}",
         f"{q[name]['reward_abs_error']:.3f}" if "reward_abs_error" in q[name] else "-",
         f"{q[name]['done_agreement']:.4f}" if "done_agreement" in q[name] else "-",
         f"{q[name]['done_rate']:.4f} / {q[name]['simulator_done_rate']:.4f}" if "done_rate" in q[name] else "-"]
        for name in ("synthetic", "naive s' = s on synthetic (s, a)", "real (floor)")
    ]  # fmt: skip
    header = ["transitions", "s' error (mean)", "s' error (median)", "reward error (abs)", "done = sim's",
              "done rate / sim's"]  # fmt: skip
    m = q["marginals"]
    return [
        f"Quality: {q['n']:,} transitions each. *s' error*: squared error between s' and the simulator's s' "
        "after setting the state to s and stepping with a, per dimension in units of the real s' standard "
        "deviation, averaged over dimensions (mean over transitions, and the median transition). *done = "
        "sim's*: share whose done flag equals the simulator's termination. The real data's error is the floor "
        "(float32 storage, Hopper's velocity clip in the observation).",
        markdown_table(header, rows),
        f"Marginals of s, a, r, s' (synthetic vs real): largest mean gap {m['max_mean_gap_in_std']:.3f} real std; "
        f"std ratios {m['std_ratio_min']:.3f}–{m['std_ratio_max']:.3f}.",
    ]


SUITE = Suite(
    name="synther",
    title="SynthER offline: TD3+BC on real vs synthetic data",
    description=(
        "TD3+BC with the same gradient steps and seeds on the real data and on its SynthER upsampling "
        "(`<name>-synther`), D4RL-normalised returns of deterministic actions; observations standardised with "
        "the real data's statistics in both, as SynthER's TD3+BC. *data's own*: the real data's "
        "mean episode return, normalised (synthetic transitions have no episodes)."
    ),
    datasets=("hopper-medium", "hopper-medium" + SUFFIX),
    agents=("td3bc",),
    budget=Budget(seeds=2, steps=40_000, eval_every=10_000, eval_episodes=5, final_episodes=10),
    params={
        "synthetic": 200_000,  # synthetic transitions to generate
        "diffusion_steps": 10_000,  # training steps of the diffusion model
        "quality_samples": 5_000,  # transitions compared with the simulator
    },
    prepare=prepare,
    procedure=train_with_real_statistics,
    dataset_studies={"quality": quality_study},
    sections=(synthesis_section,),
)
