"""The entry point: the plain-argument path makes the same Request as the click command, and the
install holds one import package."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fitplan.__main__ import parse_plain
from fitplan.cli import _request, cli
from fitplan.request import OPTIONS
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
VALUES = {"str": st.sampled_from(["gpt2", "lora", "q,v", "a100-80", "none", "sdpa", "bf16", "x"]),
          "int": st.integers(min_value=0, max_value=100_000).map(str),
          "float": st.sampled_from(["0.1", "0.5", "1", "2.5e-1"])}


@st.composite
def plain_arguments(draw):
    args = ["--model", draw(VALUES["str"])]
    for o in draw(st.lists(st.sampled_from([o for o in OPTIONS if o.field != "model"]), unique=True, max_size=8)):
        flag = "--" + o.field.replace("_", "-")
        if o.kind == "switch":
            args.append(draw(st.sampled_from([flag, "--no-" + flag[2:]])))
        elif o.kind == "flag":
            args.append(flag)
        else:
            args += [flag, draw(VALUES[o.kind])]
    if draw(st.booleans()):
        args.append("--json")
    return args


def _clicked(args):
    ctx = cli.make_context("plan", list(args), resilient_parsing=False)
    params = dict(ctx.params)
    plot, as_json, fmt = params.pop("plot_path"), params.pop("as_json"), params.pop("table_format")
    return _request(params), plot, as_json, fmt


@settings(max_examples=200, deadline=None)
@given(args=plain_arguments())
def test_the_plain_path_parses_as_click_does(args):
    fast = parse_plain(args)
    assert fast is not None
    assert fast == _clicked(args)


@pytest.mark.parametrize("args", [["validate", "--model", "gpt2"], ["--help"], ["--model=gpt2"], ["--version"],
                                  ["--model", "gpt2", "--model", "gpt2"], ["--model", "-"], ["--gpu", "t4"],
                                  ["--model", "gpt2", "--seq-len", "1e3"], ["--modle", "gpt2"]])
def test_anything_else_goes_to_click(args):
    assert parse_plain(args) is None


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_package(tmp_path):
    src = tmp_path / "src"
    for name in ("planner", "validate", "data", "pyproject.toml", "README.md"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(src)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("fitplan-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    version = wheel.name.split("-")[1]
    assert tops == {"fitplan", f"fitplan-{version}.dist-info"}
    names = zipfile.ZipFile(wheel).namelist()
    assert "fitplan/validate/measure.py" in names and "fitplan/data/models/index.json" in names
