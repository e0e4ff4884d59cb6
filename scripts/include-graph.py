#!/usr/bin/env python3
"""The dependency graph of fundrecs' C modules (make include-graph).

A module is a .c file and its header (x.c, x.h; a private x_int.h belongs
to x).  Two kinds of edge A -> B:
  - include: a file of A includes B's header (a private x_int.h, shared by
    the files that implement x on purpose, is no edge);
  - call: A's object file uses a function or variable B's defines (read
    with nm from the built objects: the plugin declares its functions in
    one header, fundrecs.h, so only calls show its modules' dependencies).
Prints, for the plugin (the top directory) and the shipper (shipper/), each
module's dependencies and the two-module cycles (A -> B and B -> A), the
structure review's measure (issue 36): none is the goal.  With --dot, the
graph in Graphviz's language instead.  Exits 0 whatever it finds: it
reports, the review decides.
"""
import os
import re
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def module_of(name):
    base = os.path.splitext(os.path.basename(name))[0]
    return base[:-4] if base.endswith("_int") else base


def graph(directory):
    files = [f for f in os.listdir(directory) if f.endswith((".c", ".h"))]
    modules = {module_of(f) for f in files}
    edges = {}
    for f in sorted(files):
        with open(os.path.join(directory, f), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        a = module_of(f)
        for inc in INCLUDE.findall(text):
            # a module's private header (x_int.h) is shared by its files
            # on purpose: not a dependency between modules
            if os.path.splitext(inc)[0].endswith("_int"):
                continue
            b = module_of(inc)
            if b != a and b in modules:
                edges.setdefault(a, set()).add(b)
    # calls, from the objects' symbol tables
    defined, used = {}, {}
    for f in files:
        obj = os.path.join(directory, os.path.splitext(f)[0] + ".o")
        if not f.endswith(".c") or not os.path.exists(obj):
            continue
        out = subprocess.run(["nm", obj], capture_output=True, text=True).stdout
        m = module_of(f)
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in "TDBR":
                defined[parts[2]] = m
            elif len(parts) == 2 and parts[0] == "U":
                used.setdefault(m, set()).add(parts[1])
    for a, symbols in used.items():
        for sym in symbols:
            b = defined.get(sym)
            if b is not None and b != a:
                edges.setdefault(a, set()).add(b)
    return modules, edges


def report(label, directory, dot):
    modules, edges = graph(directory)
    if dot:
        print(f'digraph "{label}" {{')
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print(f'  "{a}" -> "{b}";')
        print("}")
        return
    cycles = sorted({tuple(sorted((a, b))) for a in edges for b in edges[a]
                     if a in edges.get(b, set())})
    print(f"== {label}: {len(modules)} modules, "
          f"{sum(len(v) for v in edges.values())} dependencies, {len(cycles)} two-module cycles")
    for a in sorted(modules):
        print(f"{a:24} -> {', '.join(sorted(edges.get(a, ()))) or '-'}")
    for a, b in cycles:
        print(f"cycle: {a} <-> {b}")
    print()


def main():
    dot = "--dot" in sys.argv[1:]
    report("plugin", TOP, dot)
    report("shipper", os.path.join(TOP, "shipper"), dot)


if __name__ == "__main__":
    main()
