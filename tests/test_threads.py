"""Memory safety under threads and misuse: what the core reads with the GIL released cannot be
changed under it, objects refuse a second __init__, and a call on a busy network waits for the
running call.

The racing cases run in a child process, so a crash (the bug) fails the test instead of
killing the test run."""

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import random_session_data

import rmtl
from rmtl import _core

PACKAGE_DIR = (
    Path(rmtl.__file__).resolve().parents[1]
)  # the rmtl under test: installed, or built in place
TESTS = Path(__file__).resolve().parent


def run_child(code: str) -> None:
    """Runs code in a fresh interpreter that imports the rmtl under test; it must exit 0."""
    prelude = f"import sys\nsys.path[:0] = [{str(PACKAGE_DIR)!r}, {str(TESTS)!r}]\n"
    run = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"child exited with {run.returncode}:\n{run.stderr[-3000:]}"


RACE = """
import threading
import numpy as np
import rmtl

rng = np.random.default_rng(0)
field_dims = (50, 40, 30)
n = 100_000
sparse = np.stack([rng.integers(0, d, n) for d in field_dims], 1).astype(np.int32)
dense = rng.normal(size=(n, 2)).astype(np.float32)
stop = threading.Event()

def writer():
    # out-of-range codes appear and disappear in the array the call reads
    while not stop.is_set():
        sparse[:, 0] = 1_000_000_000
        sparse[:, 0] = 1
"""


def test_writer_thread_cannot_crash_predict():
    run_child(
        RACE
        + """
model = rmtl.models.SharedBottom(field_dims, 2, 2, embed_dim=8, bottom_dims=(16,), tower_dims=(8,))
t = threading.Thread(target=writer)
t.start()
outcomes = set()
try:
    for _ in range(30):
        try:
            model.predict(sparse, dense, batch_size=4096)
            outcomes.add("ok")
        except ValueError as e:
            assert "sparse" in str(e), e
            outcomes.add("rejected")
finally:
    stop.set()
    t.join()
print(outcomes)
"""
    )


def test_writer_thread_cannot_crash_training():
    run_child(
        RACE
        + """
labels = (rng.random((n, 2)) < 0.3).astype(np.float32)
model = rmtl.models.SharedBottom(field_dims, 2, 2, embed_dim=8, bottom_dims=(16,), tower_dims=(8,))
rows = np.arange(n, dtype=np.int64)
t = threading.Thread(target=writer)
t.start()
try:
    for _ in range(10):
        try:
            model.train_chunk(rows, sparse, dense, labels, batch_size=512, lr=1e-3)
        except ValueError as e:
            assert "sparse" in str(e) or "code" in str(e), e
finally:
    stop.set()
    t.join()
"""
    )


def test_env_reads_its_own_offsets():
    """Changing the data's session offsets after building an environment cannot send it
    outside the data: it keeps a private copy."""
    run_child("""
import numpy as np
from conftest import random_session_data
from rmtl.env import VecSessionEnv

data = random_session_data()
env = VecSessionEnv(data, num_envs=4, seed=1)
twin = VecSessionEnv(random_session_data(), num_envs=4, seed=1)
data.offsets[1:-1] = 10**12
for e in (env, twin):
    e.reset(seed=3)
for _ in range(40):
    a = np.full((4, 2), 0.5, np.float32)
    got, want = env.step(a), twin.step(a)
    np.testing.assert_array_equal(got[0]["sparse"], want[0]["sparse"])
""")


def core_objects():
    """Every core type with arguments that build it."""
    import dataclasses

    from rmtl.datasets.synth import _PY_ONLY

    data = random_session_data()
    fd = np.asarray(data.field_dims, np.int32)
    cfg = rmtl.datasets.PRESETS["retailrocket"]
    keys = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in _PY_ONLY}
    keys.update(n_users=cfg.calibration_users, seed=0)
    fields = [(_core.enums["field_kind"][f.kind], f.levels, f.missing, f.skew) for f in cfg.fields]
    return {
        "Model": (
            _core.Model,
            (_core.enums["backbone"]["sharedbottom"], fd, 2, 2, 4, (8,), (4,), 0.0, 0),
        ),
        "Critic": (
            _core.Critic,
            (fd, 2, 4, np.array([8], np.int32), np.array([4], np.int32), 0.0, 0),
        ),
        "Replay": (_core.Replay, (10, 2, 0)),
        "Env": (_core.Env, (data.offsets, data.sparse, data.dense, data.labels, 2, 0, 0, True, 0)),
        "SynthWorld": (_core.SynthWorld, (keys, fields)),
    }


@pytest.mark.parametrize("kind", ["Model", "Critic", "Replay", "Env", "SynthWorld"])
def test_second_init_is_refused(kind):
    """__init__ twice used to free buffers that views and running calls still use."""
    cls, args = core_objects()[kind]
    obj = cls(*args)
    view = obj.buffer("param") if hasattr(obj, "buffer") else None
    with pytest.raises(RuntimeError, match="already initialised"):
        obj.__init__(*args)
    if view is not None:
        view[:] = 1.0  # the buffer the view points to is still the object's
        assert (obj.buffer("param") == 1.0).all()


def test_call_on_a_busy_model_waits_for_the_running_call():
    rng = np.random.default_rng(1)
    n, field_dims = 60_000, (50, 40, 30)
    sparse = np.stack([rng.integers(0, d, n) for d in field_dims], 1).astype(np.int32)
    dense = rng.normal(size=(n, 2)).astype(np.float32)
    labels = (rng.random((n, 2)) < 0.3).astype(np.float32)
    model = rmtl.models.SharedBottom(
        field_dims, 2, 2, embed_dim=16, bottom_dims=(64, 32), tower_dims=(16,)
    )
    rows = np.tile(np.arange(n, dtype=np.int64), 4)
    result = {}
    before = model.predict(sparse[:4], dense[:4])

    def train():
        result["loss"] = model.train_chunk(rows, sparse, dense, labels, batch_size=256, lr=1e-3)[0]

    t = threading.Thread(target=train)
    t.start()
    seen = []
    while t.is_alive():  # each waits for the whole train_chunk (or runs before it starts)
        seen.append(model.predict(sparse[:4], dense[:4]))
    t.join()
    after = model.predict(sparse[:4], dense[:4])
    assert np.isfinite(result["loss"]) and not np.array_equal(before, after)
    assert seen and all(np.array_equal(p, before) or np.array_equal(p, after) for p in seen)
    assert any(np.array_equal(p, after) for p in seen)  # one waited, none saw a part


POOL = """
import numpy as np
import rmtl

rng = np.random.default_rng(0)
fields = (50, 900, 4, 30)
n = 4096
sparse = np.stack([rng.integers(0, d, n) for d in fields], 1).astype(np.int32)
dense = rng.normal(size=(n, 3)).astype(np.float32)
labels = (rng.random((n, 2)) < 0.3).astype(np.float32)

def trained(name="mmoe"):
    # large enough that loops and products run on the pool, products split into parts
    m = rmtl.models.create(name, fields, 3, 2, embed_dim=32, bottom_dims=(256, 64),
                           tower_dims=(32,), dropout=0.2, seed=1)
    m.train_chunk(np.arange(n, dtype=np.int64), sparse, dense, labels, batch_size=1024, lr=1e-3)
    return np.concatenate([p.ravel() for p in m.parameters()])
"""


def test_pool_survives_thread_count_changes():
    """the pool follows every rmtl.set_num_threads, up and down, between calls; the weights
    stay the same bits throughout"""
    run_child(
        POOL
        + """
rmtl.set_num_threads(1)
want = trained()
for threads in (2, 3, 1, 4, 2):
    rmtl.set_num_threads(threads)
    assert rmtl.get_num_threads() == threads
    assert np.array_equal(trained(), want), threads
"""
    )


def test_small_widths_same_bits_on_any_thread_count():
    """the quick preset's widths make products whose parts would be small enough for
    OpenBLAS's small-matrix kernel if the split followed the thread count (a PLE trained to
    other bits on 3 threads than on 1 and 2): the parts are fixed by shape"""
    run_child("""
import numpy as np
import rmtl

fields = (1202, 1530, 622, 3, 1243, 24, 17)
rng = np.random.default_rng(0)
n = 2048 * 3
sparse = np.stack([rng.integers(0, d, n) for d in fields], 1).astype(np.int32)
dense = rng.normal(size=(n, 1)).astype(np.float32)
labels = (rng.random((n, 2)) < 0.1).astype(np.float32)
got = []
for threads in (1, 2, 3):
    rmtl.set_num_threads(threads)
    m = rmtl.models.create("ple", fields, 1, 2, embed_dim=16, bottom_dims=(64, 32),
                           tower_dims=(32, 16), dropout=0.2, seed=3)
    for batch_size in (2048, 1000):
        m.train_chunk(np.arange(n, dtype=np.int64), sparse, dense, labels, batch_size=batch_size,
                      lr=1e-3)
    got.append(np.concatenate([p.ravel() for p in m.parameters()]))
assert np.array_equal(got[1], got[0])
assert np.array_equal(got[2], got[0])
""")


def test_concurrent_calls_share_the_pool():
    """two Python threads training at once (the GIL released): one runs on the pool, the other
    on its own thread while the pool is busy; both give the bits of a call made alone"""
    run_child(
        POOL
        + """
import threading
rmtl.set_num_threads(2)
want = {name: trained(name) for name in ("mmoe", "sharedbottom")}
got = {}
threads = [
    threading.Thread(target=lambda k=k: got.__setitem__(k, [trained(k) for _ in range(3)]))
    for k in want
]
for t in threads:
    t.start()
for t in threads:
    t.join()
for k in want:
    assert all(np.array_equal(g, want[k]) for g in got[k]), k
"""
    )


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork on this platform")
def test_pool_used_before_fork_works_in_the_child():
    """a worker process forked after the pool ran (multiprocessing's fork start method, Ray's
    workers) starts its own workers instead of waiting for the parent's, which it lacks"""
    run_child(
        POOL
        + """
import multiprocessing as mp
rmtl.set_num_threads(2)
want = trained()

def child(q):
    q.put(trained().tobytes())

ctx = mp.get_context("fork")
q = ctx.Queue()
p = ctx.Process(target=child, args=(q,))
p.start()
got = q.get(timeout=240)
p.join(timeout=60)
assert p.exitcode == 0, p.exitcode
assert np.array_equal(np.frombuffer(got, np.float32), want)
"""
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_core_loads_no_openmp_runtime():
    """rmtl's loops run on its own threads: no OpenMP runtime is loaded for them, so one that
    another library (torch) loaded first has nothing to change"""
    run_child(
        POOL
        + """
trained()
maps = open("/proc/self/maps").read()
assert "libgomp" not in maps and "libomp" not in maps and "libiomp" not in maps
"""
    )


SWITCHER = """
import threading
import time

stop = threading.Event()
outcomes = {"done": 0, "refused": 0}

def hammer(step):
    i = 0
    while not stop.is_set():
        try:
            step(i)
            outcomes["done"] += 1
        except RuntimeError as e:
            assert "between calls" in str(e), e
            outcomes["refused"] += 1
        i += 1
        time.sleep(0.0002)

def hammering(step, work):
    t = threading.Thread(target=hammer, args=(step,))
    t.start()
    try:
        return work()
    finally:
        stop.set()
        t.join()
"""


def test_backend_switch_during_training_cannot_crash():
    """issue 33: set_gemm_backend from another thread while a model trains and predicts (it
    called a NULL sgemm on the pool's threads): a switch during a call is refused, so every
    call runs on one path and the weights are the bits of a run on one backend or the other"""
    run_child(
        POOL
        + SWITCHER
        + """
rmtl.set_num_threads(2)
want = {}
for backend in ("builtin", "blas"):
    rmtl.set_gemm_backend(backend)
    want[backend] = trained()

def work():
    got = []
    for _ in range(4):
        w = trained()
        assert np.isfinite(w).all()
        got.append(w)
    return got

got = hammering(lambda i: rmtl.set_gemm_backend(("builtin", "blas")[i % 2]), work)
for w in got:
    assert any(np.array_equal(w, v) for v in want.values())
assert outcomes["refused"] > 0, outcomes
"""
    )


def test_backend_switch_during_products_cannot_crash():
    """the core reads the backend once per group of products, so even a switch the binding
    lets through (rmtl._core.gemm_many, which holds no model) never reaches the pool's threads
    half-done: every product is one backend's bits"""
    run_child(
        SWITCHER
        + """
import numpy as np
import rmtl
from rmtl import _core

rmtl.set_num_threads(2)
rng = np.random.default_rng(0)
a = rng.normal(size=(2048, 300)).astype(np.float32)
b = rng.normal(size=(300, 257)).astype(np.float32)

def products():
    cs = [np.zeros((2048, 257), np.float32) for _ in range(2)]
    _core.gemm_many([(a, b, c, False, False, 1.0, 0.0) for c in cs])
    return cs

want = []
for backend in ("builtin", "blas"):
    rmtl.set_gemm_backend(backend)
    want.append(products()[0])

def work():
    for _ in range(300):
        for c in products():
            assert any(np.array_equal(c, w) for w in want)

hammering(lambda i: rmtl.set_gemm_backend(("builtin", "blas")[i % 2]), work)
assert outcomes["done"] > 0, outcomes
"""
    )


def test_thread_count_changes_during_training_keep_the_bits():
    """set_num_threads from another thread while a model trains and predicts: it waits for
    the running parallel loop, and the weights stay the bits of an undisturbed run"""
    run_child(
        POOL
        + SWITCHER
        + """
rmtl.set_num_threads(2)
want = trained()

def work():
    for _ in range(3):
        assert np.array_equal(trained(), want)

hammering(lambda i: rmtl.set_num_threads(np.int64(1 + i % 3)), work)
assert outcomes["done"] > 0 and outcomes["refused"] == 0, outcomes
"""
    )


def test_same_bits_beside_a_busy_neighbour_on_2_threads():
    """issue 33: on 2 threads with a busy process beside it, one run in 20 trained to other
    bits (parts of the products set OpenBLAS's one process-wide thread count to 1 and back,
    racing each other, so some ran split over OpenBLAS's threads): 40 runs, one set of bits"""
    run_child(
        POOL
        + """
import subprocess
import sys

rmtl.set_num_threads(2)
want = trained()
busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
try:
    differ = sum(not np.array_equal(trained(), want) for _ in range(40))
finally:
    busy.kill()
    busy.wait()
assert differ == 0, f"{differ} of 40 runs trained to other bits"
"""
    )


def test_predict_from_a_monitor_thread_waits_and_never_aborts_stage_2():
    """issue 33: a thread calling predict on the pretrained model in a loop while stage 2 of
    RMTL.fit runs used to abort stage 2 ('another thread is running a call'); now each call
    waits for the other's, and stage 2 ends with the bits of a run without the monitor."""
    data = rmtl.datasets.synthetic("retailrocket", n_users=300, seed=0)
    train, valid, test = data.split((0.6, 0.2, 0.2))

    def stage_2(monitor):
        backbone = rmtl.models.create(
            "esmm", train.field_dims, train.num_dense, train.num_tasks, seed=0, embed_dim=8
        )
        agent = rmtl.RMTL(backbone, seed=0, epochs=1, critic_epochs=4, progress=False)
        agent.pretrain(train, valid)
        expected = agent.pretrained.predict(test.sparse, test.dense)
        stop, seen, errors = threading.Event(), [], []

        def watch():
            while not stop.is_set():
                try:
                    seen.append(agent.pretrained.predict(test.sparse, test.dense))
                except Exception as e:  # noqa: BLE001 - any error of the monitor is the finding
                    errors.append(e)
                    return

        t = threading.Thread(target=watch)
        if monitor:
            t.start()
        try:
            agent.fit_critics(train)
        finally:
            stop.set()
            if monitor:
                t.join(60)
        assert errors == [] and (len(seen) > 10 or not monitor)
        assert all(np.array_equal(p, expected) for p in seen)  # stage 2 leaves it unchanged
        return [c.predict(test.sparse, test.dense, test.labels[:, 0]) for c in agent.critics]

    alone, watched = stage_2(False), stage_2(True)
    assert all(np.array_equal(a, b) for a, b in zip(alone, watched))
