"""glad.world: the built-in offline default, a procedurally generated world of pictures.

Seeded pictures of coloured shapes (shape, colour, size, count, background texture,
rendition style) with natural captions, drawn by code alone: no downloads, no
binary files. From it:

* built-in datasets (`DATASETS`), registered with `glad.data.build_dataset` by name
  (`world_shapes`, `world_scenes`, ...), materialised once as PNG + CoOp split JSON
  in the glad cache;
* `BUILTIN_PROTOCOLS`: which of them make the default base-to-novel, cross-dataset and
  domain-generalization runs;
* glad-tiny (`glad.world.tiny.load_glad_tiny`): a small open_clip CLIP pretrained
  contrastively on captioned pictures of the world, on first use, then cached.
"""

from glad.world.cache import cache_root, generator_hash
from glad.world.datasets import (
    BUILTIN_PROTOCOLS,
    DATASETS,
    IMAGE_SIZE,
    WorldDataset,
    build_world_dataset,
    dataset_dir,
    materialize,
    register_all,
)
from glad.world.render import render
from glad.world.scenes import Group, Scene, rng_for


def load_glad_tiny(*args, **kwargs):
    """See `glad.world.tiny.load_glad_tiny` (imported on first call: it needs open_clip)."""
    from glad.world.tiny import load_glad_tiny as load

    return load(*args, **kwargs)


register_all()

__all__ = ["BUILTIN_PROTOCOLS", "DATASETS", "IMAGE_SIZE", "Group", "Scene", "WorldDataset",
           "build_world_dataset", "cache_root", "dataset_dir", "generator_hash", "load_glad_tiny",
           "materialize", "register_all", "render", "rng_for"]
