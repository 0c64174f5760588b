"""`servopt zoo`: the whole pipeline on a zoo of models, measured (pipelines/zoo.py).

Registered in the `servopt` group (components.cli). Nothing heavy is imported before a
command runs; the models are built and the pipelines run in child processes.
"""

from __future__ import annotations

from pathlib import Path

import click

from components.cli_support import LazyConsole, ServoptGroup

stdout = LazyConsole()
stderr = LazyConsole(stderr=True)


@click.group("zoo", cls=ServoptGroup)
def zoo_group() -> None:
    """The whole pipeline on a zoo of models (demo CNN, MobileNetV2, ResNet50, text),
    each stage timed and its peak memory measured."""


@zoo_group.command("run")
@click.option("--models", "names", default=None,
              help="Comma-separated zoo models (default: all): demo-cnn, mobilenet_v2, "
                   "resnet50, bert-encoder, text-tokenizing.")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("servopt-zoo"),
              show_default=True, help="Where the models, examples and runs go.")
@click.option("--record", "record_path", type=click.Path(path_type=Path), default=None,
              help="The JSON record (default: WORKDIR/zoo.json), written after every model.")
def run_command(names: str | None, workdir: Path, record_path: Path | None) -> None:
    """Run the whole pipeline on each model; record time and memory per stage."""
    from pipelines.zoo import find, run_zoo
    from pipelines.zoo_table import render

    models = find([n.strip() for n in names.split(",") if n.strip()] if names else None)
    record_path = record_path or workdir / "zoo.json"
    record = run_zoo(models, workdir, record_path,
                     say=lambda line: stderr.print(line, highlight=False))
    stdout.print(render(record), markup=False, highlight=False)
    stdout.print(f"record written to {record_path}")


@zoo_group.command("table")
@click.argument("record", type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Write the Markdown here instead of printing it.")
def table_command(record: Path, output: Path | None) -> None:
    """Render a zoo record (JSON) as the docs' Markdown tables."""
    from pipelines.zoo_table import read_record, render

    text = render(read_record(record))
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        stdout.print(f"tables written to {output}")
