"""`adapterkit plugins`: list the loaded plugins."""
from __future__ import annotations

import json

from .command import Command, registry


def arguments(p) -> None:
    p.add_argument("--json", action="store_true")
    p.add_argument("--strict", action="store_true", help="exit 1 if a plugin failed to load")


def run_plugins(args) -> int:
    loaded = registry()
    if args.json:
        print(json.dumps({"plugins": [vars(p) for p in loaded.plugins], "faults": [vars(f) for f in loaded.faults]}, indent=2))
        return 0
    for plugin in loaded.plugins:
        provides = [f"architectures: {', '.join(plugin.architectures)}"] if plugin.architectures else []
        provides += [f"methods: {', '.join(plugin.methods)}"] if plugin.methods else []
        provides += [f"commands: {', '.join(plugin.commands)}"] if plugin.commands else []
        print(f"{plugin.name:<12} {plugin.distribution} {plugin.version:<8} {'; '.join(provides)}")
    for fault in loaded.faults:
        if fault.kind == "command conflict":
            print(f"{fault.name:<12} {fault.distribution}  CONFLICT: {fault.error}")
        elif fault.kind == "conflict":
            print(f"{fault.name:<12} {fault.distribution}  CONFLICT: {fault.error} (neither is used until one of them is "
                  "uninstalled or renames it)")
        else:
            print(f"{fault.name:<12} {fault.distribution}  FAILED TO LOAD: {fault.error}")
    return 1 if loaded.faults and args.strict else 0


COMMANDS = [Command('plugins', run_plugins, arguments,
        help="list loaded plugins: architectures, methods and commands, with distribution and version")]
