"""Resumable runs: a run interrupted after a checkpoint and started again gives the same record."""

import dataclasses
import fcntl
import functools
import json

import pytest

from diffgym.callbacks import StopTrainingOnLossPlateau
from diffgym.scores import register_reference
from diffgym.zoo.benchmarks import checkpoints, harness
from diffgym.zoo.benchmarks.harness import Budget, Contender, Session, Suite, run_suite

REFERENCE = "diffgym-test-pendulum-tiny"
SMALL = ("batch_size=16", "policy_kwargs.num_candidates=2", "policy_kwargs.actor_hidden=16",
         "policy_kwargs.critic_hidden=16", "ema_start=1", "ema_every=1", "check_every=2")  # fmt: skip
BUDGET = Budget(steps=6, eval_every=2, eval_episodes=1, final_episodes=1, checkpoint_every=2)
RUN = "dql_pendulum-tiny_s0"


class Killed(Exception):
    """Stands for the process being stopped right after a checkpoint."""


@pytest.fixture(scope="module")
def suite():
    register_reference(REFERENCE, -1500.0, -150.0, "test references")
    return Suite(
        name="tiny",
        title="Tiny",
        description="Diffusion-QL on random Pendulum data.",
        datasets=("pendulum-tiny",),
        agents=(Contender("dql"),),
        budget=BUDGET,
        reference=lambda dataset: REFERENCE,
        measures={"steps_learned": lambda model, run: model.num_timesteps},  # of the model execute() kept
    )


def run_record(suite, data, out, budget=BUDGET, overrides=SMALL, run=RUN):
    session = Session(suite, data_dir=data, out=out, budget=budget, overrides=overrides)
    run_suite(session)
    return json.loads((session.folder / f"{run}.json").read_text())


def outcome(record):
    """What must not depend on interruptions: every evaluation's step and returns."""
    return [(p["step"], p["returns"]) for p in [*record["curve"], record["final"]]]


@pytest.fixture(scope="module")
def uninterrupted(suite, pendulum_file, tmp_path_factory):
    return run_record(suite, pendulum_file.parent, tmp_path_factory.mktemp("whole"))


def test_checkpointed_blocks_give_what_one_uninterrupted_learn_gives(
    suite, pendulum_file, tmp_path, uninterrupted
):
    plain = run_record(suite, pendulum_file.parent, tmp_path, dataclasses.replace(BUDGET, checkpoint_every=0))
    assert outcome(plain) == outcome(uninterrupted)
    assert [p["step"] for p in uninterrupted["curve"]] == [2, 4, 6]


def test_each_checkpoint_logs_the_runs_progress(suite, pendulum_file, tmp_path, capsys):
    run_record(suite, pendulum_file.parent, tmp_path)
    out = capsys.readouterr().out
    assert f"{RUN}: checkpoint at gradient step 2 of 6 (" in out and "score at step 6: " in out


def test_a_run_killed_after_a_checkpoint_resumes_to_the_same_record(
    suite, pendulum_file, tmp_path, uninterrupted, monkeypatch, capsys
):
    save = checkpoints.RunCheckpoint.save

    def save_then_die(self, model, run, progress):
        save(self, model, run, progress)
        if model.num_timesteps == 4:
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(checkpoints.RunCheckpoint, "save", save_then_die)
        with pytest.raises(Killed):
            run_record(suite, pendulum_file.parent, tmp_path)
    folder = tmp_path / "tiny" / "checkpoints" / RUN
    assert sorted(p.name for p in folder.iterdir()) == ["model-4.zip", "progress.json"]  # older model gone
    resumed = run_record(suite, pendulum_file.parent, tmp_path)
    assert f"{RUN}: resuming from gradient step 4" in capsys.readouterr().out
    assert outcome(resumed) == outcome(uninterrupted)
    assert resumed["extra"]["steps_learned"] == 6  # measures (and saved models) see the resumed model
    assert not folder.exists()  # removed with the record written


def test_a_checkpoint_of_another_configuration_is_not_resumed(suite, pendulum_file, tmp_path, capsys):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoints.RunCheckpoint, "clear", lambda self: None)  # keep it
        run_record(suite, pendulum_file.parent, tmp_path)
    record = run_record(suite, pendulum_file.parent, tmp_path, overrides=(*SMALL, "eta=0.5"))
    assert "is of another configuration; starting afresh" in capsys.readouterr().out
    assert record["config"]["hyperparams"]["values"]["eta"] == 0.5
    assert [p["step"] for p in record["curve"]] == [2, 4, 6]


def test_a_finished_run_is_skipped_when_the_session_is_started_again(suite, pendulum_file, tmp_path, capsys):
    first = run_record(suite, pendulum_file.parent, tmp_path)
    second = run_record(suite, pendulum_file.parent, tmp_path)
    assert f"{RUN}: its record is there already (same configuration); skipped" in capsys.readouterr().out
    assert second == first  # the record was left as it was


def test_a_run_another_session_holds_is_left_to_it(suite, pendulum_file, tmp_path, capsys):
    claims = tmp_path / "tiny" / "claims"
    claims.mkdir(parents=True)
    two_seeds = dataclasses.replace(BUDGET, seeds=2)
    with open(claims / f"{RUN}.lock", "ab") as held:  # another session runs seed 0
        fcntl.flock(held, fcntl.LOCK_EX)
        run_record(suite, pendulum_file.parent, tmp_path, two_seeds, run="dql_pendulum-tiny_s1")
        assert (
            f"{RUN}: another session on {tmp_path / 'tiny'} is running it; skipped" in capsys.readouterr().out
        )
        assert not (tmp_path / "tiny" / f"{RUN}.json").exists()
    run_record(suite, pendulum_file.parent, tmp_path, two_seeds)  # released: this session does it
    assert "dql_pendulum-tiny_s1: its record is there already" in capsys.readouterr().out


def test_a_session_whose_runs_are_all_held_elsewhere_reports_nothing_yet(
    suite, pendulum_file, tmp_path, capsys
):
    claims = tmp_path / "tiny" / "claims"
    claims.mkdir(parents=True)
    with open(claims / f"{RUN}.lock", "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert run_suite(Session(suite, data_dir=pendulum_file.parent, out=tmp_path, budget=BUDGET)) is None
    assert f"no records in {tmp_path / 'tiny'} yet: the runs are another session's" in capsys.readouterr().out


def test_a_negative_checkpoint_period_is_refused_by_name():
    with pytest.raises(
        ValueError, match=r"checkpoint_every must be 0 \(none\) or a number of gradient steps, got -5"
    ):
        Budget(checkpoint_every=-5)


@pytest.mark.parametrize("checkpoint_every", [3, 4])  # blocks across the windows of 4, and along them
def test_a_run_until_flat_stops_there_and_resumes_to_the_same_stop(
    pendulum_file, tmp_path, monkeypatch, capsys, checkpoint_every
):
    """BC with a learning rate of 0 cannot improve: it stops after its third window of 4 steps, and a
    run killed after its second checkpoint resumes the stop's windows and stops at the same step."""
    monkeypatch.setattr(  # 50 %: batch noise never passes for progress
        harness,
        "StopTrainingOnLossPlateau",
        functools.partial(StopTrainingOnLossPlateau, min_improvement=0.5),
    )
    flat = Suite(name="flat", title="Flat", description="BC that cannot learn.", datasets=("pendulum-tiny",),
                 agents=(Contender("bc"),), budget=Budget(steps=40, final_episodes=1, until_flat=4),
                 reference=lambda dataset: None)  # fmt: skip
    frozen = ("batch_size=16", "learning_rate=0.0", "check_every=2")
    whole = run_record(
        flat, pendulum_file.parent, tmp_path / "whole", flat.budget, frozen, "bc_pendulum-tiny_s0"
    )
    assert whole["plateau"]["stopped_at"] == whole["final"]["step"] == 12
    assert len(whole["plateau"]["window_means"]) == 3
    save = checkpoints.RunCheckpoint.save

    def save_then_die(self, model, run, progress):
        save(self, model, run, progress)
        if model.num_timesteps == 2 * checkpoint_every:
            raise Killed

    checkpointed = dataclasses.replace(flat.budget, checkpoint_every=checkpoint_every)
    with monkeypatch.context() as patch:
        patch.setattr(checkpoints.RunCheckpoint, "save", save_then_die)
        with pytest.raises(Killed):
            run_record(
                flat, pendulum_file.parent, tmp_path / "cut", checkpointed, frozen, "bc_pendulum-tiny_s0"
            )
    resumed = run_record(
        flat, pendulum_file.parent, tmp_path / "cut", checkpointed, frozen, "bc_pendulum-tiny_s0"
    )
    assert f"resuming from gradient step {2 * checkpoint_every}" in capsys.readouterr().out
    assert resumed["plateau"] == whole["plateau"] and outcome(resumed) == outcome(whole)
    report = (tmp_path / "whole" / "flat.md").read_text()
    assert "12 (until flat, ≤ 40)" in report and "*Until flat*: a run stops once 2 windows of 4" in report


def test_records_from_before_until_flat_existed_are_the_same_runs():
    budget = {"steps": 6, "eval_every": 2, "gradient_steps": 6}
    old = checkpoints._identity("tiny", "dql", "d", 0, "default", {}, budget)
    assert old == checkpoints._identity("tiny", "dql", "d", 0, "default", {}, budget | {"until_flat": 0})
    assert old != checkpoints._identity("tiny", "dql", "d", 0, "default", {}, budget | {"until_flat": 4})


def test_until_flat_is_refused_where_runs_train_their_own_way(pendulum_file, tmp_path):
    own = Suite(name="own", title="Own", description="Runs that train their own way.", datasets=("pendulum-tiny",),
                agents=(Contender("bc"),), budget=Budget(steps=4, until_flat=2), procedure=lambda model, run: {})  # fmt: skip
    with pytest.raises(
        ValueError, match="--until-flat does not apply to 'own': its runs train their own way"
    ):
        run_suite(Session(own, data_dir=pendulum_file.parent, out=tmp_path, budget=own.budget))
