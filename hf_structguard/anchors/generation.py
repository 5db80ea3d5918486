"""Generate class attributes with a Hub text-generation model and the paper's Q/A prompts (Table 9).

Each prompt holds two short worked examples (the paper: list formatting is more reliable with one or two
examples) followed by the question for the target class, and ends with ``"-"`` so that the model continues
a bulleted list. Any causal LM that the ``text-generation`` pipeline accepts works; decoding is greedy by
default so that a run is reproducible.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

OBJECT_TEMPLATE = (
    "Q: What are useful features for distinguishing a {category} in a photo?\n"
    "A: There are several useful visual features to tell there is a {category} in a photo:"
)
FACE_TEMPLATE = (
    "Q: What are useful features for distinguishing the face of {category} in a photo?\n"
    "A: There are several useful visual features that help identify the face of {category} in a photo, "
    "especially in celebrity recognition:"
)
PROMPT_TEMPLATES = {"object": OBJECT_TEMPLATE, "face": FACE_TEMPLATE}

# Two short in-context examples per template, written for this project (classes outside CIFAR/digits).
IN_CONTEXT_EXAMPLES: dict[str, list[tuple[str, list[str]]]] = {
    "object": [
        ("lemon", ["oval fruit with pointed ends", "bright yellow dimpled peel", "glossy waxy surface",
                   "pale juicy segments when cut"]),
        ("lighthouse", ["tall round tower", "lamp room with windows at the top", "red and white stripes",
                        "standing on a rocky coast"]),
    ],
    "face": [
        ("Santa Claus", ["full white beard and moustache", "rosy cheeks", "red hat with white fur trim",
                         "round glasses", "cheerful smile"]),
        ("the Mona Lisa", ["subtle closed-lip smile", "dark hair parted in the middle", "no visible eyebrows",
                           "calm gaze towards the viewer", "hazy landscape behind"]),
    ],
}

_BULLET = re.compile(r"^(?:[-*•‣●▪–—]|\(?\d{1,2}[.)])\s*(.*)$")
_LEADING_JOINER = re.compile(r"^(?:and|or)\s+", re.IGNORECASE)


def build_prompt(
    category: str,
    template: str = "object",
    examples: Sequence[tuple[str, Sequence[str]]] | None = None,
) -> str:
    """The full prompt for one class: worked examples, then the class's question, ending with ``"-"``.

    ``template`` is ``"object"``, ``"face"`` or a custom string containing ``{category}``; ``examples``
    defaults to :data:`IN_CONTEXT_EXAMPLES` for the template (the object ones for a custom template).
    """
    text = PROMPT_TEMPLATES.get(template, template)
    if "{category}" not in text:
        raise ValueError(
            f"template must be one of {sorted(PROMPT_TEMPLATES)} or a string containing '{{category}}', "
            f"got {template!r}."
        )
    if examples is None:
        examples = IN_CONTEXT_EXAMPLES["face" if template == "face" else "object"]
    blocks = [
        text.format(category=name) + "\n" + "\n".join(f"- {a}" for a in attributes) for name, attributes in examples
    ]
    blocks.append(text.format(category=category) + "\n-")
    return "\n\n".join(blocks)


_EDGE = " \t\"'“”‘’-–—•"


def _clean(item: str) -> str:
    item = item.replace("*", "").replace("`", "")
    item = _LEADING_JOINER.sub("", " ".join(item.split()).strip(_EDGE))
    return item.rstrip(".,;:!").strip(_EDGE)


def parse_attributes(text: str, max_attributes: int | None = 8) -> list[str]:
    """Parse a model's answer into a list of attributes.

    Bulleted lines (``-``, ``*``, ``•``, ``1.``, ``1)``) are taken up to the first non-bullet line after
    the list (e.g. the next ``Q:``); without bullets the answer's first lines are split on commas and
    semicolons (an intro line ending in ``:`` is skipped). Items are stripped of markup, quotes and final
    punctuation; empties and case-insensitive duplicates are dropped; at most ``max_attributes`` are kept.
    """
    items: list[str] = []
    prose: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        match = _BULLET.match(line)
        if match:
            items.append(match.group(1))
        elif items or line.startswith(("Q:", "A:")):
            break
        else:
            prose.append(line)
    if not items:
        items = [part for line in prose if not line.endswith(":") for part in re.split(r"[,;]", line)]
    result, seen = [], set()
    for item in map(_clean, items):
        if item and item.casefold() not in seen:
            seen.add(item.casefold())
            result.append(item)
    return result[:max_attributes] if max_attributes else result


def generate_attributes(
    class_names: Sequence[str],
    model,
    *,
    template: str = "object",
    examples: Sequence[tuple[str, Sequence[str]]] | None = None,
    display_names: Mapping[str, str] | None = None,
    max_attributes: int = 8,
    max_new_tokens: int = 128,
    device: str | int | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    output: str | Path | None = None,
    **generate_kwargs,
) -> dict[str, list[str]]:
    """Ask a text-generation model for each class's attributes (paper Table 9 prompts).

    ``model`` is a Hub id or local path (loaded with ``transformers.pipeline("text-generation")``) or a
    ready pipeline. The class is named in the prompt by ``display_names[c]`` when given, else by ``c``
    with ``_`` read as a space. Decoding is greedy unless ``generate_kwargs`` say otherwise. Raises a
    ``ValueError`` naming the classes whose answer held no attributes. With ``output`` the JSON is written.
    """
    from transformers import Pipeline, pipeline

    from .attributes import save_attributes

    class_names = [str(c) for c in class_names]
    if not class_names:
        raise ValueError("generate_attributes() needs at least one class name.")
    build_prompt("x", template, examples)  # validates the template before the model loads
    if isinstance(model, Pipeline):
        generator = model
    else:
        generator = pipeline("text-generation", model=str(model), device=device, revision=revision, token=token)
    settings = {"max_new_tokens": max_new_tokens, "do_sample": False, "return_full_text": False}
    if generator.tokenizer is not None and generator.tokenizer.pad_token_id is None:
        settings["pad_token_id"] = generator.tokenizer.eos_token_id
    settings.update(generate_kwargs)

    result, failed = {}, {}
    for name in class_names:
        shown = (display_names or {}).get(name, name.replace("_", " "))
        answer = generator(build_prompt(shown, template, examples), **settings)[0]["generated_text"]
        attributes = parse_attributes("-" + answer, max_attributes)
        if attributes:
            result[name] = attributes
        else:
            failed[name] = answer[:80]
    if failed:
        raise ValueError(f"No attributes could be parsed for classes {list(failed)}; model answers: {failed}.")
    if output is not None:
        save_attributes(result, output)
    return result
