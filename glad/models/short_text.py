"""Text encoding at the prompts' real length instead of the full context.

CLIP's text tower pads every prompt to its context (77 tokens for the OpenAI models),
yet class prompts are ~10-20 tokens. Its attention is causal, so position i never sees
a position after it, and the pooled feature is read at the end token. Cutting every
column after the last one that holds a real token (or the pooled position) therefore
leaves the features unchanged up to float rounding while the text tower's work shrinks
with the cut (roughly 5x fewer tokens for short prompts).

The cut length is decided on the CPU when prompts are tokenised (once per class set),
so the training step needs no host sync. Only the plain open_clip ``CLIP`` text path
with a causal mask and end-token pooling is run short; everything else keeps the full
context.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

_POOLS = ("argmax", "eos")  # poolings that read a token position inside the prompt


def _hides_future(mask) -> bool:
    """Whether an attention mask hides every position after the query (causal)."""
    if (not isinstance(mask, torch.Tensor) or mask.is_meta or mask.dim() != 2
            or mask.shape[0] != mask.shape[1]):
        return False  # (a meta tensor has no values to check: keep the full context)
    mask = mask.detach()
    hidden = mask if mask.dtype == torch.bool else torch.isneginf(mask)
    above = torch.ones(mask.shape, dtype=torch.bool, device=mask.device).triu(1)
    return bool(hidden[above].all())  # one read at construction, never in a step


def short_text_unsupported(clip: nn.Module) -> str | None:
    """Why ``clip`` cannot encode trimmed tokens exactly, or None when it can."""
    try:
        from open_clip.model import CLIP
    except ImportError:  # pragma: no cover - open_clip is a dependency
        return "open_clip is not importable"
    if not isinstance(clip, CLIP):
        return f"{type(clip).__name__} is not an open_clip CLIP (its text tower is not the built-in one)"
    if type(clip).encode_text is not CLIP.encode_text:
        return f"{type(clip).__name__} overrides encode_text"
    pool = getattr(clip, "text_pool_type", None)
    if pool not in _POOLS:
        return f"text pooling {pool!r} does not read the end token (needs one of {_POOLS})"
    if pool == "eos" and getattr(clip, "text_eos_id", None) is None:
        return "'eos' pooling without text_eos_id"
    context = getattr(clip, "context_length", None)
    pos = getattr(clip, "positional_embedding", None)
    if not isinstance(context, int) or not isinstance(pos, torch.Tensor) or pos.dim() != 2 or pos.shape[0] != context:
        return "positional embedding does not match the context length"
    if not _hides_future(getattr(clip, "attn_mask", None)):
        return "the text attention mask is not causal"
    proj = getattr(clip, "text_projection", None)
    if proj is not None and not isinstance(proj, (nn.Linear, torch.Tensor)):
        return f"text_projection is a {type(proj).__name__}"
    return None


def tokenizer_pad_id(tokenizer) -> int | None:
    """The id the tokenizer pads with, when it is known for sure (open_clip's BPE tokenizer: 0)."""
    try:
        from open_clip.tokenizer import SimpleTokenizer
    except ImportError:  # pragma: no cover
        return None
    # HF tokenizers differ (pad may equal eos, sep may be rewritten to 0): not trimmed.
    return 0 if isinstance(tokenizer, SimpleTokenizer) else None


def trimmed_length(tokens: torch.Tensor, pad_id: int, pool_type: str, eos_id: int | None = None) -> int:
    """Columns to keep: through the last one holding a non-pad token and every pooled position.

    ``tokens`` is a CPU ``[N, context]`` tensor; returns at least 1.
    """
    if tokens.numel() == 0:
        return tokens.shape[1]
    used = (tokens != pad_id).any(dim=0).nonzero()
    length = int(used[-1]) + 1 if len(used) else 1
    # open_clip's pooling index on the full tokens; keeping it makes the short pooling read the same place
    if pool_type == "argmax":
        pooled = tokens.argmax(dim=-1)
    else:
        pooled = (tokens == eos_id).int().argmax(dim=-1)
    return max(length, int(pooled.max()) + 1)


def encode_text_short(clip: nn.Module, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """open_clip ``CLIP.encode_text`` on ``[N, L]`` tokens, L <= context, using the first L positions.

    Equals ``clip.encode_text`` on the tokens right-padded to the context (for a model that
    ``short_text_unsupported`` accepts), since the causal mask keeps later positions out.
    """
    from open_clip.transformer import text_global_pool

    length = tokens.shape[1]
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tokens).to(cast_dtype)
    x = x + clip.positional_embedding[:length].to(cast_dtype)
    x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
    x = clip.ln_final(x)
    x = text_global_pool(x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
    proj = clip.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    return F.normalize(x, dim=-1) if normalize else x
