"""A run cache many processes can share and trust: one writer per run, checksums, named errors, environment."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from htr_utils.study import runs
from htr_utils.study.files import FileLock, LockTimeout
from htr_utils.study.runs import DamagedRun, EnvironmentChanged, Run, config_hash, load_run, repair_run, train_run
from htr_utils.study.training import TIMING_COLUMNS, TrainConfig, Trainer

REPO = Path(__file__).resolve().parents[2]
# tiny: two epochs, one curvature record (epoch 2), so every kind of file exists
CFG = TrainConfig(dataset="digits", model="mlp", width=0.25, train_size=60, test_size=30, batch_size=30, epochs=2,
                  curvature_every=2, curvature_init=False, lanczos_iters=4, examples_per_class=1, trace_probes=2,
                  layerwise=False)
FILES = ["checkpoint.pt", "metrics.csv", "curvature/epoch_002.json", "config.json", "done.json"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Run:
    return train_run(CFG, root=tmp_path_factory.mktemp("ref"), progress=False)


def _copy(run: Run, root: Path) -> Run:
    shutil.copytree(run.path, root / run.path.name)
    return Run(root / run.path.name, CFG)


def _numbers(run: Run) -> dict:
    return run.metrics.drop(columns=list(TIMING_COLUMNS)).to_json()


def _weights(run: Run) -> list:
    return [v.tolist() for v in run.load_model().state_dict().values()]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# -- integrity ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_done_json_records_epochs_rows_and_checksums(reference):
    done = reference.done_info()
    assert done["integrity"]["epochs"] == done["integrity"]["metric_rows"] == done["integrity"]["checkpoint_epoch"] == 2
    assert sorted(done["integrity"]["files"]) == sorted(f for f in FILES if f != "done.json")
    assert reference.verify() is True
    env = reference.config_info()["environment"]
    assert env == runs.environment("cpu") if env["device"] == "cpu" else True
    assert set(env) >= {"torch", "threads", "device", "cpu_model", "cpu_capability", "deterministic", "tf32"}


@pytest.mark.slow
@pytest.mark.parametrize("name", FILES)
def test_each_truncated_file_is_named_with_the_remedy(reference, tmp_path, name):
    run = _copy(reference, tmp_path)
    _truncate(run.path / name)
    with pytest.raises(DamagedRun) as info:
        load_run(CFG, root=tmp_path)
    message = str(info.value)
    assert str(run.path / name) in message and "Remedy: delete the folder" in message
    assert ("--repair" in message) == (name != "config.json")
    assert message.count(str(run.path / name)) == 1  # one error, one file
    with pytest.raises(DamagedRun, match="Remedy"):
        train_run(CFG, root=tmp_path, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", FILES)
def test_reading_a_truncated_file_names_it_even_without_checksums(reference, tmp_path, name):
    run = _copy(reference, tmp_path)
    (run.path / name).write_bytes(b"")  # an empty metrics.csv is the case pandas cannot read
    read = {"checkpoint.pt": run.checkpoint, "metrics.csv": lambda: run.metrics,
            "curvature/epoch_002.json": lambda: run.curvature(2), "config.json": lambda: Run(run.path),
            "done.json": run.done_info}[name]
    with pytest.raises(DamagedRun, match=f"{run.path / name}: unreadable .*Remedy"):
        read()


@pytest.mark.slow
def test_runs_written_before_checksums_load_unverified(reference, tmp_path, monkeypatch):
    run = _copy(reference, tmp_path)
    done, config = run.done_info(), run.config_info()
    for key in ("integrity", "environment"):
        done.pop(key)
    config.pop("environment")
    (run.path / "done.json").write_text(json.dumps(done))
    (run.path / "config.json").write_text(json.dumps(config))
    (run.path / "lock").unlink()
    monkeypatch.setattr(Trainer, "__init__", lambda *a, **k: pytest.fail("trained a finished run"))
    old = load_run(CFG, root=tmp_path)
    assert old.verify() is False and _numbers(old) == _numbers(reference)
    assert train_run(CFG, root=tmp_path, progress=False).path == run.path


@pytest.mark.slow
def test_repair_rebuilds_metrics_from_the_checkpoint_and_retrains_a_damaged_checkpoint(reference, tmp_path):
    run = _copy(reference, tmp_path)
    _truncate(run.path / "metrics.csv")
    repaired = repair_run(run.path, progress=False)
    assert repaired.verify() and _numbers(repaired) == _numbers(reference)
    _truncate(run.path / "checkpoint.pt")
    assert runs.main([str(run.path)]) == 1
    assert runs.main(["--repair", str(run.path)]) == 0
    again = load_run(CFG, root=tmp_path)
    assert _numbers(again) == _numbers(reference) and _weights(again) == _weights(reference)


@pytest.mark.slow
def test_orphan_temp_files_are_removed_on_the_next_access(reference, tmp_path):
    run = _copy(reference, tmp_path)
    orphan = run.path / ".checkpoint.pt.abc123.tmp"
    orphan.write_bytes(b"x" * 1000)
    train_run(CFG, root=tmp_path, progress=False)
    assert not orphan.exists()


# -- environment -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_resuming_under_another_environment_is_refused_unless_allowed(reference, tmp_path, monkeypatch):
    original = Trainer.run_epoch

    def stop_at_2(self, epoch, progress=True):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, epoch, progress)

    monkeypatch.setattr(Trainer, "run_epoch", stop_at_2)
    with pytest.raises(KeyboardInterrupt):
        train_run(CFG, root=tmp_path, progress=False, device="cpu")
    monkeypatch.setattr(Trainer, "run_epoch", original)
    other = {**runs.environment("cpu"), "threads": 97}
    monkeypatch.setattr(runs, "environment", lambda device=None: other)
    monkeypatch.delenv(runs.ALLOW_ENV_VAR, raising=False)
    with pytest.raises(EnvironmentChanged, match=r"threads \d+ -> 97.*allow_environment_change=True"):
        train_run(CFG, root=tmp_path, progress=False, device="cpu")
    with pytest.warns(UserWarning, match="resuming anyway"):
        run = train_run(CFG, root=tmp_path, progress=False, device="cpu", allow_environment_change=True)
    assert run.verify() and run.config_info()["resumed_under"] == [{"epoch": 1, "environment": other}]
    # a finished run is read under any environment: its numbers were computed, not recomputed
    monkeypatch.setattr(runs, "environment", lambda device=None: {**other, "torch": "0.0"})
    assert load_run(CFG, root=reference.path.parent).verify()


# -- the lock ----------------------------------------------------------------------------------------------
HOLD = ("import fcntl, json, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, json.dumps({'host': 'elsewhere', 'pid': os.getpid(), 'since': 'now'}).encode())\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n")


def test_a_held_lock_names_its_holder_and_a_dead_holder_never_blocks(tmp_path, capsys):
    path = tmp_path / "lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockTimeout, match=rf"still locked by pid {holder.pid} on elsewhere"):
            FileLock(path, timeout=0.5).acquire()
        assert f"locked by pid {holder.pid} on elsewhere since now; waiting (timeout 0.5 s)" in capsys.readouterr().err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    start = time.monotonic()
    with FileLock(path, timeout=5):  # the file (and its stale holder) remain; the kernel freed the lock
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert time.monotonic() - start < 1 and path.read_text() == ""


# -- many processes ------------------------------------------------------------------------------------------
WORKER = '''
import hashlib, json, sys, time
from htr_utils.study.runs import train_run
from htr_utils.study.training import TIMING_COLUMNS, TrainConfig, Trainer
cfg, root, slow = TrainConfig.from_dict(json.loads(sys.argv[1])), sys.argv[2], float(sys.argv[3])
trained, init, run_epoch = [], Trainer.__init__, Trainer.run_epoch
def counting_init(self, *a, **k):
    trained.append(True)
    init(self, *a, **k)
def slow_epoch(self, epoch, progress=True):
    print(f"epoch {epoch}", file=sys.stderr, flush=True)
    if epoch >= 2:
        time.sleep(slow)
    return run_epoch(self, epoch, progress)
Trainer.__init__, Trainer.run_epoch = counting_init, slow_epoch
run = train_run(cfg, root=root, progress=False)
weights = [v.tolist() for v in run.load_model().state_dict().values()]
print(json.dumps({"trained": bool(trained), "weights": weights,
                  "metrics": run.metrics.drop(columns=list(TIMING_COLUMNS)).to_json()}))
'''


def _worker(root: Path, slow: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(CFG.to_dict()), str(root), str(slow)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return {**json.loads(out.strip().splitlines()[-1]), "stderr": err}


@pytest.mark.slow
def test_two_processes_racing_for_one_run_train_it_once_and_read_the_same(reference, tmp_path):
    first, second = _worker(tmp_path, 1.0), _worker(tmp_path, 1.0)
    results = [_result(first), _result(second)]
    assert sorted(r["trained"] for r in results) == [False, True]
    assert results[0]["metrics"] == results[1]["metrics"] == _numbers(reference)
    assert results[0]["weights"] == results[1]["weights"] == _weights(reference)
    assert load_run(CFG, root=tmp_path).verify()


@pytest.mark.slow
def test_a_killed_slow_writer_cannot_leave_a_mixed_run(reference, tmp_path):
    path = tmp_path / config_hash(CFG)
    slow = _worker(tmp_path, 60.0)  # holds the lock; sleeps in epoch 2, after checkpointing epoch 1
    for line in slow.stderr:
        if line.startswith("epoch 2"):
            break
    waiter = _worker(tmp_path, 0.0)
    told = waiter.stderr.readline()  # waits for the lock, saying who holds it
    assert f"is locked by pid {slow.pid} on" in told and "waiting (no timeout)" in told
    slow.send_signal(signal.SIGKILL)
    slow.communicate()
    result = _result(waiter)
    assert result["trained"] and result["stderr"].split() == ["epoch", "2"]  # resumed from the killed one's epoch 1
    run = load_run(CFG, root=tmp_path)
    integrity = run.done_info()["integrity"]
    assert run.verify() and integrity["metric_rows"] == len(run.metrics) == run.checkpoint()["epoch"] == 2
    assert result["metrics"] == _numbers(reference) and result["weights"] == _weights(reference)
    assert not list(path.rglob("*.tmp"))


def test_cpu_model_is_read_from_cpuinfo_and_never_empty(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD   EPYC 7B13 64-Core Processor\n")
    assert runs.cpu_model(info) == "AMD EPYC 7B13 64-Core Processor"
    info.write_text("processor\t: 0\nBogoMIPS\t: 50.00\n")  # no model line (some ARM kernels)
    assert runs.cpu_model(info) and runs.cpu_model(tmp_path / "absent")  # falls back to platform's answer
    assert runs.environment("cpu")["cpu_model"] == runs.cpu_model()


def test_exact_gpu_kernels_leaves_a_cpu_process_alone(monkeypatch):
    """On a CPU the TF32 / cuDNN flags are not touched, and the record says no TF32 (it applies on CUDA only)."""
    import torch
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    runs.exact_gpu_kernels("cpu")
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark) == before
    assert runs.environment("cpu")["tf32"] is False
