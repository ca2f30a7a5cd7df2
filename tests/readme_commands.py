"""Extract the shell commands that the READMEs document.

A *command* is one logical shell line (backslash continuations joined, comments dropped) whose
first word, after ``VAR=value`` assignments, is a program a user runs from the repository root
(``python``, ``bash``, ``pip``, ...). It is found in
- fenced code blocks (any info string: ``bash``, ``sh``, none; tree listings in them are not
  commands),
- indented code blocks (4 spaces),
- inline code spans of table rows and prose that start with such a program.
"""
import os
import re
from dataclasses import dataclass
from typing import List

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
PROGRAMS = ("python", "python3", ".venv/bin/python", "bash", "pip", ".venv/bin/pip", ".venv/bin/ruff",
            "OMP_NUM_THREADS", "git")
READMES = ["README.md", "datasets/README.md", "projects/OPS/README.md", "projects/PartDistillation/README.md",
           "docs/ARCHITECTURE.md", "docs/RELIABILITY.md", "bench/report_fce_evaluator.md",
           "bench/report_mask2former.md", "bench/report_offline_stages.md"]


@dataclass(frozen=True)
class Command:
    readme: str
    line: int  # 1-based line of the command's first line
    text: str

    @property
    def id(self) -> str:
        return f"{self.readme}:{self.line}"


def _is_command(text: str) -> bool:
    words = text.split()
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        words = words[1:]
    return bool(words) and words[0] in PROGRAMS


def _logical_lines(lines, first_no):
    """(line number, text) of each logical line: continuations joined, comments removed."""
    out, buf, start = [], "", None
    for i, raw in enumerate(lines):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if start is None:
            start = first_no + i
        code = re.sub(r"(^|\s)#.*$", "", line) if "#" in line and not line.startswith("'") else line
        if code.endswith("\\"):
            buf += code[:-1].strip() + " "
            continue
        buf += code.strip()
        out.append((start, " ".join(buf.split())))
        buf, start = "", None
    return out


def extract(readme: str) -> List[Command]:
    path = os.path.join(ROOT, readme)
    lines = open(path, encoding="utf-8").read().splitlines()
    cmds: List[Command] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].lstrip().startswith("```"):
                j += 1
            cmds += [Command(readme, n, t) for n, t in _logical_lines(lines[i + 1 : j], i + 2) if _is_command(t)]
            i = j + 1
            continue
        if line.startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            block = [x[4:] for x in lines[i:j]]
            cmds += [Command(readme, n, t) for n, t in _logical_lines(block, i + 1) if _is_command(t)]
            i = j
            continue
        if not line.strip():
            i += 1
            continue
        j = i  # a paragraph (or table): inline code spans may cross its line breaks
        while j < len(lines) and lines[j].strip() and not lines[j].lstrip().startswith("```"):
            j += 1
        text = "\n".join(lines[i:j])
        for m in re.finditer(r"`([^`]+)`", text):
            span = " ".join(m.group(1).split())
            if _is_command(span) and len(span.split()) > 1:
                cmds.append(Command(readme, i + 1 + text.count("\n", 0, m.start()), span))
        i = j
    return cmds


def all_commands() -> List[Command]:
    return [c for r in READMES for c in extract(r)]


if __name__ == "__main__":  # list the commands per README and how the tests check each
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from readme_commands_map import PARSE_ONLY

    cmds = all_commands()
    for readme in READMES:
        mine = [c for c in cmds if c.readme == readme]
        parse = [c for c in mine if any(k in c.text for k in PARSE_ONLY)]
        print(f"{readme}: {len(mine)} commands, {len(mine) - len(parse)} run at tiny scale, {len(parse)} parse-checked")
        for c in mine:
            reason = next((r for k, r in PARSE_ONLY.items() if k in c.text), None)
            print(f"  {c.line:4d} {'parse' if reason else 'run  '} {c.text[:100]}")
            if reason:
                print(f"         ({reason})")
