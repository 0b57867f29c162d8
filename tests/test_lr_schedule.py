"""The learning-rate decay follows the gradient steps taken, across ``learn`` calls and saving."""

import gymnasium as gym
import pytest
from stable_baselines3.common.callbacks import BaseCallback

from diffgym.agents.baselines import IQL
from diffgym.agents.dql import DiffusionQL
from diffgym.lr_schedules import cosine_decay

SMALL = dict(batch_size=16, check_every=10, seed=0, reward_scale=1.0, policy_kwargs=dict(hidden_dim=16))
BASE_LR = 3e-4


class ActorRates(BaseCallback):
    """Records the actor's learning rate after every gradient step."""

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def _on_step(self) -> bool:
        self.rates.append(self.model.policy.actor_optimizer.param_groups[0]["lr"])
        return True


def rates_of(model: IQL, *calls: int) -> list[float]:
    recorder = ActorRates()
    for index, steps in enumerate(calls):
        model.learn(steps, callback=recorder, reset_num_timesteps=index == 0)
    return recorder.rates


def test_decay_spans_the_stated_horizon_not_each_learn_call(pendulum_dataset):
    def model() -> IQL:
        return IQL("MlpPolicy", gym.make("Pendulum-v1"), dataset=pendulum_dataset, lr_decay_steps=40, **SMALL)

    in_one_call = rates_of(model(), 60)
    in_four_calls = rates_of(model(), 15, 15, 15, 15)
    assert in_four_calls == pytest.approx(in_one_call)  # one curve, no sawtooth
    expected = [BASE_LR * cosine_decay(1 - min(step / 40, 1.0)) for step in range(60)]
    assert in_one_call == pytest.approx(expected)
    assert in_one_call[39] > 0 and in_one_call[40:] == [0.0] * 20  # held at 0 past the horizon


def test_a_loaded_model_continues_the_decay(pendulum_dataset, tmp_path):
    model = IQL("MlpPolicy", gym.make("Pendulum-v1"), dataset=pendulum_dataset, lr_decay_steps=40, **SMALL)
    rates_of(model, 20)
    model.save(tmp_path / "iql.zip")
    loaded = IQL.load(tmp_path / "iql.zip", env=gym.make("Pendulum-v1"))
    loaded.set_dataset(pendulum_dataset)
    continued = rates_of(loaded, 10)
    expected = [BASE_LR * cosine_decay(1 - step / 40) for step in range(20, 30)]
    assert continued == pytest.approx(expected)


def test_no_decay_by_default_for_diffusion_ql(pendulum_dataset):
    model = DiffusionQL(
        "MlpPolicy", gym.make("Pendulum-v1"), dataset=pendulum_dataset, batch_size=16, seed=0,
        policy_kwargs=dict(actor_hidden=16, critic_hidden=16),
    )  # fmt: skip
    assert model.lr_decay_steps is None
    assert set(rates_of(model, 12)) == {BASE_LR}  # the released code's rate is effectively constant


def test_a_horizon_must_be_positive():
    with pytest.raises(ValueError, match="lr_decay_steps"):
        IQL("MlpPolicy", gym.make("Pendulum-v1"), lr_decay_steps=0, **SMALL)
