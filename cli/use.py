"""`glad predict` and `glad export`: using a tuned model (option parsing only; see glad.engine.use)."""

from __future__ import annotations

import click
from glad_cli.train import _fail, _run_guarded, _setup_logging


@click.command()
@click.option("--adapter", required=True,
              help="Adapter folder written by glad train (…/seedK/adapter) or by glad export --format peft, or "
                   "hf-hub:user/name[@revision].")
@click.argument("images", nargs=-1, required=True)
@click.option("--classes", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Class names, one a line (default: those the adapter was trained on).")
@click.option("--template", default=None, help="Prompt template (default: the one the adapter was trained with).")
@click.option("--top-k", type=click.IntRange(1), default=5, help="Classes shown per image.")
@click.option("--batch-size", type=click.IntRange(1), default=64, help="Images per forward pass.")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Also write the predictions: .csv (path, rank, class, probability, error) or .json.")
@click.option("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), default="auto",
              help="Autocast; auto: fp16 on a GPU, fp32 on a CPU.")
@click.option("--cache-dir", default=None, help="Where downloaded weights and adapters are cached.")
@click.option("--offline", is_flag=True, help="Never reach the network for weights or adapters.")
@click.option("--force", is_flag=True, help="Replace an existing --output file.")
def predict(adapter, images, classes, template, top_k, batch_size, output, device, precision, cache_dir, offline,
            force):
    """Classify IMAGES (files, folders, globs) with a tuned adapter: top-k classes and probabilities.

    An unreadable image is reported on its own line; the others are still classified.
    """
    from glad.config import check_template

    if template is not None and (problem := check_template(template)):
        _fail(problem)
    if output and not output.lower().endswith((".csv", ".json")):
        _fail(f"--output {output}: predictions are written as .csv or .json; name the file so")
    import os

    if output and os.path.exists(output) and not force:
        _fail(f"--output {output} exists; pass --force to replace it, or choose another file")
    from glad.engine.use import Classifier, expand_images, write_predictions

    _setup_logging()
    paths = expand_images(images)
    if not paths:
        _fail(f"no images found in {' '.join(images)}")
    names = None
    if classes:
        with open(classes, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    clf = _run_guarded(lambda: Classifier(adapter, names, template=template, device=device, precision=precision,
                                          cache_dir=cache_dir, offline=offline))
    predictions = clf.predict(paths, top_k=top_k, batch_size=batch_size)
    for p in predictions:
        if p.error:
            click.echo(f"{p.path}: error: {p.error}")
        else:
            click.echo(f"{p.path}: " + ", ".join(f"{c} {100 * v:.1f}%" for c, v in p.top))
    if output:
        write_predictions(predictions, output)
        click.echo(f"wrote {output}")
    failed = sum(p.error is not None for p in predictions)
    if failed:
        click.echo(f"{failed} of {len(predictions)} image(s) could not be read", err=True)


@click.command()
@click.option("--adapter", required=True, help="Adapter folder, or hf-hub:user/name[@revision].")
@click.option("--output", required=True,
              help="The folder to write (open_clip also takes a .safetensors file name: the weights alone).")
@click.option("--format", "format_", type=click.Choice(["open_clip", "peft", "transformers"]), default="open_clip",
              show_default=True,
              help="open_clip: the merged model for open_clip (local-dir:FOLDER); peft: a PEFT LoRA adapter of the "
                   "plain open_clip model; transformers: the merged model as a transformers CLIPModel with its "
                   "processor (OpenAI-architecture ViTs).")
@click.option("--cache-dir", default=None, help="Where downloaded weights and adapters are cached.")
@click.option("--offline", is_flag=True, help="Never reach the network for weights or adapters.")
@click.option("--force", is_flag=True, help="Replace an earlier export at --output.")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True,
              help="Precision the weights are stored in (fp16/bf16: half the file; merged in fp32 first).")
def export(adapter, output, format_, cache_dir, offline, force, dtype):
    """Write the tuned model for another tool: open_clip, PEFT or transformers.

    The folder also holds glad_adapter.json, with the class names and prompt template the
    adapter was trained with.
    """
    from glad.engine.export import check_export, describe, existing_export
    from glad.engine.export import export as write_export

    if problem := check_export(output, format_, dtype):
        _fail(problem)
    if (existing := existing_export(output, format_)) and not force:
        _fail(f"--output {output} already holds an export ({existing}); pass --force to replace it, "
              "or choose another --output")
    _setup_logging()
    result = _run_guarded(lambda: write_export(adapter, output, format=format_, cache_dir=cache_dir,
                                               offline=offline, dtype=dtype))
    click.echo(describe(result))
    for note in result["notes"]:
        click.echo(f"note: {note}")
    click.echo(f"load it with: {result['load']}")
