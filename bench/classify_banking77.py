"""Intent classification on BANKING77 (issue 27), through the real service and in-process.

Builds a flows file with BANKING77's 77 intents at stage 3 (INTENT_CAPTURE) and an [examples]
table from its training split: `full` (all 10,003 utterances) and `10-shot` (10 per intent,
seeds 0..2). The service's ASGI app runs in this process over a real redis-server, with the
stub agent (bench/stub_agent.py) in two processes: one completes tasks (greeting, auth,
fallback), one asks for input, so a call stays at stage 3 for many turns. Each call takes a
greeting and an auth turn with the client's intent, then up to TURNS_PER_CALL test utterances
WITHOUT `intent` (the call limit is MAX_STEPS turns). Then the same turns WITH the client's
intent: the floor, what a turn costs without the classifier.

Reported per mode: accuracy (top intent, no-match ignored), accuracy with fallback (no-match is
wrong), out-of-scope questions (bench/data/out_of_scope.csv, its test split) sent to no-match,
in-scope drop, turn latency with and without classification, and for the model alone (the same
examples, trained in this process): training time, memory (RSS delta), classification latency
p50/p99 (wall and this thread's CPU), and whether the service's answers agree with the model's.

    python bench/classify_banking77.py                      # full and 10-shot, service + model
    python bench/classify_banking77.py --model-only         # no service: the model's figures
    python bench/classify_banking77.py --modes full --json /tmp/b77.json

BANKING77 (CC BY 4.0) is read from ../shared/datasets/banking77 (override: --data).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

from inprocess import lifespan, post  # noqa: E402
from processes import free_port, start_redis, start_uvicorn, stop  # noqa: E402

from orchestrator_flows.intents import NO_MATCH, IntentModel, Thresholds  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "banking77"
OOS_FILE = BENCH / "data" / "out_of_scope.csv"
TURNS_PER_CALL = 150  # below the call's limit (MAX_STEPS, 200 turns) with its 2 set-up turns
SEEDS = (0, 1, 2)
SHOTS = 10


@dataclass
class Outcome:
    """What one classified turn said."""

    intent: str  # the chosen intent or "no_match"
    best: str | None  # the top intent, even for a no-match (None: not reported)


@dataclass
class Figures:
    mode: str
    examples: int
    model: dict[str, Any] = field(default_factory=dict)
    service: dict[str, Any] = field(default_factory=dict)


def intent_name(category: str) -> str:
    """A BANKING77 category as a flows.toml intent (lower case, [a-z0-9_]): two are not."""
    return re.sub(r"[^a-z0-9_]", "", category.lower())


def read_banking77(data: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    if not (data / "train.csv").exists():
        raise SystemExit(f"BANKING77 is not in {data}: pass --data DIR")

    def rows(name: str) -> list[tuple[str, str]]:
        with (data / name).open(newline="", encoding="utf-8") as f:
            return [(r["text"], intent_name(r["category"])) for r in csv.DictReader(f)]

    return rows("train.csv"), rows("test.csv")


def read_out_of_scope(split: str = "test") -> list[str]:
    with OOS_FILE.open(newline="", encoding="utf-8") as f:
        return [r["text"] for r in csv.DictReader(f) if r["split"] == split]


def example_sets(
    train: list[tuple[str, str]], modes: Sequence[str]
) -> list[tuple[str, dict[str, list[str]]]]:
    by_intent: dict[str, list[str]] = {}
    for text, intent in train:
        by_intent.setdefault(intent, []).append(text)
    sets = []
    if "full" in modes:
        sets.append(("full", by_intent))
    if "10-shot" in modes:
        for seed in SEEDS:
            rng = random.Random(seed)
            chosen = {i: rng.sample(sorted(ts), SHOTS) for i, ts in sorted(by_intent.items())}
            sets.append((f"10-shot/seed{seed}", chosen))
    return sets


def percentiles(values_ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values_ms, n=100, method="inclusive")
    return {"p50": round(q[49], 3), "p99": round(q[98], 3), "max": round(max(values_ms), 3)}


def scores(
    outcomes: list[Outcome], labels: list[str], oos: list[Outcome]
) -> dict[str, float | None]:
    answered = [o.intent == y for o, y in zip(outcomes, labels, strict=True)]
    best = [o.best for o in outcomes]
    top = None
    if all(b is not None for b in best):
        top = sum(b == y for b, y in zip(best, labels, strict=True)) / len(labels)
    with_fallback = sum(answered) / len(labels)
    return {
        "accuracy": None if top is None else round(top, 4),
        "accuracy_with_fallback": round(with_fallback, 4),
        "in_scope_drop": None if top is None else round(top - with_fallback, 4),
        "in_scope_no_match": round(sum(o.intent == NO_MATCH for o in outcomes) / len(labels), 4),
        "out_of_scope_no_match": round(sum(o.intent == NO_MATCH for o in oos) / len(oos), 4),
    }


# --------------------------------------------------------------------------- the model alone
def measure_model(
    examples: dict[str, list[str]],
    test: list[tuple[str, str]],
    oos: list[str],
    cache_dir: Path,
    use_encoder: bool,
) -> tuple[dict[str, Any], list[Outcome]]:
    process = psutil.Process()
    rss = process.memory_info().rss
    started = time.perf_counter()
    model = IntentModel.train(examples, cache_dir=cache_dir, use_encoder=use_encoder)
    train_s = time.perf_counter() - started
    rss_delta = process.memory_info().rss - rss
    allowed, thresholds = list(model.intents), Thresholds()
    for text, _ in test[:50]:  # warm-up
        model.classify(text, allowed, thresholds)
    wall, cpu, outcomes = [], [], []
    for text, _ in test:
        w, c = time.perf_counter(), time.thread_time()
        answer = model.classify(text, allowed, thresholds)
        cpu.append((time.thread_time() - c) * 1e3)
        wall.append((time.perf_counter() - w) * 1e3)
        outcomes.append(Outcome(answer.intent, answer.best))
    oos_outcomes = []
    for text in oos:
        answer = model.classify(text, allowed, thresholds)
        oos_outcomes.append(Outcome(answer.intent, answer.best))
    figures = {
        "description": model.description,
        "fingerprint": model.fingerprint(),
        "train_s": round(train_s, 2),
        "rss_delta_mb": round(rss_delta / 1e6, 1),
        "classify_wall_ms": percentiles(wall),
        "classify_cpu_ms": percentiles(cpu),
        **scores(outcomes, [y for _, y in test], oos_outcomes),
    }
    return figures, outcomes


# --------------------------------------------------------------------------- the service
def flows_file(examples: dict[str, list[str]], completes: str, asks: str) -> str:
    intents = sorted(examples)
    lines = [
        'fallback_agent = "fallback"',
        "",
        "[agents]",
        f'greeting = "{completes}"',
        f'auth = "{completes}"',
        f'fallback = "{completes}"',
        f'closing = "{completes}"',
        f'banking = "{asks}"',
        "",
        "[stages]",
        '"1" = { greeting = "greeting" }',
        '"2" = { verify_identity = "auth" }',
        '"3" = { ' + ", ".join(f'{i} = "banking"' for i in intents) + " }",
        '"4" = { wrap_up = "closing" }',
        '"5" = { closing = "closing" }',
        "",
        "[classifier]",
        'on_no_match = "stay"',
        "",
        "[examples]",
    ]
    for intent in intents:
        lines.append(f"{intent} = {orjson.dumps(examples[intent]).decode()}")
    return "\n".join(lines) + "\n"


class ServiceUnderTest:
    """The service's app in this process over a real redis-server; calls opened on demand."""

    def __init__(self, app: Any, headers: list[tuple[bytes, bytes]]) -> None:
        self.app, self.headers = app, headers
        self._call: str | None = None
        self._turns_in_call = 0

    async def _send(self, body: dict[str, Any]) -> dict[str, Any]:
        status, raw = await post(self.app, orjson.dumps(body), self.headers)
        answer = orjson.loads(raw)
        if status != 200:
            raise SystemExit(f"the service answered {status}: {raw[:500]!r}")
        return answer

    async def _new_call(self) -> None:
        self._call = "B77-" + secrets.token_hex(6)
        self._turns_in_call = 0
        for intent, words in (("greeting", "hello"), ("verify_identity", "it's me")):
            await self._send(self._body(words, intent))

    def _body(self, words: str, intent: str | None) -> dict[str, Any]:
        body = {"call_identify_id": self._call, "account_id": "ACC-1", "eci": "ECI-1"}
        body["input_message"] = words
        if intent is not None:
            body["intent"] = intent
        return body

    async def turn(self, words: str, intent: str | None) -> tuple[dict[str, Any], float]:
        if self._call is None or self._turns_in_call >= TURNS_PER_CALL:
            await self._new_call()
        self._turns_in_call += 1
        started = time.perf_counter()
        answer = await self._send(self._body(words, intent))
        return answer, (time.perf_counter() - started) * 1e3


def outcome_of(answer: dict[str, Any], model_best: str | None) -> Outcome:
    intent = answer.get("intent")
    if answer.get("intent_source") != "classifier":
        raise SystemExit(f"the turn was not classified: {answer}")
    if intent != NO_MATCH:
        return Outcome(intent, intent)
    # A no-match answer's alternatives are the best intents, none taken: the first is the top.
    ranked = answer.get("intent_alternatives") or []
    best = ranked[0]["intent"] if ranked else model_best
    return Outcome(NO_MATCH, best)


async def measure_service(
    examples: dict[str, list[str]],
    test: list[tuple[str, str]],
    oos: list[str],
    model_outcomes: list[Outcome],
    workdir: Path,
    agent_urls: tuple[str, str],
    redis_url: str,
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "flows.toml"
    path.write_text(flows_file(examples, *agent_urls), encoding="utf-8")
    key = secrets.token_urlsafe(32)
    os.environ |= {
        "FLOWS_FILE": str(path),
        "REDIS_URL": redis_url,
        "API_KEYS": f"client:{key}",
        "IDEMPOTENCY_SECRET": secrets.token_hex(32),
        "ORCH_STATE_DIR": str(workdir / "state"),
    }
    from orchestrator_flows.infra.settings import Settings
    from orchestrator_flows.ops.logs import configure_logging
    from orchestrator_flows.web.app import create_app

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)  # to stderr: service.log
    app = create_app(settings)
    headers = [(b"content-type", b"application/json"), (b"authorization", f"Bearer {key}".encode())]
    started = time.perf_counter()
    shutdown = await lifespan(app)
    startup_s = time.perf_counter() - started
    try:
        service = ServiceUnderTest(app, headers)
        outcomes, classified_ms = [], []
        for (text, _), model_outcome in zip(test, model_outcomes, strict=True):
            answer, ms = await service.turn(text, None)
            outcomes.append(outcome_of(answer, model_outcome.best))
            classified_ms.append(ms)
        oos_outcomes = [outcome_of((await service.turn(t, None))[0], None) for t in oos]
        floor_ms = [(await service.turn(text, label))[1] for text, label in test]
    finally:
        await shutdown()
    agree = sum(s.intent == m.intent for s, m in zip(outcomes, model_outcomes, strict=True)) / len(
        test
    )
    return {
        "startup_s": round(startup_s, 2),
        "turn_ms_classified": percentiles(classified_ms),
        "turn_ms_client_intent": percentiles(floor_ms),
        "agreement_with_model": round(agree, 4),
        **scores(outcomes, [y for _, y in test], oos_outcomes),
    }


def start_agents(workdir: Path) -> tuple[list[Any], tuple[str, str]]:
    processes, urls = [], []
    for state in ("TASK_STATE_COMPLETED", "TASK_STATE_INPUT_REQUIRED"):
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        env = os.environ | {"STUB_URL": url, "STUB_STATE": state}
        log = workdir / f"stub-{port}.log"
        processes.append(
            start_uvicorn("stub_agent:app", port, env=env, log_file=log, app_dir=BENCH)
        )
        urls.append(url)
    return processes, (urls[0], urls[1])


# --------------------------------------------------------------------------- the run
def _numbers(figures: dict[str, Any]) -> dict[str, float]:
    """The figures' numbers, latency percentiles flattened (`classify_cpu_ms.p99`)."""
    out = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            out |= {f"{key}.{k}": v for k, v in value.items() if isinstance(v, (int, float))}
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value
    return out


def summarise(figures: list[Figures]) -> dict[str, Any]:
    """Per mode (full, 10-shot), each figure's mean over the seeds (and its spread)."""
    out: dict[str, Any] = {}
    for mode in ("full", "10-shot"):
        runs = [f for f in figures if f.mode.split("/")[0] == mode]
        if not runs:
            continue
        out[mode] = {}
        for part in ("model", "service"):
            numbers = [_numbers(getattr(r, part)) for r in runs]
            keys = [k for k in numbers[0] if all(k in n for n in numbers)]
            out[mode][part] = {
                k: [round(statistics.fmean(n[k] for n in numbers), 4)]
                + ([round(min(n[k] for n in numbers), 4), round(max(n[k] for n in numbers), 4)]
                   if len(runs) > 1 else [])
                for k in keys
            }  # fmt: skip
    return out


async def run(args: argparse.Namespace) -> list[Figures]:
    train, test = read_banking77(args.data)
    if args.limit:
        test = random.Random(0).sample(test, args.limit)
    oos = read_out_of_scope()
    workdir = Path(tempfile.mkdtemp(prefix="orch-b77-"))
    cache_dir = workdir / "model-cache"
    agents: list[Any] = []
    redis_server = None
    real_stderr = sys.stderr
    if not args.model_only:
        redis_port = free_port()
        redis_server = start_redis(redis_port, workdir)
        agents, agent_urls = start_agents(workdir)
        sys.stderr = (workdir / "service.log").open("w", buffering=1)  # the service's log lines
    results = []
    try:
        for mode, examples in example_sets(train, args.modes):
            figures = Figures(mode, sum(len(v) for v in examples.values()))
            figures.model, outcomes = measure_model(
                examples, test, oos, cache_dir, not args.tfidf_only
            )
            if not args.model_only:
                figures.service = await measure_service(
                    examples, test, oos, outcomes, workdir / mode.replace("/", "-"),
                    agent_urls, f"redis://127.0.0.1:{redis_port}/0",
                )  # fmt: skip
            print(orjson.dumps(figures.__dict__).decode(), flush=True)
            results.append(figures)
    finally:
        sys.stderr = real_stderr  # a failure's traceback is the reader's, not the log's
        for process in agents:
            stop(process)
        if redis_server is not None:
            stop(redis_server)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=["full", "10-shot"])
    parser.add_argument("--model-only", action="store_true", help="the model alone, no service")
    parser.add_argument("--tfidf-only", action="store_true", help="train without the encoder")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BANKING77's folder")
    parser.add_argument("--limit", type=int, default=0, help="test utterances (0: all 3,080)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    summary = summarise(figures)
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    if args.json:
        runs = [f.__dict__ for f in figures]
        args.json.write_bytes(orjson.dumps({"runs": runs, "summary": summary}))


if __name__ == "__main__":
    main()
