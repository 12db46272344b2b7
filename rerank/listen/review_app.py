"""``cmirm review``: blind A/B listening in the browser; every vote becomes a CMI-Pref pair.

`ReviewSession` is the app without its page: the run (`load_listen_run`), the pair order
(`plan_pairs`), the votes file (`VoteLog`). It gives each reviewer the first pair of the order
they have not voted on (so a restart, or a second reviewer, continues where the file says),
records votes, and says how often the reward model agreed with the votes so far. `build_app` puts
a Gradio page on it: the instruction (text, lyrics, reference clip), clips A and B with no scores
or ranks, two questions (which follows the instruction better, which is more musical: A / B /
both / neither, each with a 1-5 confidence), Submit and Skip. Reviewers share one order, so
their votes overlap and `cmirm votes` can measure how often they agree.

Gradio is the optional extra ``[ui]``; it is imported only by `build_app` and `serve`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from cmirm_plugin.errors import ConfigError
from rerank.listen.pairs import Pair, plan_pairs
from rerank.listen.run_view import ListenRun, load_listen_run
from rerank.listen.votes import (
    ALL,
    AXIS_FIELDS,
    CHOICES,
    CONFIDENCES,
    PairUnavailable,
    VoteLog,
    VoteRefused,
    agreement_line,
    model_agreement,
    vote_row,
    voted_pairs,
)

#: The questions, in AXIS_FIELDS order.
QUESTIONS = {"alignment": "Which clip follows the instruction better?", "musicality": "Which clip is more musical?"}
DEFAULT_CONFIDENCE = 3


@dataclass
class ReviewSession:
    """A run opened for voting (see the module docstring)."""

    run: ListenRun
    pairs: list[Pair]
    log: VoteLog = field(init=False)

    def __post_init__(self) -> None:
        self.log = VoteLog(self.run.root)
        self.log.rows()   # a damaged votes file is reported before the app starts

    @classmethod
    def open(cls, run_dir: str | Path, mode: str = "random", seed: int | None = None,
             scorer: str | None = None) -> "ReviewSession":
        run = load_listen_run(run_dir, scorer)
        pairs = plan_pairs(run, mode, seed)
        if not pairs:
            raise ConfigError(f"{run.root}: nothing to compare: no instruction has two candidates with audio")
        return cls(run, pairs)

    def next_pair(self, voter: str, skipped: Sequence[Sequence[str]] = ()) -> Pair | None:
        """The first pair ``voter`` has not voted on or skipped and whose two clips are on disk (None: all done)."""
        done = voted_pairs(self.log.rows(), voter) | {tuple(key) for key in skipped}
        for pair in self.pairs:
            if pair.key not in done and self.run.candidate(pair.a).playable and self.run.candidate(pair.b).playable:
                return pair
        return None

    def vote(self, pair: Pair, answers: dict[str, tuple[str | None, int | None]], voter: str) -> dict[str, Any]:
        """Record a vote (`vote_row` checks it; `VoteRefused` when it cannot be recorded) and return its row."""
        row = vote_row(self.run, pair, answers, voter)
        if pair.key in voted_pairs(self.log.rows(), voter):
            raise PairUnavailable(f"you ({voter.strip()}) have already voted on this pair")
        self.log.append(row)
        return row

    def status(self, voter: str) -> str:
        """Votes so far (all reviewers, and ``voter``'s) and the reward model's agreement with them, per axis."""
        rows, voter = self.log.rows(), voter.strip()
        mine = f" ({sum(row.get('voter') == voter for row in rows)} by {voter})" if voter else ""
        table = model_agreement(rows, self.run).get(ALL, {})
        agreement = agreement_line(table) if rows else ""
        return f"**{len(rows)}** vote(s) so far in `{self.log.path.name}`{mine}. {agreement}".rstrip()


# ------------------------------------------------------------------------------------------------ the page


def _pair_state(pair: Pair | None, skipped: list[list[str]]) -> dict[str, Any]:
    return {"pair": [pair.instruction_id, pair.a, pair.b] if pair else None, "skipped": skipped}


def build_app(session: ReviewSession, voter: str = "") -> Any:
    """The Gradio page of ``session`` (a ``gradio.Blocks``)."""
    import gradio as gr

    run = session.run
    n_fields = 5 + 2 * len(AXIS_FIELDS)   # instruction, lyrics, reference, A, B, then the answers

    def unchanged() -> list[Any]:
        return [gr.skip() for _ in range(n_fields)]   # fresh ones: Gradio consumes the updates it is given

    def show(voter: str, state: dict[str, Any], message: str) -> tuple[Any, ...]:
        pair = session.next_pair(voter, state["skipped"])
        same = pair is not None and state["pair"] == _pair_state(pair, [])["pair"]
        state = _pair_state(pair, state["skipped"])
        status = session.status(voter)
        if same:   # e.g. the voter id was edited: keep the clips and the answers given so far
            return (*unchanged(), status, message, state)
        reset = [gr.update(value=value) for _ in AXIS_FIELDS for value in (None, DEFAULT_CONFIDENCE)]
        if pair is None:
            done = "No pairs left for you in this run: thank you!" if voter.strip() else ""
            return (gr.update(value=""), gr.update(value="", visible=False), gr.update(value=None, visible=False),
                    gr.update(value=None), gr.update(value=None), *reset, status,
                    "\n\n".join(filter(None, (message, done))), state)
        a, b = run.candidate(pair.a), run.candidate(pair.b)
        instruction = a.instruction
        ref = instruction.to_dict()["ref_audio"]
        ref_ok = bool(ref) and Path(ref).is_file()
        return (gr.update(value=instruction.text or "(no text)"),
                gr.update(value=instruction.lyrics or "", visible=bool(instruction.lyrics)),
                gr.update(value=ref if ref_ok else None, visible=ref_ok),
                gr.update(value=str(a.audio)), gr.update(value=str(b.audio)), *reset, status, message, state)

    def start(voter: str, state: dict[str, Any]) -> tuple[Any, ...]:
        return show(voter, state, "" if voter.strip() else "Enter your name (voter id), then listen and vote.")

    def submit(voter: str, state: dict[str, Any], *answers: Any) -> tuple[Any, ...]:
        if state["pair"] is None:
            return show(voter, state, "No pair to vote on.")
        pair = Pair(*state["pair"])
        given = {axis: (answers[2 * i], answers[2 * i + 1]) for i, axis in enumerate(AXIS_FIELDS)}
        try:
            session.vote(pair, given, voter)
        except PairUnavailable as exc:
            return show(voter, {**state, "skipped": state["skipped"] + [list(pair.key)]}, f"Vote refused: {exc}")
        except VoteRefused as exc:
            return (*unchanged(), session.status(voter), f"Not recorded: {exc}", state)
        return show(voter, state, "Vote recorded.")

    def skip(voter: str, state: dict[str, Any]) -> tuple[Any, ...]:
        if state["pair"] is None:
            return show(voter, state, "")
        key = list(Pair(*state["pair"]).key)
        return show(voter, {**state, "skipped": state["skipped"] + [key]}, "Pair skipped.")

    with gr.Blocks(title=f"cmirm review · {run.root.resolve().name}", analytics_enabled=False) as app:
        gr.Markdown(f"## Blind A/B listening · run `{run.root.resolve().name}`\nListen to both clips, answer both "
                    "questions, submit. Scores and ranks are hidden; A and B are in random order.")
        status = gr.Markdown(elem_id="status")
        voter_box = gr.Textbox(label="Your name (voter id)", value=voter, max_lines=1, elem_id="voter")
        text = gr.Textbox(label="Instruction", interactive=False, elem_id="instruction")
        lyrics = gr.Textbox(label="Lyrics", interactive=False, visible=False, lines=4, elem_id="lyrics")
        player = dict(type="filepath", interactive=False, buttons=[])   # no download link naming the file
        ref = gr.Audio(label="Reference clip", visible=False, elem_id="reference", **player)
        with gr.Row():
            clip_a = gr.Audio(label="A", elem_id="clip-a", **player)
            clip_b = gr.Audio(label="B", elem_id="clip-b", **player)
        answers = []
        for axis, question in QUESTIONS.items():
            with gr.Row():
                answers.append(gr.Radio(list(CHOICES), label=question, elem_id=f"{axis}-choice", scale=2))
                answers.append(gr.Radio(list(CONFIDENCES), value=DEFAULT_CONFIDENCE, label="Confidence (1-5)",
                                        elem_id=f"{axis}-confidence", scale=1))
        with gr.Row():
            submit_button = gr.Button("Submit vote", variant="primary", elem_id="submit")
            skip_button = gr.Button("Skip pair", elem_id="skip")
        message = gr.Markdown(elem_id="message")
        state = gr.State(_pair_state(None, []))
        outputs = [text, lyrics, ref, clip_a, clip_b, *answers, status, message, state]
        app.load(start, [voter_box, state], outputs)
        submit_button.click(submit, [voter_box, state, *answers], outputs)
        skip_button.click(skip, [voter_box, state], outputs)
        for event in (voter_box.submit, voter_box.blur):   # the next pair depends on who votes
            event(start, [voter_box, state], outputs, show_progress="hidden")
    return app


def _served_paths(run: ListenRun) -> list[str]:
    """What the page may serve: the run directory and the reference clips (nothing else)."""
    refs = {c.instruction.to_dict()["ref_audio"] for c in run.candidates} - {None}
    return [str(run.root.resolve()), *sorted(str(Path(r).resolve()) for r in refs)]


def serve(session: ReviewSession, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
          voter: str = "", on_start: Callable[[str], None] | None = None) -> None:
    """Run the app until interrupted (``share``: also Gradio's public link); ``on_start`` gets its URL."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = build_app(session, voter)
    app.queue()
    _, url, share_url = app.launch(server_name=host, server_port=port, share=share, ssr_mode=False,
                                   allowed_paths=_served_paths(session.run), prevent_thread_lock=True, quiet=True)
    if on_start is not None:
        on_start(share_url or url)
    app.block_thread()
