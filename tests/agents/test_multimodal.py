"""The diffusion actors keep both modes of bimodal behaviour; a Gaussian fit collapses between them."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from diffgym import IDQL, DiffusionQL
from diffgym.data import collect_dataset, load_transitions

MODE = 1.5  # behaviour actions are ±MODE (+ small noise) in Pendulum's [-2, 2], whatever the state
NEAR = 0.3  # an action within NEAR of a mode counts as on it

AGENTS = {
    # eta=0: pure behaviour cloning, so the test sees the diffusion model, not the Q-guidance
    "DiffusionQL": (
        DiffusionQL,
        dict(
            eta=0.0, learning_rate=3e-3, batch_size=128, policy_kwargs=dict(actor_hidden=64, critic_hidden=16)
        ),
    ),
    "IDQL": (
        IDQL,
        dict(
            learning_rate=3e-3,
            batch_size=128,
            policy_kwargs=dict(actor_hidden=64, actor_dropout=0.0, critic_hidden=16),
        ),
    ),
}


@pytest.fixture(scope="module")
def bimodal_dataset(minari_store):
    rng = np.random.default_rng(0)

    def two_clusters(obs):
        return np.array([rng.choice([-MODE, MODE]) + 0.05 * rng.standard_normal()], dtype=np.float32)

    return collect_dataset(
        gym.make("Pendulum-v1"), two_clusters, "test/pendulum/bimodal-v0", n_steps=2000, seed=0
    )


def near_mode_fractions(actions):
    return (np.abs(actions - MODE) < NEAR).mean(), (np.abs(actions + MODE) < NEAR).mean()


@pytest.mark.parametrize("name", list(AGENTS))
def test_diffusion_actor_keeps_both_modes(name, bimodal_dataset):
    cls, kwargs = AGENTS[name]
    model = cls("MlpPolicy", gym.make("Pendulum-v1"), dataset=bimodal_dataset, seed=0, **kwargs)
    model.learn(1500)
    observations = torch.as_tensor(load_transitions(bimodal_dataset).observations[:1000])
    with torch.no_grad():
        samples = model.policy.sample_actions(
            model.policy.features(observations), torch.Generator().manual_seed(0)
        )
    actions = model.policy.unscale_action(samples.numpy()).ravel()
    upper, lower = near_mode_fractions(actions)
    # Diffusion-QL's five-step chain leaves some mass between the modes (its paper's T trade-off);
    # a Gaussian fit puts under 0.2 near both modes together (next test)
    assert upper > 0.2 and lower > 0.2, (upper, lower)
    assert upper + lower > 0.45, (upper, lower)


def test_a_gaussian_fit_collapses_between_the_modes(bimodal_dataset):
    actions = load_transitions(bimodal_dataset).actions.ravel()
    fitted = np.random.default_rng(1).normal(actions.mean(), actions.std(), 1000)
    upper, lower = near_mode_fractions(fitted)
    assert upper + lower < 0.25, (upper, lower)
