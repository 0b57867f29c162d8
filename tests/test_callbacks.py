"""StopTrainingOnLossPlateau: stops where the loss stops falling, resumes from its state, refuses what it cannot watch."""

import json

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


@pytest.mark.parametrize("first_call", [3, 13])  # shorter than check_every; mid-window
def test_a_run_saved_and_resumed_anywhere_gives_the_uninterrupted_windows(dataset, tmp_path, first_call):
    whole = StopTrainingOnLossPlateau(window=10)
    toy(dataset, 1e-2).learn(35, callback=whole)
    first, model = StopTrainingOnLossPlateau(window=10), toy(dataset, 1e-2)
    model.learn(first_call, callback=first)
    model.save(tmp_path / "bc")
    resumed = HistoryBC.load(tmp_path / "bc", env=gym.make("Pendulum-v1"), dataset=dataset)
    second = StopTrainingOnLossPlateau(window=10)
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))  # as a checkpoint keeps it
    resumed.learn(35 - first_call, callback=second, reset_num_timesteps=False)
    assert len(whole.windows) == 3 and second.windows == whole.windows  # exactly: float64 sums


def test_a_stopped_callback_and_another_models_callback_are_refused(dataset):
    model = toy(dataset, learning_rate=0.0)
    stop = StopTrainingOnLossPlateau(window=10, min_improvement=0.2)
    model.learn(100, callback=stop)
    with pytest.raises(RuntimeError, match="stopped training at gradient step 30; train on with a new one"):
        model.learn(10, callback=stop, reset_num_timesteps=False)
    assert model.num_timesteps == 30  # not one step more
    watched = StopTrainingOnLossPlateau(window=10)
    model.learn(20, callback=watched, reset_num_timesteps=False)
    with pytest.raises(RuntimeError, match="up to gradient step 50, and this one is at step 0"):
        toy(dataset, 0.0).learn(10, callback=watched)


def test_what_it_cannot_watch_is_refused_by_name(dataset):
    with pytest.raises(
        ValueError,
        match=r"no statistic 'q_loss' in the gradient steps up to 5; the model records \['bc_loss'\]",
    ):
        toy(dataset, 0.0).learn(10, callback=StopTrainingOnLossPlateau(window=5, loss="q_loss"))
    with pytest.raises(TypeError, match="not a SAC's"):
        SAC("MlpPolicy", "Pendulum-v1").learn(1, callback=StopTrainingOnLossPlateau())
    with pytest.raises(ValueError, match="min_improvement"):
        StopTrainingOnLossPlateau(min_improvement=1.0)
