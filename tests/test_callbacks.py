"""StopTrainingOnLossPlateau: stops where the loss stops falling, resumes from its state, refuses what it cannot watch."""

import gymnasium as gym
import pytest
from stable_baselines3 import SAC

from diffgym.agents.baselines import HistoryBC
from diffgym.callbacks import StopTrainingOnLossPlateau
from diffgym.data import collect_dataset


@pytest.fixture(scope="module")
def dataset(minari_store):
    return collect_dataset(gym.make("Pendulum-v1"), None, "test/pendulum/plateau-v0", n_steps=400, seed=0)


def toy(dataset, learning_rate):
    return HistoryBC("MlpPolicy", "Pendulum-v1", dataset=dataset, learning_rate=learning_rate, batch_size=400,
                     check_every=5, seed=0)  # fmt: skip


def test_a_flat_loss_stops_training_after_patience_windows(dataset):
    model = toy(dataset, learning_rate=0.0)  # the loss cannot fall (beyond batch noise, far below 20 %)
    stop = StopTrainingOnLossPlateau(window=10, patience=2, min_improvement=0.2)
    model.learn(100, callback=stop)
    assert stop.stopped_at == 30 == model.num_timesteps  # window 1 is the best; 2 and 3 do not improve on it
    assert len(stop.windows) == 3


def test_a_falling_loss_trains_on(dataset):
    model = toy(dataset, learning_rate=1e-2)
    stop = StopTrainingOnLossPlateau(window=10, patience=2, min_improvement=0.001)
    model.learn(40, callback=stop)
    assert stop.stopped_at is None and model.num_timesteps == 40
    assert len(stop.windows) == 4 and min(stop.windows) < 0.9 * stop.windows[0]  # it did fall


def test_state_carries_a_run_over_learn_calls_and_checkpoints(dataset):
    whole = StopTrainingOnLossPlateau(window=10)
    toy(dataset, 1e-2).learn(35, callback=whole)
    first, model = StopTrainingOnLossPlateau(window=10), toy(dataset, 1e-2)
    model.learn(15, callback=first)  # stops mid-window
    second = StopTrainingOnLossPlateau(window=10)
    second.load_state_dict(first.state_dict())
    model.learn(20, callback=second, reset_num_timesteps=False)
    assert second.windows == pytest.approx(whole.windows) and len(whole.windows) == 3


def test_what_it_cannot_watch_is_refused_by_name(dataset):
    with pytest.raises(ValueError, match="multiple of the model's check_every"):
        toy(dataset, 0.0).learn(10, callback=StopTrainingOnLossPlateau(window=7))
    with pytest.raises(ValueError, match=r"no statistic 'q_loss'; it records \['bc_loss'\]"):
        toy(dataset, 0.0).learn(10, callback=StopTrainingOnLossPlateau(window=5, loss="q_loss"))
    with pytest.raises(TypeError, match="not a SAC's"):
        SAC("MlpPolicy", "Pendulum-v1").learn(1, callback=StopTrainingOnLossPlateau())
    with pytest.raises(ValueError, match="min_improvement"):
        StopTrainingOnLossPlateau(min_improvement=1.0)
