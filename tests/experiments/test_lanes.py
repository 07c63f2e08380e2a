"""Lanes (icl_jax.experiments.lanes): the scheduling rule on known durations, the core split,
a job waiting for its prerequisite in another lane, and a failing child stopping the jobs that
depend on it. The lanes' numbers against in-process runs: tests/test_cli_runs.py (reproduce of
two toy experiments in two lanes)."""

import os

import pytest

from icl_jax.experiments import get_experiment
from icl_jax.experiments.lanes import Job, LaneError, default_lanes, lane_cores, run_jobs, schedule


def test_schedule_is_greedy_list_scheduling_in_order():
    # a(5) lane 0; b(3) lane 1; c waits for a; d(4) takes lane 1 at 3; c takes lane 0 at 5
    plan = schedule(["a", "b", "c", "d"], [5, 3, 2, 4], [None, None, "a", None], 2)
    assert plan["jobs"] == {"a": {"lane": 0, "start": 0.0, "end": 5.0}, "b": {"lane": 1, "start": 0.0, "end": 3.0},
                            "d": {"lane": 1, "start": 3.0, "end": 7.0}, "c": {"lane": 0, "start": 5.0, "end": 7.0}}
    assert plan["makespan"] == 7.0
    # a job whose prerequisite runs leaves its lane idle only while no other job is ready
    plan = schedule(["a", "b", "c"], [5, 1, 1], [None, "a", None], 2)
    assert plan["jobs"]["c"]["start"] == 0.0 and plan["jobs"]["b"]["start"] == 5.0 and plan["makespan"] == 6.0
    # one lane: one after another, in order
    assert schedule(["a", "b", "c"], [2, 3, 4], [None, None, None], 1)["makespan"] == 9.0
    # more lanes than jobs: the longest job
    assert schedule(["a", "b"], [2, 3], [None, None], 4)["makespan"] == 3.0


@pytest.mark.parametrize(
    "names,durations,after,lanes,message",
    [
        (["a", "b"], [1, 1], [None, "z"], 2, "waits for 'z', which is not a job"),
        (["a", "b"], [1, 1], ["b", None], 2, "must come before it"),
        (["a", "a"], [1, 1], [None, None], 2, "names must be unique"),
        (["a"], [-1], [None], 2, "durations"),
        (["a"], [1], [None], 0, "lanes must be an integer >= 1"),
    ],
)
def test_schedule_rejects_bad_input(names, durations, after, lanes, message):
    with pytest.raises(ValueError, match=message):
        schedule(names, durations, after, lanes)


def test_lane_cores_split_disjoint_near_equal_shares():
    assert lane_cores(2, [0, 1, 2, 3, 4]) == [(0, 1, 2), (3, 4)]
    assert lane_cores(1, [3, 7]) == [(3, 7)]
    assert lane_cores(3, [0, 1, 2]) == [(0,), (1,), (2,)]
    for bad in (0, 4, 1.5, True):
        with pytest.raises(ValueError, match=r"lanes must be an integer in \[1, 3\]"):
            lane_cores(bad, [0, 1, 2])


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs CPU affinity (Linux)")
def test_default_lanes_one_per_core_on_cpu_hosts_at_most_one_per_job(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    cores = len(os.sched_getaffinity(0))
    assert default_lanes() == cores and default_lanes(1) == 1 and default_lanes(100) == cores
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")  # an accelerator backend: no CPU lanes
    assert default_lanes() == 1


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_a_failed_job_stops_the_jobs_waiting_for_it(tmp_path):
    exp = get_experiment("data-baselines")
    bad = {**exp.quick.to_dict(), "samples": -1}  # rejected by the child's config check
    jobs = [Job("data-baselines", bad, tmp_path / "a", "custom", "new"),
            Job("after-it", exp.quick.to_dict(), tmp_path / "b", "quick", "new", after="data-baselines")]
    with pytest.raises(LaneError, match="1 experiment\\(s\\) failed: data-baselines; not started: after-it"):
        run_jobs(jobs, 1, tmp_path / "logs", on_event=lambda line: None)
    assert "samples" in (tmp_path / "logs" / "data-baselines.log").read_text()
    assert not (tmp_path / "b").exists()


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two cores (one per lane)")
def test_a_job_starts_after_its_prerequisite_even_with_a_lane_free(tmp_path):
    """b waits for a although the second lane is idle; both finish and write their folders."""
    config = get_experiment("data-baselines").quick.replace(samples=512, vocab_size=3, seq_len=6, dag_vocab_size=3,
                                                             ngram_seq_len=12).to_dict()  # small programs
    jobs = [Job("a", config, tmp_path / "a", "custom", "new", experiment="data-baselines"),
            Job("b", config, tmp_path / "b", "custom", "new", after="a", experiment="data-baselines")]
    results = run_jobs(jobs, 2, tmp_path / "logs", on_event=lambda line: None)
    assert results["b"]["start"] >= results["a"]["end"] and results["a"]["lane"] == 0
    assert results["a"]["metrics"] == results["b"]["metrics"] | {"wall_seconds": results["a"]["metrics"]["wall_seconds"]}
