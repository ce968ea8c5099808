"""Checks the rules tasuki's Dockerfiles keep, without Docker (hadolint cannot be had offline here,
and the Docker of Debian 12 has no `docker build --check`).

    python docker/lint.py docker/*.Dockerfile      exit 0 when every file passes, else 1 and one line per problem

Callers: docker/build.sh before it builds, tests/test_images.py. The rules, each a line in RULES:
- the base is a build argument: `ARG BASE=<default>` before the first FROM, and every FROM is
  `${BASE}` or an earlier stage, so a build works from a local base image;
- nothing is fetched at build time but, where the base lacks Python, the base's own packages:
  no ADD (it can fetch URLs), no curl or wget, every `pip install` has --no-index;
- apt-get install has --no-install-recommends and its RUN removes /var/lib/apt/lists;
- no compiler in any stage the final image is built from (gcc, g++, clang, build-essential, *-dev);
- COPY --from names an earlier stage;
- the final stage runs as a numeric non-root USER, has a HEALTHCHECK in exec form, and an exec-form
  ENTRYPOINT whose first word is the init (dumb-init), so that SIGTERM reaches the command.
"""
from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass, field

INIT = "dumb-init"
COMPILERS = re.compile(r"^(gcc|g\+\+|cc|c\+\+|clang|build-essential|.*-dev)(=.*)?$")
RULES = {
    "base-arg": "declare `ARG BASE=<default image>` before the first FROM",
    "from": "FROM must name ${BASE} or an earlier stage, so the build needs no other image",
    "add": "use COPY, not ADD (ADD can fetch URLs; builds must work without a network)",
    "fetch": "do not download in a RUN (curl, wget): put what the build needs in the build context",
    "pip-index": "pip install must use --no-index (wheels come from the build context)",
    "apt": "apt-get install needs --no-install-recommends and the same RUN must remove /var/lib/apt/lists",
    "compiler": "no compiler or -dev package in the stages of the final image",
    "copy-from": "COPY --from must name an earlier stage",
    "user": "the final stage needs a numeric, non-root USER (Kubernetes' runAsNonRoot can check only numbers)",
    "healthcheck": "the final stage needs a HEALTHCHECK in exec form (CMD [\"...\"])",
    "entrypoint": f"the final stage needs an exec-form ENTRYPOINT starting with the init ({INIT})",
}


@dataclass
class Instruction:
    line: int            # 1-based line where the instruction starts
    keyword: str         # upper case: FROM, RUN...
    args: str


@dataclass
class Stage:
    line: int            # the line of its FROM
    name: str | None
    parent: str          # the FROM argument: ${BASE} or an earlier stage's name
    instructions: list[Instruction] = field(default_factory=list)


def parse(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile: comments dropped, continuation lines joined."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue                      # a comment inside a continued instruction
        if not pending:
            start = number
        continued = line.endswith("\\")
        pending.append(line[:-1].strip() if continued else line)
        if not continued:
            keyword, _, args = " ".join(p for p in pending if p).partition(" ")
            out.append(Instruction(start, keyword.upper(), args.strip()))
            pending = []
    if pending:
        keyword, _, args = " ".join(pending).partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
    return out


def stages(instructions: list[Instruction]) -> tuple[list[Instruction], list[Stage]]:
    """(the instructions before the first FROM, the stages in order)."""
    preamble: list[Instruction] = []
    found: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = ins.args.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            found.append(Stage(ins.line, name, words[0] if words else ""))
        elif found:
            found[-1].instructions.append(ins)
        else:
            preamble.append(ins)
    return preamble, found


def _exec_form(args: str) -> list[str] | None:
    """The JSON array of an exec-form instruction, else None."""
    try:
        value = json.loads(args)
    except ValueError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def _commands(run: str) -> list[list[str]]:
    """The simple commands of a RUN's shell text, split on && || ; and |, as word lists."""
    try:
        words = shlex.split(run, posix=True)
    except ValueError:
        words = run.split()
    commands, current = [], []
    for word in words:
        if word in ("&&", "||", ";", "|", "then", "else", "fi", "do", "done", "if", "{", "}"):
            if current:
                commands.append(current)
            current = []
        else:
            current.append(word.rstrip(";"))
    if current:
        commands.append(current)
    return commands


def _program(command: list[str]) -> str:
    return command[0].rsplit("/", 1)[-1] if command else ""


def _apt_packages(command: list[str]) -> list[str] | None:
    """The packages of an `apt-get install` (or `apt install`) command; None for any other command."""
    if _program(command) not in ("apt-get", "apt") or "install" not in command:
        return None
    return [w for w in command[command.index("install") + 1:] if not w.startswith("-")]


def _run_problems(ins: Instruction) -> list[tuple[int, str]]:
    """The fetch, pip-index and apt rules for one RUN."""
    problems = []
    for command in _commands(ins.args):
        program = _program(command)
        if program in ("curl", "wget"):
            problems.append((ins.line, "fetch"))
        pip = program.startswith("pip") or (program.startswith("python") and command[1:3] == ["-m", "pip"])
        if pip and "install" in command and "--no-index" not in command:
            problems.append((ins.line, "pip-index"))
        if _apt_packages(command) is not None and ("--no-install-recommends" not in command
                                                   or "/var/lib/apt/lists" not in ins.args):
            problems.append((ins.line, "apt"))
    return problems


def _final_problems(final: Stage) -> list[tuple[int, str]]:
    """The user, healthcheck and entrypoint rules for the final stage (the last of each instruction counts)."""
    problems = []
    last = {ins.keyword: ins for ins in final.instructions}
    user = last.get("USER")
    uid = user.args.split(":")[0] if user else ""
    if not uid.isdigit() or int(uid) == 0:
        problems.append((user.line if user else final.line, "user"))
    health = last.get("HEALTHCHECK")
    command = re.search(r"(?:^|\s)CMD\s+(.*)$", health.args) if health else None
    if not command or _exec_form(command.group(1)) is None:
        problems.append((health.line if health else final.line, "healthcheck"))
    entry = last.get("ENTRYPOINT")
    argv = _exec_form(entry.args) if entry else None
    if not argv or argv[0].rsplit("/", 1)[-1] != INIT:
        problems.append((entry.line if entry else final.line, "entrypoint"))
    return problems


def check(text: str) -> list[tuple[int, str]]:
    """(line, rule) for each broken rule of the Dockerfile `text`; [] when it passes."""
    problems: list[tuple[int, str]] = []
    preamble, found = stages(parse(text))
    if not any(i.keyword == "ARG" and re.fullmatch(r"BASE=\S+", i.args) for i in preamble):
        problems.append((1, "base-arg"))
    if not found:
        return problems + [(1, "from")]
    names: list[str] = []                  # the stages so far; "" for an unnamed one
    for stage in found:
        if stage.parent not in ("${BASE}", "$BASE") and stage.parent not in names:
            problems.append((stage.line, "from"))
        for ins in stage.instructions:
            source = re.search(r"--from=(\S+)", ins.args) if ins.keyword == "COPY" else None
            if ins.keyword == "ADD":
                problems.append((ins.line, "add"))
            elif source and source.group(1) not in names:
                problems.append((ins.line, "copy-from"))
            elif ins.keyword == "RUN":
                problems += _run_problems(ins)
        names.append(stage.name or "")
    stage = found[-1]                      # the final stage and the stages it is built FROM
    while True:
        for ins in stage.instructions:
            if ins.keyword == "RUN" and any(COMPILERS.match(package) for command in _commands(ins.args)
                                            for package in _apt_packages(command) or ()):
                problems.append((ins.line, "compiler"))
        if stage.parent not in names:
            break
        stage = found[names.index(stage.parent)]
    return problems + _final_problems(found[-1])


def main(paths: list[str]) -> int:
    if not paths:
        print("usage: python docker/lint.py DOCKERFILE...", file=sys.stderr)
        return 2
    failed = 0
    for path in paths:
        with open(path) as f:
            for line, rule in check(f.read()):
                print(f"{path}:{line}: {rule}: {RULES[rule]}")
                failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
