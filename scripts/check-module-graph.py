#!/usr/bin/env python3
"""Checks that no crate of the workspace has an import cycle between its
modules: what `cargo tree` does between crates, for the modules inside each.

    scripts/check-module-graph.py [CRATE_DIR ...]   (default: every workspace member)

A file's module is its path under src/ (src/serve/dhcp.rs is `serve::dhcp`,
src/serve/mod.rs is `serve`). Every `crate::a::b` a file names (outside
comments) is an edge from its module to the longest module that path names.
Two graphs are checked: between modules, and between top-level modules (the
groups: an edge serve::dhcp -> store::files is serve -> store). A cycle in
either fails the check and is printed. Edges to the crate root, to a module's
own ancestors (a child using what its parent declares) and from binaries'
roots (main.rs) are not counted.
"""

import os
import re
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRATE_PATH = re.compile(r"\bcrate((?:::[a-z_][a-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+crate::\{([^;]*)\}", re.S)


def members():
    with open(os.path.join(ROOT, "Cargo.toml"), "rb") as f:
        return tomllib.load(f)["workspace"]["members"]


def module_of(rel):
    parts = rel[:-3].split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    if parts in (["lib"], ["main"]):
        return None
    return "::".join(parts)


def strip_comments(text):
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def graph(src):
    files = {}
    for d, _, names in os.walk(src):
        for n in names:
            if n.endswith(".rs"):
                p = os.path.join(d, n)
                files[p] = module_of(os.path.relpath(p, src))
    modules = {m for m in files.values() if m}
    edges = {}
    for p, mod in files.items():
        if mod is None:
            continue
        with open(p, encoding="utf-8") as f:
            text = strip_comments(f.read())
        paths = [m.group(1)[2:] for m in CRATE_PATH.finditer(text)]
        # `use crate::{a::X, b::{Y, Z}}`: each first segment is a module path.
        for g in USE_GROUP.finditer(text):
            for item in re.split(r",(?![^{]*\})", g.group(1)):
                item = item.strip()
                if item:
                    paths.append(re.sub(r"::\{.*", "", item, flags=re.S))
        for path in paths:
            segs = path.split("::")
            target = None
            for i in range(len(segs), 0, -1):
                cand = "::".join(segs[:i])
                if cand in modules:
                    target = cand
                    break
            if target is None or target == mod:
                continue
            if mod.startswith(target + "::"):
                continue  # a child naming its parent's items
            if target.startswith(mod + "::"):
                continue  # a parent naming its children
            edges.setdefault(mod, set()).add(target)
    return modules, edges


def find_cycle(nodes, edges):
    state = {}
    stack = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(nodes):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


def top(m):
    return m.split("::", 1)[0]


def main(argv):
    crates = argv[1:] or members()
    failed = False
    checked = 0
    for c in crates:
        src = os.path.join(ROOT, c, "src")
        if not os.path.isdir(src):
            continue
        modules, edges = graph(src)
        checked += 1
        cycle = find_cycle(modules, edges)
        groups = {}
        for a, bs in edges.items():
            for b in bs:
                if top(a) != top(b):
                    groups.setdefault(top(a), set()).add(top(b))
        gcycle = find_cycle({top(m) for m in modules}, groups)
        for kind, cyc in (("modules", cycle), ("module groups", gcycle)):
            if cyc:
                failed = True
                print(f"error: {c}: import cycle between {kind}: {' -> '.join(cyc)}", file=sys.stderr)
    if failed:
        return 1
    print(f"no import cycle in the modules of {checked} crates", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
