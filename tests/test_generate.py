"""Sharded, resumable generation: seeds, shards, manifest, merge, torchrun ranks, restarts."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import dpmsolver as dpm
from dpmsolver.models import load
from dpmsolver.noise import start_states
from dpmsolver.tools.generation import MANIFEST, MERGED, job, merge_shards, sample_seed

FAST = dict(steps=5, order=2)  # solver options of the in-process tests


def run(out: Path, num: int = 10, batch: int = 4, **kwargs) -> dpm.GenerateResult:
    options = {**FAST, **kwargs}
    if "timesteps" in kwargs:  # the grid sets the steps
        del options["steps"]
    return dpm.generate("digits-exact", num, out, batch=batch, progress=False, **options)


def merged(out: Path) -> np.ndarray:
    with np.load(out / MERGED) as data:
        assert list(data.keys()) == ["arr_0"]
        return data["arr_0"]


def test_sample_seeds_depend_on_the_base_seed_and_index_only() -> None:
    seeds = [sample_seed(7, i) for i in range(6)]
    assert seeds == [sample_seed(7, i) for i in range(6)]
    assert len(set(seeds)) == 6 and all(0 <= s < 2**63 for s in seeds)
    assert sample_seed(8, 0) not in seeds
    # A sample's noise does not depend on the batch it is drawn in.
    whole = start_states(1.0, (1, 8, 8), seeds)
    torch.testing.assert_close(start_states(1.0, (1, 8, 8), seeds[2:4]), whole[2:4], rtol=0, atol=0)
    assert whole.dtype == torch.float64 and float(whole.std()) == pytest.approx(1.0, abs=0.15)


def test_generate_writes_shards_manifest_and_merged_file(tmp_path) -> None:
    result = run(tmp_path, merge=True)
    assert (result.num, result.shards, sorted(result.generated)) == (10, 3, [0, 1, 2])
    assert set(result.generated.values()) == {"missing"} and result.skipped == []
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["complete"] and manifest["settings"]["num"] == 10
    records = manifest["shards"]
    assert [(r["start"], r["stop"]) for r in records] == [(0, 4), (4, 8), (8, 10)]
    assert [s for r in records for s in r["seeds"]] == [sample_seed(0, i) for i in range(10)]
    for r in records:
        data = (tmp_path / f"shard-{r['shard']:06d}.npz").read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
    images = merged(tmp_path)
    assert images.shape == (10, 8, 8, 1) and images.dtype == np.uint8
    assert manifest["merged"]["shape"] == [10, 8, 8, 1]
    # The images are the sampler's output from the recorded seeds, in index order.
    model = load("digits-exact")
    x_T = start_states(
        float(model.schedule.sigma(model.schedule.t_max)),
        (1, 8, 8),
        [sample_seed(0, i) for i in range(4, 8)],
    ).float()
    x0 = dpm.sample(model, x_T, **FAST)
    expected = ((x0.double().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    np.testing.assert_array_equal(images[4:8], expected.permute(0, 2, 3, 1).numpy())
    assert len(np.unique(images.reshape(10, -1), axis=0)) == 10


def test_a_second_run_keeps_finished_shards(tmp_path) -> None:
    run(tmp_path, merge=True)
    first = (tmp_path / MERGED).read_bytes()
    again = run(tmp_path, merge=True)
    assert again.generated == {} and again.skipped == [0, 1, 2]
    assert (tmp_path / MERGED).read_bytes() == first


def test_corrupted_partial_and_stale_shards_are_made_again(tmp_path, capsys) -> None:
    run(tmp_path, merge=True)
    expected = merged(tmp_path)
    npz0 = tmp_path / "shard-000000.npz"
    data = bytearray(npz0.read_bytes())
    data[-40] ^= 0xFF  # one flipped byte
    npz0.write_bytes(bytes(data))
    (tmp_path / "shard-000001.json").unlink()  # killed between the npz and its record
    (tmp_path / "shard-000002.npz").unlink()  # a record without its npz
    stale = tmp_path / ".dpmsolver-tmp-123-shard-000002.npz"  # a killed run's temporary
    stale.write_bytes(b"half a shard")
    result = run(tmp_path, merge=True)
    assert result.generated == {0: "checksum mismatch", 1: "partial", 2: "partial"}
    assert "shard 0: checksum mismatch; generating it again" in capsys.readouterr().err
    assert not stale.exists()
    np.testing.assert_array_equal(merged(tmp_path), expected)


def test_batch_size_changes_samples_only_by_rounding(tmp_path) -> None:
    for name, batch in (("a", 4), ("b", 5)):
        dpm.generate("digits-net", 12, tmp_path / name, batch=batch, steps=5, progress=False)
        merge_shards(tmp_path / name)
    a, b = merged(tmp_path / "a").astype(int), merged(tmp_path / "b").astype(int)
    assert np.abs(a - b).max() <= 1 and (a == b).mean() > 0.99


def test_sde_noise_is_reproducible_and_options_survive_a_restart(tmp_path) -> None:
    sde = dict(eta=1.0, timesteps=(1.0, 0.5, 0.2, 0.001))  # a tuple, read back as a list
    run(tmp_path / "a", merge=True, **sde)
    run(tmp_path / "b", merge=True, **sde)
    np.testing.assert_array_equal(merged(tmp_path / "a"), merged(tmp_path / "b"))
    assert not np.array_equal(merged(tmp_path / "a"), merged(run_plain(tmp_path / "c")))
    again = run(tmp_path / "a", merge=True, **sde)
    assert again.generated == {} and len(again.skipped) == 3


def test_sde_samples_do_not_depend_on_the_batch(tmp_path) -> None:
    """With eta > 0 each sample's noise comes from its own seed: batch sizes 4 and 5 cut the
    12 samples into other shards and give the same images up to a batched network's
    rounding (as the ODE does above), where noise drawn per shard would change them all."""
    for name, batch in (("a", 4), ("b", 5)):
        dpm.generate(
            "digits-net", 12, tmp_path / name, batch=batch, steps=6, eta=1.0, progress=False
        )
        merge_shards(tmp_path / name)
    a, b = merged(tmp_path / "a").astype(int), merged(tmp_path / "b").astype(int)
    assert np.abs(a - b).max() <= 1 and (a == b).mean() > 0.99
    dpm.generate(
        "digits-net", 12, tmp_path / "c", batch=4, steps=6, eta=1.0, seed=1, progress=False
    )
    merge_shards(tmp_path / "c")
    assert (merged(tmp_path / "c").astype(int) != a).mean() > 0.5


def run_plain(out: Path) -> Path:
    run(out, merge=True, timesteps=[1.0, 0.5, 0.2, 0.001])
    return out


def test_other_settings_in_the_folder_are_refused(tmp_path) -> None:
    run(tmp_path)
    with pytest.raises(ValueError, match=r"holds a job with other settings \(seed: 0 there, 3 now"):
        run(tmp_path, seed=3)
    with pytest.raises(ValueError, match=r"options: .*'steps': 5.* there, .*'steps': 6"):
        run(tmp_path, steps=6)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_another_jobs_shards_are_refused_without_a_manifest(tmp_path) -> None:
    run(tmp_path)
    (tmp_path / MANIFEST).unlink()
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"holds shards of another job \(shard-000000\.json"):
        run(tmp_path, steps=6, merge=True)
    assert snapshot(tmp_path) == before  # every file byte-identical, none added
    # The same job resumes from its shards: nothing is made again.
    result = run(tmp_path, merge=True)
    assert result.generated == {} and sorted(result.skipped) == [0, 1, 2]
    # Without the manifest that recorded it, a samples.npz could be anyone's: not replaced.
    (tmp_path / MANIFEST).unlink()
    with pytest.raises(ValueError, match=r"is not empty \(samples\.npz\) and holds no"):
        run(tmp_path, merge=True)


@pytest.mark.parametrize("manifest", ["truncated", "not-json-object", "another-program"])
def test_a_manifest_that_is_not_ours_is_never_touched(tmp_path, manifest: str) -> None:
    run(tmp_path, merge=True)
    path = tmp_path / MANIFEST
    if manifest == "truncated":
        path.write_bytes(path.read_bytes()[:40])
    elif manifest == "not-json-object":
        path.write_text("[]")
    else:
        path.write_text('{"settings": {"lr": 0.1}, "epochs": 3}')
    before = snapshot(tmp_path)
    for kwargs in (dict(steps=6), {}):  # another job, or this one
        with pytest.raises(ValueError, match=r"holds a manifest\.json that is not a dpmsolver"):
            run(tmp_path, merge=True, **kwargs)
        assert snapshot(tmp_path) == before


def test_a_shard_of_another_job_is_refused_not_regenerated(tmp_path) -> None:
    other, ours = tmp_path / "other", tmp_path / "ours"
    run(other, steps=6)
    run(ours)
    (ours / "shard-000001.json").write_bytes((other / "shard-000001.json").read_bytes())
    before = snapshot(ours)
    with pytest.raises(ValueError, match=r"shard-000001\.json was written with other settings"):
        run(ours)
    assert snapshot(ours) == before


def test_merge_shards_checks_checksums(tmp_path) -> None:
    run(tmp_path)
    assert merge_shards(tmp_path)["shape"] == [10, 8, 8, 1]
    npz = tmp_path / "shard-000001.npz"
    data = npz.read_bytes()
    npz.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(ValueError, match=r"shard-000001\.npz does not match its checksum"):
        merge_shards(tmp_path)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(num=0), ValueError, "num must"),
        (dict(batch=2.5), TypeError, "batch must be an int"),
        (dict(callback=print), ValueError, "generate does not take callback"),
        (dict(t_start=object()), TypeError, "t_start=<object.* is not a JSON value"),
        (dict(order=7), ValueError, "order"),
    ],
)
def test_generate_rejects(tmp_path, kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        run(tmp_path, **kwargs)
    assert not (tmp_path / MANIFEST).exists()  # checked before anything is written


def test_merge_shards_needs_every_shard(tmp_path) -> None:
    run(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    with pytest.raises(ValueError, match="starts at index 8, not 4"):
        merge_shards(tmp_path, [manifest["shards"][0], manifest["shards"][2]])
    shards = manifest["shards"]
    with pytest.raises(ValueError, match="the shards hold 8 samples, not 10"):
        merge_shards(tmp_path, [shards[0], dict(shards[1], stop=10)])


def test_custom_model_needs_a_name_and_an_image_shape(tmp_path) -> None:
    schedule = dpm.VPSchedule.linear()
    model = dpm.Denoiser(lambda x, t: 0.1 * x, schedule, prediction="noise")
    with pytest.raises(ValueError, match="give model_name"):
        dpm.generate(model, 4, tmp_path, shape=(3, 2, 2), progress=False)
    with pytest.raises(ValueError, match="give shape"):
        dpm.generate(model, 4, tmp_path, model_name="toy", progress=False)
    with pytest.raises(ValueError, match=r"shape must be \(channels, height, width\).*\(4, 64\)"):
        dpm.generate(model, 4, tmp_path, model_name="toy", shape=(4, 64), progress=False)
    result = dpm.generate(
        model, 4, tmp_path, model_name="toy", shape=(3, 2, 2), merge=True, progress=False
    )
    assert merged(tmp_path).shape == (4, 2, 2, 3) and result.shards == 1
    assert json.loads((tmp_path / MANIFEST).read_text())["settings"]["model"] == "toy"


# torchrun: real ranks over gloo on the loopback interface.

CLI = [sys.executable, "-m", "dpmsolver", "generate", "--quiet", "--steps", "8"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
ENV = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}


def cli(args: list[str], ranks: int = 1, **popen) -> subprocess.Popen:
    head = [*TORCHRUN, "-m", "dpmsolver", "generate"] if ranks == 2 else CLI[:4]
    return subprocess.Popen(
        [*head, *CLI[4:], *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def test_two_ranks_equal_one_process_bit_for_bit(tmp_path) -> None:
    job = ["--model", "digits-net", "--num-samples", "21", "--batch", "4", "--merge"]
    one = cli([*job, "--out", str(tmp_path / "one")])
    finish(one)
    out = finish(cli([*job, "--out", str(tmp_path / "two")], ranks=2))
    assert "21 samples in 6 shards" in out and "(3 made, 0 kept by this process)" in out
    assert (tmp_path / "one" / MERGED).read_bytes() == (tmp_path / "two" / MERGED).read_bytes()
    manifests = [json.loads((tmp_path / d / MANIFEST).read_text()) for d in ("one", "two")]
    assert manifests[0] == manifests[1]


@pytest.mark.skipif(
    not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(),
    reason="finds torchrun's ranks through /proc/PID/task/PID/children (Linux)",
)
def test_killed_rank_then_restart_gives_the_uninterrupted_result(tmp_path) -> None:
    job = ["--num-samples", "96", "--batch", "2", "--steps", "60", "--merge"]
    reference = tmp_path / "reference"
    finish(cli([*job, "--out", str(reference)]))
    out = tmp_path / "job"
    proc = cli([*job, "--out", str(out)], ranks=2, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("shard-*.json")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(out.glob("shard-*.json")), "no shard was finished within 120 s"
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 2, children  # torchrun's two ranks
    os.kill(int(children[1]), signal.SIGKILL)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, log
    done = len(list(out.glob("shard-*.json")))
    assert 0 < done < 48, done  # killed partway
    # Corrupt one finished shard as well: its checksum must catch it.
    npz = sorted(out.glob("shard-*.npz"))[0]
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0x01
    npz.write_bytes(bytes(data))
    # Restart on three ranks: the rank count is not part of the result.
    restart = [*TORCHRUN[:-1], "3", "-m", "dpmsolver", "generate", *CLI[4:], *job]
    done_log = subprocess.run(
        [*restart, "--out", str(out)], env=ENV, capture_output=True, text=True, timeout=300
    )
    assert done_log.returncode == 0, done_log.stdout + done_log.stderr
    assert f"shard {int(npz.stem[6:])}: checksum mismatch; generating it again" in done_log.stderr
    assert (out / MERGED).read_bytes() == (reference / MERGED).read_bytes()
    manifest = json.loads((out / MANIFEST).read_text())
    indices = [i for r in manifest["shards"] for i in range(r["start"], r["stop"])]
    assert indices == list(range(96))  # none missing, none repeated
    assert manifest == json.loads((reference / MANIFEST).read_text())
    assert not list(out.glob(".dpmsolver-tmp-*"))
    assert not (out / ".dpmsolver-generate.lock").exists()


def test_ranks_with_different_settings_fail_clearly(tmp_path) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        "import os, dpmsolver as dpm\n"
        "dpm.generate('digits-exact', 8, os.environ['OUT'], steps=4, progress=False,\n"
        "             seed=int(os.environ['RANK']))\n"
    )
    proc = subprocess.run(
        [*TORCHRUN, str(script)],
        env={**ENV, "OUT": str(tmp_path / "out")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "ranks disagree on the settings: rank 0 vs rank 1: seed: 0 vs 1" in proc.stderr


def test_cli_errors_are_one_line(tmp_path) -> None:
    proc = subprocess.run(
        [*CLI, "--num", "0", "--out", str(tmp_path / "g")], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "dpmsolver: error: num must be >= 1; got 0"


def test_a_finished_jobs_rerun_calls_no_model(tmp_path) -> None:
    """Nothing is left to do: the one-sample shape check is skipped too (documented)."""
    model = load("digits-exact")
    dpm.generate(model, 8, tmp_path, model_name="m", batch=4, steps=4, progress=False)
    before = model.calls
    result = dpm.generate(model, 8, tmp_path, model_name="m", batch=4, steps=4, progress=False)
    assert result.generated == {} and model.calls == before


def test_a_finished_jobs_rerun_says_so_and_shows_no_rate(tmp_path) -> None:
    """A rerun with every shard done says the job is already complete, with no progress
    bar and no rate (a bar of the kept samples over this run's milliseconds showed
    millions of samples per second)."""
    args = [*CLI[:4], "--steps", "4", "--num", "8", "--batch", "4", "--out", str(tmp_path)]
    first, again = (subprocess.run(args, capture_output=True, text=True, env=ENV) for _ in "12")
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert "already complete" not in first.stderr
    if importlib.util.find_spec("tqdm"):  # (the bar is optional)
        assert "8/8" in first.stderr and "sample/s" in first.stderr  # the first run's bar
    assert again.stderr == (
        f"dpmsolver generate: already complete: all 8 samples (2 shards) are in {tmp_path}; "
        "nothing to generate\n"
    )
    assert "(0 made, 2 kept by this process)" in again.stdout


def test_a_resumed_jobs_bar_counts_only_this_runs_samples(tmp_path, record_bars) -> None:
    """Resuming with one shard of 4 samples left: the bar runs 0 to 4 (its rate is this
    run's), not 6 to 10 over this run's time."""
    run(tmp_path)
    (tmp_path / "shard-000001.npz").unlink()
    bars = record_bars(job)
    result = dpm.generate("digits-exact", 10, tmp_path, batch=4, progress=True, **FAST)
    assert result.generated == {1: "partial"}
    (bar,) = bars
    assert (bar.total, bar.done, bar.disable) == (4, 4, False)
    assert bar.kwargs.get("initial", 0) == 0


def test_a_damaged_merged_file_is_merged_again_on_a_rerun(tmp_path, capsys) -> None:
    run(tmp_path, merge=True)
    good = (tmp_path / MERGED).read_bytes()
    (tmp_path / MERGED).write_bytes(good[: len(good) // 2])  # cut short
    run(tmp_path)  # without merge: the job's own merged file is still made whole
    assert "does not match its checksum; merging again" in capsys.readouterr().err
    assert (tmp_path / MERGED).read_bytes() == good


def test_a_merged_path_that_is_a_folder_is_refused_before_any_work(tmp_path) -> None:
    run(tmp_path, num=12)
    (tmp_path / "shard-000002.json").unlink()  # unfinished: a run would sample
    (tmp_path / MERGED).mkdir()
    model = load("digits-exact")
    with pytest.raises(ValueError, match=r"samples\.npz exists and is not a file"):
        dpm.generate(
            model,
            12,
            tmp_path,
            model_name="digits-exact",
            batch=4,
            progress=False,
            merge=True,
            **FAST,
        )
    assert model.calls == 0
