"""The frozen generator: prompts, an OpenAI-compatible client, the Serve app and the CPU reader."""

from __future__ import annotations

from s3ray.config import GeneratorConfig


def generator_identity(gen: GeneratorConfig) -> str:
    """What answered: ``backend:model`` (the reader adds its span cap, answer size and title linking,
    which change its answers)."""
    name = f"{gen.backend}:{gen.served_model_name or gen.model}"
    if gen.backend != "reader":
        return name
    linking = ":link" if gen.reader_link_titles else ""
    return f"{name}:span{gen.reader_max_span_words}x{gen.reader_answer_spans}{linking}"
