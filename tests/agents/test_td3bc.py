"""The TD3+BC baseline: its BC term imitates, its Q term improves on the data."""

import gymnasium as gym
import numpy as np
import torch

from diffgym.agents.baselines import TD3BC
from diffgym.data import collect_dataset, load_transitions


def constant_action_dataset(action, dataset_id):
    return collect_dataset(
        gym.make("Pendulum-v1"), lambda obs: np.array([action], np.float32), dataset_id, n_steps=400, seed=0
    )


def test_pure_behaviour_cloning_imitates_the_data(minari_store):
    dataset = constant_action_dataset(1.2, "test/pendulum/constant-v0")
    model = TD3BC("MlpPolicy", gym.make("Pendulum-v1"), dataset=dataset, alpha=0.0, batch_size=64, seed=0)
    model.learn(1000)
    actions, _ = model.predict(load_transitions(dataset).observations[::10], deterministic=True)
    np.testing.assert_allclose(actions, 1.2, atol=0.1)


def test_the_q_term_moves_the_actor_toward_higher_value(minari_store, pendulum_dataset):
    """On random data, a strong Q term finds actions its critic values above the cloned ones."""
    env = gym.make("Pendulum-v1")
    cloned = TD3BC("MlpPolicy", env, dataset=pendulum_dataset, alpha=0.0, batch_size=64, seed=0).learn(600)
    guided = TD3BC("MlpPolicy", env, dataset=pendulum_dataset, alpha=100.0, batch_size=64, seed=0).learn(600)
    observations = np.random.default_rng(1).uniform(-1, 1, (64, 3)).astype(np.float32)
    assert _q(guided, guided, observations) > _q(guided, cloned, observations)


def _q(judge, actor, observations):
    """Mean over observations of ``judge``'s critic on ``actor``'s actions (same normaliser: same data)."""
    features = judge.policy.features(torch.as_tensor(observations))
    with torch.no_grad():
        actions = actor.policy.actor(features)
        return judge.policy.critic(features, actions).min(dim=0).values.mean().item()
