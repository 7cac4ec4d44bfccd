"""The built-in intent classifier: trained from examples, it picks among the allowed intents or
says no-match and why; with and without the sentence encoder."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from orchestrator_flows.intents import NO_MATCH, Classification, IntentModel, Thresholds
from orchestrator_flows.intents import model as model_module
from orchestrator_flows.intents.encoder import EncoderUnavailable

EXAMPLES: dict[str, list[str]] = {
    "refund_request": [
        "I want a refund for my order",
        "Can I get my money back?",
        "Please refund my purchase, it arrived broken",
        "I'd like to return this and be reimbursed",
        "Quiero un reembolso de mi pedido",
        "Quiero que me devuelvan el dinero",
        "Devuélvanme el dinero de la compra",
    ],
    "billing_inquiry": [
        "I have a question about my bill",
        "Why was I charged twice this month?",
        "There's a charge on my invoice I don't recognise",
        "My bill is higher than usual",
        "Tengo una pregunta sobre mi factura",
        "¿Por qué me cobraron dos veces?",
        "Hay un cargo en mi factura que no reconozco",
    ],
    "booking_request": [
        "I'd like to book an appointment",
        "Can I make a reservation for Friday?",
        "Please schedule a visit from a technician",
        "I need to reserve a delivery slot",
        "Quiero reservar una cita",
        "¿Puedo hacer una reserva para el viernes?",
        "Necesito programar una visita del técnico",
    ],
    "closing": [
        "That's all, thank you, goodbye",
        "Nothing else, thanks for your help",
        "That's everything for today, bye",
        "Eso es todo, gracias, adiós",
        "Nada más, gracias por su ayuda",
    ],
}
STAGE = ["refund_request", "billing_inquiry", "booking_request"]
DEFAULTS = Thresholds()
PERMISSIVE = Thresholds(confidence=0.0, margin=0.0, similarity=-1.0)


@pytest.fixture(scope="session")
def encoder_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("intent-encoder")


@pytest.fixture(scope="module", params=["with_encoder", "tfidf_only"])
def model(request: pytest.FixtureRequest, encoder_cache: Path) -> IntentModel:
    return IntentModel.train(
        EXAMPLES, cache_dir=encoder_cache, use_encoder=request.param == "with_encoder"
    )


def test_the_model_describes_its_heads(model: IntentModel) -> None:
    assert model.description in ("tfidf+minilm-l3-int8", "tfidf")
    assert model.intents == tuple(sorted(EXAMPLES))


def test_the_encoder_head_is_used_when_its_packages_are_installed(encoder_cache: Path) -> None:
    model = IntentModel.train(EXAMPLES, cache_dir=encoder_cache)
    assert model.description == "tfidf+minilm-l3-int8"
    assert list(encoder_cache.glob("*.int8.onnx")), "the int8 graph is kept in the cache dir"


def test_without_the_encoder_packages_the_model_runs_tfidf_only_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(cache_dir: Path | None) -> None:
        raise EncoderUnavailable("onnxruntime is not installed")

    monkeypatch.setattr(model_module, "load_encoder", missing)
    model = IntentModel.train(EXAMPLES)
    assert model.description == "tfidf (encoder unavailable: onnxruntime is not installed)"
    assert model.classify("I want my money back", STAGE, DEFAULTS).intent == "refund_request"


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("I want a refund for order 1234", "refund_request"),
        ("why is there an extra charge on my bill", "billing_inquiry"),
        ("can I book an appointment for next week", "booking_request"),
    ],
)
def test_a_turn_worded_like_an_intents_examples_gets_that_intent(
    model: IntentModel, text: str, intent: str
) -> None:
    answer = model.classify(text, STAGE, DEFAULTS)
    assert (answer.intent, answer.best, answer.no_match_reason) == (intent, intent, None)
    assert answer.confidence > 0.5


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("Quiero que me devuelvan el dinero del pedido 1234", "refund_request"),
        ("¿Por qué hay un cargo doble en mi factura?", "billing_inquiry"),
        ("Quiero reservar una visita para el lunes", "booking_request"),
    ],
)
def test_a_spanish_turn_is_classified_from_spanish_examples(
    model: IntentModel, text: str, intent: str
) -> None:
    assert model.classify(text, STAGE, DEFAULTS).intent == intent


def test_alternatives_are_the_next_two_allowed_intents_best_first(model: IntentModel) -> None:
    answer = model.classify("I want a refund", list(EXAMPLES), PERMISSIVE)
    assert len(answer.alternatives) == 2
    assert answer.best not in {a.intent for a in answer.alternatives}
    scores = [answer.confidence] + [a.confidence for a in answer.alternatives]
    assert scores == sorted(scores, reverse=True)
    assert 0.0 <= sum(scores) <= 1.0 + 1e-6
    two = model.classify("I want a refund", ["refund_request", "closing"], PERMISSIVE)
    assert [a.intent for a in two.alternatives] == ["closing"]


def test_a_confidence_below_the_threshold_is_a_no_match(model: IntentModel) -> None:
    text = "I have a question about the reservation charge"
    p = model.classify(text, STAGE, PERMISSIVE).confidence
    below = model.classify(text, STAGE, Thresholds(confidence=p + 1e-6, margin=0.0, similarity=-1))
    at = model.classify(text, STAGE, Thresholds(confidence=p - 1e-6, margin=0.0, similarity=-1))
    assert (below.intent, below.no_match_reason) == (NO_MATCH, "low_confidence")
    assert below.best == at.intent != NO_MATCH
    assert below.confidence == pytest.approx(p)


def test_two_intents_with_the_same_examples_are_ambiguous(encoder_cache: Path) -> None:
    same = ["I want to cancel my order", "please cancel the order"]
    examples = {"cancel_order": same, "stop_order": same, "closing": ["goodbye", "that's all"]}
    for use_encoder in (True, False):
        model = IntentModel.train(examples, cache_dir=encoder_cache, use_encoder=use_encoder)
        answer = model.classify("cancel my order please", list(examples), DEFAULTS)
        assert (answer.intent, answer.no_match_reason) == (NO_MATCH, "ambiguous")
        assert {answer.best, answer.alternatives[0].intent} == {"cancel_order", "stop_order"}


def test_top_two_closer_than_the_margin_are_ambiguous(encoder_cache: Path) -> None:
    examples = {
        "cancel_order": ["I want to cancel my order", "please cancel the order"],
        "stop_order": ["I want to cancel my order", "please cancel the order now"],
        "closing": ["goodbye", "that's all, thanks"],
    }
    for use_encoder in (True, False):
        model = IntentModel.train(examples, cache_dir=encoder_cache, use_encoder=use_encoder)
        text, allowed = "I want to cancel my order", list(examples)
        chosen = model.classify(text, allowed, PERMISSIVE)
        gap = chosen.confidence - chosen.alternatives[0].confidence
        assert chosen.intent in ("cancel_order", "stop_order")
        wider = Thresholds(confidence=0.0, margin=gap + 1e-6, similarity=-1.0)
        answer = model.classify(text, allowed, wider)
        assert (answer.intent, answer.no_match_reason) == (NO_MATCH, "ambiguous")
        assert answer.best == chosen.intent


@pytest.mark.parametrize(
    "text",
    ["Who won the football match last night?", "Recommend me a good pizza recipe"],
)
def test_a_question_no_intent_covers_is_unlike_the_examples(model: IntentModel, text: str) -> None:
    answer = model.classify(text, STAGE, Thresholds(confidence=0.0, margin=0.0))
    assert (answer.intent, answer.no_match_reason) == (NO_MATCH, "unlike_examples")
    assert answer.best in STAGE
    assert answer.similarity is not None
    assert answer.similarity < model.default_similarity()


def test_only_allowed_intents_are_chosen(model: IntentModel) -> None:
    answer = model.classify(
        "I want a refund for my order", ["billing_inquiry", "closing"], PERMISSIVE
    )
    assert answer.best in ("billing_inquiry", "closing")
    assert {a.intent for a in answer.alternatives} <= {"billing_inquiry", "closing"}


def test_allowed_intents_without_examples_are_never_chosen(model: IntentModel) -> None:
    answer = model.classify("I want a refund", ["refund_request", "escalate", "ghost"], PERMISSIVE)
    assert answer.intent == "refund_request"
    assert answer.alternatives == ()
    none = model.classify("I want a refund", ["escalate", "ghost"], PERMISSIVE)
    assert none == Classification(NO_MATCH, 0.0, None, (), "no_examples")


def test_one_allowed_intent_is_scored_by_its_similarity_to_its_examples(
    model: IntentModel,
) -> None:
    near = model.classify("I want a refund for my order please", ["refund_request"], DEFAULTS)
    far = model.classify("Recommend me a good pizza recipe", ["refund_request"], DEFAULTS)
    assert near.intent == "refund_request"
    assert near.confidence == pytest.approx(near.similarity)
    assert far.intent == NO_MATCH
    assert far.no_match_reason in ("low_confidence", "unlike_examples")
    assert far.confidence < near.confidence


def _shuffled(examples: dict[str, list[str]], seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)
    names = list(examples)
    rng.shuffle(names)
    out = {}
    for name in names:
        utterances = [*examples[name], examples[name][0]]  # a duplicate, dropped
        rng.shuffle(utterances)
        out[name] = utterances
    return out


def test_the_same_examples_in_any_order_give_the_same_model(encoder_cache: Path) -> None:
    texts = ["I want a refund", "Quiero reservar", "hola, factura", "bye now", ""]
    for use_encoder in (True, False):
        a = IntentModel.train(EXAMPLES, cache_dir=encoder_cache, use_encoder=use_encoder)
        b = IntentModel.train(
            _shuffled(EXAMPLES, 7), cache_dir=encoder_cache, use_encoder=use_encoder
        )
        assert a.fingerprint() == b.fingerprint()
        assert a.intents == b.intents
        for text in texts:
            assert a.classify(text, STAGE, DEFAULTS) == b.classify(text, STAGE, DEFAULTS)


def test_different_examples_give_a_different_fingerprint() -> None:
    more = {**EXAMPLES, "closing": [*EXAMPLES["closing"], "see you later"]}
    a = IntentModel.train(EXAMPLES, use_encoder=False)
    b = IntentModel.train(more, use_encoder=False)
    assert a.fingerprint() != b.fingerprint()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "😀🎉🙏" * 20,
        "refund " * 700,
        "我想退款 我的订单坏了",
        "Я хочу вернуть деньги",
        "\ud800 lone surrogate",
        "\x00\x01\x02",
        "a" * 4000,
    ],
)
def test_any_text_gets_an_answer(model: IntentModel, text: str) -> None:
    answer = model.classify(text, STAGE, DEFAULTS)
    assert answer.intent in (*STAGE, NO_MATCH)
    assert 0.0 <= answer.confidence <= 1.0


def test_classify_gives_the_same_answers_from_many_threads(model: IntentModel) -> None:
    texts = ["I want a refund", "billing question", "book me in", "Quiero reservar"] * 10
    expected = [model.classify(t, STAGE, DEFAULTS) for t in texts]
    results: dict[int, list[Classification]] = {}

    def work(k: int) -> None:
        results[k] = [model.classify(t, STAGE, DEFAULTS) for t in texts]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[k] == expected for k in range(4))


@pytest.mark.parametrize(
    ("examples", "message"),
    [
        ({"refund_request": ["refund please"]}, "at least 2 intents"),
        ({"refund_request": ["refund please"], "closing": []}, "at least 2 intents"),
        ({"refund_request": ["refund please"], "closing": ["bye", "  "]}, "blank example"),
        ({"refund_request": ["refund please"], "closing": "bye"}, "list of utterances"),
    ],
)
def test_unusable_examples_are_refused_with_a_clear_message(
    examples: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        IntentModel.train(examples, use_encoder=False)
