"""The ``strg`` command line.

Each sub-command lives in its own module that exposes two functions:

* ``add_arguments(parser)``: fill an ``argparse.ArgumentParser`` with the command's options;
* ``run(args) -> int``: do the work and return the exit code.

The table below maps command names to those modules; modules are imported only when their
command runs, so ``strg info`` does not pay for the data stack and vice versa.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from strg.errors import StrgError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("strg.commands.info", "parameter count and GMACs of a model variant"),
    "train": ("strg.commands.train", "train a model from a YAML config (torchrun for several GPUs)"),
    "eval": ("strg.commands.eval", "evaluate a checkpoint: multi-clip mAP or top-1/top-5, predictions file"),
    "charades-eval": ("strg.commands.charades_eval", "score a Charades submission file like the official script"),
    "proposals": ("strg.commands.proposals",
                  "region proposals: run the COCO RPN over videos, or import Something-Else boxes"),
    "synth": ("strg.commands.synth",
              "write a synthetic relational-action dataset (Something-Something v2 / Charades format)"),
    "visualize": ("strg.commands.visualize",
                  "draw one video's prediction, proposals and region graph (paper Fig. 3, 4) to a PNG"),
    "predict": ("strg.commands.predict", "a run on video files: top-k classes, timelines, the graph behind it"),
    "demo": ("strg.commands.demo", "generate synthetic data, train and compare I3D and the graph variants on the CPU"),
}


def build_parser() -> argparse.ArgumentParser:
    from strg import __version__

    parser = argparse.ArgumentParser(
        prog="strg", description="Space-time region graphs for action recognition (Wang & Gupta, ECCV 2018)."
    )
    parser.add_argument("--version", action="version", version=f"strg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Options are added lazily (see main) so that `strg --help` stays fast.
    return parser


class _TerminalHandler(logging.Handler):
    """Log records on stderr through tqdm, so that they do not break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def configure_logging(level: int = logging.INFO) -> None:
    """Show the library's log records (logger ``strg``: the engine's run log, build_model's weight
    reports, skipped videos) in the terminal; a training run also copies them into its log.txt."""
    logger = logging.getLogger("strg")
    if not any(isinstance(h, _TerminalHandler) for h in logger.handlers):
        handler = _TerminalHandler()
        handler.setFormatter(_Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        args = parser.parse_args(argv)  # prints help / version / the error for unknown commands
        parser.print_help()
        return 0 if not argv else 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    sub = argparse.ArgumentParser(prog=f"strg {name}", description=COMMANDS[name][1])
    module.add_arguments(sub)
    try:  # KEY=VALUE overrides may come before or after options
        args = sub.parse_intermixed_args(argv[1:])
    except TypeError:  # commands with sub-commands (argparse cannot intermix those)
        args = sub.parse_args(argv[1:])
    configure_logging()
    try:
        return int(module.run(args) or 0)
    except StrgError as e:
        print(f"strg {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"strg {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
