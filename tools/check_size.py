"""The size budget of hetcl's own code: no module over 300 lines, no function over 50.
Prints each offender as path:line and exits 1 if there is one (CI runs it).
Usage: python tools/check_size.py [paths...]   (default: hetcl/ and tools/)"""
import ast
import os
import sys

MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 50


def python_files(paths):
    for path in paths:
        if os.path.isfile(path):
            yield path
        for root, _, files in os.walk(path):
            yield from (os.path.join(root, f) for f in sorted(files) if f.endswith(".py"))


def offenders(path):
    with open(path) as f:
        source = f.read()
    lines = source.count("\n")
    if lines > MAX_MODULE_LINES:
        yield f"{path}:1: module of {lines} lines (budget {MAX_MODULE_LINES})"
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                yield (f"{path}:{node.lineno}: function {node.name} of {length} lines "
                       f"(budget {MAX_FUNCTION_LINES})")


def main(paths):
    found = [line for path in python_files(paths) for line in offenders(path)]
    print("\n".join(found) if found else "size budget: every module and function fits")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["hetcl", "tools"]))
