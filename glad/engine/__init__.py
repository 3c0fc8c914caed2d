"""Training, evaluation and the three protocols, with paper-layout results tables."""

from glad.data.registry import register_provider

# The built-in offline world provides datasets like a user's folder: it registers its own
# when glad.data first meets a name it does not know.
register_provider("glad.world")
