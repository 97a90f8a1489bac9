"""The ``plan`` command: parse, build the request, call the library, render. Bad input: one line, exit 2.

The options are built from ``fitplan.request.OPTIONS``, so the command line and the library take
the same fields; every decision is ``fitplan.plan``'s.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import click
from fitplan import __version__
from fitplan.errors import PlanError
from fitplan.request import OPTIONS, Option, Request

TYPE_CHECKING = False  # typing is not imported at run time: the cold start
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

_TYPES = {"int": int, "float": float, "str": str}


def _click_option(opt: Option, help_text: str | None = None) -> Callable:
    flag = "--" + opt.field.replace("_", "-")
    text = help_text or opt.help
    if opt.kind == "switch":
        return click.option(f"{flag}/--no-{flag[2:]}", opt.field, default=None, help=text)
    if opt.kind == "flag":
        return click.option(flag, opt.field, is_flag=True, default=False, help=text)
    if opt.bare is not None:     # the value optional: the option alone means ``bare``
        return click.option(flag, opt.field, type=_TYPES[opt.kind], default=None, is_flag=False, flag_value=opt.bare,
                            metavar=f"[{opt.metavar}]", help=text)
    return click.option(flag, opt.field, type=_TYPES[opt.kind], default=None, metavar=opt.metavar, help=text)


def _options(names: tuple[str, ...] | None = None, helps: dict[str, str] | None = None) -> Callable:
    """Decorate a command with the request's options (all, or those named), in the table's order."""
    chosen = [o for o in OPTIONS if names is None or o.field in names]

    def decorate(func: Callable) -> Callable:
        for opt in reversed(chosen):
            func = _click_option(opt, (helps or {}).get(opt.field))(func)
        return func

    return decorate


def _request(values: dict[str, Any]) -> Request:
    flags = {o.field for o in OPTIONS if o.kind == "flag"}
    return Request(**{k: (None if k in flags and v is False else v) for k, v in values.items()})


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@_options()
@click.option("--plot", "plot_path", metavar="FILE", help="Draw the breakdown as stacked bars (.png, .svg or .pdf; needs .[plot]).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON, every memory figure in integer bytes.")
@click.option("--format", "table_format", metavar="F", help="Tables as text (the default), markdown, github or csv "
              "(csv: the main table alone), to paste elsewhere.")
@click.version_option(__version__, prog_name="plan")
@click.pass_context
def cli(ctx: click.Context, plot_path: str | None, as_json: bool, table_format: str | None, **values: Any) -> None:
    """Plan the memory of fine-tuning a language model: `plan --model llama-70b --gpu a100-80`."""
    if ctx.invoked_subcommand is not None:
        return
    from fitplan.__main__ import execute

    execute(_request(values), plot_path, as_json, table_format)


_VALIDATE_FIELDS = ("model", "method", "lora_rank", "lora_targets", "lora_dropout", "adapter_size", "num_virtual_tokens",
                    "prefix_projection", "seq_len", "batch_size", "precision", "optimizer", "grad_ckpt", "attention",
                    "quant", "double_quant", "kbit_upcast", "transformers", "loss", "adapter_dtype", "lora_alpha",
                    "modules_to_save", "optimizer_in_backward")


@cli.command("validate")
@_options(_VALIDATE_FIELDS, helps={
    "method": "The method to run [default: lora].",
    "seq_len": "Tokens per sequence [default: 512].",
    "batch_size": "Sequences per step [default: 1].",
    "precision": "Training precision [default: fp32 with --mode cpu, bf16 otherwise].",
})
@click.option("--mode", default="auto", show_default=True, metavar="M",
              help="auto, cuda (a GPU), cpu (a real CPU run) or fake (fake tensors, any size).")
@click.option("--device", "device_name", default=None, metavar="D", help="cuda or cpu: the same as --mode.")
@click.option("--steps", type=int, default=2, show_default=True, help="Optimizer steps to run (at least 2).")
@click.option("--nproc", type=int, default=1, show_default=True, help="Ranks to run (local processes; gloo on a CPU).")
@click.option("--sharding", "validate_sharding", default=None, metavar="S", help="With --nproc > 1: fsdp (FSDP2 full shard).")
@click.option("--sweep", metavar="FILE", help="A TOML sweep (see data/sweeps/) to run instead of one setting.")
@click.option("--out", metavar="FILE", help="JSONL file the records are appended to (needed with --sweep).")
@click.option("--plot", "plot_path", metavar="FILE", help="Draw estimate beside measurement (needs .[plot]).")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
def validate_cmd(mode, device_name, steps, nproc, validate_sharding, sweep, out, plot_path, as_json, **values) -> None:
    """Run real training steps and compare the measured peak with the estimate (needs `.[validate]`)."""
    try:
        from fitplan.validate.cli import validate_command
    except ImportError as exc:
        raise PlanError(f"plan validate needs the validation extras ({exc.name} is missing): "
                        "pip install 'fitplan[validate]'") from None
    validate_command(values, device_name or mode, steps=steps, nproc=nproc, sharding=validate_sharding, sweep=sweep,
                     out=out, as_json=as_json, plot_path=plot_path)


@cli.command("reference")
@click.option("--file", "path", metavar="CSV", help="Published measurements [default: data/reference/published_memory.csv].")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.option("--stacks", "stacks_file", is_flag=True,
              help="Read the stacks' rows (data/reference/published_memory_stacks.csv).")
@click.option("--without-stacks", is_flag=True,
              help="Plan the stacks' rows with only the options the planner had before --stack (for comparison).")
def reference_cmd(path, as_json, stacks_file, without_stacks) -> None:
    """Published, measured GPU peaks beside the planner's like-for-like figures."""
    from fitplan import reference

    if stacks_file and path:
        raise PlanError("--stacks reads the shipped stacks file; give --file or --stacks, not both")
    result = reference.report(reference.stacks_path() if stacks_file else path, with_stacks=not without_stacks)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else result.text())


@cli.command("calibrate")
@click.argument("records", nargs=-1)
@click.option("--reference", "use_reference", is_flag=True,
              help="Fit from the published rows that report allocated memory beside nvidia-smi's.")
@click.option("--gpu", "gpu_name", metavar="NAME", help="The GPU the records come from [default: from the records].")
@click.option("--out", metavar="FILE", help="Where to write [default: data/calibration/<gpu>-torch<version>.json].")
@click.option("--json", "as_json", is_flag=True, help="Print the calibration as JSON.")
def calibrate_cmd(records, use_reference, gpu_name, out, as_json) -> None:
    """Fit the framework overhead (workspaces, allocator reserve, CUDA context) from measurements."""
    from fitplan import calibration

    cal, path = calibration.calibrate(records, use_reference, gpu_name, out)
    if as_json:
        click.echo(json.dumps({**cal.to_json(), "path": str(path)}, indent=2))
    else:
        click.echo(calibration.summary_text(cal, path))


@cli.command("models")
@click.option("--json", "as_json", is_flag=True)
def models_cmd(as_json: bool) -> None:
    """List the model presets and their aliases."""
    from fitplan.catalog import model_listing
    from fitplan.render import tabulate

    rows = model_listing()
    if as_json:
        click.echo(json.dumps({"models": rows}, indent=2))
        return
    click.echo(tabulate([[r["name"], r["hf_id"], r["model_type"], f"{r['parameters']:,}", ", ".join(r["aliases"])]
                         for r in rows], ["preset", "hugging face id", "type", "parameters", "aliases"]))


@cli.command("gpus")
@click.option("--json", "as_json", is_flag=True)
def gpus_cmd(as_json: bool) -> None:
    """List the GPU catalog."""
    from fitplan.catalog import gpu_listing
    from fitplan.render import tabulate
    from fitplan.units import gib

    rows = gpu_listing()
    if as_json:
        click.echo(json.dumps({"gpus": rows}, indent=2))
        return
    click.echo(tabulate([[r["name"], r["display_name"], gib(r["memory_bytes"]), gib(r["usable_memory_bytes"]),
                          r["bf16_tflops"] if r["bf16_tflops"] is not None else "-", r["hbm_gbps"],
                          "yes" if r["supports_fp8"] else "no", r["interconnect"]] for r in rows],
                        ["gpu", "name", "GiB", "usable GiB", "bf16 TFLOP/s", "GB/s", "fp8", "interconnect"]))


def main(argv: list[str] | None = None) -> int:
    """The click command: every bad input ends as one line on stderr and exit code 2."""
    from fitplan.__main__ import fail, guarded

    def work() -> None:
        try:
            cli.main(args=argv, prog_name="plan", standalone_mode=False)
        except click.exceptions.Exit as exc:
            if exc.exit_code:
                raise SystemExit(exc.exit_code) from None
        except click.exceptions.Abort:
            raise KeyboardInterrupt from None

    try:
        return guarded(work)
    except click.ClickException as exc:
        return fail(exc.format_message())
    except SystemExit as exc:
        return int(exc.code or 0)


def run() -> None:  # console script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
