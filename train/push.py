"""``cmirm push``: upload a trained released-layout folder to the hub with a generated model card.

What goes up: ``config.yaml``, ``model.safetensors``, ``train_info.json`` and ``text_lora/`` when
present, and a ``README.md`` model card; nothing else (``last/trainer/``, the resume state, stays
home). The card is written from what the folder and its training run recorded:

* architecture and towers from ``config.yaml``; parameters from the safetensors header;
* the towers' licences (and the initial model's) from `cmirm_plugin.licences`;
* training stages, oldest first, by following each run's ``init`` back: a stage is ``OUT/`` with
  ``train_config.json`` (options) next to the pushed ``OUT/best`` or ``OUT/last``, whose
  ``train_info.json`` names its data (pairs file, pair counts, held-out rule);
* held-out pairwise accuracy per axis and modality from ``train_info.json`` (the evaluation of the
  epoch these weights come from, as in ``metrics/epochs.jsonl``);
* CMI-RewardBench results from a ``cmirm bench --out DIR`` folder (``--bench DIR``: its
  ``metrics.json`` summary; refused when its ``metadata.json`` says it scored another model).

Local paths never reach the card: files and folders are named by their last parts only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, ModelCardData

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.licences import Licence, licence_for
from cmirm_plugin.model.config import CMIRMConfig
from cmirm_plugin.model.loading import CONFIG_NAME, WEIGHTS_NAME
from cmirm_plugin.model.mulan import MuLanConfig
from cmirm_plugin.records import AXES, MODALITIES
from train.bench.results import METADATA_FILE
from train.checkpoint import INFO_FILE
from train.config import STAGE_LABEL_SMOOTHING
from train.lora import ADAPTER_DIR

RUN_CONFIG_FILE = "train_config.json"
BENCH_METRICS_FILE = "metrics.json"
CARD_FILE = "README.md"
TAGS = ["cmirm", "cmi-rm", "reward-model", "music", "audio"]
#: How many ``init`` links `read_stages` follows back (a guard against a folder that names itself).
MAX_STAGES = 8


@dataclass
class Stage:
    """One training stage of the pushed weights: its options and data as the run recorded them."""

    options: dict[str, Any]
    info: dict[str, Any] | None
    init: str | None          # a hub id, or how a local starting folder is shown ("pre/best")


@dataclass
class BenchResults:
    """The summary of a ``cmirm bench`` run on the pushed model."""

    summary: list[dict[str, Any]]
    split: str | None
    subset: str | None


@dataclass
class ModelFolder:
    """A validated released-layout folder and what its training recorded."""

    directory: Path
    config: CMIRMConfig
    parameters: int
    tensors: int
    info: dict[str, Any] | None
    stages: list[Stage] = field(default_factory=list)


@dataclass
class PushResult:
    """Where `push_model` uploaded, which files (paths in the repo), what stayed home, and what to fix."""

    url: str
    files: list[str]
    skipped: list[str]
    warnings: list[str]


def _is_local(name: str) -> bool:
    """A local path rather than a hub id (an existing folder, or a name no hub id looks like)."""
    return Path(name).expanduser().exists() or name.startswith(("/", ".", "~")) or name.count("/") > 1


def _display(name: str) -> str:
    """A hub id as it is; a local path by its last two parts, so the card never shows the pusher's paths."""
    return f"local folder '{'/'.join(Path(name).expanduser().parts[-2:])}'" if _is_local(name) else name


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"'{path}': not readable JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"'{path}': expected a JSON object")
    return value


def _count_parameters(weights: Path) -> tuple[int, int]:
    """(tensors, parameters) of a safetensors file, from its header (nothing is loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="numpy") as handle:
            shapes = [handle.get_slice(key).get_shape() for key in handle.keys()]
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ConfigError(f"'{weights}': not a readable safetensors file ({exc})") from exc
    return len(shapes), sum(math.prod(shape) for shape in shapes)


def check_model_dir(directory: Path) -> Path:
    """``directory`` if it is a released-layout folder, else a one-line `ConfigError` saying what is missing."""
    directory = Path(directory)
    if not directory.exists():
        raise ConfigError(f"'{directory}': no such folder (pass a released-layout folder such as runs/fine/best)")
    if not directory.is_dir():
        raise ConfigError(f"'{directory}': not a folder (pass the folder holding {CONFIG_NAME} and {WEIGHTS_NAME})")
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (directory / name).is_file()]
    if missing:
        raise ConfigError(f"'{directory}': missing {' and '.join(missing)}; a released-layout folder holds "
                          f"{CONFIG_NAME} + {WEIGHTS_NAME} (e.g. the best/ or last/ folder of 'cmirm train')")
    return directory


def read_stages(directory: Path) -> list[Stage]:
    """The training stages that led to the weights in ``directory``, oldest first (empty: not a cmirm run).

    A stage is the run folder above a saved model (``OUT/train_config.json`` above ``OUT/best``); its
    ``init``, when it is a folder that still exists, is the model the stage before saved.
    """
    stages: list[Stage] = []
    folder: Path | None = directory
    while folder is not None and len(stages) < MAX_STAGES:
        options = _read_json(folder.parent / RUN_CONFIG_FILE)
        if options is None:
            break
        init = options.get("init")
        stages.append(Stage(options=options, info=_read_json(folder / INFO_FILE),
                            init=_display(init) if init else None))
        folder = Path(init).expanduser() if init and Path(init).expanduser().is_dir() else None
    stages.reverse()
    return stages


def read_model_folder(directory: Path) -> ModelFolder:
    """Validate ``directory`` and read its config, weights header, ``train_info.json`` and training stages."""
    directory = check_model_dir(directory)
    config = CMIRMConfig.from_yaml(directory / CONFIG_NAME)
    tensors, parameters = _count_parameters(directory / WEIGHTS_NAME)
    return ModelFolder(directory, config, parameters, tensors, _read_json(directory / INFO_FILE),
                       read_stages(directory))


def read_bench(bench_dir: Path, model_dir: Path) -> BenchResults:
    """The ``cmirm bench --out bench_dir`` summary; refused when that run scored a different model."""
    bench_dir = Path(bench_dir)
    metrics = _read_json(bench_dir / BENCH_METRICS_FILE)
    if metrics is None or not isinstance(metrics.get("summary"), list):
        raise ConfigError(f"'{bench_dir}': no {BENCH_METRICS_FILE} with a summary; pass the --out folder of "
                          f"'cmirm bench --model {model_dir}'")
    metadata = _read_json(bench_dir / METADATA_FILE) or {}
    scored = (metadata.get("scoring") or {}).get("model")
    if scored:
        scored_path = Path(scored).expanduser()
        # a hub id is another model; a folder that no longer exists may be this one, since moved
        other = scored_path.resolve() != Path(model_dir).resolve() if scored_path.is_dir() else not _is_local(scored)
        if other:
            raise ConfigError(f"'{bench_dir}': these benchmark results are of model '{scored}', not of "
                              f"'{model_dir}'; run 'cmirm bench --model {model_dir}' and pass its --out folder")
    return BenchResults(summary=metrics["summary"], split=metadata.get("split"), subset=metadata.get("subset"))


def upload_plan(directory: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """(path in repo, local file) of everything to upload except the card, and the top-level names left home."""
    files = [(name, directory / name) for name in (CONFIG_NAME, WEIGHTS_NAME, INFO_FILE) if (directory / name).is_file()]
    adapters = directory / ADAPTER_DIR
    if adapters.is_dir():
        files += [(path.relative_to(directory).as_posix(), path) for path in sorted(adapters.rglob("*")) if path.is_file()]
    sent = {repo_path.split("/")[0] for repo_path, _ in files}
    skipped = sorted(p.name + ("/" if p.is_dir() else "") for p in directory.iterdir() if p.name not in sent)
    return files, skipped


# ---------------------------------------------------------------------------------------------- the card
def _tower_backbones(model_name: str) -> tuple[str, str]:
    """(audio, text) backbone ids named by the towers' ``config.json`` when it is at hand, else the released ones."""
    from huggingface_hub import try_to_load_from_cache

    local = Path(model_name).expanduser() / "config.json"
    path: Any = local if local.is_file() else try_to_load_from_cache(model_name, "config.json")
    if isinstance(path, (str, Path)) and Path(path).is_file():
        mulan = MuLanConfig.from_dict(json.loads(Path(path).read_text()))
    else:
        mulan = MuLanConfig()
    return mulan.audio_model_name, mulan.text_model_name


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _base_model(folder: ModelFolder) -> str | None:
    """The hub model the first stage started from, if it started from one."""
    first = folder.stages[0] if folder.stages else None
    init = first.options.get("init") if first else None
    return init if init and not _is_local(init) else None


def _licences(folder: ModelFolder) -> list[tuple[str, str, Licence | None]]:
    """(role, model, licence) of every model the pushed weights derive from or run on."""
    audio, text = _tower_backbones(folder.config.model_name)
    rows = []
    base = _base_model(folder)
    if base:
        rows.append(("initial weights", base, licence_for(base)))
    rows += [("MuQ-MuLan towers", folder.config.model_name, licence_for(folder.config.model_name)),
             ("audio backbone", audio, licence_for(audio)), ("text backbone", text, licence_for(text))]
    return rows


def card_licence(folder: ModelFolder) -> str:
    """The card's licence: the initial hub model's if known, else the towers', else ``other``."""
    for model in (_base_model(folder), folder.config.model_name):
        licence = licence_for(model) if model else None
        if licence is not None:
            return licence.id
    return "other"


def _architecture(folder: ModelFolder) -> str:
    c = folder.config
    downsample = {s: c.downsample.spec_for(s).kind for s in ("eval", "ref", "text")}
    lora = c.text_lora_config
    rows = [
        ("architecture", f"CMI-RM reward model: mode `{c.mode}`, attention `{c.attention_mode}`, width {c.dim}, "
                         f"prompt transformer depth {c.prompt_tf_depth}, joint transformer depth {c.joint_tf_depth}, "
                         f"{c.heads} heads x {c.dim_head}, MLP {c.mlp_dim}"),
        ("downsamplers", ", ".join(f"{k} `{v}`" for k, v in downsample.items())),
        ("outputs", f"{c.output_dim} scores per clip: {', '.join(AXES)} (higher is better)"),
        ("audio", f"mono, {c.sr} Hz"),
        ("towers", f"{_display(c.model_name)}; MuQ layers trained: {c.train_muq_depth}; text LoRA: "
                   + (f"adapters in `{ADAPTER_DIR}/` (r={lora.get('r')})" if lora else "none or merged")),
        ("weights here", f"`{WEIGHTS_NAME}`: {folder.tensors} tensors, {folder.parameters:,} parameters "
                         f"(the frozen towers are loaded from the towers named above)"),
    ]
    return _table(["", ""], rows)


def _training(folder: ModelFolder) -> str:
    if not folder.stages:
        return "No training record (`train_config.json`) was found next to this folder."
    rows, notes = [], []
    for number, stage in enumerate(folder.stages, 1):
        o = stage.options
        data = (stage.info or {}).get("data") or {}
        smoothing = o.get("label_smoothing")
        smoothing = STAGE_LABEL_SMOOTHING.get(o.get("stage"), None) if smoothing is None else smoothing
        pairs = data.get("pairs") or Path(str(o.get("pairs", "-"))).name
        counts = f"{data['train_pairs']} / {data['eval_pairs']}" if "train_pairs" in data else "-"
        rows.append((number, o.get("stage"), f"`{pairs}`", counts, o.get("epochs"), o.get("batch_size"),
                     f"{o['lr']:g}" if isinstance(o.get("lr"), (int, float)) else o.get("lr"),
                     f"{smoothing:g}" if isinstance(smoothing, (int, float)) else smoothing, o.get("lora_r"),
                     stage.init or ("tiny random towers" if o.get("tiny") else "a fresh model")))
        if data.get("held_out"):
            notes.append(f"- stage {number}: {data['held_out']}")
    table = _table(["stage", "kind", "pairs file", "pairs (train / held out)", "epochs", "batch", "lr",
                    "label smoothing", "LoRA r", "started from"], rows)
    loss = "Bradley-Terry loss per axis on preference pairs (CMI-Pref layout), AdamW with warm-up and cosine decay."
    return "\n".join([loss, "", table, *([""] + notes if notes else [])])


def _held_out(folder: ModelFolder) -> str:
    metrics = (folder.info or {}).get("metrics") or {}
    if not any(key.startswith("eval/acc") for key in metrics):
        return "No held-out evaluation was recorded for these weights."
    modalities = list(MODALITIES) + sorted({k.split("/", 3)[3] for k in metrics if k.startswith("eval/acc/")
                                             and k.count("/") == 3} - set(MODALITIES))
    modalities = [m for m in modalities if any(f"eval/acc/{a}/{m}" in metrics for a in AXES)]
    rows = [(axis, metrics.get(f"eval/n/{axis}"), metrics.get(f"eval/acc/{axis}"),
             *(metrics.get(f"eval/acc/{axis}/{m}") for m in modalities)) for axis in AXES]
    info = folder.info or {}
    where = f"epoch {metrics.get('epoch')} (step {metrics.get('step')})"
    if info.get("step") is not None and info.get("step") != metrics.get("step"):
        where += f"; these weights were saved at step {info['step']}"
    return "\n".join([
        f"Pairwise accuracy on the held-out pairs at {where}: the share of decisive votes where the preferred "
        f"clip scores higher, overall (`all`, mean over axes {_fmt(metrics.get('eval/acc'))}) and per input "
        f"modality.", "",
        _table(["axis", "decisive pairs", "all", *modalities], rows)])


def _bench(bench: BenchResults) -> str:
    rows = [(r.get("dataset"), r.get("task"), r.get("n"), r.get("SRCC"), r.get("LCC"), r.get("K-Tau"), r.get("ACC"))
            for r in bench.summary]
    scope = f"split `{bench.split}`" + (f", subset `{bench.subset}`" if bench.subset else "")
    return "\n".join([f"Results of `cmirm bench` ({scope}):", "", _table(
        ["dataset", "task", "n", "SRCC", "LCC", "K-Tau", "ACC"], rows)])


def _usage(repo_id: str, folder: ModelFolder) -> str:
    lines = [
        "```python",
        "from cmirm_plugin import Instruction",
        "from cmirm_plugin.scoring import RewardScorer",
        "",
        f'scorer = RewardScorer.from_pretrained("{repo_id}")',
        'inst = Instruction(text="Upbeat pop with bright piano")',
        'scores = scorer.score_batch(["a.wav", "b.wav"], inst)   # [N, 2]: alignment, musicality',
        "```",
        "",
        "```bash",
        f'cmirm score song.wav --text "Upbeat pop with bright piano" --reward {repo_id}',
        f'cmirm generate "Upbeat pop with bright piano" -n 8 -k 2 --reward {repo_id} --out out/',
        "```",
        "",
        "Scores compare candidates of one instruction; the towers are downloaded from their own repos.",
    ]
    if folder.config.text_lora_config:
        lines += ["", f"The text-encoder LoRA adapters are in `{ADAPTER_DIR}/`; attach them with "
                      "`train.model_setup.load_for_training(folder)` (a plain `from_pretrained` leaves them out)."]
    return "\n".join(lines)


def model_card(folder: ModelFolder, repo_id: str, bench: BenchResults | None = None) -> ModelCard:
    """The model card (metadata + markdown) of ``folder`` as it will be published under ``repo_id``."""
    base = _base_model(folder)
    data = ModelCardData(license=card_licence(folder), library_name="cmirm", tags=list(TAGS),
                         base_model=base)
    licence_rows = [(role, f"`{_display(model)}`", licence.id if licence else "unknown",
                     licence.note if licence else "not in cmirm's table: check the model card")
                    for role, model, licence in _licences(folder)]
    sections = [
        f"# {repo_id.split('/')[-1]}",
        "A CMI-RM music reward model trained with cmirm: it scores a music clip on **alignment** (does it follow "
        "the instruction: text, lyrics, reference clip) and **musicality**.",
        "## Model", _architecture(folder),
        "## Licences",
        "These weights are used together with the models below (and derive from the initial weights, if any); "
        "their terms apply to this model too.",
        _table(["role", "model", "licence", "note"], licence_rows),
        "## Training", _training(folder),
        "## Held-out accuracy", _held_out(folder),
    ]
    if bench is not None:
        sections += ["## CMI-RewardBench", _bench(bench)]
    sections += ["## Use with cmirm", _usage(repo_id, folder)]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


# ---------------------------------------------------------------------------------------------- upload
def portability_warnings(folder: ModelFolder) -> list[str]:
    """What keeps others from loading the pushed model (a config that names towers on this machine only)."""
    name = folder.config.model_name
    if _is_local(name):
        return [f"{CONFIG_NAME} names local towers ({_display(name)}): others cannot load this model until "
                f"model_name is a hub id (e.g. OpenMuQ/MuQ-MuLan-large)"]
    return []


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is a valid ``user/name`` hub id, else a one-line `ConfigError`."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ConfigError(f"--repo: {repo_id!r} is not a valid hub repo id (expected user/name)") from exc
    if repo_id.count("/") != 1:
        raise ConfigError(f"--repo: expected user/name (or org/name), got {repo_id!r}")
    return repo_id


def push_model(directory: Path, repo_id: str, private: bool = False, token: str | None = None,
               bench_dir: Path | None = None, api: HfApi | None = None) -> PushResult:
    """Validate everything, then create ``repo_id`` (if needed) and upload the folder with its card in one commit."""
    check_repo_id(repo_id)
    folder = read_model_folder(directory)
    bench = read_bench(bench_dir, folder.directory) if bench_dir is not None else None
    card = model_card(folder, repo_id, bench)
    files, skipped = upload_plan(folder.directory)
    operations = [CommitOperationAdd(path_in_repo=repo_path, path_or_fileobj=str(local)) for repo_path, local in files]
    operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=str(card).encode("utf-8")))
    api = api or HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
        api.create_commit(repo_id, operations, commit_message=f"Upload CMI-RM reward model ({folder.directory.name}) "
                                                              f"with cmirm push", repo_type="model")
    except Exception as exc:  # the hub client raises HTTP, connection and offline-mode errors of several kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"could not push to '{repo_id}' ({type(exc).__name__}: {first}); check the network and "
                          f"the token (--token, HF_TOKEN or `hf auth login`)") from exc
    return PushResult(url=str(url), files=[op.path_in_repo for op in operations], skipped=skipped,
                      warnings=portability_warnings(folder))
