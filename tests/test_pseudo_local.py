"""The local audio-language-model judge on a tiny random Qwen2-Audio built offline (tokenizer trained
here, Whisper feature-extractor config, processor saved and reloaded like a hub checkpoint): the chat
prompt in both orders, the clips' order, garbage answers recorded as errors, the parser on the judge's
answers, and the thinker of full Qwen2.5-Omni / Qwen3-Omni checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cmirm_plugin.errors import ConfigError
from cmirm_plugin.manifest import read_records
from cmirm_plugin.records import Instruction
from cmirm_plugin.testing import sine
from train.pseudo.judges.base import PairView
from train.pseudo.judges.local import LocalAudioLLMJudge, load_model
from train.pseudo.judges.tiny import build_tiny_audio_llm
from train.pseudo.pairs import load_unlabeled_pairs
from train.pseudo.prompt import build_prompt
from train.pseudo.runner import judgments_path, pseudo_label

BOTH = ["alignment", "musicality"]


@pytest.fixture(scope="module")
def judge(tmp_path_factory) -> LocalAudioLLMJudge:
    folder = build_tiny_audio_llm(tmp_path_factory.mktemp("tiny-llm") / "qwen2-audio")
    return LocalAudioLLMJudge.from_pretrained(folder, device="cpu", name="tiny", max_new_tokens=6)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Clips of distinct lengths (0.2 / 0.3 / 0.5 s at 24 kHz) so their order can be told at 16 kHz."""
    root = tmp_path_factory.mktemp("clips")
    return {name: sine(freq, seconds).save(root / f"{name}.wav")
            for name, freq, seconds in (("ref", 330.0, 0.2), ("a", 440.0, 0.3), ("b", 220.0, 0.5))}


class Recorder:
    """Wraps the processor to see the text and the clips the model is given."""

    def __init__(self, processor) -> None:
        self.processor = processor
        self.calls: list[dict] = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.processor(**kwargs)

    def __getattr__(self, name):
        return getattr(self.processor, name)


def test_chat_prompt_and_clip_order_in_both_orders(judge, clips, monkeypatch):
    inst = Instruction(text="a calm piano piece", lyrics="la la", ref_audio=str(clips["ref"]))
    recorder = Recorder(judge.processor)
    monkeypatch.setattr(judge, "processor", recorder)
    judge.judge(PairView(inst, clips["a"], clips["b"]), BOTH)
    judge.judge(PairView(inst, clips["b"], clips["a"]), BOTH)
    ab, ba = recorder.calls
    assert [len(x) for x in ab["audio"]] == [3200, 4800, 8000]          # ref, A, B at 16 kHz
    assert [len(x) for x in ba["audio"]] == [3200, 8000, 4800]          # ref, B, A
    assert ab["sampling_rate"] == 16000
    text = ab["text"]
    assert text == ba["text"]                                           # the clips are the only difference
    audio = "<|audio_bos|><|AUDIO|><|audio_eos|>"
    assert text.startswith("<|im_start|>system\nYou are an expert music critic.")
    assert text.endswith("musicality: <A, B or tie><|im_end|>\n<|im_start|>assistant\n")
    assert text.index("Reference clip") < text.index(audio) < text.index("Clip A: ") < text.index("Clip B: ")
    assert text.count(audio) == 3
    between = text[text.index("Clip A: "):text.index("Clip B: ")]
    assert audio in between                                              # clip A's audio follows "Clip A:"
    assert "Description: a calm piano piece\nLyrics: la la\n" in text
    assert text == judge.render(build_prompt(PairView(inst, clips["a"], clips["b"]), BOTH))


def test_garbage_answers_are_recorded_errors(judge, clips, tmp_path, greedy_reply):
    rows = [{"audio-path": str(clips["a"]), "audio2": str(clips["b"]), "prompt": "piano", "lyrics": "",
             "ref-audio-path": ""},
            {"audio-path": str(clips["b"]), "audio2": str(clips["ref"]), "prompt": "rock", "lyrics": "",
             "ref-audio-path": str(clips["a"])}]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = pseudo_label(pairs, tmp_path / "out.jsonl", judge, progress=False)
    assert report.judged == 2 and report.rows_written == 0
    for stats in report.axis.values():
        assert stats.error_pairs == 2 and stats.verdicts["error"] == 4 and stats.judged == 0
    records = read_records(judgments_path(tmp_path / "out.jsonl"))
    assert [r["judge"] for r in records] == ["local:tiny:prompt-v1:sr=16000:max_dur=30:max_new_tokens=6"] * 2
    for record, pair in zip(records, load_unlabeled_pairs(pairs).pairs):
        assert record["pair_id"] == pair.id
        for order in ("ab", "ba"):
            answer = record["orders"][order]
            # The raw answer is exactly the generated continuation, without the prompt.
            assert answer["raw"] == greedy_reply(judge, build_prompt(pair.view(order), BOTH))
            assert "music critic" not in answer["raw"] and set(answer["errors"]) == set(BOTH)
            assert answer["verdicts"] == {"alignment": None, "musicality": None}


def test_the_judges_answers_go_through_the_strict_parser(judge, clips, monkeypatch):
    view = PairView(Instruction(text="piano"), clips["a"], clips["b"])
    monkeypatch.setattr(judge, "answer", lambda prompt: " Musicality: b\nalignment:TIE \n")
    reply = judge.judge(view, BOTH)
    assert {a: v.choice for a, v in reply.verdicts.items()} == {"alignment": "tie", "musicality": "second"}
    monkeypatch.setattr(judge, "answer", lambda prompt: "Clip A sounds better.")
    reply = judge.judge(view, BOTH)
    assert reply.raw == "Clip A sounds better." and all(v.error.startswith("unexpected") for v in reply.verdicts.values())


def test_generation_is_greedy_and_deterministic(judge, clips, greedy_reply):
    prompt = build_prompt(PairView(Instruction(text="piano"), clips["a"], clips["b"]), BOTH)
    expected = greedy_reply(judge, prompt)
    assert expected and judge.answer(prompt) == expected                 # what an argmax per token writes
    torch.manual_seed(1)
    first = judge.answer(prompt)
    torch.manual_seed(2)
    assert judge.answer(prompt) == first == expected                     # whatever the global RNG holds


def _tiny_omni(kind: str):
    """A full tiny omni checkpoint (thinker only; no talker), as the hub repos are laid out."""
    import transformers

    audio = dict(num_mel_bins=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, d_model=16,
                 max_source_positions=50, n_window=50, output_dim=16)
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}
    text = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, rope_parameters=rope)
    if kind == "qwen2_5_omni":
        thinker = dict(audio_config=audio, text_config=text, audio_token_index=3, image_token_index=10,
                       video_token_index=11, audio_start_token_id=4, audio_end_token_id=5,
                       vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2,
                                          out_hidden_size=16, fullatt_block_indexes=[0]))
        config = transformers.Qwen2_5OmniConfig(thinker_config=thinker, enable_audio_output=False)
        return transformers.Qwen2_5OmniForConditionalGeneration(config)
    thinker = dict(audio_config=dict(audio, downsample_hidden_size=8),
                   text_config=dict(text, moe_intermediate_size=8, num_experts=2, num_experts_per_tok=1, head_dim=8),
                   vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=16,
                                      deepstack_visual_indexes=[0], num_position_embeddings=16),
                   audio_token_id=3, image_token_id=10, video_token_id=11, audio_start_token_id=4)
    config = transformers.Qwen3OmniMoeConfig(thinker_config=thinker, enable_audio_output=False)
    return transformers.Qwen3OmniMoeForConditionalGeneration(config)


@pytest.mark.parametrize("kind, thinker_class", [("qwen2_5_omni", "Qwen2_5OmniThinkerForConditionalGeneration"),
                                                 ("qwen3_omni_moe", "Qwen3OmniMoeThinkerForConditionalGeneration")])
def test_omni_checkpoints_load_their_thinker(kind, thinker_class, tmp_path):
    full = _tiny_omni(kind)
    full.save_pretrained(str(tmp_path))
    thinker = load_model(tmp_path, device="cpu")
    assert type(thinker).__name__ == thinker_class and not thinker.training
    expected = full.thinker.state_dict()
    loaded = thinker.state_dict()
    assert loaded.keys() == expected.keys() and all(torch.equal(loaded[k], expected[k]) for k in loaded)


def test_unsupported_model_types_are_refused(tmp_path):
    import transformers

    transformers.Qwen2Config(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1).save_pretrained(str(tmp_path))
    with pytest.raises(ConfigError, match="model_type 'qwen2' is not a supported audio-language judge; supported: "
                                          "qwen2_audio, qwen2_5_omni"):
        load_model(tmp_path)
