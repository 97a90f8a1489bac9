"""Calibration: robust fits, file checks, selection, and a fit that improves held-out runs."""

import json
import re
import statistics
import subprocess
import sys

import pytest
from fitplan import calibration, reference
from fitplan.calibration import Calibration, Observation, fit, huber_line, pick
from fitplan.catalog import resolve_gpu
from fitplan.errors import PlanError
from fitplan.memory.overhead import DEFAULT_OVERHEAD, Overhead


def test_huber_line_ignores_one_wild_point():
    xs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    ys = [3.0 + 2.0 * x for x in xs]
    ys[2] = 100.0
    a, b = huber_line(xs, ys)
    assert abs(b - 2.0) < 0.2 and abs(a - 3.0) < 1.0


def test_fit_from_validator_style_observations():
    obs = [Observation(id=str(i), tensors=t, allocated=t + 8 * 2**20, reserved=int((t + 8 * 2**20) * 1.07) + 2**28,
                       used=int((t + 8 * 2**20) * 1.07) + 2**28 + 600 * 2**20, context=600 * 2**20)
           for i, t in enumerate(range(10 * 2**30, 60 * 2**30, 5 * 2**30))]
    overhead, description, residuals = fit(obs)
    assert overhead.workspace_bytes == 8 * 2**20
    assert abs(overhead.reserve_fraction - 0.07) < 1e-3
    assert abs(overhead.reserve_bytes - 2**28) < 2**22
    assert overhead.context_bytes == 600 * 2**20
    assert max(abs(r["error_percent"]) for r in residuals) < 0.5


def _cal(gpu, arch, torch):
    return Calibration(gpu=gpu, architecture=arch, torch=torch, transformers=None, driver=None, date="2026-11-22",
                       source="test", runs=3, overhead=Overhead(context_bytes=1))


def test_pick_takes_the_gpus_own_calibration_only():
    pool = [_cal("a100-80", "Ampere", "2.4"), _cal("a100-80", "Ampere", "2.13"), _cal("l40s", "Ada Lovelace", "2.13")]
    assert pick(resolve_gpu("a100-80"), None, pool).torch == "2.13"        # the newest torch
    assert pick(resolve_gpu("a100-80"), "2.4", pool).torch == "2.4"        # the matching torch
    assert pick(resolve_gpu("a100-40"), None, pool) is None                # same architecture: not applied
    assert pick(resolve_gpu("h100-80"), None, pool) is None                # the documented defaults


def test_shipped_calibration_is_valid_and_applies_to_a100():
    cal = pick(resolve_gpu("a100-80"))
    assert cal is not None and cal.runs >= 10
    assert cal.overhead.band_fraction < 0.2


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"schema": 1, "gpu": "a100-80"', "not valid JSON"),
        ('{"schema": 99, "gpu": "a100-80"}', "schema 99 is newer than this fitplan reads"),
        ('{"schema": 1, "gpu": "x", "date": "d", "source": "s", "runs": 1, "overhead": {"workspace_bytes": -1, '
         '"reserve_fraction": 0.1, "reserve_bytes": 0, "context_bytes": 0, "band_fraction": 0.1}}', "must not be negative"),
        ('{"schema": 1, "gpu": "x"}', "missing field 'overhead'"),
        ('{"schema": 1, "colour": "blue"}', "unknown field(s) colour"),
    ],
)
def test_bad_calibration_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "cal.json"
    path.write_text(text)
    with pytest.raises(PlanError, match=re.escape(message)):
        calibration.load_file(path)
    r = subprocess.run([sys.executable, "-m", "fitplan", "--model", "gpt2", "--calibration", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and message in r.stderr


def test_calibration_fitted_on_half_the_published_runs_improves_the_other_half():
    """Published A100 rows report allocated memory beside nvidia-smi's: fit on one half, check the other."""
    obs = sorted(reference.observations()["a100-80"], key=lambda o: o.id)
    fit_half, check_half = obs[0::2], obs[1::2]
    fitted, _, _ = fit(fit_half)

    def error(overhead):
        return statistics.mean(abs(overhead.device_used(o.allocated - overhead.workspace_bytes) - o.used) / o.used
                               for o in check_half)

    before, after = error(DEFAULT_OVERHEAD), error(fitted)
    assert after < before / 2, (before, after)
    assert after < 0.06


def test_calibrate_command_writes_a_readable_file(tmp_path):
    out = tmp_path / "a100.json"
    r = subprocess.run([sys.executable, "-m", "fitplan", "calibrate", "--reference", "--gpu", "a100-80",
                        "--out", str(out), "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    written = json.loads(out.read_text())
    assert written["gpu"] == "a100-80" and written["runs"] == len(reference.observations()["a100-80"])
    assert calibration.load_file(out).overhead.context_bytes == written["overhead"]["context_bytes"]


def test_an_interrupted_calibration_write_leaves_the_old_file(tmp_path, monkeypatch):
    out = tmp_path / "cal.json"
    first = _cal("a100-80", "Ampere", "2.4")
    calibration.write(first, out)
    before = out.read_text()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    import fitplan.atomic

    monkeypatch.setattr(fitplan.atomic.os, "replace", boom)
    try:
        calibration.write(_cal("a100-80", "Ampere", "2.13"), out)
    except KeyboardInterrupt:
        pass
    assert out.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cal.json"]
