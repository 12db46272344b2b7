"""Which model repos and files a job needs, whether they are here, and how to get them.

A job names its models by generator name and scorer spec. Each resolves to `RepoNeed`s: a hub
repo (or a local folder) and the files its loader reads from it. Some repos are only known after
reading a small config of another (CMI-RM ``config.yaml: model_name`` -> MuQ-MuLan ``config.json``
-> the MuQ and XLM-R repos), so resolution reads those configs (from the folder, the hub cache, or
the hub) and then lists the big files, which it never downloads.

`check_available` runs before a command does any work: it resolves every model the job will use
and fails once, listing everything missing with the ``hf download`` commands that fetch it. The
hub is asked at most once whether it is reachable; when it is not, the process switches to
offline lookups (``HF_HUB_OFFLINE=1``, inherited by Ray workers and subprocesses) instead of
letting every file lookup retry five times. `download` fetches exactly the files a job needs;
`local_statuses` (``cmirm doctor``) looks only at folders and the hub cache.

Generator names are resolved by the packages that own them, through the ``cmirm.models``
entry-point group (a `ModelProvider` each; the ``generators`` package registers one), so this
module knows no generator.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from cmirm_plugin.errors import CheckpointError, ConfigError
from cmirm_plugin.hub import DEFAULT_MODEL, is_repo_id

log = logging.getLogger(__name__)

#: Files of the released CMI-RM layout and of the hub-mixin tower checkpoints (as `cmirm_plugin.model.loading`).
CMI_RM_FILES = ("config.yaml", "model.safetensors")
TOWER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
#: Tokenizer files: the one that defines the vocabulary (first present), and those read when present.
TOKENIZER_VOCAB = ("tokenizer.json", "sentencepiece.bpe.model", "spiece.model")
TOKENIZER_EXTRA = ("tokenizer_config.json", "special_tokens_map.json")


@dataclass(frozen=True)
class FileNeed:
    """One file a loader reads: the first of ``names`` that exists (e.g. ``model.safetensors``, else
    ``pytorch_model.bin``). ``optional`` files are read when the repo has them and never reported
    missing. ``patterns`` fetch it while it is unknown which name the repo has (default: ``names``)."""

    names: tuple[str, ...]
    optional: bool = False
    patterns: tuple[str, ...] = ()

    @property
    def download_patterns(self) -> tuple[str, ...]:
        return self.patterns or self.names

    def __str__(self) -> str:
        return " or ".join(self.names)


@dataclass(frozen=True)
class RepoNeed:
    """A hub repo (or local folder) a job reads, what it is for, and the files it reads from it."""

    source: str
    role: str
    files: tuple[FileNeed, ...]

    @property
    def is_folder(self) -> bool:
        return is_folder(self.source)


def is_folder(source: str) -> bool:
    """Whether ``source`` names a local folder (or a path that should be one) rather than a hub repo id
    (a folder wins, as the loaders decide)."""
    return Path(source).expanduser().is_dir() or not is_repo_id(source)


@dataclass
class RepoStatus:
    """Where each file of a `RepoNeed` is: ``local`` (name -> path), ``on_hub`` (name -> size, to download),
    ``missing`` (needs found nowhere), with ``reason`` saying why when the repo itself is unavailable."""

    need: RepoNeed
    local: dict[str, Path] = field(default_factory=dict)
    on_hub: dict[str, int | None] = field(default_factory=dict)
    missing: list[FileNeed] = field(default_factory=list)
    reason: str | None = None
    licence: str | None = None   # the hub card's licence id, when the hub was asked

    @property
    def complete(self) -> bool:
        """Every required file is local."""
        return not self.missing and not self.on_hub

    @property
    def local_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.local.values() if p.is_file())

    def download_command(self) -> str | None:
        """The ``hf download`` command that fetches what is missing (None for a folder: nothing to download)."""
        if self.need.is_folder:
            return None
        names = list(self.on_hub) + [p for f in self.missing for p in f.download_patterns]
        return " ".join(["hf download", self.need.source, *_quoted(names)])


def _quoted(names: Iterable[str]) -> list[str]:
    return [f"'{n}'" if any(c in n for c in "*?[ ") else n for n in names]


@dataclass(frozen=True)
class ModelProvider:
    """What a package registers under the ``cmirm.models`` entry points: which names it owns (``claims``),
    the repos each needs (``needs(name, files)``, raising `ConfigError` for a bad name), and the names
    ``cmirm doctor`` lists (``known``) and ``cmirm download --all`` fetches (``defaults``)."""

    kind: str
    claims: Callable[[str], bool]
    needs: Callable[[str, "ModelFiles"], list[RepoNeed]]
    known: tuple[str, ...] = ()
    defaults: tuple[str, ...] = ()


def providers() -> list[ModelProvider]:
    """The registered `ModelProvider`s (a provider that fails to import is skipped with a log line)."""
    found = []
    for ep in sorted(md.entry_points(group="cmirm.models"), key=lambda e: e.name):
        try:
            found.append(ep.load())
        except Exception as exc:  # a broken plug-in must not stop every job
            log.warning("cmirm: model provider '%s' unavailable (%s: %s)", ep.name, type(exc).__name__, exc)
    return found


class HubUnreachable(Exception):
    """The hub did not answer the one probe."""


class ModelFiles:
    """Finds a repo's files in a local folder, the hub cache, or (when reachable) on the hub.

    The hub is probed once, on first need; if it does not answer, the process goes offline
    (`go_offline`) and the reason is kept in ``offline_reason``.
    """

    def __init__(self, cache_dir: str | Path | None = None, *, local_only: bool = False) -> None:
        """``cache_dir``: the hub cache (default the hub's); ``local_only``: never use the network (doctor)."""
        self.cache_dir = cache_dir
        self.offline_reason: str | None = None
        self._online: bool | None = False if local_only else None
        self._listings: dict[str, dict[str, int | None] | str] = {}
        self.card_licences: dict[str, str | None] = {}
        #: Configs that were needed to find more repos but are not available (so those repos are unknown).
        self.unread: list[tuple[str, str]] = []

    # -- the hub ------------------------------------------------------------------------------
    @property
    def online(self) -> bool:
        """Whether the hub may be used: not offline mode, and it answered the probe."""
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE or self._online is False:
            return False
        if self._online is None:
            try:
                probe_hub()
                self._online = True
            except HubUnreachable as exc:
                self._online = False
                self.offline_reason = f"the hub {constants.ENDPOINT} is unreachable ({exc})"
                go_offline()
        return self._online

    def listing(self, repo: str) -> dict[str, int | None] | str:
        """The repo's files on the hub (name -> size), or why they cannot be listed."""
        if repo not in self._listings:
            self._listings[repo] = self._list(repo)
        return self._listings[repo]

    def _list(self, repo: str) -> dict[str, int | None] | str:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

        api = HfApi()
        try:
            info = api.model_info(repo, files_metadata=True)
        except RepositoryNotFoundError:
            return "not found on the hub (or private: log in with `hf auth login`)"
        except (HfHubHTTPError, OSError) as exc:
            return f"the hub did not list it ({type(exc).__name__}: {_first_line(exc)})"
        card = info.card_data
        self.card_licences[repo] = card.get("license") if card is not None else None
        if info.gated:
            try:
                api.auth_check(repo)
            except GatedRepoError:
                return (f"gated: accept its terms on {_repo_url(repo)} and log in (`hf auth login` or HF_TOKEN)")
            except (HfHubHTTPError, OSError):
                pass  # cannot tell; the download will say
        return {s.rfilename: s.size for s in info.siblings or ()}

    # -- files --------------------------------------------------------------------------------
    def local(self, source: str, name: str) -> Path | None:
        """``name`` of a folder or of a hub repo in the cache (never the network)."""
        if is_folder(source):
            path = Path(source).expanduser() / name
            return path if path.is_file() else None
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(source, name, cache_dir=self.cache_dir)
        return Path(found) if isinstance(found, str) else None

    def exists(self, source: str, name: str) -> bool | None:
        """Whether the folder, the cache or the hub has ``name``; None when that cannot be known (offline)."""
        if self.local(source, name) is not None:
            return True
        if is_folder(source):
            return False
        if not self.online:
            return None
        listing = self.listing(source)
        return name in listing if isinstance(listing, dict) else None

    def read(self, source: str, name: str) -> Path | None:
        """A small file (a config) from the folder or cache, else downloaded from the hub; None if unavailable
        (and noted in ``unread``)."""
        found = self.local(source, name)
        if found is None and self.exists(source, name):
            from huggingface_hub import hf_hub_download
            from huggingface_hub.errors import HfHubHTTPError

            try:
                found = Path(hf_hub_download(source, name, cache_dir=self.cache_dir))
            except (HfHubHTTPError, OSError, ValueError):
                found = None
        if found is None:
            self.unread.append((source, name))
        return found

    def read_json(self, source: str, name: str) -> dict | None:
        path = self.read(source, name)
        if path is None:
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"'{path}': not valid JSON ({exc})") from exc
        return data if isinstance(data, dict) else None

    def status(self, need: RepoNeed, *, list_hub: bool = False) -> RepoStatus:
        """Where each file of ``need`` is. The hub is asked (once per repo) only when a file is not local,
        or always with ``list_hub`` (to learn its card's licence)."""
        status = RepoStatus(need)
        folder = need.is_folder
        if folder and not Path(need.source).expanduser().is_dir():
            status.reason = "no such folder"
        listing: dict[str, int | None] | str | None = None
        incomplete = any(self._local_any(need.source, f) is None for f in need.files)
        if not folder and (list_hub or incomplete) and self.online:
            listing = self.listing(need.source)
            if isinstance(listing, str):
                status.reason = listing
        status.licence = self.card_licences.get(need.source)
        for want in need.files:
            path = self._local_any(need.source, want)
            if path is not None:
                status.local[path[0]] = path[1]
            elif isinstance(listing, dict) and any(n in listing for n in want.names):
                name = next(n for n in want.names if n in listing)
                status.on_hub[name] = listing[name]   # optional ones too: a download fetches them
            elif not want.optional:
                status.missing.append(want)
        return status

    def _local_any(self, source: str, want: FileNeed) -> tuple[str, Path] | None:
        for name in want.names:
            path = self.local(source, name)
            if path is not None:
                return name, path
        return None


def probe_hub() -> None:
    """One request to the hub endpoint, no retries; raises `HubUnreachable` if it does not answer.

    Any HTTP answer counts as reachable. The timeout is ``HF_HUB_ETAG_TIMEOUT`` (default 10 s):
    a refused connection or an unknown host fails at once.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=constants.HF_HUB_ETAG_TIMEOUT, follow_redirects=False)
    except Exception as exc:  # whatever the HTTP client raises (its error types vary by version): no answer
        raise HubUnreachable(f"{type(exc).__name__}: {_first_line(exc)}") from exc


def go_offline() -> None:
    """Make every later hub lookup of this process (and of the processes it starts) use the cache only."""
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _repo_url(repo: str) -> str:
    from huggingface_hub import constants

    return f"{constants.ENDPOINT}/{repo}"


# -- what each kind of model needs -------------------------------------------------------------

def scorer_needs(spec: object, files: ModelFiles, option: str | None = None) -> list[RepoNeed]:
    """The repos a scorer spec reads: a CMI-RM checkpoint and its towers; nothing for ``tiny`` and plug-ins.
    ``option``: the command's option that named it (in errors and the role)."""
    from cmirm_plugin.scoring.spec import ScorerSpec

    parsed = ScorerSpec.parse(spec, option or "scorer spec")  # type: ignore[arg-type]
    if parsed.kind not in ("hub", "folder"):
        return []
    role = "CMI-RM reward model" + (f", {option}" if option else "")
    needs = [RepoNeed(parsed.location, role, tuple(FileNeed((n,)) for n in CMI_RM_FILES))]
    config = files.read(parsed.location, CMI_RM_FILES[0])
    if config is not None:
        from cmirm_plugin.model.config import CMIRMConfig

        needs += tower_needs(CMIRMConfig.from_yaml(config).model_name, files)
    return needs


def tower_needs(model_name: str, files: ModelFiles) -> list[RepoNeed]:
    """The MuQ-MuLan checkpoint named by a CMI-RM config, and the MuQ and XLM-R repos its config names
    (their configs and the XLM-R tokenizer; the tower weights all come from the MuQ-MuLan checkpoint)."""
    needs = [RepoNeed(model_name, "MuQ-MuLan towers", (FileNeed(("config.json",)), FileNeed(TOWER_WEIGHTS)))]
    config = files.read_json(model_name, "config.json")
    if config is not None:
        from cmirm_plugin.model.mulan import MuLanConfig

        mulan = MuLanConfig.from_dict(config)
        needs.append(RepoNeed(mulan.audio_model_name, "MuQ config (of the towers)", (FileNeed(("config.json",)),)))
        needs.append(RepoNeed(mulan.text_model_name, "XLM-R config and tokenizer (of the towers)",
                              (FileNeed(("config.json",)), *tokenizer_files())))
    return needs


def tokenizer_files(prefix: str = "") -> tuple[FileNeed, ...]:
    """A transformers tokenizer's files (``prefix``: its subfolder, e.g. ``tokenizer/``)."""
    return (FileNeed(tuple(prefix + n for n in TOKENIZER_VOCAB)),
            *(FileNeed((prefix + n,), optional=True) for n in TOKENIZER_EXTRA))


def weights_files(source: str, files: ModelFiles, prefix: str = "", stem: str = "model") -> tuple[FileNeed, ...]:
    """A transformers / diffusers model's safetensors weights: one file, or an index and its shards
    (read from the index once it is known that the repo is sharded)."""
    single, index = f"{prefix}{stem}.safetensors", f"{prefix}{stem}.safetensors.index.json"
    if files.exists(source, single) is False and files.exists(source, index):
        data = files.read_json(source, index)
        if data is not None and isinstance(data.get("weight_map"), dict):
            shards = sorted(set(data["weight_map"].values()))
            return (FileNeed((index,)), *(FileNeed((prefix + s,)) for s in shards))
    return (FileNeed((single, index), patterns=(f"{prefix}{stem}*.safetensors*",)),)


def transformers_needs(source: str, role: str, files: ModelFiles) -> RepoNeed:
    """A transformers model with its processor (feature extractor + tokenizer), e.g. MusicGen."""
    return RepoNeed(source, role, (
        FileNeed(("config.json",)), *weights_files(source, files), FileNeed(("generation_config.json",), optional=True),
        FileNeed(("preprocessor_config.json", "processor_config.json")), *tokenizer_files()))


def diffusers_needs(source: str, role: str, files: ModelFiles) -> RepoNeed:
    """A diffusers pipeline: ``model_index.json`` and, per component it names, that subfolder's config,
    weights or tokenizer (e.g. Stable Audio Open). Until the index is read, patterns stand for them."""
    index = files.read_json(source, "model_index.json")
    if index is None:
        return RepoNeed(source, role, (FileNeed(("model_index.json",)),
                                       FileNeed(("*/*.json",), patterns=("*/*.json", "*/*.safetensors", "*/*.model"))))
    wanted = [FileNeed(("model_index.json",))]
    for component, value in sorted(index.items()):
        if component.startswith("_") or not isinstance(value, list) or len(value) != 2 or value[1] is None:
            continue
        library, class_name = value
        prefix = f"{component}/"
        if class_name.endswith("Scheduler"):
            wanted.append(FileNeed((prefix + "scheduler_config.json",)))
        elif "Tokenizer" in class_name:
            wanted += tokenizer_files(prefix)
        elif "FeatureExtractor" in class_name or "Processor" in class_name:
            wanted.append(FileNeed((prefix + "preprocessor_config.json",)))
        else:
            stem = "model" if library == "transformers" else "diffusion_pytorch_model"
            wanted += [FileNeed((prefix + "config.json",)), *weights_files(source, files, prefix, stem)]
    return RepoNeed(source, role, tuple(wanted))


# -- a job's needs, checked and fetched --------------------------------------------------------

def model_needs(files: ModelFiles, generators: Sequence[str] = (), scorers: Sequence[tuple[object, str]] = (),
                towers: Sequence[str] = ()) -> list[RepoNeed]:
    """Every repo the job reads, once each: ``generators`` by name, ``scorers`` as (spec, option) pairs,
    ``towers`` as MuQ-MuLan checkpoints (a fresh CMI-RM's ``model_name``)."""
    needs: list[RepoNeed] = []
    for name in generators:
        needs += generator_needs(name, files)
    for spec, option in scorers:
        needs += scorer_needs(spec, files, option)
    for model_name in towers:
        needs += tower_needs(model_name, files)
    return _unique(needs)


def generator_needs(name: str, files: ModelFiles) -> list[RepoNeed]:
    """The repos generator ``name`` reads, from the generator provider (which refuses an unknown name);
    nothing when no provider is installed."""
    for provider in providers():
        if provider.kind == "generator":
            return provider.needs(name, files)
    return []


def _unique(needs: Iterable[RepoNeed]) -> list[RepoNeed]:
    """One need per source (the same repo named twice, e.g. by two scorers, keeps its first role)."""
    seen: dict[str, RepoNeed] = {}
    for need in needs:
        key = str(Path(need.source).expanduser().resolve()) if need.is_folder else need.source
        if key in seen:
            merged = seen[key].files + tuple(f for f in need.files if f not in seen[key].files)
            seen[key] = RepoNeed(seen[key].source, seen[key].role, merged)
        else:
            seen[key] = need
    return list(seen.values())


class ModelsUnavailableError(CheckpointError):
    """Models a job needs are neither here nor fetchable; the message lists them and how to get them."""


def check_available(generators: Sequence[str | None] = (), scorers: Sequence[tuple[object, str]] = (),
                    towers: Sequence[str] = ()) -> list[RepoStatus]:
    """Resolve every model a job will use before it does any work; raise `ModelsUnavailableError` once,
    listing everything missing, if any is neither local nor on a reachable hub.

    ``generators``: generator names (None entries are skipped); ``scorers``: (spec, option) pairs,
    e.g. ``[(config.reward, "--reward")]``; ``towers``: MuQ-MuLan checkpoints of a fresh model (training).
    Tiny models and plug-ins need nothing. Files on the hub
    are not downloaded here: the loaders fetch them (with progress) when they run.
    """
    files = ModelFiles()
    gens = [g for g in generators if g]
    needs = model_needs(files, gens, [s for s in scorers if s[0] is not None], towers)
    if any(not need.is_folder for need in needs):
        files.online  # probe once now: an unreachable hub sends every later lookup (the loaders') to the cache
    statuses = [files.status(need) for need in needs]
    unavailable = [s for s in statuses if s.missing or s.reason]
    if unavailable:
        names = [*gens, *(str(spec) for spec, _ in scorers if spec is not None), *towers]
        raise ModelsUnavailableError(missing_message(unavailable, files, names))
    if files.offline_reason and needs:
        log.warning("cmirm: %s; every model is in the local cache, so the job runs offline (HF_HUB_OFFLINE=1)",
                    files.offline_reason)
    return statuses


def missing_message(unavailable: Sequence[RepoStatus], files: ModelFiles, names: Sequence[str]) -> str:
    """The one error of `check_available`: a summary line, then each repo with what is missing and the
    command that fetches it, then the ways out (``cmirm download``, ``HF_HUB_OFFLINE=1``, ``--tiny``)."""
    from huggingface_hub import constants

    if files.offline_reason:
        where = files.offline_reason
    elif constants.HF_HUB_OFFLINE:
        where = "HF_HUB_OFFLINE=1: only the local cache was searched"
    else:
        where = "not in the local cache, and the hub does not have them all"
    lines = [f"{len(unavailable)} model repo(s) this job needs are not available ({where}):"]
    for status in unavailable:
        need = status.need
        what = "missing " + ", ".join(map(str, status.missing))
        if need.is_folder:
            folder = Path(need.source).expanduser()
            held = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing" if folder.is_dir() else None
            detail = status.reason or f"{what} (folder holds: {held})"
            lines.append(f"  - folder '{need.source}' ({need.role}): {detail}")
            continue
        lines.append(f"  - {need.source} ({need.role}): {status.reason or what}")
        if status.missing:
            lines.append(f"      {status.download_command()}")
    if files.unread:
        lines.append("  (the configs not available yet name further repos: `cmirm download` resolves them all)")
    lines.append(f"Fetch them on a machine with the hub (`cmirm download {' '.join(names)}` gets everything, or the "
                 f"commands above) into its hub cache ({files.cache_dir or constants.HF_HUB_CACHE} here), copy that "
                 "cache here and set HF_HUB_OFFLINE=1 to run from it without network; --tiny runs offline with tiny "
                 "random models.")
    return "\n".join(lines)


def download(needs: Sequence[RepoNeed], files: ModelFiles) -> list[RepoStatus]:
    """Fetch every file of ``needs`` that is not local (one ``snapshot_download`` per repo, with the hub's
    progress bars) into the hub cache (or ``files.cache_dir``); returns each repo's final status."""
    from huggingface_hub import snapshot_download

    out = []
    for need in needs:
        status = files.status(need, list_hub=True)
        if status.on_hub:
            snapshot_download(need.source, allow_patterns=list(status.on_hub), cache_dir=files.cache_dir)
            status = files.status(need)
        out.append(status)
    return out


def default_names() -> list[str]:
    """What ``cmirm download --all`` fetches: the default reward model and each provider's defaults."""
    return [DEFAULT_MODEL, *(name for p in providers() for name in p.defaults)]


def needs_of_names(names: Sequence[str], files: ModelFiles) -> list[RepoNeed]:
    """The repos of generator names and scorer specs mixed (a name a generator provider claims is a generator)."""
    needs: list[RepoNeed] = []
    for name in names:
        owner = next((p for p in providers() if p.claims(name)), None)
        if owner is not None:
            needs += owner.needs(name, files)
        else:
            try:
                needs += scorer_needs(name, files)
            except ConfigError as exc:
                raise ConfigError(f"'{name}' is neither a generator name nor a scorer spec ({exc})") from exc
    return _unique(needs)


def fetch(names: Sequence[str], files: ModelFiles) -> list[RepoStatus]:
    """``cmirm download``: every repo that generator names / scorer specs ``names`` need, fetched into the
    hub cache (``files.cache_dir``); refused at once, in one line, when the hub cannot be used."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise ModelsUnavailableError("cmirm download needs the hub, but HF_HUB_OFFLINE=1 is set; unset it (or run it "
                                     "on a machine with the hub and copy the hub cache)")
    if not files.online:
        raise ModelsUnavailableError(f"{files.offline_reason}; run cmirm download on a machine with the hub and copy "
                                     f"its hub cache (HF_HOME) here")
    return download(needs_of_names(names, files), files)


def local_statuses(names: Sequence[str]) -> list[tuple[str, RepoStatus]]:
    """``cmirm doctor``: (name, status) of every repo each of ``names`` needs, from folders and the hub
    cache only (no network; repos named inside configs that are not here are not listed)."""
    files = ModelFiles(local_only=True)
    out = []
    for name in names:
        for need in needs_of_names([name], files):
            out.append((name, files.status(need)))
    return out
