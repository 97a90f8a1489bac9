"""Pictures are drawn only when asked for, and bad picture names are one-line errors."""

import subprocess
import sys

import pytest

pytest.importorskip("matplotlib")


def run(*args):
    return subprocess.run([sys.executable, "-m", "fitplan", *args], capture_output=True, text=True, timeout=120)


def test_breakdown_picture(tmp_path):
    out = tmp_path / "b.png"
    r = run("--model", "llama-3.1-8b", "--gpu", "a100-80", "--plot", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sharding_picture(tmp_path):
    out = tmp_path / "s.svg"
    r = run("--model", "llama-3.1-70b", "--gpu", "a100-80", "--method", "full", "--grad-ckpt", "--plot", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_text().lstrip().startswith("<?xml")


def test_planning_without_a_picture_imports_no_matplotlib():
    probe = "import sys, fitplan.__main__ as c; c.main(['--model','gpt2','--gpu','t4']); print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout
    assert out.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("name, message", [("b.gif", "must end in .png, .svg or .pdf"), ("nowhere/b.png", "does not exist")])
def test_bad_picture_names(tmp_path, name, message):
    r = run("--model", "gpt2", "--plot", str(tmp_path / name))
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
