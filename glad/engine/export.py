"""`glad export`: a tuned adapter in the format another tool reads.

* ``open_clip`` (default): the base model with LoRA merged, a folder that
  ``open_clip.create_model_and_transforms("local-dir:FOLDER")`` loads (or a bare
  ``.safetensors`` weights file);
* ``peft``: a PEFT LoRA adapter of the plain open_clip model (glad.models.peft_format),
  loaded with ``peft.PeftModel.from_pretrained(open_clip_model, FOLDER)``; glad reads it back;
* ``transformers``: the merged model as a ``transformers.CLIPModel`` folder with its processor
  (the model's own preprocessing and tokenizer), for ``CLIPModel.from_pretrained`` and the
  ``zero-shot-image-classification`` pipeline (OpenAI-architecture ViTs).

Every folder also holds ``glad_adapter.json``: the adapter's config, with the class names and
prompt template it was trained with, so the export classifies on its own. AlignNet's bias
depends on each image and cannot be merged or carried; the export says so.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import torch

from glad.engine.use import load_tuned
from glad.models import GladModel
from glad.models.adapter_io import SIDECAR_NAME
from glad.models.loading import BUILTIN_TINY, model_config

EXPORT_FORMATS = ("open_clip", "peft", "transformers")
# the largest |difference| of unit features between glad's model and the transformers export
# (float32 on a CPU: about 1e-6; a real mismatch of architecture gives 1e-1 and more)
TRANSFORMERS_TOLERANCE = 1e-4
EXPORT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# the file whose presence marks an earlier export of each format in a folder
_MAIN_FILE = {"open_clip": "open_clip_model.safetensors", "peft": "adapter_model.safetensors",
              "transformers": "model.safetensors"}


def existing_export(output: str, format: str) -> str | None:
    """The file of an earlier export at `output` (replaced only with --force), or None."""
    if os.path.isfile(output):
        return output
    path = os.path.join(output, _MAIN_FILE[format])
    return path if os.path.exists(path) else None


def check_export(output: str, format: str, dtype: str) -> str | None:
    """Why this export cannot be written (None when it can), before anything is loaded."""
    if format not in EXPORT_FORMATS:
        return f"--format {format!r} unknown; choose from {', '.join(EXPORT_FORMATS)}"
    if dtype not in EXPORT_DTYPES:
        return f"--dtype {dtype!r} unknown; choose from {', '.join(EXPORT_DTYPES)}"
    is_file = output.lower().endswith(".safetensors")
    if is_file and format != "open_clip":
        return f"--format {format} writes a folder; pass --output DIR"
    if os.path.isfile(output) and not is_file:
        return f"--output {output} is a file; export to a folder (or, for open_clip, to a .safetensors file name)"
    others = [f for f, main in _MAIN_FILE.items() if f != format and os.path.isfile(os.path.join(output, main))]
    if others and not is_file:  # one format a folder: its glad_adapter.json describes that one
        return f"--output {output} holds a --format {others[0]} export; export --format {format} to another folder"
    return None


def merged_state_dict(model: GladModel) -> dict[str, torch.Tensor]:
    """The base CLIP's state dict with LoRA folded into its weights, in open_clip's own layout
    (the adapters' parameters left out)."""
    from glad.models import LoraAdapter, is_merged, merge_lora

    clip = model.clip
    if model.lora_config is not None and not is_merged(clip):
        merge_lora(clip)
    # adapters' own matrices only: a LoraLinear also holds its frozen base weight and bias
    lora = {f"{name}.{leaf}" for name, m in clip.named_modules() if isinstance(m, LoraAdapter)
            for leaf in ("lora_A.weight", "lora_B.weight")}
    return {k: v.detach().to("cpu").contiguous() for k, v in clip.state_dict().items() if k not in lora}


def export(adapter: str, output: str, *, format: str = "open_clip", dtype: str = "fp32",
           cache_dir: str | None = None, offline: bool = False) -> dict:
    """Write `adapter` at `output` in `format`, weights stored in `dtype` (merged in float32).

    Returns what was written (``weights``, ``model``, ``quick_gelu``, ``dtype``, ``format``),
    ``notes`` for the user and ``load``, the line of Python that loads it.
    """
    if problem := check_export(output, format, dtype):
        raise ValueError(problem)
    model, config, _ = load_tuned(adapter, device="cpu", cache_dir=cache_dir, offline=offline)
    from glad.models import uses_quick_gelu

    notes = []
    if config.get("alignnet"):
        notes.append("AlignNet is not in the export: its bias depends on each image, so it cannot be merged "
                     "into weights or carried by another format; glad predict --adapter uses it")
    writer = {"open_clip": _open_clip, "peft": _peft, "transformers": _transformers}[format]
    result = {"model": model.model_name, "quick_gelu": uses_quick_gelu(model.clip), "dtype": dtype, "format": format}
    result.update(writer(model, config, output, EXPORT_DTYPES[dtype], adapter))
    result["notes"] = notes + result.get("notes", [])
    if not output.lower().endswith(".safetensors"):
        from glad.io import atomic_write_json

        sidecar = {**config, "exported_as": format}
        if format == "peft":
            sidecar["alignnet"] = None  # the folder carries LoRA alone; glad reads it back as such
        atomic_write_json(os.path.join(output, SIDECAR_NAME), sidecar, sort_keys=True)
    return result


def _cast(tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}


def _save_weights(tensors: dict[str, torch.Tensor], path: str, adapter: str) -> None:
    from safetensors.torch import save_file

    from glad.io import atomic_path

    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt", "glad_adapter": str(adapter)})


def _open_clip_name(model: GladModel) -> str:
    if model_config(model.model_name) is None:
        raise ValueError(f"{model.model_name!r} is not an open_clip model config; export needs one")
    return model.model_name


def _open_clip(model: GladModel, config: dict, output: str, dtype: torch.dtype, adapter: str) -> dict:
    import open_clip

    from glad.io import atomic_write_json
    from glad.models import uses_quick_gelu

    name = _open_clip_name(model)
    quick = uses_quick_gelu(model.clip)
    is_file = output.lower().endswith(".safetensors")
    if is_file and name.startswith("local-dir:"):
        raise ValueError("open_clip reads a local-dir: model's weights from its folder only; export to a "
                         "folder instead (--output DIR)")
    if is_file and name == BUILTIN_TINY:
        raise ValueError("open_clip alone does not know glad-tiny's architecture; export to a folder instead "
                         "(--output DIR): its open_clip_config.json carries it")
    model_cfg = model_config(name)
    open_clip_name = name
    if quick and not model_cfg.get("quick_gelu"):
        open_clip_name = f"{name}-quickgelu" if open_clip.get_model_config(f"{name}-quickgelu") else None
    if is_file and open_clip_name is None:
        raise ValueError(f"open_clip has no QuickGELU config of {name}; export to a folder instead "
                         f"(--output DIR), which records quick_gelu in its open_clip_config.json")
    tensors = _cast(merged_state_dict(model), dtype)
    weights = output if is_file else os.path.join(output, _MAIN_FILE["open_clip"])
    _save_weights(tensors, weights, adapter)
    if is_file:
        return {"weights": weights, "open_clip_model": open_clip_name,
                "load": f"open_clip.create_model_and_transforms({open_clip_name!r}, pretrained={weights!r})"}
    # the preprocessing the adapter was trained and evaluated with
    preprocess = {k: v for k, v in model.preprocess.to_dict().items() if k != "size"}
    atomic_write_json(os.path.join(output, "open_clip_config.json"),
                      {"model_cfg": {**model_cfg, "quick_gelu": quick}, "preprocess_cfg": preprocess})
    if hasattr(model.tokenizer, "save_pretrained"):  # open_clip reads a folder's HF tokenizer from it
        model.tokenizer.save_pretrained(output)
    return {"weights": weights, "load": f"open_clip.create_model_and_transforms('local-dir:{output}')"}


def _base_load_line(model: GladModel, config: dict) -> str:
    """The Python that builds the plain open_clip model the PEFT adapter goes on."""
    from glad.models import uses_quick_gelu

    name, weights = model.model_name, config.get("pretrained")
    if weights is None or name == BUILTIN_TINY:  # glad's seeded random init, or glad's own model
        return f"glad.models.loading.load_base_clip({name!r}, {weights!r})[0]"
    if uses_quick_gelu(model.clip) and not (model_config(name) or {}).get("quick_gelu"):
        name = f"{name}-quickgelu"
    return f"open_clip.create_model({name!r}, pretrained={weights!r})"


def _library_files(output: str):
    """A temporary folder inside `output` whose files are moved into `output` one by one
    (each an atomic rename) once the library that writes them has finished."""
    import contextlib

    @contextlib.contextmanager
    def staged():
        os.makedirs(output, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".export-", dir=output)
        try:
            yield tmp
            for name in sorted(os.listdir(tmp)):
                os.replace(os.path.join(tmp, name), os.path.join(output, name))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    return staged()


def _require(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"this export format needs {module}, which is not installed: "
                          f"pip install '{extra}' (or pip install {module})") from None


def _peft(model: GladModel, config: dict, output: str, dtype: torch.dtype, adapter: str) -> dict:
    from glad.models.peft_format import PeftExportError, peft_config, to_peft

    peft = _require("peft", "glad-clip[peft]")
    if model.lora_config is None:
        raise PeftExportError("this adapter has no LoRA (AlignNet only): a PEFT LoRA adapter would be empty")
    fields = peft_config(model.clip, model.model_name)
    with _library_files(output) as tmp:
        peft.LoraConfig(**fields).save_pretrained(tmp)
        _save_weights(_cast(to_peft(model.clip), dtype), os.path.join(tmp, _MAIN_FILE["peft"]), adapter)
    weights = os.path.join(output, _MAIN_FILE["peft"])
    return {"weights": weights, "rank": fields["r"],
            "load": f"peft.PeftModel.from_pretrained({_base_load_line(model, config)}, {output!r})"}


def _transformers(model: GladModel, config: dict, output: str, dtype: torch.dtype, adapter: str) -> dict:
    from glad.models.hf_clip import to_transformers, tokenizer_mismatches, transformers_difference

    transformers = _require("transformers", "glad-clip[hf]")
    hf_model, processor = to_transformers(model, transformers)
    template = config.get("template") or "a photo of a {}."
    prompts = [template.format(c) for c in config.get("classnames") or ["object"]]
    diff = transformers_difference(model, hf_model, prompts)
    if not diff <= TRANSFORMERS_TOLERANCE:  # also refuses NaN
        raise ValueError(f"transformers' CLIPModel does not compute what {model.model_name} computes (unit features "
                         f"differ by {diff:.2g} on a test input); export --format open_clip or peft instead")
    mismatched = tokenizer_mismatches(model.tokenizer, processor.tokenizer, prompts)
    notes = [f"transformers' CLIP tokenizer encodes {len(mismatched)} of {len(prompts)} class prompt(s) otherwise "
             f"than open_clip's (no ftfy), e.g. {mismatched[0]!r}; rename those classes for identical results"
             ] if mismatched else []
    labels = config.get("classnames") or []
    if labels:
        hf_model.config.id2label = dict(enumerate(labels))
        hf_model.config.label2id = {c: i for i, c in enumerate(labels)}
    with _library_files(output) as tmp:
        hf_model.to(dtype).save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return {"weights": os.path.join(output, _MAIN_FILE["transformers"]), "notes": notes, "max_feature_diff": diff,
            "load": (f"transformers.pipeline('zero-shot-image-classification', model={output!r})"
                     f"(image, candidate_labels=labels, hypothesis_template={template!r})")}


def describe(result: dict) -> str:
    """The one line `glad export` prints for what it wrote."""
    return (f"wrote {result['weights']} ({result['format']}, {result['model']}, "
            f"{'QuickGELU' if result['quick_gelu'] else 'GELU'}, {result['dtype']}"
            + (f", PEFT rank {result['rank']}" if "rank" in result else "") + ")")

