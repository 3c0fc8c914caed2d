"""CoOp's default prompt template of each dataset (`{}` takes the class name)."""

DEFAULT_TEMPLATE = "a photo of a {}."

TEMPLATES = {
    "oxford_pets": "a photo of a {}, a type of pet.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "food101": "a photo of {}, a type of food.",
    "ucf101": "a photo of a person doing {}.",
}


def template_for(name: str) -> str:
    """The dataset's CoOp template; "a photo of a {}." for every other dataset."""
    return TEMPLATES.get(name, DEFAULT_TEMPLATE)
