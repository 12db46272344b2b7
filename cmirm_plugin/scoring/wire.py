"""The reward server's wire format: clips, instructions and scores as JSON (the one home of it).

`cmirm serve` (``rerank.serve``) decodes what `HttpScorer` (``cmirm_plugin.scoring.http_client``)
encodes, with the functions of this module, so the two can never disagree.

``POST /score`` takes one item, or ``{"items": [item, ...]}``. An item is::

    {"audio": AUDIO, "text": "calm piano" | null, "lyrics": "..." | null, "ref_audio": AUDIO | null}

and ``AUDIO`` is one of

* ``{"file": BASE64}``: the bytes of an audio file (WAV, FLAC, OGG or MP3), decoded by the server;
* ``{"pcm": BASE64, "sample_rate": 44100, "channels": 1}``: raw float32 little-endian samples,
  interleaved frame by frame (``channels`` defaults to 1);
* ``{"path": "take1.wav"}``: a file on the server, only when the server was started with
  ``--allow-dir DIR``, resolved inside DIR (relative to it; symlinks followed; nothing outside it).

The answer is ``{"model": LABEL, "axes": [...], "scores": [[...], ...], "batch_sizes": [...]}``: one
score row per item in request order, and the size of the model batch that scored each item. A
refused request gets ``{"error": MESSAGE, "field": FIELD | null}`` with the statuses of
`WireError`. ``GET /info`` answers `ServerInfo`; ``GET /health`` answers ``{"status": "ok"}``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from cmirm_plugin.errors import AudioError, CmirmError
from cmirm_plugin.records import Instruction

if TYPE_CHECKING:   # the codecs import numpy, torch and soundfile when used: the CLI imports this module
    import numpy as np

    from cmirm_plugin.audio import Audio, AudioLike

#: The environment variable holding the bearer token, read by the server and by the client.
TOKEN_ENV = "CMIRM_SERVE_TOKEN"
#: The fields of an item and of an audio object.
ITEM_FIELDS = ("audio", "text", "lyrics", "ref_audio")
AUDIO_FORMS = ("file", "pcm", "path")

# Statuses of refused requests (the README's table).
BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, TOO_LARGE, UNSCORABLE = 400, 401, 403, 413, 422


class WireError(CmirmError):
    """A request the server refuses: an HTTP ``status`` and the ``field`` at fault (None: the whole body).

    400 malformed (not JSON, a missing or mistyped field, bad base64, undecodable audio), 401 no or
    a wrong token, 403 a server path that is not allowed, 413 a body or a clip over the limits,
    422 a clip the scorer cannot score (e.g. too short).
    """

    def __init__(self, status: int, field: str | None, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.status = status
        self.field = field

    def payload(self) -> dict[str, Any]:
        return {"error": str(self), "field": self.field}


@dataclass(frozen=True)
class WireLimits:
    """What the server accepts: ``max_audio_s`` seconds per clip (and reference), and server-side
    paths only inside ``allow_dir`` (None: no paths at all)."""

    max_audio_s: float = 600.0
    allow_dir: Path | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.max_audio_s, (int, float)) and math.isfinite(self.max_audio_s) and self.max_audio_s > 0):
            raise CmirmError(f"max_audio_s must be a number of seconds > 0, got {self.max_audio_s!r}")
        if self.allow_dir is not None:
            root = Path(self.allow_dir).expanduser().resolve()
            if not root.is_dir():
                raise CmirmError(f"--allow-dir '{self.allow_dir}' is not a directory")
            object.__setattr__(self, "allow_dir", root)


@dataclass(frozen=True)
class WireItem:
    """One decoded item: the clip and its instruction."""

    audio: Audio
    instruction: Instruction


# ----------------------------------------------------------------------------------------------
# Encoding (the client)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_audio(clip: AudioLike, sample_rate: int | None = None) -> dict[str, Any]:
    """``clip`` as an AUDIO object: a path or encoded bytes travel as the file itself (the server
    decodes them exactly as a local scorer would); waveforms (`Audio`, arrays, tensors on any device,
    with ``sample_rate``) as float32 PCM."""
    if isinstance(clip, (str, Path)):
        path = Path(clip)
        if not path.is_file():
            raise AudioError(f"'{path}': file not found")
        return {"file": _b64(path.read_bytes())}
    if isinstance(clip, (bytes, bytearray)):
        return {"file": _b64(bytes(clip))}
    from cmirm_plugin.audio import Audio

    audio = Audio.coerce(clip, sample_rate)
    frames = audio.waveform.T.contiguous().numpy().astype("<f4", copy=False)
    return {"pcm": _b64(frames.tobytes()), "sample_rate": audio.sample_rate, "channels": audio.num_channels}


def encode_item(clip: AudioLike, instruction: Instruction, sample_rate: int | None = None) -> dict[str, Any]:
    """One item: the clip and its instruction (a reference path is sent as its file)."""
    ref = instruction.ref_audio
    return {"audio": encode_audio(clip, sample_rate), "text": instruction.text, "lyrics": instruction.lyrics,
            "ref_audio": None if ref is None else encode_audio(ref)}


def encode_request(audios: Any, instructions: Instruction | Sequence[Instruction],
                   sample_rate: int | None = None) -> dict[str, Any]:
    """The body of ``POST /score`` for the clips and instructions of a ``score_batch`` call."""
    from cmirm_plugin.scoring.contract import as_clips, as_instructions

    clips = as_clips(audios)
    insts = as_instructions(instructions, len(clips))
    return {"items": [encode_item(c, i, sample_rate) for c, i in zip(clips, insts)]}


# ----------------------------------------------------------------------------------------------
# Decoding (the server)


def parse_json(body: bytes) -> Any:
    """The JSON value of a request body, or a 400 `WireError`."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(BAD_REQUEST, None, f"the request body is not valid JSON ({exc})") from None


def _object(value: Any, name: str, fields: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise WireError(BAD_REQUEST, name, f"expected a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise WireError(BAD_REQUEST, f"{name}.{unknown[0]}", f"unknown field; expected {', '.join(fields)}")
    return value


def _text(value: Any, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise WireError(BAD_REQUEST, name, f"expected a string or null, got {type(value).__name__}")
    return value


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WireError(BAD_REQUEST, name, f"expected a positive integer, got {value!r}")
    return value


def _bytes(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise WireError(BAD_REQUEST, name, f"expected a base64 string, got {type(value).__name__}")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WireError(BAD_REQUEST, name, f"not valid base64 ({exc})") from None
    if not data:
        raise WireError(BAD_REQUEST, name, "no audio bytes")
    return data


def _check_duration(frames: int, sample_rate: int, name: str, limits: WireLimits) -> None:
    seconds = frames / sample_rate
    if seconds > limits.max_audio_s:
        raise WireError(TOO_LARGE, name, f"audio is {seconds:.1f} s long; the limit is {limits.max_audio_s:g} s "
                                         "(the server's --max-audio-s)")


def _audio_error(exc: AudioError, name: str) -> WireError:
    """A 400 naming ``name`` for an `AudioError` raised on the clip named ``name`` (its quoted name dropped)."""
    message, prefix = str(exc), f"'{name}': "
    return WireError(BAD_REQUEST, name, message[len(prefix):] if message.startswith(prefix) else message)


def _decode_file(data: bytes | Path, name: str, limits: WireLimits) -> Audio:
    """An encoded audio file (bytes, or an allowed server path), its length checked before decoding."""
    import soundfile as sf

    from cmirm_plugin.audio import Audio

    try:
        info = sf.info(io.BytesIO(data) if isinstance(data, bytes) else str(data))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise WireError(BAD_REQUEST, name, f"not a readable audio file ({exc})") from None
    _check_duration(info.frames, info.samplerate, name, limits)
    try:
        return Audio.from_bytes(data if isinstance(data, bytes) else data.read_bytes(), name)
    except AudioError as exc:
        raise _audio_error(exc, name) from None


def _decode_pcm(value: Mapping[str, Any], name: str, limits: WireLimits) -> Audio:
    import numpy as np
    import torch

    from cmirm_plugin.audio import Audio

    if "sample_rate" not in value:
        raise WireError(BAD_REQUEST, f"{name}.sample_rate", "missing; raw pcm needs its sample rate")
    rate = _positive_int(value["sample_rate"], f"{name}.sample_rate")
    channels = _positive_int(value.get("channels", 1), f"{name}.channels")
    data = _bytes(value["pcm"], f"{name}.pcm")
    frame = 4 * channels
    if len(data) % frame:
        raise WireError(BAD_REQUEST, f"{name}.pcm", f"{len(data)} bytes is not a whole number of float32 frames "
                                                    f"of {channels} channel(s)")
    _check_duration(len(data) // frame, rate, name, limits)
    samples = np.frombuffer(data, dtype="<f4").reshape(-1, channels).T.astype(np.float32)
    try:
        return Audio(torch.from_numpy(np.ascontiguousarray(samples)), rate, source=f"{name}.pcm")
    except AudioError as exc:
        raise _audio_error(exc, f"{name}.pcm") from None


def resolve_allowed(value: Any, name: str, limits: WireLimits) -> Path:
    """The file a ``{"path": ...}`` names inside ``limits.allow_dir`` (symlinks resolved), or a `WireError`.

    Relative paths are taken from the allowed directory; a path that leaves it (``..``, an absolute
    path elsewhere, a symlink pointing out) is refused with 403, and the message repeats only what
    the client sent.
    """
    if limits.allow_dir is None:
        raise WireError(FORBIDDEN, name, "server-side paths are disabled; send the audio as 'file' or 'pcm' "
                                         "(or start the server with --allow-dir DIR)")
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise WireError(BAD_REQUEST, name, f"expected a non-empty path string, got {value!r}")
    resolved = (limits.allow_dir / value).resolve()
    if not resolved.is_relative_to(limits.allow_dir):
        raise WireError(FORBIDDEN, name, f"'{value}' is outside the directory the server allows (--allow-dir)")
    if not resolved.is_file():
        raise WireError(BAD_REQUEST, name, f"'{value}': no such file in the allowed directory")
    return resolved


def decode_audio(value: Any, name: str, limits: WireLimits) -> Audio:
    """An AUDIO object as `Audio` (see the module docstring), checked against ``limits``."""
    value = _object(value, name, (*AUDIO_FORMS, "sample_rate", "channels"))
    forms = [form for form in AUDIO_FORMS if form in value]
    if len(forms) != 1:
        raise WireError(BAD_REQUEST, name, f"give exactly one of {', '.join(AUDIO_FORMS)}, got "
                                           f"{', '.join(forms) or 'none'}")
    form = forms[0]
    if form != "pcm" and ("sample_rate" in value or "channels" in value):
        raise WireError(BAD_REQUEST, name, f"sample_rate and channels go with 'pcm' only; a {form} carries its own")
    if form == "pcm":
        return _decode_pcm(value, name, limits)
    if form == "file":
        return _decode_file(_bytes(value["file"], f"{name}.file"), f"{name}.file", limits)
    return _decode_file(resolve_allowed(value["path"], f"{name}.path", limits), f"{name}.path", limits)


def decode_item(value: Any, name: str, limits: WireLimits) -> WireItem:
    """One item (see the module docstring) as a clip and its `Instruction`."""
    value = _object(value, name, ITEM_FIELDS)
    if value.get("audio") is None:
        raise WireError(BAD_REQUEST, f"{name}.audio", "missing; every item needs its audio")
    audio = decode_audio(value["audio"], f"{name}.audio", limits)
    ref = value.get("ref_audio")
    inst = Instruction(text=_text(value.get("text"), f"{name}.text"), lyrics=_text(value.get("lyrics"), f"{name}.lyrics"),
                       ref_audio=None if ref is None else decode_audio(ref, f"{name}.ref_audio", limits))
    return WireItem(audio, inst)


def decode_request(payload: Any, limits: WireLimits) -> list[WireItem]:
    """The items of a ``POST /score`` body (one item, or ``{"items": [...]}``), each checked; `WireError`
    names the first field at fault."""
    if isinstance(payload, dict) and "items" in payload:
        _object(payload, "body", ("items",))
        items = payload["items"]
        if not isinstance(items, list) or not items:
            raise WireError(BAD_REQUEST, "items", "expected a non-empty list of items")
        return [decode_item(item, f"items[{i}]", limits) for i, item in enumerate(items)]
    if isinstance(payload, dict) and "audio" in payload:
        return [decode_item(payload, "items[0]", limits)]
    raise WireError(BAD_REQUEST, "items", "missing; send {\"items\": [{\"audio\": ..., \"text\": ...}]} or one item")


# ----------------------------------------------------------------------------------------------
# Scores and server information


def encode_scores(model: str, axes: Sequence[str], rows: np.ndarray, batch_sizes: Sequence[int]) -> dict[str, Any]:
    """The answer to ``POST /score`` (float32 scores survive JSON exactly: each is a float64 value)."""
    import numpy as np

    return {"model": model, "axes": list(axes), "scores": np.asarray(rows, dtype=np.float64).tolist(),
            "batch_sizes": [int(b) for b in batch_sizes]}


def decode_scores(payload: Any, n: int, axes: Sequence[str], source: str = "reward server") -> np.ndarray:
    """The ``[n, len(axes)]`` float32 scores of an answer, or a `CmirmError` naming ``source``."""
    import numpy as np

    if not isinstance(payload, dict) or not isinstance(payload.get("scores"), list):
        raise CmirmError(f"{source}: the answer has no 'scores' list")
    if list(payload.get("axes", [])) != list(axes):
        raise CmirmError(f"{source}: answered axes {payload.get('axes')}, expected {list(axes)} (did the server "
                         "change models?)")
    try:
        rows = np.asarray(payload["scores"], dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise CmirmError(f"{source}: scores are not numbers ({exc})") from None
    if rows.shape != (n, len(axes)):
        raise CmirmError(f"{source}: answered scores of shape {list(rows.shape)} for {n} clips")
    return rows


@dataclass(frozen=True)
class ServerInfo:
    """The answer to ``GET /info``: what scores (``model`` label, ``axes``, ``sample_rate``), how
    (``settings`` that change scores, ``device``), the ``limits`` and ``batching`` options, and
    ``stats`` of the replica that answered (requests, items, seconds spent scoring, and how many
    batches of each size it formed)."""

    model: str
    axes: tuple[str, ...]
    sample_rate: int
    settings: dict[str, Any] = field(default_factory=dict)
    device: str = ""
    limits: dict[str, Any] = field(default_factory=dict)
    batching: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "axes": list(self.axes)}

    @classmethod
    def from_dict(cls, data: Any, source: str = "reward server") -> "ServerInfo":
        if not isinstance(data, dict):
            raise CmirmError(f"{source}: /info did not answer a JSON object")
        axes, rate = data.get("axes"), data.get("sample_rate")
        if not isinstance(axes, list) or not axes or not all(isinstance(a, str) and a for a in axes):
            raise CmirmError(f"{source}: /info has no valid 'axes', got {axes!r}")
        if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
            raise CmirmError(f"{source}: /info has no valid 'sample_rate', got {rate!r}")
        known = {f: data[f] for f in ("settings", "device", "limits", "batching", "stats") if f in data}
        return cls(str(data.get("model", "")), tuple(axes), rate, **known)
