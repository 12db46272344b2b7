"""Which repos a job needs (cmirm_plugin.models_needed), the up-front check, `cmirm download` and doctor's list.

The hub is never reached: a fake hub cache laid out like the real repos (models--owner--name/refs/main +
snapshots/<commit>/...) stands for what is here, and monkeypatched huggingface_hub calls for the hub.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from cmirm_plugin import models_needed as mn
from cmirm_plugin.cli import app, main

PARITY = Path(__file__).parent / "fixtures" / "parity"
COMMIT = "0" * 40
MULAN_CONFIG = (PARITY / "hf_home" / "hub" / "models--OpenMuQ--MuQ-MuLan-large" / "snapshots" / COMMIT
                / "config.json").read_text()

#: The released repos' files (sizes shrunk): what `cmirm download --all` fetches, plus what it must not.
CMI_RM = {"config.yaml": "model_name: OpenMuQ/MuQ-MuLan-large\n", "model.safetensors": b"w" * 1000}
MULAN = {"config.json": MULAN_CONFIG, "pytorch_model.bin": b"b" * 5000}
MUQ = {"config.json": "{}", "model.safetensors": b"m" * 7000}   # the towers never read MuQ's own weights
XLMR = {"config.json": "{}", "tokenizer.json": "{}", "sentencepiece.bpe.model": b"s" * 10,
        "tokenizer_config.json": "{}", "model.safetensors": b"x" * 9000}
MUSICGEN = {"config.json": "{}", "generation_config.json": "{}", "model.safetensors": b"g" * 3000,
            "pytorch_model.bin": b"p" * 3000, "preprocessor_config.json": "{}", "special_tokens_map.json": "{}",
            "spiece.model": b"s", "tokenizer.json": "{}", "tokenizer_config.json": "{}", "state_dict.bin": b"a" * 99}
HUB = {"HaiwenXia/CMI-RM": CMI_RM, "OpenMuQ/MuQ-MuLan-large": MULAN, "OpenMuQ/MuQ-large-msd-iter": MUQ,
       "xlm-roberta-base": XLMR, "facebook/musicgen-small": MUSICGEN}


def put(cache: Path, repo: str, files: dict[str, str | bytes]) -> None:
    """Add ``files`` to ``repo`` in a hub cache laid out as huggingface_hub writes it."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)
    for name, content in files.items():
        path = folder / "snapshots" / COMMIT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty hub cache, offline (every test that wants the hub fakes it)."""
    import huggingface_hub.constants as constants

    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return root


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The real entry point in-process (a `CmirmError` becomes one `error:` line and exit 2)."""
    monkeypatch.setattr(sys, "argv", ["cmirm", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def without(files: dict, *names: str) -> dict:
    return {k: v for k, v in files.items() if k not in names}


def full_reward_cache(cache: Path) -> None:
    put(cache, "HaiwenXia/CMI-RM", CMI_RM)
    put(cache, "OpenMuQ/MuQ-MuLan-large", without(MULAN))
    put(cache, "OpenMuQ/MuQ-large-msd-iter", without(MUQ, "model.safetensors"))
    put(cache, "xlm-roberta-base", without(XLMR, "model.safetensors"))


def test_the_released_reward_model_resolves_through_its_configs_to_four_repos(cache):
    full_reward_cache(cache)
    files = mn.ModelFiles(local_only=True)
    needs = mn.scorer_needs("HaiwenXia/CMI-RM", files)
    assert [n.source for n in needs] == ["HaiwenXia/CMI-RM", "OpenMuQ/MuQ-MuLan-large", "OpenMuQ/MuQ-large-msd-iter",
                                         "xlm-roberta-base"]
    statuses = [files.status(n) for n in needs]
    assert all(s.complete for s in statuses)
    assert sorted(statuses[1].local) == ["config.json", "pytorch_model.bin"]   # the .bin is the tower weights
    assert statuses[1].local_bytes == len(MULAN_CONFIG) + 5000
    # MuQ's and XLM-R's own weights are not needed (the towers come from the MuQ-MuLan checkpoint)
    assert sorted(statuses[2].local) == ["config.json"]
    assert sorted(statuses[3].local) == ["config.json", "tokenizer.json", "tokenizer_config.json"]
    assert mn.scorer_needs("tiny", files) == [] and mn.scorer_needs("os.path:join", files) == []


def test_check_available_passes_from_the_cache_without_asking_the_hub(cache, monkeypatch):
    full_reward_cache(cache)
    put(cache, "facebook/musicgen-small", MUSICGEN)
    monkeypatch.setattr(mn, "probe_hub", lambda: pytest.fail("the hub was asked"))
    statuses = mn.check_available(["musicgen-small", "tiny-musicgen"], [("HaiwenXia/CMI-RM", "--reward"),
                                                                        ("tiny", "--eval-reward")])
    assert [s.need.source for s in statuses] == ["facebook/musicgen-small", "HaiwenXia/CMI-RM",
                                                 "OpenMuQ/MuQ-MuLan-large", "OpenMuQ/MuQ-large-msd-iter",
                                                 "xlm-roberta-base"]
    assert sorted(statuses[0].local) == ["config.json", "generation_config.json", "model.safetensors",
                                         "preprocessor_config.json", "special_tokens_map.json", "tokenizer.json",
                                         "tokenizer_config.json"]
    assert mn.check_available(["tiny-musicgen"], [("tiny", "--reward")]) == []


def test_everything_missing_is_listed_once_with_the_commands_that_fetch_it(cache, tmp_path):
    put(cache, "HaiwenXia/CMI-RM", CMI_RM)
    put(cache, "OpenMuQ/MuQ-MuLan-large", without(MULAN, "pytorch_model.bin"))
    put(cache, "OpenMuQ/MuQ-large-msd-iter", without(MUQ, "model.safetensors"))
    put(cache, "xlm-roberta-base", {"config.json": "{}"})
    folder = tmp_path / "my-rm"
    folder.mkdir()
    (folder / "config.yaml").write_text("model_name: OpenMuQ/MuQ-MuLan-large\n")
    with pytest.raises(mn.ModelsUnavailableError) as err:
        mn.check_available(["musicgen-small"], [("HaiwenXia/CMI-RM", "--reward"), (str(folder), "--eval-reward")])
    lines = str(err.value).splitlines()
    assert lines[0] == ("4 model repo(s) this job needs are not available (HF_HUB_OFFLINE=1: only the local cache "
                        "was searched):")
    assert lines[1].startswith("  - facebook/musicgen-small (generator musicgen-small): missing config.json, ")
    assert lines[2] == ("      hf download facebook/musicgen-small config.json 'model*.safetensors*' "
                        "preprocessor_config.json processor_config.json tokenizer.json sentencepiece.bpe.model "
                        "spiece.model")
    assert lines[3:7] == [
        "  - OpenMuQ/MuQ-MuLan-large (MuQ-MuLan towers): missing model.safetensors or pytorch_model.bin",
        "      hf download OpenMuQ/MuQ-MuLan-large model.safetensors pytorch_model.bin",
        "  - xlm-roberta-base (XLM-R config and tokenizer (of the towers)): missing tokenizer.json or "
        "sentencepiece.bpe.model or spiece.model",
        "      hf download xlm-roberta-base tokenizer.json sentencepiece.bpe.model spiece.model"]
    # a local folder is named as a folder, never as something to download from the hub
    assert lines[7] == (f"  - folder '{folder.resolve()}' (CMI-RM reward model, --eval-reward): missing "
                        "model.safetensors (folder holds: config.yaml)")
    assert f"hf download {folder}" not in str(err.value) and "hf download /" not in str(err.value)
    assert lines[-1].startswith("Fetch them on a machine with the hub (`cmirm download musicgen-small HaiwenXia/CMI-RM "
                                f"{folder.resolve()}` gets everything")
    assert "HF_HUB_OFFLINE=1 to run from it without network; --tiny runs offline" in lines[-1]
    assert len(lines) == 9


def test_a_missing_config_says_that_it_names_more_repos(cache):
    assert mn.check_available([None], [(None, "--reward")]) == []   # nothing named: nothing needed
    with pytest.raises(mn.ModelsUnavailableError) as err:
        mn.check_available([], [("HaiwenXia/CMI-RM", "--reward")])
    lines = str(err.value).splitlines()
    assert lines[1:4] == ["  - HaiwenXia/CMI-RM (CMI-RM reward model, --reward): missing config.yaml, "
                          "model.safetensors",
                          "      hf download HaiwenXia/CMI-RM config.yaml model.safetensors",
                          "  (the configs not available yet name further repos: `cmirm download` resolves them all)"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unreachable(cache, monkeypatch):
    """Online mode, with the hub at a closed port; the process's offline switch is undone afterwards."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    return constants


def test_an_unreachable_hub_is_asked_once_and_the_process_goes_offline(unreachable, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("a file was fetched"))
    start = time.monotonic()
    with pytest.raises(mn.ModelsUnavailableError) as err:
        mn.check_available(["musicgen-small"], [("HaiwenXia/CMI-RM", "--reward")])
    assert time.monotonic() - start < 10
    first = str(err.value).splitlines()[0]
    assert first == (f"2 model repo(s) this job needs are not available (the hub {unreachable.ENDPOINT} is unreachable "
                     "(ConnectError: [Errno 111] Connection refused)):")
    assert unreachable.HF_HUB_OFFLINE is True and os.environ["HF_HUB_OFFLINE"] == "1"


def test_with_everything_cached_an_unreachable_hub_only_logs_one_line(unreachable, cache, caplog):
    full_reward_cache(cache)
    statuses = mn.check_available([], [("HaiwenXia/CMI-RM", "--reward")])
    assert all(s.complete for s in statuses)
    assert [r.getMessage() for r in caplog.records] == [
        f"cmirm: the hub {unreachable.ENDPOINT} is unreachable (ConnectError: [Errno 111] Connection refused); every "
        "model is in the local cache, so the job runs offline (HF_HUB_OFFLINE=1)"]
    assert unreachable.HF_HUB_OFFLINE is True   # the loaders and Ray workers now read the cache only


def test_the_main_job_offline_fails_within_seconds_with_one_unreachable_line(tmp_path):
    """The README's first command on a machine without the hub: one error, no retries, nothing written."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    start = time.monotonic()
    cmirm = str(Path(sys.executable).parent / "cmirm")
    proc = subprocess.run([cmirm, "generate", "Upbeat pop with bright piano", "-n", "8", "-k", "2", "--generator",
                           "musicgen-small", "--reward", "HaiwenXia/CMI-RM", "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: 2 model repo(s) this job needs are not available (the hub http://127.0.0.1:")
    assert [line for line in proc.stderr.splitlines() if "unreachable" in line] == [proc.stderr.splitlines()[0]]
    assert "Retry" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    assert elapsed < 30, elapsed   # five retries per file took a minute


class FakeHub:
    """The hub as huggingface_hub's functions see it: `HUB`'s repos, with a card licence each."""

    def __init__(self, cache: Path, licences: dict[str, str] | None = None) -> None:
        self.cache = cache
        self.licences = licences or {}
        self.snapshots: list[tuple[str, list[str]]] = []
        self.fetched: list[tuple[str, str]] = []

    def model_info(self, repo, files_metadata=False, **_):
        from huggingface_hub.errors import RepositoryNotFoundError

        if repo not in HUB:
            response = SimpleNamespace(headers={}, status_code=404, request=None)
            raise RepositoryNotFoundError(f"404: {repo}", response=response)
        return SimpleNamespace(siblings=[SimpleNamespace(rfilename=n, size=len(c)) for n, c in HUB[repo].items()],
                               card_data={"license": self.licences.get(repo, "cc-by-nc-4.0")}, gated=False)

    def hf_hub_download(self, repo, filename, cache_dir=None, **_):
        self.fetched.append((repo, filename))
        put(Path(cache_dir or self.cache), repo, {filename: HUB[repo][filename]})
        folder = Path(cache_dir or self.cache) / f"models--{repo.replace('/', '--')}"
        return str(folder / "snapshots" / COMMIT / filename)

    def snapshot_download(self, repo, allow_patterns=None, cache_dir=None, **_):
        self.snapshots.append((repo, list(allow_patterns)))
        put(Path(cache_dir or self.cache), repo, {n: HUB[repo][n] for n in allow_patterns})


@pytest.fixture
def hub(cache, monkeypatch) -> FakeHub:
    import huggingface_hub
    import huggingface_hub.constants as constants

    fake = FakeHub(cache, {"OpenMuQ/MuQ-MuLan-large": "other"})
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(mn, "probe_hub", lambda: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo, **kw: fake.model_info(repo, **kw))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake.hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    return fake


def test_on_a_reachable_hub_the_check_reads_configs_and_leaves_big_files_to_the_loaders(hub):
    statuses = mn.check_available(["musicgen-small"], [("HaiwenXia/CMI-RM", "--reward")])
    assert hub.fetched == [("HaiwenXia/CMI-RM", "config.yaml"), ("OpenMuQ/MuQ-MuLan-large", "config.json")]
    assert hub.snapshots == []
    assert statuses[0].on_hub == {"config.json": 2, "model.safetensors": 3000, "generation_config.json": 2,
                                  "preprocessor_config.json": 2, "tokenizer.json": 2, "tokenizer_config.json": 2,
                                  "special_tokens_map.json": 2}
    with pytest.raises(mn.ModelsUnavailableError, match=r"  - example/none \(CMI-RM reward model, --eval-reward\): "
                                                        r"not found on the hub \(or private"):
        mn.check_available([], [("example/none", "--eval-reward")])


def test_download_fetches_exactly_the_needed_files_and_cli_prints_state_size_and_licence(hub, cache):
    put(cache, "OpenMuQ/MuQ-large-msd-iter", without(MUQ, "model.safetensors"))   # already here: not fetched again
    result = CliRunner().invoke(app, ["download", "--all"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert hub.snapshots == [
        ("HaiwenXia/CMI-RM", ["model.safetensors"]),
        ("OpenMuQ/MuQ-MuLan-large", ["pytorch_model.bin"]),
        ("xlm-roberta-base", ["config.json", "tokenizer.json", "tokenizer_config.json"]),   # not its weights
        ("facebook/musicgen-small", ["config.json", "model.safetensors", "generation_config.json",
                                     "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
                                     "special_tokens_map.json"])]
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in result.output.splitlines() if line.startswith("│") and "│ repo" not in line}
    assert rows["HaiwenXia/CMI-RM"] == ["CMI-RM reward model", "present", "1.0 kB",
                                        "cc-by-nc-sa-4.0 (hub card: cc-by-nc-4.0)"]
    assert rows["OpenMuQ/MuQ-MuLan-large"][2:] == [f"{(len(MULAN_CONFIG) + 5000) / 1000:.1f} kB",
                                                   "cc-by-nc-4.0 (hub card: other)"]
    assert rows["facebook/musicgen-small"][1:] == ["present", "3.0 kB", "cc-by-nc-4.0"]
    assert rows["xlm-roberta-base"][3] == "mit (hub card: cc-by-nc-4.0)"
    assert "  licence: MusicGen weights, every size, stereo and melody: non-commercial" in result.output


def test_download_into_another_cache_and_its_refusals(hub, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants as constants

    other = tmp_path / "other-cache"
    result = CliRunner().invoke(app, ["download", "musicgen-small", "--cache-dir", str(other)])
    assert result.exit_code == 0, result.output
    assert (other / "models--facebook--musicgen-small" / "snapshots" / COMMIT / "model.safetensors").is_file()
    assert not (Path(constants.HF_HUB_CACHE) / "models--facebook--musicgen-small").exists()

    code, _, err = run_main(monkeypatch, capsys, "download")
    assert code == 2 and err.startswith("error: give generator names or scorer specs to download")
    code, _, err = run_main(monkeypatch, capsys, "download", "no/such-model")
    assert code == 2 and err.startswith("error: could not fetch no/such-model (not found on the hub")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code, out, err = run_main(monkeypatch, capsys, "download", "musicgen-small")
    assert code == 2 and out == ""
    assert err.splitlines() == [
        "error: cmirm download needs the hub, but HF_HUB_OFFLINE=1 is set; unset it (or run it on a machine with the "
        "hub and copy the hub cache)"]


def test_doctor_lists_the_models_in_the_cache_without_network(cache, monkeypatch):
    from cmirm_plugin.doctor import model_rows

    monkeypatch.setattr(mn, "probe_hub", lambda: pytest.fail("the hub was asked"))
    full_reward_cache(cache)
    put(cache, "facebook/musicgen-small", without(MUSICGEN, "tokenizer.json", "spiece.model"))
    rows = model_rows()
    assert rows["HaiwenXia/CMI-RM"] == "present, 1.0 kB"
    assert rows["OpenMuQ/MuQ-MuLan-large (HaiwenXia/CMI-RM)"] == f"present, {(len(MULAN_CONFIG) + 5000) / 1000:.1f} kB"
    assert rows["facebook/musicgen-small (musicgen-small)"].startswith(
        "missing tokenizer.json or sentencepiece.bpe.model or spiece.model, ")
    assert rows["facebook/musicgen-small (musicgen-small)"].endswith(
        ": hf download facebook/musicgen-small tokenizer.json sentencepiece.bpe.model spiece.model")
    assert rows["stabilityai/stable-audio-open-1.0 (stable-audio-open)"] == \
        "not downloaded (cmirm download stable-audio-open)"
    assert len(rows) == 4 + 11   # the reward model's four repos, one per released generator checkpoint


@pytest.mark.parametrize("command, option", [
    ("score {wav} --text pop --reward HaiwenXia/CMI-RM", "--reward"),
    ("score --jsonl {rows} --reward HaiwenXia/CMI-RM", "--reward"),
    ("generate pop -n 2 -k 1 --tiny --reward HaiwenXia/CMI-RM --out {out}", "--reward"),
    ("scaling --prompts {prompts} --n-max 2 --tiny --eval-reward HaiwenXia/CMI-RM --out {out}", "--eval-reward"),
    ("bench --out {out} --dataset-jsonl {rows} --model HaiwenXia/CMI-RM", "--model"),
    ("pseudo-label --pairs {rows} --out {out}/p.jsonl --judge reward --judge-model HaiwenXia/CMI-RM", "--judge-model"),
    ("train --pairs {rows} --out {out} --init HaiwenXia/CMI-RM", "--init"),
])
def test_every_command_that_loads_a_model_checks_it_before_any_work(cache, tmp_path, monkeypatch, capsys, command,
                                                                    option):
    import numpy as np
    import soundfile as sf

    sf.write(tmp_path / "a.wav", np.zeros(2400, dtype=np.float32), 24000)
    (tmp_path / "rows.jsonl").write_text('{"audio": "a.wav", "text": "pop"}\n')
    (tmp_path / "prompts.jsonl").write_text('{"text": "pop"}\n')
    out = tmp_path / "out"
    args = command.format(wav=tmp_path / "a.wav", rows=tmp_path / "rows.jsonl", prompts=tmp_path / "prompts.jsonl",
                          out=out).split()
    code, stdout, err = run_main(monkeypatch, capsys, *args)
    assert code == 2, err
    assert err.splitlines()[:2] == [
        "error: 1 model repo(s) this job needs are not available (HF_HUB_OFFLINE=1: only the local cache was "
        "searched):",
        f"  - HaiwenXia/CMI-RM (CMI-RM reward model, {option}): missing config.yaml, model.safetensors"]
    assert not out.exists() and not (tmp_path / "rows.scores.jsonl").exists()   # nothing generated or written


@pytest.mark.parametrize("extra, towers", [((), "OpenMuQ/MuQ-MuLan-large"), (("--towers", "me/my-mulan"), "me/my-mulan")])
def test_training_a_fresh_model_checks_its_towers_before_any_work(cache, tmp_path, monkeypatch, capsys, extra, towers):
    import train.trainer

    monkeypatch.setattr(train.trainer, "train_reward_model", lambda *a, **k: pytest.fail("training started"))
    (tmp_path / "pairs.jsonl").write_text("{}\n")
    code, _, err = run_main(monkeypatch, capsys, "train", "--pairs", str(tmp_path / "pairs.jsonl"),
                            "--out", str(tmp_path / "out"), *extra)
    assert code == 2, err
    assert err.splitlines()[1] == f"  - {towers} (MuQ-MuLan towers): missing config.json, model.safetensors or " \
                                  "pytorch_model.bin"
    assert not (tmp_path / "out").exists()


def test_an_audiocraft_generator_is_checked_for_its_two_checkpoints(cache):
    put(cache, "facebook/magnet-small-10secs", {"state_dict.bin": b"x"})
    with pytest.raises(mn.ModelsUnavailableError) as err:
        mn.check_available(["audiocraft:facebook/magnet-small-10secs"])
    assert str(err.value).splitlines()[1:3] == [
        "  - facebook/magnet-small-10secs (generator audiocraft:facebook/magnet-small-10secs): missing "
        "compression_state_dict.bin",
        "      hf download facebook/magnet-small-10secs compression_state_dict.bin"]
    put(cache, "facebook/magnet-small-10secs", {"compression_state_dict.bin": b"y"})
    assert [s.complete for s in mn.check_available(["audiocraft:facebook/magnet-small-10secs"])] == [True]
