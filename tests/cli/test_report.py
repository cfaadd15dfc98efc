"""`sia report`: the page's numbers equal the ledger's, and it renders offline in Chromium.

The workspace is a recorded scripted run (real ledger, real git, episodes, model calls,
agent costs, per-step training metrics) and a branch of it. The ledger is read back here
with plain SQL, independently of ``sia.report``, and compared with the JSON the page
embeds. Headless Chromium (Debian package ``chromium``) renders the page with name
resolution disabled, so a page that needed the network would show no plots.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

import sia.cli.report  # registers `sia report` on `cli`
from ledger import InMemoryRecorder, NewEvent
from sia.cli import cli
from sia.report import DATA_ELEMENT_ID, gather, render
from tests.support.report_run import EVAL_EPISODES, record_workspace

CHROMIUM_INSTALL = "apt-get install -y --no-install-recommends chromium"
PLOTS = ("scores", "decisions", "rewards", "training", "usage")


def sia(root: Path, *args: str):
    return CliRunner().invoke(cli, ["--workspace", str(root), *args])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The workspace, and the report of run ``r`` written at its default path."""
    ws = record_workspace(tmp_path_factory.mktemp("report") / "ws")
    out = sia(ws.root, "report", "r")
    assert out.exit_code == 0, out.output
    page = ws.root / "reports" / "r.html"
    assert out.output.strip().startswith(f"wrote {page} (5 iterations, 4 decisions")
    return ws, page


def embedded(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    found = re.search(
        rf'<script type="application/json" id="{DATA_ELEMENT_ID}">(.*?)</script>', text, re.S
    )
    assert found, "the page embeds no report data"
    return json.loads(found.group(1))


class Ledger:
    """The ledger read with plain SQL: the test's own view, not the report's."""

    def __init__(self, path: Path) -> None:
        self.con = duckdb.connect(str(path), read_only=True)

    def events(self, run_id: str, kind: str | None = None) -> list[tuple[int, str, dict]]:
        sql = "SELECT seq, type, payload FROM events WHERE run_id = ?"
        params = [run_id]
        if kind:
            sql += " AND type = ?"
            params.append(kind)
        rows = self.con.execute(sql + " ORDER BY seq", params).fetchall()
        return [(seq, type_, json.loads(payload)) for seq, type_, payload in rows]

    def all(self, sql: str, *params) -> list[tuple]:
        return self.con.execute(sql, list(params)).fetchall()


@pytest.fixture(scope="module")
def ledger(recorded):
    ws, _ = recorded
    led = Ledger(ws.ledger_path)
    yield led
    led.con.close()


def test_scores_and_verdicts_equal_the_ledger(recorded, ledger):
    data = embedded(recorded[1])
    evaluated = [p for _, _, p in ledger.events("r", "Evaluated")]
    val = {p["iteration"]: p["score"] for p in evaluated if p["split"] == "val"}
    test = [(p["iteration"], p["score"]) for p in evaluated if p["split"] == "test"]
    assert {row["iteration"]: row["val_score"] for row in data["iterations"]} == val
    assert [(t["iteration"], t["score"]) for t in data["tests"]] == test
    verdicts = {}
    for _, kind, p in ledger.events("r"):
        if kind in ("CandidateAccepted", "CandidateRejected", "CandidateAbandoned"):
            verdicts[p["iteration"]] = kind.removeprefix("Candidate").lower()
    assert {row["iteration"]: row["verdict"] for row in data["iterations"]} == verdicts
    assert "rejected" in verdicts.values() and "accepted" in verdicts.values()
    finished = ledger.events("r", "RunFinished")[0][2]
    assert data["run"]["best_val"] == finished["best_score"]
    assert data["run"]["test_score"] == finished["test_score"]


def test_decisions_equal_the_ledger(recorded, ledger):
    data = embedded(recorded[1])
    decisions = ledger.events("r", "DecisionMade")
    assert [
        (d["seq"], d["iteration"], d["lever"], d["algorithm"], d["rationale"])
        for d in data["decisions"]
    ] == [
        (seq, p["iteration"], p["lever"], p["algorithm"], p["rationale"]) for seq, _, p in decisions
    ]
    produced = {p["iteration"]: p["commit"] for _, _, p in ledger.events("r", "HarnessCommitted")}
    produced |= {p["iteration"]: p["tag"] for _, _, p in ledger.events("r", "AdapterTagged")}
    assert {d["iteration"]: d["produced"] for d in data["decisions"]} == {
        p["iteration"]: produced[p["iteration"]] for _, _, p in decisions
    }
    rejected = defaultdict(int)
    for _, _, p in ledger.events("r", "PatchRejected"):
        rejected[p["iteration"]] += 1
    assert {
        d["iteration"]: d["rejected_patches"] for d in data["decisions"] if d["rejected_patches"]
    } == dict(rejected)


def test_rewards_equal_the_recorded_episodes(recorded, ledger):
    data = embedded(recorded[1])
    rows = ledger.all(
        "SELECT iteration, count(*), list(reward ORDER BY episode_id), "
        "count(*) FILTER (WHERE status <> 'ok') FROM episodes "
        "WHERE run_id = 'r' AND purpose = 'rollout' GROUP BY iteration ORDER BY iteration"
    )
    assert rows and len(rows) == 4
    assert [(s["iteration"], s["episodes"], s["rewards"]) for s in data["rewards"]] == [
        (it, n, rewards) for it, n, rewards, _ in rows
    ]
    assert [s["episodes"] - s["statuses"].get("ok", 0) for s in data["rewards"]] == [
        failed for *_, failed in rows
    ]
    # Every eval episode is in the ledger too; the report plots rollouts only.
    (evals,) = ledger.all("SELECT count(*) FROM episodes WHERE run_id = 'r' AND purpose = 'eval'")
    assert evals[0] == EVAL_EPISODES * (len(data["iterations"]) + len(data["tests"]))


def test_tokens_and_cost_per_phase_equal_the_ledger(recorded, ledger):
    usage = {u["phase"]: u for u in embedded(recorded[1])["usage"]}
    policy = ledger.all(
        "SELECT e.purpose, count(*), sum(len(c.prompt_ids)), sum(len(c.completion_ids)) "
        "FROM calls c JOIN episodes e USING (run_id, iteration, episode_id) "
        "WHERE c.run_id = 'r' GROUP BY e.purpose"
    )
    (total,) = ledger.all("SELECT count(*) FROM calls WHERE run_id = 'r'")
    assert sum(n for _, n, _, _ in policy) == total[0] > 0  # every call has its episode
    phase_of = {"rollout": "ROLLOUT", "eval": "EVAL"}
    for purpose, n, prompt, completion in policy:
        u = usage[phase_of[purpose]]
        assert (u["policy_calls"], u["prompt_tokens"], u["completion_tokens"]) == (
            n,
            prompt,
            completion,
        )
    agents: dict[str, list] = defaultdict(lambda: [0, 0, 0, 0.0, 0])
    phase = None
    for _, kind, p in ledger.events("r"):
        if kind == "PhaseEntered":
            phase = p["phase"]
        elif kind == "AgentCalled":
            a = agents[phase]
            a[0] += 1
            a[1] += p["input_tokens"]
            a[2] += p["output_tokens"]
            a[3] += p["cost_usd"] or 0.0
            a[4] += p["cost_usd"] is None
    assert set(agents) == {"PLAN", "FEEDBACK"}
    for name, (calls, tokens_in, tokens_out, cost, unpriced) in agents.items():
        u = usage[name]
        assert (u["agent_calls"], u["agent_input_tokens"], u["agent_output_tokens"]) == (
            calls,
            tokens_in,
            tokens_out,
        )
        assert u["cost_usd"] == pytest.approx(cost) and u["unpriced_calls"] == unpriced


def test_training_curves_edits_and_tree_equal_the_ledger_and_git(recorded, ledger):
    ws, page = recorded
    data = embedded(page)
    tagged = ledger.events("r", "AdapterTagged")
    assert len(tagged) == 2
    assert [(c["tag"], c["loss"], c["grad_norm"], c["stats"]) for c in data["training"]] == [
        (
            p["tag"],
            p["manifest"]["metrics"]["loss"],
            p["manifest"]["metrics"]["grad_norm"],
            p["manifest"]["metrics"]["stats"],
        )
        for _, _, p in tagged
    ]
    commits = [p for _, _, p in ledger.events("r", "HarnessCommitted") if p["parent"]]
    assert [e["commit"] for e in data["edits"]] == [p["commit"] for p in commits]
    for edit, p in zip(data["edits"], commits, strict=True):
        git = ["git", "-C", str(ws.repo_path), "diff", p["parent"], p["commit"]]
        patch = subprocess.run(git, check=True, capture_output=True, text=True).stdout
        assert edit["patch"] == patch and "+Answer with digits only." in patch
    (branched,) = [p for _, _, p in ledger.events("r-b", "RunBranched")]
    (root,) = data["tree"]
    (child,) = root["branches"]
    assert (root["run_id"], child["run_id"]) == ("r", "r-b")
    assert (child["at_iteration"], child["parent_seq"]) == (
        branched["at_iteration"],
        branched["parent_seq"],
    )


def test_a_branch_report_starts_from_its_parent(recorded, tmp_path, ledger):
    ws, _ = recorded
    out = tmp_path / "nested" / "branch.html"
    result = sia(ws.root, "report", "r-b", "--out", str(out))
    assert result.exit_code == 0, result.output
    data = embedded(out)
    (branched,) = [p for _, _, p in ledger.events("r-b", "RunBranched")]
    assert data["run"]["parent_run"] == "r" and data["run"]["origin_val"] == branched["best_score"]
    assert [row["iteration"] for row in data["iterations"]] == [2, 3]
    assert [e["iteration"] for e in data["edits"]] == [2, 3]
    assert not list(out.parent.glob(".*.tmp"))  # the temporary file was renamed away


def test_unknown_run_is_one_line_and_writes_nothing(recorded, tmp_path):
    ws, _ = recorded
    out = tmp_path / "nope.html"
    result = sia(ws.root, "report", "nope", "--out", str(out))
    assert result.exit_code == 1
    assert result.output == "Error: no run named nope in this workspace\n"
    assert not out.exists() and not (ws.root / "reports" / "nope.html").exists()
    assert "Example:" in sia(ws.root, "report", "--help").output


def test_a_live_run_mid_iteration_is_reported_as_far_as_it_got(recorded):
    """The events up to iteration 2's TRAIN phase, as a reader of a live run sees them."""
    ws, _ = recorded
    with ws.reader() as rec:
        events = rec.read("r")
        episodes, calls = rec.read_episodes("r"), rec.read_calls("r")
    cut = next(e.seq for e in events if e.type == "PhaseEntered" and e.payload["phase"] == "TRAIN")
    live = InMemoryRecorder()
    for e in events[:cut]:
        live.append("r", [NewEvent(e.type, e.version, e.payload)], expected_seq=e.seq - 1, ts=e.ts)
    live.append_episodes(episodes)  # the bulk rows of later iterations are left out
    live.append_calls(calls)
    data = gather(live, ws.repo(), "r")
    assert data.run.status == "running" and data.run.phase == "TRAIN"
    assert [(r.iteration, r.verdict) for r in data.iterations] == [
        (0, "accepted"),
        (1, "accepted"),
        (2, "pending"),
    ]
    assert [s.iteration for s in data.rewards] == [1, 2] and data.training == [] and not data.tests
    page = render(data)
    assert 'id="plot-scores"' in page and "No adapter with per-step metrics." in page


def test_the_page_is_self_contained(recorded):
    text = recorded[1].read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\ssrc=", text), "a script is loaded from elsewhere"
    assert not re.search(r"<link[^>]*\shref=", text), "a stylesheet is loaded from elsewhere"
    assert text.count("Plotly.newPlot(") == len(PLOTS)


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(
            f"headless Chromium is needed to render the report; install it with: {CHROMIUM_INSTALL}"
        )
    return found


def test_the_page_renders_in_headless_chromium(recorded, tmp_path):
    _, page = recorded
    common = [
        _chromium(),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        # No name resolves: the page must draw from what it carries.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=5000",
    ]
    shot = tmp_path / "report.png"
    dump = subprocess.Popen(
        [
            *common,
            f"--user-data-dir={tmp_path / 'profile-dom'}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.as_uri(),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    snap = subprocess.Popen(
        [
            *common,
            f"--user-data-dir={tmp_path / 'profile-shot'}",
            "--window-size=1400,4000",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    dom, log = dump.communicate(timeout=60)
    assert snap.wait(timeout=60) == 0 and dump.returncode == 0, log[-2000:]
    # Headless Chromium logs every console message at INFO level, errors included, so
    # the page must log nothing at all.
    console = [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert console == [], console
    # Each plot drew its SVG inside its own div (before the next plot's div begins).
    starts = sorted((dom.index(f'id="plot-{name}"'), name) for name in PLOTS)
    for (start, name), (end, _) in zip(starts, [*starts[1:], (len(dom), "")], strict=True):
        assert 'class="main-svg"' in dom[start:end], f"plot {name} did not render"
    data = embedded(page)
    assert dom.count('<div class="diff">') == len(data["edits"]) == 2
    assert dom.count('<span class="gi">+Answer with digits only.') == 2
    timeline = re.search(r'<table class="timeline">.*?</table>', dom, re.S).group(0)
    assert timeline.count("<tr>") == 1 + len(data["decisions"])
    assert re.search(r'<li data-run="r">.*<li data-run="r-b">', dom, re.S)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
