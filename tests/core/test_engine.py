"""Device choice, the worker thread (order, replacement by key, errors, cancel/progress, shutdown)
and the model manager (load / unload / memory report) on tiny checkpoints."""
from __future__ import annotations

import threading
from concurrent.futures import CancelledError

import pytest
import torch

from cxr_studio.core.models.checkpoint import CheckpointError, save_checkpoint
from cxr_studio.core.runtime.engine import (
    Cancelled,
    DeviceError,
    DeviceMemoryError,
    ModelManager,
    UnknownModelError,
    Worker,
    choose_device,
    describe_device,
    oom_guard,
)
from cxr_studio.core.models import build_model

TIMEOUT = 10.0
TINY = dict(width=0.125, fc_width=64)
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture()
def worker():
    w = Worker()
    yield w
    w.shutdown(wait=True)


def _blocker(worker):
    """Occupy the worker until the returned event is set; returns (started, release)."""
    started, release = threading.Event(), threading.Event()

    def block():
        started.set()
        release.wait(TIMEOUT)
        return "blocked"

    worker.submit(block)
    assert started.wait(TIMEOUT)
    return release


# -- devices ------------------------------------------------------------------------------------------


def test_choose_device_cpu_and_auto():
    assert choose_device("cpu") == torch.device("cpu")
    assert choose_device(" CPU ") == torch.device("cpu")
    auto = choose_device()
    if torch.cuda.is_available():
        assert auto.type == "cuda"
    else:
        assert auto.type in ("cpu", "mps")
    assert choose_device("auto") == auto


def test_choose_device_errors_are_clear():
    with pytest.raises(DeviceError, match="Unknown device 'banana'"):
        choose_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU is available.*--device cpu"):
            choose_device("cuda")
    else:
        with pytest.raises(DeviceError, match="does not exist"):
            choose_device(f"cuda:{torch.cuda.device_count()}")
    assert issubclass(DeviceError, ValueError)


def test_describe_cpu():
    d = describe_device("cpu")
    assert d["kind"] == "cpu" and d["name"]
    assert d["memory_total"] is None or d["memory_total"] > 2**20
    if d["memory_used"] is not None and d["memory_total"] is not None:
        assert 0 < d["memory_used"] < d["memory_total"]


def test_oom_guard_turns_out_of_memory_into_advice():
    with pytest.raises(DeviceMemoryError, match="Out of memory while testing.*smaller input.*--device cpu"):
        with oom_guard("testing", "cpu"):
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
    with pytest.raises(KeyError):  # other errors pass through unchanged
        with oom_guard("testing"):
            raise KeyError("x")


# -- worker ------------------------------------------------------------------------------------------


def test_runs_in_submission_order_on_one_thread(worker):
    seen, threads = [], set()

    def job(i):
        seen.append(i)
        threads.add(threading.get_ident())
        return i * i

    reqs = [worker.submit(job, i) for i in range(20)]
    assert [r.future.result(TIMEOUT) for r in reqs] == [i * i for i in range(20)]
    assert seen == list(range(20))
    assert len(threads) == 1 and threading.get_ident() not in threads
    ids = [r.id for r in reqs]
    assert ids == sorted(ids) and len(set(ids)) == 20
    assert all(r.future.request_id == r.id for r in reqs)


def test_newest_request_per_key_replaces_pending_ones(worker):
    release = _blocker(worker)
    ran = []
    old = [worker.submit(ran.append, f"view-{i}", key="view") for i in range(5)]
    other = worker.submit(ran.append, "other", key="thumbs")
    newest = worker.submit(ran.append, "view-new", key="view")
    assert all(r.future.cancelled() for r in old)
    with pytest.raises(CancelledError):
        old[0].future.result(TIMEOUT)
    release.set()
    newest.future.result(TIMEOUT)
    other.future.result(TIMEOUT)
    assert ran == ["other", "view-new"]


def test_error_comes_back_and_the_worker_keeps_running(worker):
    def boom():
        raise ValueError("bad input image")

    failed = worker.submit(boom)
    ok = worker.submit(lambda: 42)
    with pytest.raises(ValueError, match="bad input image"):
        failed.future.result(TIMEOUT)
    assert ok.future.result(TIMEOUT) == 42
    assert worker.is_alive()


def test_cancellable_gets_cancel_and_progress(worker):
    reports = []
    started = threading.Event()

    def long_job(n, *, cancel, progress):
        for i in range(n):
            if cancel.is_set():
                raise Cancelled()
            progress(i / n, f"step {i}")
            if i == 2:
                started.set()
            cancel.wait(0.01)
        return "finished"

    done = worker.submit(long_job, 4, cancellable=True, on_progress=lambda f, m: reports.append((f, m)))
    assert done.future.result(TIMEOUT) == "finished"
    assert reports == [(0.0, "step 0"), (0.25, "step 1"), (0.5, "step 2"), (0.75, "step 3")]
    assert done.progress == (0.75, "step 3")

    started.clear()
    req = worker.submit(long_job, 10_000, cancellable=True)
    assert started.wait(TIMEOUT)
    assert req.cancel() is False  # running: cannot be un-queued, but it is asked to stop
    with pytest.raises(Cancelled):
        req.future.result(TIMEOUT)
    assert worker.submit(lambda: "still alive").future.result(TIMEOUT) == "still alive"


def test_newer_request_asks_a_running_cancellable_one_to_stop(worker):
    started = threading.Event()

    def slow(*, cancel, progress):
        started.set()
        if cancel.wait(TIMEOUT):
            raise Cancelled()
        return "not cancelled"

    first = worker.submit(slow, key="mosaic", cancellable=True)
    assert started.wait(TIMEOUT)
    second = worker.submit(lambda: "new", key="mosaic")
    with pytest.raises(Cancelled):
        first.future.result(TIMEOUT)
    assert second.future.result(TIMEOUT) == "new"


def test_on_done_hook_gets_the_request(worker):
    got = []
    finished = threading.Event()

    def hook(req):
        got.append((req.id, req.future.result()))
        finished.set()

    req = worker.submit(lambda: "x", on_done=hook)
    assert finished.wait(TIMEOUT)
    assert got == [(req.id, "x")]


def test_wait_idle_and_pending(worker):
    release = _blocker(worker)
    reqs = [worker.submit(lambda i=i: i) for i in range(3)]
    assert worker.pending == 3
    assert worker.wait_idle(timeout=0.05) is False
    release.set()
    assert worker.wait_idle(timeout=TIMEOUT) is True
    assert worker.pending == 0 and all(r.future.done() for r in reqs)


def test_replaced_request_calls_on_done_as_cancelled(worker):
    release = _blocker(worker)
    seen = []
    first = worker.submit(lambda: "old", key="k", on_done=lambda r: seen.append((r.id, r.future.cancelled())))
    second = worker.submit(lambda: "new", key="k")
    assert seen == [(first.id, True)]
    release.set()
    assert second.future.result(TIMEOUT) == "new"


def test_shutdown_cancels_pending_and_joins():
    w = Worker()
    release = _blocker(w)
    queued = w.submit(lambda: "never")
    threading.Timer(0.05, release.set).start()
    w.shutdown(wait=True)
    assert not w.is_alive()
    assert queued.future.cancelled()
    with pytest.raises(RuntimeError, match="shut down"):
        w.submit(lambda: 1)


def test_shutdown_can_drain_the_queue():
    w = Worker()
    reqs = [w.submit(lambda i=i: i) for i in range(5)]
    w.shutdown(wait=True, cancel_pending=False)
    assert [r.future.result(0) for r in reqs] == list(range(5))


# -- model manager -----------------------------------------------------------------------------------


@pytest.fixture()
def two_checkpoints(tmp_path):
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = build_model("cxrnet", init="kaiming", **TINY)
        paths.append(save_checkpoint(tmp_path / f"net{seed}.pt", m, provenance={"seed": seed}))
    return paths


def test_manager_load_unload_report(two_checkpoints):
    mgr = ModelManager("cpu")
    a = mgr.load(two_checkpoints[0])
    b = mgr.load(two_checkpoints[1])
    c = mgr.load(two_checkpoints[0])  # same file twice gets its own id
    assert list(mgr.models) == [a, b, c] == ["net0", "net1", "net0-2"]
    assert mgr.models[a].provenance["seed"] == 0 and mgr.get(b).provenance["seed"] == 1
    assert not mgr.models[a].model.training
    rep = mgr.memory_report()
    assert rep["device"]["kind"] == "cpu"
    n = sum(p.numel() for p in mgr.models[a].model.parameters())
    assert rep["models"][a]["parameters"] == n and rep["models"][a]["bytes"] >= 4 * n
    assert rep["models_bytes"] == sum(m["bytes"] for m in rep["models"].values())
    mgr.unload(b)
    assert list(mgr.models) == [a, c] and b not in mgr
    with pytest.raises(UnknownModelError, match="net1"):
        mgr.unload(b)
    with pytest.raises(CheckpointError):
        mgr.load(two_checkpoints[0].parent / "missing.pt")
    assert len(mgr) == 2


def test_manager_through_the_worker(two_checkpoints, worker):
    mgr = ModelManager("cpu")
    mid = worker.submit(mgr.load, two_checkpoints[0]).future.result(TIMEOUT)
    x = torch.rand(1, 3, 227, 227)

    def predict(model_id):
        with torch.no_grad():
            return torch.softmax(mgr.get(model_id).model(x), 1)

    probs = worker.submit(predict, mid).future.result(TIMEOUT)
    assert probs.shape == (1, 2) and abs(float(probs.sum()) - 1) < 1e-5


# -- CUDA (run where a GPU is lent) ---------------------------------------------------------------------


@pytest.mark.gpu
@gpu
def test_cuda_device_and_manager(two_checkpoints):
    dev = choose_device("cuda")
    d = describe_device(dev)
    assert d["kind"] == "cuda" and d["memory_total"] > 0 and d["name"]
    mgr = ModelManager("cuda")
    # cuBLAS / cuBLASLt keep workspaces in the allocator from their first use on (33 MiB on an H200):
    # one load, forward and unload first, so what is measured is what the model itself holds
    with torch.no_grad():
        warm = mgr.load(two_checkpoints[0])
        mgr.get(warm).model(torch.rand(1, 3, 227, 227, device="cuda")).sum().item()
        mgr.unload(warm)
    before = torch.cuda.memory_allocated()
    mid = mgr.load(two_checkpoints[0])
    assert next(mgr.get(mid).model.parameters()).is_cuda
    assert mgr.memory_report()["device"]["memory_used"] > before
    with torch.no_grad():
        out = mgr.get(mid).model(torch.rand(1, 3, 227, 227, device="cuda"))
    assert out.is_cuda and out.shape == (1, 2)
    del out
    mgr.unload(mid)
    assert torch.cuda.memory_allocated() <= before


@pytest.mark.gpu
@gpu
def test_cuda_out_of_memory_becomes_advice():
    total = torch.cuda.get_device_properties(0).total_memory
    with pytest.raises(DeviceMemoryError, match="smaller input"):
        with oom_guard("allocating a test tensor", "cuda"):
            torch.empty(int(total * 2) // 4, dtype=torch.float32, device="cuda")
