"""`CommandGenerator`: any generator with a command line (YuE, ACE-Step, DiffRhythm, ...).

A small template file (YAML, JSON or TOML) says how to call the tool::

    name: my-tool                      # optional; default: the file's stem
    command: python infer.py --prompt={text} --lyrics {lyrics_file} --seed {seed} --out {output}
    inputs: [text, lyrics]             # what it honours (text, lyrics, ref_audio)
    requires: [lyrics]                 # what it cannot run without (optional)
    when:                              # arguments added only when the instruction has that input
      ref_audio: --ref {ref_audio}
    sample_rate: 44100                 # candidates are resampled to it
    timeout: 900                       # seconds per run
    cwd: "{repo}/inference"            # optional; may use params; relative to the template file
    env:                               # optional, added to the caller's environment:
      CUDA_VISIBLE_DEVICES: "0"        #   a string sets the variable
      PYTHONPATH: {append: "."}        #   {append: x} / {prepend: x} extend it (os.pathsep-joined)
    output: output.wav                 # file the tool writes, in {output_dir}; may be a glob
    params: {steps: 60, repo: ~/YuE}   # extra placeholders with defaults, set by sample(**params)
    per_batch: false                   # true: one run per batch, with {seeds} and {output_dir};
                                       # then output must contain {seed} (default '{seed}.wav')
    checks: {lyrics: {format: lrc}}    # input rules refused before any run (`generators.command_checks`)
    continuation: --continue {prefix_audio}   # optional: arguments added when continuing a clip

The command is split with `shlex` and every argument is substituted separately, then run with
an argument list (never a shell), so instruction text cannot inject anything; write free text as
``--flag={text}`` (one argument) so that text starting with ``-`` is never read as a flag. Placeholders:
``{text} {lyrics} {text_file} {lyrics_file} {ref_audio} {seed} {seeds} {duration} {output}
{output_dir} {sample_rate} {template_dir}`` and the template's ``params``. A run that exits
non-zero, times out, writes no file, or writes empty/NaN audio fails only its own candidates,
with the tail of its stderr. Reproducibility is the tool's: the seed is passed, nothing more.

A template with a ``continuation`` field can continue clips (`Generator.extend`, beam search):
those arguments (which must use ``{prefix_audio}``, the clip so far as a WAV file, and may use
no other new placeholder) are added to the command, ``{duration}`` is the segment to add, and
the tool writes the new audio only; cmirm appends it to the clip.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from cmirm_plugin.audio import Audio
from cmirm_plugin.errors import AudioError, CmirmError, ConfigError
from cmirm_plugin.records import Candidate, Instruction, file_problem
from generators.base import (INPUT_KINDS, CandidateError, Capabilities, Generator, Outcome, append_audio,
                             instruction_inputs, tail, validate_seeds)
from generators.command_checks import InputChecks
from generators.params import GenerationParams, check

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as the tomli package (a dependency there)
    import tomli as tomllib

#: Placeholders every template may use (besides its own ``params``).
BUILTIN_PLACEHOLDERS = ("text", "lyrics", "text_file", "lyrics_file", "ref_audio", "seed", "seeds", "duration",
                        "output", "output_dir", "sample_rate", "template_dir")
#: Which input each input-bearing placeholder belongs to.
PLACEHOLDER_INPUT = {"text": "text", "text_file": "text", "lyrics": "lyrics", "lyrics_file": "lyrics",
                     "ref_audio": "ref_audio"}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_FIELDS = {"name", "command", "inputs", "requires", "when", "sample_rate", "timeout", "cwd", "env", "output",
           "params", "per_batch", "checks", "continuation"}
#: The placeholder of the clip being continued, allowed only in ``continuation``.
PREFIX_PLACEHOLDER = "prefix_audio"
#: How an ``env`` entry combines with the caller's value of the variable.
ENV_MODES = ("set", "prepend", "append")


def _read_mapping(path: Path) -> dict[str, Any]:
    """Parse a YAML / JSON / TOML file into a dict, naming the file on any error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"'{path}': cannot read command template ({exc.strerror or exc})") from exc
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"'{path}': not a valid template file ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"'{path}': a command template must be a mapping, got {type(data).__name__}")
    return data


def _env_entry(name: Any, value: Any, where: str) -> tuple[str, str]:
    """One ``env`` entry as (mode, value): a string sets the variable, ``{append: x}`` / ``{prepend: x}``
    extend the caller's value (a search path such as PYTHONPATH must not lose the user's entries)."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return "set", str(value)
    if isinstance(value, dict) and len(value) == 1:
        ((mode, text),) = value.items()
        if mode in ENV_MODES[1:] and isinstance(text, str) and text:
            return mode, text
    raise ConfigError(f"{where}: field 'env.{name}' must be a string, {{append: <text>}} or {{prepend: <text>}}, "
                      f"got {value!r}")


def _args(value: Any, where: str) -> list[str]:
    """A command (or argument group) given as a string (shlex-split) or a list of strings."""
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return [str(v) for v in value]
    raise ConfigError(f"{where} must be a string or a list of strings, got {value!r}")


@dataclass(frozen=True)
class CommandTemplate:
    """A parsed, validated command template (see the module docstring for the file format)."""

    name: str
    command: list[str]
    inputs: frozenset[str]
    sample_rate: int
    timeout: float = 3600.0
    requires: frozenset[str] = frozenset()
    when: dict[str, list[str]] = field(default_factory=dict)
    cwd: str | None = None
    env: dict[str, tuple[str, str]] = field(default_factory=dict)
    output: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    per_batch: bool = False
    checks: InputChecks = InputChecks()
    continuation: list[str] | None = None
    source: Path | None = None

    @classmethod
    def load(cls, path: str | Path) -> "CommandTemplate":
        """Read and validate a template file; errors name the file and the field."""
        path = Path(path).expanduser().resolve()
        return cls.from_dict(_read_mapping(path), source=path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: Path | None = None) -> "CommandTemplate":
        where = f"'{source}'" if source else "command template"
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(_FIELDS)}")
        for key in ("command", "inputs", "sample_rate"):
            if data.get(key) is None:
                raise ConfigError(f"{where}: missing required field '{key}'")

        def kinds(key: str) -> frozenset[str]:
            values = data.get(key) or []
            values = [values] if isinstance(values, str) else values
            if not isinstance(values, list) or any(v not in INPUT_KINDS for v in values):
                raise ConfigError(f"{where}: field '{key}' must list inputs among {INPUT_KINDS}, got {data.get(key)!r}")
            return frozenset(values)

        when = data.get("when") or {}
        if not isinstance(when, dict) or set(when) - set(INPUT_KINDS):
            raise ConfigError(f"{where}: field 'when' must map inputs among {INPUT_KINDS} to arguments, got {when!r}")
        sample_rate, timeout = data["sample_rate"], data.get("timeout", 3600.0)
        if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate <= 0:
            raise ConfigError(f"{where}: field 'sample_rate' must be a positive integer, got {sample_rate!r}")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise ConfigError(f"{where}: field 'timeout' must be a positive number of seconds, got {timeout!r}")
        params = data.get("params") or {}
        if not isinstance(params, dict) or any(not isinstance(v, (str, int, float, bool)) for v in params.values()):
            raise ConfigError(f"{where}: field 'params' must map names to str/int/float/bool defaults, got {params!r}")
        clash = sorted(set(params) & set(BUILTIN_PLACEHOLDERS))
        if clash:
            raise ConfigError(f"{where}: params {clash} shadow built-in placeholders")
        env = data.get("env") or {}
        if not isinstance(env, dict):
            raise ConfigError(f"{where}: field 'env' must be a mapping, got {env!r}")
        template = cls(
            name=str(data.get("name") or (source.stem if source else "command")),
            command=_args(data["command"], f"{where}: field 'command'"),
            inputs=kinds("inputs"), requires=kinds("requires"),
            when={k: _args(v, f"{where}: field 'when.{k}'") for k, v in when.items()},
            sample_rate=sample_rate, timeout=float(timeout),
            cwd=None if data.get("cwd") is None else str(data["cwd"]),
            env={str(k): _env_entry(k, v, where) for k, v in env.items()},
            output=None if data.get("output") is None else str(data["output"]),
            params=dict(params), per_batch=bool(data.get("per_batch", False)),
            checks=InputChecks.from_dict(data.get("checks"), where),
            continuation=None if data.get("continuation") is None else _args(data["continuation"],
                                                                              f"{where}: field 'continuation'"),
            source=source,
        )
        template._check_placeholders(where)
        return template

    def _check_placeholders(self, where: str) -> None:
        """Every placeholder is known, inputs it names are declared, and a required ref is declared."""
        if not self.command:
            raise ConfigError(f"{where}: field 'command' is empty")
        known = set(BUILTIN_PLACEHOLDERS) | set(self.params)
        groups = {"command": self.command, **{f"when.{k}": v for k, v in self.when.items()}}
        if self.continuation is not None:
            groups["continuation"] = self.continuation
            if PREFIX_PLACEHOLDER not in {m for arg in self.continuation for m in _PLACEHOLDER.findall(arg)}:
                raise ConfigError(f"{where}: field 'continuation' must pass the clip to continue as {{{PREFIX_PLACEHOLDER}}}")
        for group, args in groups.items():
            for name in (m for arg in args for m in _PLACEHOLDER.findall(arg)):
                if name == PREFIX_PLACEHOLDER and group == "continuation":
                    continue
                if name not in known:
                    raise ConfigError(f"{where}: field '{group}' uses unknown placeholder {{{name}}}; "
                                      f"known: {', '.join(sorted(known))}")
                needed = PLACEHOLDER_INPUT.get(name)
                if needed and needed not in self.inputs:
                    raise ConfigError(f"{where}: field '{group}' uses {{{name}}} but 'inputs' lacks {needed}")
                if name == "ref_audio" and group == "command" and "ref_audio" not in self.requires:
                    raise ConfigError(f"{where}: {{ref_audio}} in 'command' needs 'requires: [ref_audio]'; "
                                      "or move it under 'when: ref_audio'")
        for kind in self.when:
            if kind not in self.inputs:
                raise ConfigError(f"{where}: field 'when.{kind}' is for an input missing from 'inputs'")
        if not self.requires <= self.inputs:
            raise ConfigError(f"{where}: 'requires' {sorted(self.requires)} must be within 'inputs'")
        if not self.checks.inputs <= self.inputs:
            raise ConfigError(f"{where}: field 'checks' has rules for {sorted(self.checks.inputs - self.inputs)}, "
                              "an input missing from 'inputs'")
        for name in _PLACEHOLDER.findall(self.cwd or ""):
            if name not in self.params:
                raise ConfigError(f"{where}: field 'cwd' uses {{{name}}}; it may use only the template's params "
                                  f"({', '.join(sorted(self.params)) or 'none'})")
        per_seed = {"seed", "output"}
        used = {m for args in groups.values() for arg in args for m in _PLACEHOLDER.findall(arg)}
        if self.per_batch and used & per_seed:
            raise ConfigError(f"{where}: a per_batch command gets {{seeds}} and {{output_dir}}, "
                              f"not {sorted(used & per_seed)}")
        if self.per_batch and self.output is not None and "{seed}" not in self.output:
            # Without {seed} every seed of a batch would read the same file (a glob included).
            raise ConfigError(f"{where}: field 'output' of a per_batch template must contain {{seed}} (one file "
                              f"per seed in {{output_dir}}, e.g. '{{seed}}.wav'), got {self.output!r}")

    def working_dir(self, params: Mapping[str, str]) -> Path | None:
        """``cwd`` with ``params`` substituted and ``~`` expanded; a relative one is relative to the template file."""
        if self.cwd is None:
            return None
        path = Path(os.path.expanduser(_PLACEHOLDER.sub(lambda m: params[m.group(1)], self.cwd)))
        return path if path.is_absolute() or self.source is None else self.source.parent / path

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` (the caller's environment) with this template's ``env`` entries applied."""
        env = dict(base)
        for name, (mode, value) in self.env.items():
            old = env.get(name)
            if mode == "set" or not old:
                env[name] = value
            else:
                env[name] = value + os.pathsep + old if mode == "prepend" else old + os.pathsep + value
        return env

    def params_type(self) -> type[GenerationParams]:
        """A frozen dataclass of this template's params, type-checked against their defaults."""
        def post_init(obj: GenerationParams) -> None:
            for f in dataclasses.fields(obj):
                value, default = getattr(obj, f.name), self.params[f.name]
                bool_mismatch = isinstance(value, bool) and not isinstance(default, bool)
                ok = isinstance(value, type(default)) and not bool_mismatch
                ok = ok or (isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool))
                check(ok, f.name, value, f"a {type(default).__name__} (template '{self.name}')")

        fields = [(k, type(v), field(default=v)) for k, v in self.params.items()]
        return dataclasses.make_dataclass(f"{self.name}_params", fields, bases=(GenerationParams,), frozen=True,
                                          namespace={"__post_init__": post_init})


def _substitute(args: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Replace ``{name}`` in each argument separately (never re-split: values may hold spaces)."""
    return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in args]


def run_command(args: list[str], *, cwd: Path | None, env: Mapping[str, str], timeout: float) -> None:
    """Run ``args`` (no shell) with exactly the environment ``env`` in its own process group; raise
    `CandidateError` on timeout or failure."""
    try:
        proc = subprocess.Popen(args, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:  # missing executable or working directory
        raise CandidateError("nonzero_exit", f"cannot start {args[0]!r} (cwd {cwd or '.'}): {exc}") from exc
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the tool's own workers too
        stdout, stderr = proc.communicate()
        raise CandidateError("timeout", f"{args[0]} did not finish within {timeout:g} s",
                             tail((stderr or stdout).decode(errors="replace"))) from None
    if proc.returncode != 0:
        raise CandidateError("nonzero_exit", f"{args[0]} exited with status {proc.returncode}",
                             tail((stderr or stdout).decode(errors="replace")))


def _find_output(directory: Path, pattern: str) -> Path:
    """The file a run wrote: ``directory/pattern``, or the single match of a glob pattern."""
    if not any(ch in pattern for ch in "*?["):
        path = directory / pattern
        if not path.is_file():
            raise CandidateError("no_output", f"the command wrote no output file '{path}'")
        return path
    matches = sorted(p for p in directory.glob(pattern) if p.is_file())
    if len(matches) != 1:
        found = ", ".join(p.name for p in matches) or "nothing"
        raise CandidateError("no_output", f"expected one file matching '{pattern}' in '{directory}', found {found}")
    return matches[0]


class CommandGenerator(Generator):
    """Run an external command per candidate (or per batch) and read back the audio it writes."""

    trims_to_duration = False  # the tool owns its output length

    def __init__(self, template: CommandTemplate | str | Path, name: str | None = None, batch_size: int = 1) -> None:
        self.template = template if isinstance(template, CommandTemplate) else CommandTemplate.load(template)
        self.name = name or self.template.name
        self.sample_rate = self.template.sample_rate
        self.inputs = self.template.inputs
        self.required_inputs = self.template.requires
        self.params_type = self.template.params_type()
        self.capabilities = Capabilities(can_continue=self.template.continuation is not None)
        self.batch_size = batch_size

    @property
    def _template_name(self) -> str:
        return f"'{self.template.source}'" if self.template.source else f"template '{self.template.name}'"

    def require_supported(self, instruction: Instruction) -> None:
        """Also refuse an instruction that breaks the template's ``checks`` (before any tool runs)."""
        super().require_supported(instruction)
        self.template.checks.require(instruction, self.name, self._template_name)

    def check_seeds(self, seeds: Sequence[int]) -> list[int]:
        """`Generator.check_seeds`, refusing also any seed outside the template's ``checks.seed_range``."""
        seeds = validate_seeds(seeds)
        self.template.checks.require_seeds(seeds, self.name, self._template_name)
        return seeds

    def _values(self, instruction: Instruction, work: Path, duration: float,
                params: GenerationParams) -> dict[str, str]:
        """Placeholder values shared by every run of one batch (input files are written once)."""
        text_file, lyrics_file = work / "text.txt", work / "lyrics.txt"
        text_file.write_text(instruction.text or "", encoding="utf-8")
        lyrics_file.write_text(instruction.lyrics or "", encoding="utf-8")
        ref = ""
        if isinstance(instruction.ref_audio, Audio):  # in memory: the tool needs a file
            ref = str(instruction.ref_audio.save(work / "ref.wav"))
        elif instruction.ref_audio is not None:  # a path: passed on as it is, never decoded here
            problem = file_problem(instruction.ref_audio)
            if problem:
                raise AudioError(f"'{instruction.ref_audio}': reference audio: {problem}")
            ref = str(Path(instruction.ref_audio).resolve())
        template_dir = self.template.source.parent if self.template.source else Path.cwd()
        return {"text": instruction.text or "", "lyrics": instruction.lyrics or "", "text_file": str(text_file),
                "lyrics_file": str(lyrics_file), "ref_audio": ref, "duration": f"{duration:g}",
                "sample_rate": str(self.sample_rate), "template_dir": str(template_dir),
                **{k: str(v) for k, v in dataclasses.asdict(params).items()}}

    def _argv(self, instruction: Instruction, values: Mapping[str, str]) -> list[str]:
        args = list(self.template.command)
        for kind in instruction_inputs(instruction):
            args += self.template.when.get(kind, [])
        if PREFIX_PLACEHOLDER in values:
            args += self.template.continuation or []
        return _substitute(args, values)

    def _run(self, argv: list[str], values: Mapping[str, str]) -> None:
        run_command(argv, cwd=self.template.working_dir(values), env=self.template.environment(os.environ),
                    timeout=self.template.timeout)

    def _generate(self, instruction: Instruction, seeds: list[int], duration: float,
                  params: GenerationParams) -> Sequence[Outcome]:
        return self._runs(instruction, seeds, duration, params, None)

    def _continue(self, instruction: Instruction, prefix: Candidate, seeds: list[int], segment: float,
                  params: GenerationParams) -> Sequence[Outcome]:
        new = self._runs(instruction, seeds, segment, params, prefix.audio)
        return [out if isinstance(out, CandidateError) else append_audio(prefix.audio, out) for out in new]

    def _runs(self, instruction: Instruction, seeds: list[int], duration: float, params: GenerationParams,
              prefix: Audio | None) -> Sequence[Outcome]:
        """One run per seed (or one per batch); with ``prefix``, continuation runs that write the new audio."""
        with tempfile.TemporaryDirectory(prefix="cmirm-cmd-") as tmp:
            work = Path(tmp)
            values = self._values(instruction, work, duration, params)
            if prefix is not None:
                values[PREFIX_PLACEHOLDER] = str(prefix.save(work / "prefix.wav"))
            if self.template.per_batch:
                return self._generate_batch(instruction, seeds, values, work / "out")
            return [self._generate_one(instruction, seed, values, work / f"seed-{seed}") for seed in seeds]

    def _generate_one(self, instruction: Instruction, seed: int, values: dict[str, str], out_dir: Path) -> Outcome:
        out_dir.mkdir()
        pattern = self.template.output or "output.wav"
        argv = self._argv(instruction, {**values, "seed": str(seed), "seeds": str(seed),
                                        "output_dir": str(out_dir), "output": str(out_dir / pattern)})
        try:
            self._run(argv, values)
            return _load(_find_output(out_dir, pattern))
        except CandidateError as error:
            return error

    def _generate_batch(self, instruction: Instruction, seeds: list[int], values: dict[str, str],
                        out_dir: Path) -> Sequence[Outcome]:
        out_dir.mkdir()
        argv = self._argv(instruction, {**values, "seeds": ",".join(map(str, seeds)), "output_dir": str(out_dir)})
        try:
            self._run(argv, values)
        except CandidateError as error:
            return [error] * len(seeds)
        pattern = self.template.output or "{seed}.wav"
        outcomes: list[Outcome] = []
        for seed in seeds:
            try:
                outcomes.append(_load(_find_output(out_dir, pattern.replace("{seed}", str(seed)))))
            except CandidateError as error:
                outcomes.append(error)
        return outcomes


def _load(path: Path) -> Audio:
    """Read an output file; unreadable, empty or NaN audio becomes an ``invalid_audio`` failure."""
    try:
        return Audio.load(path)
    except CmirmError as exc:
        raise CandidateError("invalid_audio", str(exc)) from exc
