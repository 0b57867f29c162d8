import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from diffgym.data import (
    DatasetSpaceMismatchError,
    EpisodeLengthError,
    NonFiniteDataError,
    check_spaces,
    load_transitions,
    validate_dataset,
)


def test_check_spaces_accepts_float32_data_for_float64_env():
    check_spaces(spaces.Box(-1, 1, (3,), np.float32), spaces.Box(-1, 1, (3,), np.float64))
    check_spaces(spaces.Discrete(4), spaces.Discrete(4), "action")


@pytest.mark.parametrize(
    ("data", "env", "message"),
    [
        (
            spaces.Box(-1, 1, (3,)),
            spaces.Box(-1, 1, (4,)),
            r"observation shape \(3,\) in the dataset but \(4,\)",
        ),
        (spaces.Box(-1, 1, (3,)), spaces.Box(-2, 1, (3,)), "observation bounds differ"),
        (spaces.Box(-np.inf, np.inf, (3,)), spaces.Box(-1, 1, (3,)), "bounds differ"),
        (spaces.Box(0, 5, (3,), np.int64), spaces.Box(0, 5, (3,), np.float32), "different kind"),
        (spaces.Box(-1, 1, (3,)), spaces.Discrete(3), "Box in the dataset but Discrete"),
        (spaces.Discrete(3), spaces.Discrete(4), r"Discrete\(n=3"),
    ],
)
def test_check_spaces_mismatches(data, env, message):
    with pytest.raises(DatasetSpaceMismatchError, match=message) as error:
        check_spaces(data, env)
    assert str(data) in str(error.value) and str(env) in str(error.value)


def test_check_spaces_dict_keys_and_recursion():
    box = spaces.Box(-1, 1, (2,))
    with pytest.raises(DatasetSpaceMismatchError, match="keys differ"):
        check_spaces(spaces.Dict({"a": box}), spaces.Dict({"a": box, "b": box}))
    with pytest.raises(DatasetSpaceMismatchError, match=r"observation\['b'\] shape"):
        check_spaces(spaces.Dict({"a": box, "b": box}), spaces.Dict({"a": box, "b": spaces.Box(-1, 1, (5,))}))
    assert issubclass(DatasetSpaceMismatchError, ValueError)


@pytest.mark.parametrize(
    ("field", "row", "value", "dict_obs", "message"),
    [
        ("observations", 2, np.nan, False, r"observations of episode 1 at step 2"),
        ("observations", 3, np.inf, False, r"episode 1 at step 3 \(of 4 rows\) \(the final observation"),
        ("actions", 1, np.nan, False, "actions of episode 1 at step 1"),
        ("rewards", 0, -np.inf, False, "rewards of episode 1 at step 0"),
        ("desired_goal", 2, np.nan, True, r"observations\['desired_goal'\] of episode 1 at step 2"),
    ],
)
def test_non_finite_values_are_located(make_dataset, field, row, value, dict_obs, message):
    def edit(index, arrays):
        if index != 1:
            return
        target = arrays["observations"] if field == "desired_goal" else arrays
        target[field] = np.array(target[field], dtype=np.float64 if field == "rewards" else np.float32)
        target[field][row] = value

    make_dataset([2, 3], dict_obs=dict_obs, edit=edit)
    with pytest.raises(NonFiniteDataError, match=message):
        load_transitions("test/tiny/data-v0")
    load_transitions("test/tiny/data-v0", check_finite_values=False)


def test_episode_length_mismatch(make_dataset):
    def edit(index, arrays):
        if index == 1:
            arrays["actions"] = arrays["actions"][:-1]

    make_dataset([2, 3], edit=edit)
    with pytest.raises(EpisodeLengthError, match=r"episode 1 has 3 rewards .* actions: 2 \(expected 3\)"):
        load_transitions("test/tiny/data-v0")


def test_validate_dataset_with_env(make_dataset):
    make_dataset([2])
    validate_dataset("test/tiny/data-v0")
    env = gym.make("Pendulum-v1")
    with pytest.raises(DatasetSpaceMismatchError, match="observation bounds differ"):
        validate_dataset("test/tiny/data-v0", env)
