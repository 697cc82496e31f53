"""`okddip --help`, `okddip <command> --help` and `--helpfull`, written from the declarations."""

import os
import sys
import textwrap

from okddip_tf.cli.declarations import COMMANDS, CONFIG_HELP, SHARED


def tool_help():
    width = max(map(len, COMMANDS))
    lines = ["okddip: Online Knowledge Distillation with Diverse Peers (OKDDip, AAAI 2020) for "
             "TensorFlow/Keras.", "", "Usage: okddip <command> [flags]", "", "Commands:"]
    lines += [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    lines += ["", "Run `okddip <command> --help` for a command's flags and an example, "
              "`okddip --helpfull` for every command's.", "Read more: README.md (quickstart, "
              "configs, deploying the leader).", "", "Flags of every command:"]
    for flag in SHARED:
        lines += flag.help_lines()
    return "\n".join(lines)


def command_help(name):
    command = COMMANDS[name]
    lines = [f"okddip {name}: {command.summary}", "", f"Usage: {command.usage(name)}"]
    if command.about:
        lines += ["", textwrap.fill(command.about, 96)]
    lines += ["", "Flags:"]
    for flag in command.flags + SHARED:
        lines += flag.help_lines()
    if command.has_config:
        lines += ["", CONFIG_HELP]
    lines += ["", "Example:", f"  {command.example}"]
    return "\n".join(lines)


def full_help():
    parts = [tool_help(), *(command_help(name) for name in COMMANDS)]
    parts.append("Any command also reads flags from a file, one a line: --flagfile=FILE.")
    return f"\n\n{'=' * 96}\n\n".join(parts)


def print_help(text):
    try:
        print(text, flush=True)
    except BrokenPipeError:  # e.g. `okddip --help | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
