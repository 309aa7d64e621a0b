"""Executors: the experiment's records are the serial run's, bit for bit, in local worker
processes and on a real local Ray cluster (also when a worker is killed mid-job); Ray Tune
trials run and report. Ray tests skip without Ray, except with RMTL_REQUIRE_RAY=1 (CI), where
they fail."""

import concurrent.futures as cf
import dataclasses
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import require
from test_agent import FAST, NET, session_data

import rmtl
from rmtl.lab import _ray, _threads
from rmtl.lab.cli import main
from rmtl.lab.executors import RayExecutor
from rmtl.lab.graph import Executor, Job, JobOutput, Settings, graph, run_graph
from rmtl.lab.sweep import load_sweep
from rmtl.lab.units import execute

TINY = dict(FAST, critic_epochs=2, epochs=2)
TINY.pop("progress")
KW = dict(
    backbones=("esmm", "sharedbottom"),
    seeds=(0, 1),
    weightings=("rmtl",),
    transfer=(("esmm", "sharedbottom"),),
    backbone_kwargs=NET,
    rmtl_kwargs=TINY,
    threads_per_job=1,
)


@pytest.fixture(scope="module")
def splits():
    return session_data(n_sessions=200, seed=1).split()


@pytest.fixture(scope="module")
def serial(splits):
    return rmtl.experiment(*splits, **KW).records


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs for this module's tests (Ray missing: skip, or fail on CI)."""
    ray = require(
        "ray",
        os.environ.get("RMTL_REQUIRE_RAY") == "1",
        "RMTL_REQUIRE_RAY=1: pip install 'rmtl[ray]'",
    )
    _ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False
    )  # workers import the rmtl under test
    yield ray
    ray.shutdown()


def test_graph_stages_variants_and_transfer_dependencies():
    jobs = graph(
        ("esmm", "mmoe"), ("esmm", "mmoe"), (0,), ("rmtl", "constant"), (("esmm", "mmoe"),)
    )
    assert [j.key for j in jobs] == [
        "esmm-seed0/pretrain",
        "esmm-seed0/critics",
        "esmm-seed0/finetune-rmtl",
        "esmm-seed0/finetune-constant",
        "mmoe-seed0/pretrain",
        "mmoe-seed0/critics",
        "mmoe-seed0/finetune-rmtl",
        "mmoe-seed0/finetune-constant",
        "mmoe-seed0/transfer-esmm",
    ]
    transfer = jobs[-1]
    assert transfer.variant == "rmtl[critics of esmm]"
    assert transfer.deps == (Job("pretrain", "mmoe", 0), Job("critics", "esmm", 0))
    assert jobs[3].deps == (Job("pretrain", "esmm", 0),)  # constant weights read no critics
    for i, job in enumerate(jobs):
        assert all(jobs.index(d) < i for d in job.deps)


def test_run_graph_says_what_keeps_the_jobs_from_starting():
    """No runnable job: a runner taking none is named as such, not as missing inputs; a
    missing input is named, also when a job of the same key but other settings is there."""

    class Now(Executor):
        def __init__(self, capacity):
            self.capacity, self.ran = capacity, []

        def submit(self, job, settings, inputs):
            self.ran.append(job.key)
            future = cf.Future()
            future.set_result(JobOutput({}, [], {}))
            return future

    settings = Settings({}, rmtl.RMTLConfig())
    jobs = graph(("esmm",), ("esmm",), (0,), ("rmtl", "continued"), ())
    runner = Now(1)
    assert set(run_graph(jobs, settings, runner)) == set(jobs) and len(runner.ran) == 4
    with pytest.raises(ValueError, match="runner: expected a capacity of at least 1 job, got 0"):
        run_graph(jobs, settings, Now(0))
    with pytest.raises(ValueError, match=r"jobs: inputs \['esmm-seed0/pretrain'\] are not in"):
        run_graph(jobs[1:], settings, Now(1))
    # the control's reference is the rmtl job of its own budget (epochs None), not this one
    other = [dataclasses.replace(j, epochs=3) if j.weighting == "rmtl" else j for j in jobs]
    with pytest.raises(ValueError, match=r"inputs \['esmm-seed0/finetune-rmtl'\] are not in"):
        run_graph(other, settings, Now(1))


@pytest.mark.parametrize("how", ["processes", "executor"])
def test_local_processes_give_the_serial_records(splits, serial, how):
    if how == "processes":
        res = rmtl.experiment(*splits, executor=2, **KW)
    else:
        with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            res = rmtl.experiment(*splits, executor=pool, **KW)
    assert res.records == serial


def test_threads_limit_sets_and_restores_the_threads_of_a_job():
    before = rmtl.get_num_threads()
    with _threads.limit(
        1
    ):  # rmtl.set_num_threads: rmtl's loops and its BLAS (test_first_layer checks both)
        assert rmtl.get_num_threads() == 1
    assert rmtl.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        with _threads.limit(0):
            pass


def test_bad_executor_and_missing_ray(splits, monkeypatch):
    for bad, error in (("dask", ValueError), (0, ValueError), (1.5, TypeError)):
        with pytest.raises(error, match="executor"):
            rmtl.experiment(*splits, executor=bad, **KW)
    with pytest.raises(ValueError, match="threads_per_job"):
        rmtl.experiment(*splits, executor=2, **dict(KW, threads_per_job=0))
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'rmtl\[ray\]'"):
        rmtl.experiment(*splits, executor="ray", **KW)


def test_ray_gives_the_serial_records(cluster, splits, serial):
    agents = []
    res = rmtl.experiment(
        *splits,
        executor="ray",
        on_agent=lambda name, seed, agent: agents.append(
            (name, seed, len(agent.critics), sorted(agent.history))
        ),
        **KW,
    )
    assert res.records == serial
    assert sorted(agents) == [
        (name, seed, 2, ["critics", "finetuned-rmtl", "pretrain"])
        for name in ("esmm", "sharedbottom")
        for seed in (0, 1)
    ]


def test_ray_tasks_read_the_data_from_the_object_store(cluster, splits):
    @cluster.remote
    def flags(data):
        return [
            (a.flags.writeable, a.flags.owndata)
            for d in data
            for a in (d.sparse, d.dense, d.labels)
        ]

    runner = RayExecutor(execute, splits, threads=1)
    assert set(cluster.get(flags.remote(runner.data))) == {(False, False)}  # views of shared memory


def _ray_processes(title):
    """Process ids whose title (Ray sets it to ``ray::<task or actor method>``) starts with
    ``title``."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(title):
                    yield int(pid)
        except OSError:
            continue


def _kill_when(ready, title, killed, stop):
    """Until ``stop``: once ``ready()``, SIGKILL every process titled ``title`` seen (at least
    one)."""
    while not stop.is_set():
        if ready():
            for pid in _ray_processes(title):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            if killed:
                return
        time.sleep(0.002)


def _killing(ready, title, run):
    """``run()`` while a thread kills the processes titled ``title`` once ``ready()``; returns
    (run's result, the pids killed)."""
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_when, args=(ready, title, killed, stop))
    killer.start()
    try:
        return run(), killed
    finally:
        stop.set()
        killer.join()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds Ray's workers in /proc")
def test_killed_ray_worker_is_retried_and_changes_nothing(cluster, splits, serial, tmp_path):
    res, killed = _killing(
        lambda: True,
        b"ray::_task",
        lambda: rmtl.experiment(*splits, executor="ray", checkpoint_dir=tmp_path, **KW),
    )
    assert killed
    assert res.records == serial


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds Ray's workers in /proc")
def test_tune_trial_whose_worker_dies_resumes_from_its_checkpoint(cluster, splits, tmp_path):
    import rmtl.lab.tune

    # two identical trials, with a stage 2 long enough to be killed in
    space = rmtl.lab.tune.search_space(
        {
            "backbone": "esmm",
            "backbone_kwargs": NET,
            **TINY,
            "critic_epochs": 20,
            "lam": 0.5,
            "weighting": {"grid": ["rmtl", "rmtl"]},
        }
    )

    # the driver logged iteration 3: stage 1's end, with its checkpoint
    def stage1_checkpoint_recorded():
        return any(len(f.read_text().splitlines()) >= 3 for f in tmp_path.glob("*/*/result.json"))

    grid, killed = _killing(
        stage1_checkpoint_recorded,
        b"ray::ImplicitFunc",
        lambda: rmtl.lab.tune.run(
            rmtl.lab.tune.three_stages, splits, space, scheduler="fifo", storage_path=str(tmp_path)
        ),
    )
    assert killed and not grid.errors
    assert list(tmp_path.glob("*/*/error.txt"))  # a trial failed ...
    # ... and went on from its checkpoint: iteration 3 restored, stage 1's end reported again
    assert max(r.metrics["training_iteration"] for r in grid) == 8
    assert grid[0].metrics["test_auc"] == grid[1].metrics["test_auc"]


SWEEP = """
[run]
models = ["esmm"]
n_users = 300
epochs = 2
critic_epochs = 1
min_steps = 0

[search]
lr = {loguniform = [1e-3, 3e-2]}
seed = {grid = [0, 1]}

[tune]
trials = 2
stages = 1
scheduler = "asha"
reduction_factor = 2
"""


def test_sweep_of_stage_1_runs_four_tune_trials_and_writes_the_table(cluster, tmp_path, capsys):
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP)
    # what kills of an earlier sweep left: a trial's scratch directory and a half-written table
    stale = [
        tmp_path / "out/tune/old/trial_1/.trial.abcd1234.tmp",
        tmp_path / "out/.x.abcd1234.tmp",
    ]
    stale[0].mkdir(parents=True)
    stale[1].write_text("half")
    for p in stale:
        os.utime(p, (1, 1))
    ctrl_c = signal.getsignal(signal.SIGINT)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 0
    assert not any(p.exists() for p in stale)
    assert not list((tmp_path / "out").rglob(".*.tmp"))  # the trials removed their scratch
    assert signal.getsignal(signal.SIGINT) is ctrl_c  # Tune's handler does not outlive the search
    printed = capsys.readouterr().out
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(rows) == 4 and sorted(r["seed"] for r in rows) == [0, 0, 1, 1]
    assert all(
        0 < r["valid_auc"] < 1 and r["valid_logloss"] > 0 and r["status"] != "error" for r in rows
    )
    finished = [r for r in rows if r["status"] == "finished"]
    assert finished and rows[0] == finished[0]  # finished trials first, the best on top
    assert [r["valid_auc"] for r in finished] == sorted(
        (r["valid_auc"] for r in finished), reverse=True
    )
    for r in finished:
        assert r["iterations"] == 3 and 0 < r["test_auc"] < 1  # 2 epochs of stage 1 and its end
    assert f"best: lr={finished[0]['lr']:.4f}, seed={finished[0]['seed']}" in printed
    assert "| lr | seed | status | iterations | valid_auc |" in printed
    assert {"results.md", "results.csv", "config.json"} <= {
        f.name for f in (tmp_path / "out").iterdir()
    }


def test_sweep_searches_a_balancer_and_its_hyperparameters(cluster, tmp_path, capsys):
    """[search] takes the stages' balancer and a table of its hyperparameters' distributions"""
    text = SWEEP.replace(
        "seed = {grid = [0, 1]}",
        'balancer = {grid = ["dwa"]}\nbalancer_args = {T = {uniform = [1.0, 4.0]}}',
    ).replace("lr = {loguniform = [1e-3, 3e-2]}\n", "")
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 0
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(rows) == 2 and all(r["balancer"] == "dwa" for r in rows)
    temperatures = [r["balancer_args"]["T"] for r in rows]
    assert all(1.0 <= t <= 4.0 for t in temperatures) and len(set(temperatures)) == 2
    assert all(r["status"] != "error" and 0 < r["valid_auc"] < 1 for r in rows)


def test_run_with_ray_and_with_jobs_print_the_same_table(cluster, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(
        _threads, "available_cores", lambda: 2
    )  # --processes 2: 1 thread per job, as on Ray
    argv = [
        "run",
        "--models",
        "esmm",
        "--n-users",
        "300",
        "--seeds",
        "1",
        "--epochs",
        "2",
        "--critic-epochs",
        "1",
        "--no-progress",
    ]
    tables = []
    for where in (["--ray"], ["--processes", "2", "--resume", str(tmp_path)]):
        assert main(argv + where) == 0
        tables.append(capsys.readouterr().out.split("\n", 1)[1])
    assert "RMTL-ESMM" in tables[0] and tables[0] == tables[1]
    assert (tmp_path / "esmm-seed0" / "critics" / "agent.json").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("[grid]\nx = 1\n", "unknown table(s) ['grid']"),
        ("[tune]\nsamples = 3\n", "unknown key(s) ['samples'] in [tune]"),
        ("[run]\nmodel = 'esmm'\n", "unknown key(s) ['model']"),
    ],
)
def test_sweep_file_mistakes_are_named(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        load_sweep(str(path))
    assert message in str(e.value)


def test_search_tables_and_search_settings_are_refused_before_ray_starts(
    splits, tmp_path, monkeypatch
):
    """A distribution table without its list, an unknown mode or scheduler: a ValueError
    naming it, from tune.run and run_sweep before connecting to Ray or loading data."""
    require("ray", os.environ.get("RMTL_REQUIRE_RAY") == "1", "RMTL_REQUIRE_RAY=1")
    import rmtl.lab.sweep
    import rmtl.lab.tune

    for spec, message in (
        ({"lam": {"uniform": 3}}, r"search.lam: uniform expects \[low, high\], got 3"),
        ({"lam": {"randint": [1, 2, 3]}}, r"search.lam: randint expects \[low, high\]"),
        ({"w": {"choice": 3}}, "search.w: choice expects a non-empty list of values, got 3"),
        ({"w": {"choice": "rmtl"}}, "search.w: choice expects .*, got 'rmtl'"),
        ({"w": {"grid": []}}, r"search.w: grid expects .*, got \[\]"),
        ({"args": {"T": {"loguniform": 1}}}, "search.T: loguniform expects"),
    ):
        with pytest.raises(ValueError, match=message):
            rmtl.lab.tune.search_space(spec)

    def never(*args, **kwargs):
        raise AssertionError("connected to Ray or loaded data before checking")

    monkeypatch.setattr(_ray, "connect", never)
    monkeypatch.setattr(rmtl.lab.sweep, "connect", never)
    monkeypatch.setattr(rmtl.lab.sweep, "load_dataset", never)
    for kwargs, message in (
        ({"mode": "maximum"}, "mode: expected 'max' or 'min', got 'maximum'"),
        ({"scheduler": "hyperband"}, r"scheduler: expected one of \['asha', 'fifo'\], got 'hy"),
    ):
        with pytest.raises(ValueError, match=message):
            rmtl.lab.tune.run(rmtl.lab.tune.pretrain, splits, {}, **kwargs)
        with pytest.raises(ValueError, match=message):
            rmtl.lab.sweep.run_sweep(rmtl.lab.sweep.SweepConfig(**kwargs))
    with pytest.raises(ValueError, match="search.lam: uniform expects"):
        rmtl.lab.sweep.run_sweep(rmtl.lab.sweep.SweepConfig(search={"lam": {"uniform": 3}}))


def _descendants(pid):
    """The pids of every living process below ``pid`` (from /proc), zombies left out."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat[0] != "Z":
            children.setdefault(int(stat[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pids):
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(pid)
        except OSError:
            pass
    return alive


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_exit_when_the_parent_of_run_processes_dies(tmp_path, sig):
    argv = ["run", "--models", "esmm", "--n-users", "3000", "--seeds", "2", "--epochs", "50"]
    argv += ["--critic-epochs", "50", "--processes", "2", "--no-progress", "--out", str(tmp_path)]
    parent = subprocess.Popen(
        [sys.executable, "-m", "rmtl", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp_path,  # from the checkout's root its unbuilt rmtl/ would shadow the package
    )
    try:
        deadline, workers, others = time.monotonic() + 120, [], []
        while time.monotonic() < deadline and parent.poll() is None:
            workers = [
                p
                for p in _descendants(parent.pid)
                if "spawn_main" in open(f"/proc/{p}/cmdline").read()
            ]
            if len(workers) == 2:
                break
            time.sleep(0.2)
        assert len(workers) == 2, parent.stderr.read() if parent.poll() is not None else workers
        others = _descendants(parent.pid)  # the workers and multiprocessing's resource tracker
        os.kill(parent.pid, sig)
        parent.wait(30)
        if sig == signal.SIGTERM:
            assert parent.returncode == 128 + signal.SIGTERM
        deadline = time.monotonic() + 10
        while _alive(others) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _alive(others) == []
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in _alive(others):  # what a failure left behind
            os.kill(pid, signal.SIGKILL)


NO_MAIN_GUARD = """
import sys
sys.path.insert(0, {tests!r})
from test_agent import NET, FAST, session_data
import rmtl
kw = dict(FAST, critic_epochs=1, epochs=1)
kw.pop("progress", None)
splits = session_data(n_sessions={n}, seed=1).split()
rmtl.experiment(*splits, executor=2, backbones=("esmm",), seeds=(0,), backbone_kwargs=NET,
                rmtl_kwargs=kw, threads_per_job=1)
print("finished")
"""


@pytest.mark.parametrize("n", [200, 100_000])  # data that fit in a pipe's buffer, and not
def test_executor_n_from_a_script_without_main_guard_raises(tmp_path, n):
    script = tmp_path / "no_guard.py"
    script.write_text(NO_MAIN_GUARD.format(tests=os.path.dirname(__file__), n=n))
    start = time.monotonic()
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert run.returncode != 0 and "finished" not in run.stdout
    assert "RuntimeError: a worker process died" in run.stderr
    assert 'need `if __name__ == "__main__":`' in run.stderr
    assert time.monotonic() - start < 60
