"""Every bad input a user can give, through the real command line: one line on standard error, exit
code 2, no traceback, no hang, nothing written that breaks a later run. Each case runs under a memory
limit and a timeout."""

import json
import os
import resource
import subprocess
import sys

import pytest

PLAN = [sys.executable, "-m", "fitplan"]
MEMORY_LIMIT = 2 * 2**30
TIMEOUT = 60


def _limits():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run(*args, env=None, cwd=None, stdout=subprocess.PIPE):
    return subprocess.run([*PLAN, *args], stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=TIMEOUT,
                          preexec_fn=_limits, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    llama = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
             "num_hidden_layers": 2, "vocab_size": 100}

    def put(name, content, mode="w"):
        path = d / name
        with open(path, mode) as f:
            f.write(content)
        return str(path)

    def cfg(name, **changes):
        return put(name, json.dumps({**llama, **changes}))

    def cuda_run(i, **m):
        measurement = {"mode": "cuda", "peak_bytes": 10**9, "allocated_peak_bytes": 10**9 + 10**7,
                       "reserved_peak_bytes": 11 * 10**8, "nvml_peak_used_bytes": 16 * 10**8,
                       "cuda_context_bytes": 5 * 10**8, **m}
        return json.dumps({"key": f"k{i}", "outcome": "ok", "measurement": measurement,
                           "device": {"gpu": "NVIDIA H100 80GB HBM3"}, "versions": {"torch": "2.13"}})

    good = "\n".join(cuda_run(i, allocated_peak_bytes=10**9 + i * 10**8) for i in range(4)) + "\n"
    f = {
        "dir": str(d),
        "good_records": put("good.jsonl", good),
        "not_json": put("not.json", "hello"),
        "empty": put("empty.json", ""),
        "list": put("list.json", "[1, 2]"),
        "deep": put("deep.json", "[" * 5000 + "]" * 5000),
        "latin1": put("latin1.json", b'{"model_type": "caf\xe9"}', "wb"),
        "type_number": put("t.json", json.dumps({**llama, "model_type": 7})),
        "type_missing": put("m.json", json.dumps({k: v for k, v in llama.items() if k != "model_type"})),
        "made_up": cfg("made_up.json", model_type="made_up_arch"),
        "hidden_negative": cfg("hn.json", hidden_size=-64),
        "hidden_string": cfg("hs.json", hidden_size="64"),
        "hidden_nan": put("nan.json", json.dumps(llama)[:-1] + ', "rms_norm_eps": NaN}'),
        "heads_divide": cfg("hd.json", num_attention_heads=6, num_key_value_heads=4),
        "kv_more": cfg("kv.json", num_attention_heads=4, num_key_value_heads=8),
        "experts": cfg("moe.json", model_type="mixtral", num_local_experts=4, num_experts_per_tok=8),
        "layers": cfg("layers.json", num_hidden_layers=10**7),
        "vocab": cfg("vocab.json", vocab_size=10**9),
        "records_list": put("list.jsonl", "[1]\n"),
        "records_strings": put("s.jsonl", cuda_run(0, allocated_peak_bytes="12") + "\n"),
        "records_negative": put("n.jsonl", good + cuda_run(9, reserved_peak_bytes=-5) + "\n"),
        "records_one": put("one.jsonl", cuda_run(0) + "\n"),
        "cal_bad_json": put("cal.json", "{"),
        "cal_negative": put("neg.json", json.dumps({"schema": 1, "gpu": "a100-80", "date": "2026-01-01", "source": "x",
                                                   "runs": 3, "overhead": {"workspace_bytes": 0, "reserve_fraction": 0.1,
                                                                           "reserve_bytes": 0, "context_bytes": -1,
                                                                           "band_fraction": 0.1}})),
        "cal_strings": put("str.json", json.dumps({"schema": 1, "gpu": "a100-80", "date": "2026-01-01", "source": "x",
                                                  "runs": 3, "overhead": {"workspace_bytes": "0", "reserve_fraction": 0.1,
                                                                          "reserve_bytes": 0, "context_bytes": 1,
                                                                          "band_fraction": 0.1}})),
        "cal_newer": put("new.json", json.dumps({"schema": 99})),
        "csv_other": put("other.csv", "a,b\n1,2\n"),
        "csv_latin1": put("latin1.csv", b"id,model\n\xff\n", "wb"),
        "csv_empty": put("empty.csv", ""),
        "csv_ragged": put("ragged.csv", "id,model,method,lora_r,lora_targets,quant,micro_batch,n_gpus,gpu,measured_gb,"
                                        "measured_kind,notes\n1,2\n"),
        "folder_no_config": str(d / "emptydir"),
    }
    os.mkdir(f["folder_no_config"])
    loop = d / "loop.json"
    os.symlink(loop, loop)
    f["loop"] = str(loop)
    dangling = d / "dangling.json"
    os.symlink(d / "nowhere.json", dangling)
    f["dangling"] = str(dangling)
    return f


M = ["--model", "llama-3.1-8b"]
CASES = [
    # plan: the model
    ([], "missing --model"),
    (["--model", "nope"], "unknown model 'nope'"),
    (["--model", ""], "--model is empty"),
    (["--model", "-"], "standard input is not read"),
    (["--model", "/dev/zero"], "not a regular file"),
    (["--model", "{folder_no_config}"], "holds no config.json"),
    (["--model", "{dir}/missing.json"], "no such file"),
    (["--model", "{not_json}"], "not valid JSON"),
    (["--model", "{empty}"], "the file is empty"),
    (["--model", "{list}"], "must hold a JSON object"),
    (["--model", "{deep}"], "nested deeper than 64 levels"),
    (["--model", "{latin1}"], "not UTF-8 text"),
    (["--model", "{type_number}"], "field 'model_type' must be a string"),
    (["--model", "{type_missing}"], "missing required field 'model_type'"),
    (["--model", "{made_up}"], "'made_up_arch' is not supported"),
    (["--model", "{hidden_negative}"], "must be a positive integer"),
    (["--model", "{hidden_string}"], "must be a positive integer"),
    (["--model", "{hidden_nan}"], "NaN is not a valid JSON number"),
    (["--model", "{heads_divide}"], "must be a multiple of num_key_value_heads"),
    (["--model", "{kv_more}"], "cannot exceed num_attention_heads"),
    (["--model", "{experts}"], "num_experts_per_tok (8) cannot exceed the 4 experts"),
    (["--model", "{layers}"], "beyond the 2,000 any trainable model has"),
    (["--model", "{vocab}"], "vocab_size of 1,000,000,000 is beyond"),
    (["--model", "{loop}"], "symbolic link loop"),
    (["--model", "{dangling}"], "a symbolic link to a file that does not exist"),
    # plan: names
    ([*M, "--gpu", "nope"], "unknown GPU 'nope'"),
    ([*M, "--method", "nope"], "unknown method 'nope'"),
    ([*M, "--optimizer", "nope"], "unknown optimizer 'nope'"),
    ([*M, "--precision", "nope"], "unknown precision 'nope'"),
    ([*M, "--attention", "nope"], "unknown attention implementation 'nope'"),
    ([*M, "--device", "tpu"], "unknown device 'tpu'"),
    ([*M, "--method", "qlora", "--quant", "int3"], "unknown quantization 'int3'"),
    ([*M, "--sharding", "zero4", "--gpus", "2"], "unknown sharding 'zero4'"),
    ([*M, "--offload", "disk"], "unknown offload 'disk'"),
    ([*M, "--task", "hard"], "unknown task 'hard'"),
    ([*M, "--format", "html"], "unknown table format 'html'"),
    ([*M, "--foo"], "No such option '--foo'"),
    # plan: sizes
    ([*M, "--seq-len", "0"], "seq-len must be positive, got 0"),
    ([*M, "--seq-len", "-5"], "seq-len must be positive, got -5"),
    ([*M, "--seq-len", "x"], "'x' is not a valid integer"),
    ([*M, "--seq-len=x"], "'x' is not a valid integer"),
    ([*M, "--seq-len", "100000000"], "beyond the supported maximum"),
    ([*M, "--batch-size", "0"], "batch-size must be positive"),
    ([*M, "--batch-size", "2000000"], "beyond the supported maximum"),
    ([*M, "--lora-rank", "0"], "lora-rank must be positive"),
    ([*M, "--lora-rank", "100000"], "beyond the supported maximum"),
    ([*M, "--lora-targets", ","], "--lora-targets must name at least one module"),
    ([*M, "--lora-targets", "bogus"], "LoRA target 'bogus' matches no linear module"),
    ([*M, "--lora-dropout", "1.5"], "lora-dropout must be in [0, 1)"),
    ([*M, "--lora-dropout", "x"], "'x' is not a valid float"),
    ([*M, "--gpus", "0"], "gpus must be positive, got 0"),
    ([*M, "--gpus", "200000"], "beyond the supported maximum"),
    ([*M, "--gpus-per-node", "0", "--gpus", "2"], "gpus-per-node must be positive"),
    ([*M, "--gpu", "h100-80", "--tokens", "0"], "tokens must be positive"),
    ([*M, "--gpu", "h100-80", "--tokens", "100", "--mfu", "0"], "mfu must lie in (0, 1]"),
    ([*M, "--gpu", "h100-80", "--tokens", "100", "--mfu", "2"], "mfu must lie in (0, 1]"),
    ([*M, "--examples", "0"], "--examples must be positive"),
    ([*M, "--dataset-tokens", "-1"], "--dataset-tokens must be positive"),
    ([*M, "--adapters", "0"], "--adapters must be positive"),
    ([*M, "--transformers", "3"], "--transformers must be 4 or 5"),
    (["--model", "gpt2", "--seq-len", "5000"], "gpt2 has 1,024 learned positions"),
    # plan: conflicts
    ([*M, "--mfu", "0.5"], "--mfu sets the utilisation for --tokens"),
    ([*M, "--tokens", "1000"], "--tokens needs --gpu (or --suggest)"),
    ([*M, "--method", "full", "--lora-rank", "8"], "--lora-rank applies to"),
    ([*M, "--method", "lora", "--quant", "fp4"], "--quant applies to qlora"),
    ([*M, "--method", "prompt", "--adapter-size", "3"], "--adapter-size applies to adapter"),
    ([*M, "--method", "full", "--no-double-quant"], "--double-quant applies to qlora"),
    ([*M, "--sharding", "none", "--gpus", "4"], "--sharding none is one GPU"),
    ([*M, "--sharding", "ddp", "--offload", "optimizer", "--gpus", "2"], "DDP keeps everything on the GPU"),
    ([*M, "--offload", "params", "--sharding", "zero1", "--gpus", "2"], "--offload params needs sharded parameters"),
    ([*M, "--max-batch"], "need --gpu and --method"),
    ([*M, "--method", "lora", "--gpu", "h100-80", "--max-seq-len", "--suggest"], "search one GPU"),
    ([*M, "--gpu", "t4", "--precision", "bf16"], "t4 does not support bf16"),
    ([*M, "--gpu", "t4", "--attention", "flash"], "FlashAttention 2 needs an Ampere or newer GPU"),
    ([*M, "--gpu", "a100-80", "--device", "cpu"], "plans for a CUDA device"),
    ([*M, "--device", "cpu", "--attention", "flash"], "needs a CUDA device"),
    ([*M, "--suggest", "--device", "cpu"], "--suggest ranks the GPU catalog"),
    ([*M, "--device", "cpu", "--calibration", "none"], "--calibration applies to CUDA figures"),
    ([*M, "--gpus-per-node", "4"], "--gpus-per-node lays GPUs out in nodes"),
    ([*M, "--method", "prefix", "--grad-ckpt"], "PREFIX_TUNING does not work with gradient checkpointing"),
    (["--model", "gemma-2-2b", "--attention", "sdpa"], "gemma2 has no sdpa attention path"),
    ([*M, "--json", "--format", "csv"], "two views"),
    # plan: files given as options
    ([*M, "--calibration", "{dir}/nope.json"], "no such file"),
    ([*M, "--calibration", "{cal_bad_json}"], "not valid JSON"),
    ([*M, "--calibration", "{dir}"], "is a folder"),
    ([*M, "--calibration", "{cal_negative}"], "context_bytes must not be negative"),
    ([*M, "--calibration", "{cal_strings}"], "field 'overhead.workspace_bytes' must be int"),
    ([*M, "--calibration", "{cal_newer}"], "newer than this fitplan reads"),
    ([*M, "--plot", "{dir}"], "is a folder"),
    ([*M, "--plot", "out.gif"], "must end in .png, .svg or .pdf"),
    ([*M, "--plot", "{dir}/no/such/out.png"], "does not exist"),
    # the listings
    (["models", "--bogus"], "No such option '--bogus'"),
    (["gpus", "--bogus"], "No such option '--bogus'"),
    (["models", "extra"], "Got unexpected extra argument"),
    (["nosuchcommand"], "No such command 'nosuchcommand'"),
    # validate (refused before torch is imported)
    (["validate"], "missing --model"),
    (["validate", "--model", "nope"], "unknown model 'nope'"),
    (["validate", "--model", "gpt2", "--seq-len", "0"], "--seq-len must be positive"),
    (["validate", "--model", "gpt2", "--batch-size", "-1"], "--batch-size must be positive"),
    (["validate", "--model", "gpt2", "--steps", "1"], "--steps must be at least 2"),
    (["validate", "--model", "gpt2", "--mode", "tpu"], "unknown mode 'tpu'"),
    (["validate", "--model", "gpt2", "--nproc", "0"], "nproc must be positive"),
    (["validate", "--model", "gpt2", "--sharding", "fsdp"], "--sharding needs --nproc 2 or more"),
    (["validate", "--sweep", "x.toml"], "--sweep needs --out"),
    (["validate", "--model", "gpt2", "--method", "nope"], "unknown method 'nope'"),
    (["validate", "--model", "gpt2", "--precision", "fp12"], "unknown precision 'fp12'"),
    (["validate", "--model", "gpt2", "--lora-rank", "0"], "--lora-rank must be positive"),
    # calibrate
    (["calibrate"], "give validator records"),
    (["calibrate", "{dir}/missing.jsonl"], "no such file"),
    (["calibrate", "{dir}"], "is a folder"),
    (["calibrate", "/dev/zero"], "not a regular file"),
    (["calibrate", "{not_json}"], "not valid JSON"),
    (["calibrate", "{records_list}"], "a record is a JSON object"),
    (["calibrate", "{records_strings}"], "field 'measurement.allocated_peak_bytes' must be a whole number"),
    (["calibrate", "{records_negative}"], "line 5: field 'measurement.reserved_peak_bytes'"),
    (["calibrate", "{records_one}"], "a fit needs at least 3"),
    (["calibrate", "{good_records}", "--gpu", "nope"], "unknown GPU 'nope'"),
    (["calibrate", "{good_records}", "--out", "{dir}"], "is a folder"),
    (["calibrate", "--reference", "--gpu", "t4"], "report no allocated/nvidia-smi pairs for t4"),
    # reference
    (["reference", "--file", "{dir}/missing.csv"], "no such file"),
    (["reference", "--file", "{dir}"], "is a folder"),
    (["reference", "--file", "/dev/zero"], "not a regular file"),
    (["reference", "--file", "{csv_empty}"], "the file is empty"),
    (["reference", "--file", "{csv_other}"], "missing column(s) id, model"),
    (["reference", "--file", "{csv_latin1}"], "not UTF-8 text"),
    (["reference", "--file", "{csv_ragged}"], "line 2: 12 columns expected"),
]


@pytest.mark.parametrize("args, message", CASES, ids=lambda x: " ".join(x)[:60] if isinstance(x, list) else None)
def test_one_line_exit_2_no_traceback(files, tmp_path, args, message):
    args = [a.format(**files) for a in args]
    r = run(*args, env={**os.environ, "FITPLAN_HOME": str(tmp_path)}, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("plan: error: "), r.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    assert not list(tmp_path.rglob("*.json")), "a refused input wrote a file"


def test_the_suite_is_large():
    assert len(CASES) >= 100


def test_json_errors_are_also_a_json_object(files):
    r = run("--model", "nope", "--json")
    assert r.returncode == 2
    assert json.loads(r.stdout) == {"error": r.stderr.strip()[len("plan: error: "):], "exit_code": 2}


def test_a_full_disk_and_a_closed_pipe_are_one_line():
    with open("/dev/full", "w") as full:
        r = run("--model", "gpt2", stdout=full)
    assert r.returncode == 2 and r.stderr.strip() == "plan: error: cannot write the output (No space left on device)"
    p = subprocess.Popen([*PLAN, "--model", "llama-70b", "--gpu", "a100-80"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdout.close()   # the reader goes away before the answer
    err = p.stderr.read().decode()
    assert p.wait(timeout=TIMEOUT) in (0, 2) and "Traceback" not in err and len(err.strip().splitlines()) <= 1


def test_bad_calibrate_then_plan_leaves_every_gpu_plannable(files, tmp_path):
    env = {**os.environ, "FITPLAN_HOME": str(tmp_path)}
    assert run("calibrate", files["records_negative"], env=env).returncode == 2
    assert run("calibrate", files["records_strings"], env=env).returncode == 2
    assert not (tmp_path / "calibration").exists()
    # a hand-broken file where plan looks is ignored, with a note, not fatal
    (tmp_path / "calibration").mkdir()
    (tmp_path / "calibration" / "h100-80-torch2.13.json").write_text("{broken")
    from fitplan.catalog import gpu_catalog

    for gpu in gpu_catalog():
        r = run("--model", "gpt2", "--gpu", gpu, "--json", env=env)
        assert r.returncode == 0, (gpu, r.stderr)
        assert any("ignored" in n for n in json.loads(r.stdout)["notes"])


def test_good_records_calibrate_into_the_user_folder_and_plan_uses_them(files, tmp_path):
    env = {**os.environ, "FITPLAN_HOME": str(tmp_path)}
    r = run("calibrate", files["good_records"], env=env)
    assert r.returncode == 0, r.stderr
    written = list((tmp_path / "calibration").glob("h100-80-torch2.13.json"))
    assert written
    r = run("--model", "gpt2", "--gpu", "h100-80", "--json", env=env)
    assert json.loads(r.stdout)["calibration"]["file"] == "h100-80-torch2.13.json"
