"""SafetyPolicy filters on their held-out test splits, side by side with offline baselines, and
what the filters add to a chat request.

    .venv/bin/python benchmarks/safety.py [--filters crisis,toxicity,pii,advice,bias] [--repeat 5]
                                          [--json results.json]

**Quality.** Each filter's detector is built from its API spec with the policy's defaults (the
default ``threshold`` of toxicity and bias, the detectors' own documented defaults elsewhere)
but with every category, domain and entity the API offers switched on, so that every labelled
line of ``serving/safety/corpus/<filter>/test.jsonl`` (the held-out split: never trained on,
never used to tune) can be scored. Each line is scanned in its own ``direction``.

* crisis, toxicity, advice, bias: a line is positive when its ``labels`` name a category the
  filter knows; the detector says positive when it returns any finding. Precision, recall and
  F1 of that binary decision, then per category (the categories found against those labelled).
* pii: per line and entity. A labelled entity counts as found when the detector reports that
  entity on the line and, when the line lists ``values`` (the exact substrings), one of its
  spans covers one of them whole; a reported entity the line does not label is a false
  positive. "Structured" entities are email, phone, creditCard, ssn, iban and ipAddress
  (personName and address are scored apart). Every creditCard span is also checked with Luhn:
  a Luhn-invalid number redacted is counted.

The table's ``gold`` column counts the labelled positives: lines, or for PII (line, entity)
pairs.

Baselines (offline, nothing downloaded, no dependency beyond the serving extra):

* ``keywords``: a plain keyword list per filter, written here (in the four corpus languages for
  crisis: the "crisis keyword regex" of safety.md section 4).
* ``profanity-check``: alt-profanity-check's packaged model, ``predict_prob`` on the raw text,
  at 0.5 (its own cut) and at the toxicity filter's default threshold 0.8.
* ``pii.py@<commit>``: ``serving/pii.py`` as it stood before issue 15 (read with ``git show``,
  so the baseline does not move when the module changes).
* ``phonenumbers``: the library's ``PhoneNumberMatcher`` over the regions listed in
  :data:`PHONE_REGIONS`, for phones only; each number once.

**Everyday chat.** Each system also reads :data:`EVERYDAY`, plain requests and answers that no
filter should flag, and the share it flags is printed: the false alarm rate of ordinary traffic,
which a test split full of hard negatives does not show.

**Latency.** Per filter, p50 and p99 of one ``scan`` over every test line (``--repeat`` passes,
after one warm-up pass). **Added latency**: a 300-character chat exchange (the user's message
screened as an input, the assistant's answer as an output) through the policy engine
(``serving/safety/policy.py``) with all five filters on, against the same request with none.
Measured twice: (1) the engine's ``screen`` calls alone, in process (the filters' own cost);
(2) when ``cutover serve`` has ``--safety-policy``, the same chat request to two real serving
processes in front of one local OpenAI-compatible upstream, one with the policy and one
without, alternating request by request: the difference of their p50s is the added latency
and their ratio is printed beside it, with each serving process's CPU time per request (read
from ``/proc``): on a machine whose cores other work shares, the wall-clock difference also
holds the time the busier process waited for a core, and the CPU time does not. Where the
script may use CPUs 0 and 1, both serving processes run on CPU 1 and the client and upstream on
CPU 0 (``taskset``, as ``benchmarks/serving.py`` pins), checked from ``/proc``; the in-process
line prints the mean CPU time per exchange too, the figure to set beside the servers' difference.

Targets (issue 15): crisis recall >= 0.95 at precision >= 0.8; PII recall >= 0.98 on structured
entities with no Luhn-invalid card redacted; added latency <= 2 ms at p50.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import http.server
import importlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
import typing
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# benchmarks/serving.py, from this script's own folder (first on sys.path when run as a script).
# Pinning as the serving benchmark does it: the servers on SERVER_CPU, the client on WRK_CPU.
import serving as bench

REPO = Path(__file__).resolve().parent.parent
FILTERS = ("crisis", "toxicity", "pii", "advice", "bias")
STRUCTURED = ("email", "phone", "creditCard", "ssn", "iban", "ipAddress")
PII_BEFORE = "be9bbf7"
"""The commit whose ``serving/pii.py`` is the "before issue 15" baseline."""
PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "AU", "CA")

TARGET_CRISIS_RECALL = 0.95
TARGET_CRISIS_PRECISION = 0.8
TARGET_PII_RECALL = 0.98
TARGET_ADDED_MS = 2.0
FILTER_SECONDS = "cutover_safety_filter_duration_seconds"

Scan = Callable[[str, str], list[tuple[str, tuple[tuple[int, int], ...]]]]
"""A system under test: (text, direction) -> [(category, spans)]."""


# ---- baselines -------------------------------------------------------------------------------------

# Plain keyword lists: what a team writes in an afternoon. Whole words, matched case-insensitively
# on the raw text; no normalisation, no negation, no context.
KEYWORDS: Mapping[str, Mapping[str, str]] = {
    "crisis": {
        "suicidalIdeation": r"suicid\w*|kill (?:my ?self|me)|end (?:my|it all)|want to die|wanna die|"
        r"better off dead|no reason to live|quitarme la vida|matarme|suicidarme|me quiero morir|"
        r"selbstmord|mich umbringen|nicht mehr leben|me tuer|me suicider|envie de mourir|en finir",
        "selfHarm": r"self[- ]?harm|cut(?:ting)? my ?self|hurt(?:ing)? my ?self|burn(?:ing)? my ?self|"
        r"autolesi\w+|cortarme|ritzen|mich verletzen|me scarifier|me faire du mal",
        "violence": r"kill (?:him|her|them|you|everyone)|shoot (?:up|him|her|them)|stab (?:him|her|them)|"
        r"bomb|massacre|matarlos|matarte|umbringen|abknallen|tuer (?:tout le monde|les)",
    },
    "toxicity": {
        "toxicity": r"idiot\w*|stupid|moron\w*|dumb\w*|retard\w*|loser|fuck (?:you|off)|fucking \w+|"
        r"bitch\w*|asshole|shut up|scum|trash|pathetic|worthless|imbecil\w*|idiota|pendejo|cabr[oó]n|"
        r"arschloch|dummkopf|vollidiot|schlampe|connard|connasse|salope|abruti|ta gueule",
    },
    "advice": {
        "medical": r"\d+ ?(?:mg|mcg|ml)|dose|dosage|ibuprofen|paracetamol|acetaminophen|antibiotic\w*|"
        r"medication|prescription|stop taking|insulin|antidepressant\w*",
        "legal": r"lawyer|attorney|sue|lawsuit|court|plead|guilty|contract|custody|eviction|landlord|"
        r"abogado|anwalt|avocat",
        "financial": r"invest\w*|stocks?|shares|crypto\w*|bitcoin|etf|401\(k\)|mortgage|loan|"
        r"retirement|portfolio|inversi[oó]n|aktien|placement",
    },
    "bias": {
        "gender": r"women are|men are|girls are|females are|mujeres son|frauen sind|les femmes sont",
        "raceEthnicity": r"black people|white people|asians are|blacks are|latinos are|mexicans are",
        "religion": r"muslims are|jews are|christians are|hindus are|atheists are",
        "nationality": r"immigrants are|foreigners are|migrants are|refugees are|ausl[äa]nder sind",
        "sexualOrientation": r"gays are|gay people are|lesbians are|trans people are",
        "disability": r"disabled people are|autistic people are|the disabled are",
        "age": r"old people are|boomers are|older workers are|millennials are",
    },
}


def keyword_scan(filter_name: str) -> Scan:
    """The keyword-list baseline for ``filter_name``: every category whose list matches."""
    patterns = {
        category: re.compile(rf"(?<!\w)(?:{words})(?!\w)", re.IGNORECASE)
        for category, words in KEYWORDS[filter_name].items()
    }

    def scan(text: str, direction: str) -> list[tuple[str, tuple[tuple[int, int], ...]]]:
        return [(category, ()) for category, pattern in patterns.items() if pattern.search(text)]

    return scan


def profanity_scan(threshold: float) -> Scan:
    """alt-profanity-check's packaged model at ``threshold``."""
    from profanity_check import predict_prob

    def scan(text: str, direction: str) -> list[tuple[str, tuple[tuple[int, int], ...]]]:
        return [("toxicity", ())] if float(predict_prob([text])[0]) >= threshold else []

    return scan


def pii_before_scan(commit: str = PII_BEFORE) -> Scan | None:
    """``serving/pii.py`` as of ``commit``, loaded from git into a module of its own; None when
    git or the commit is not there (a source tarball)."""
    try:
        source = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{commit}:serving/pii.py"], capture_output=True, check=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType(f"pii_at_{commit}")
    exec(compile(source, f"{commit}:serving/pii.py", "exec"), module.__dict__)  # our own file, at a commit
    find = module.find

    def scan(text: str, direction: str) -> list[tuple[str, tuple[tuple[int, int], ...]]]:
        return [(m.entity, ((m.start, m.end),)) for m in find(text)]

    return scan


def phonenumbers_scan(regions: Sequence[str] = PHONE_REGIONS) -> Scan:
    """phonenumbers' matcher over ``regions`` (each number once, by span)."""
    import phonenumbers

    def scan(text: str, direction: str) -> list[tuple[str, tuple[tuple[int, int], ...]]]:
        spans: set[tuple[int, int]] = set()
        for region in regions:
            for match in phonenumbers.PhoneNumberMatcher(text, region):
                spans.add((match.start, match.end))
        return [("phone", (span,)) for span in sorted(spans)]

    return scan


# ---- the detectors -----------------------------------------------------------------------------------


def spec_for(filter_name: str) -> Any:
    """The API spec a detector is benchmarked with: the policy's defaults, every category on."""
    from cutover.api.v1alpha1 import safetypolicy as api

    everything: dict[str, dict[str, Any]] = {
        "crisis": {"action": "block", "categories": ["selfHarm", "suicidalIdeation", "violence"]},
        "toxicity": {},
        "pii": {"entities": list(typing.get_args(api.PiiEntity))},
        "advice": {"domains": ["medical", "legal", "financial"]},
        "bias": {},
    }
    model = {
        "crisis": "CrisisFilter",
        "toxicity": "ToxicityFilter",
        "pii": "PiiFilter",
        "advice": "AdviceFilter",
        "bias": "BiasFilter",
    }[filter_name]
    return getattr(api, model).model_validate(everything[filter_name])


def detector_scan(filter_name: str) -> tuple[Scan | None, str]:
    """The project's detector for ``filter_name`` as a :data:`Scan`, or None and why not."""
    try:
        module = importlib.import_module(f"cutover.serving.safety.{filter_name}")
    except ImportError as error:
        return None, f"not landed ({error})"
    try:
        detector = module.detector(spec_for(filter_name))
    except Exception as error:  # a builder that refuses the all-categories spec, say
        return None, f"cannot be built: {type(error).__name__}: {error}"

    def scan(text: str, direction: str) -> list[tuple[str, tuple[tuple[int, int], ...]]]:
        return [(finding.category, tuple(finding.spans)) for finding in detector.scan(text, direction)]

    return scan, ""


# ---- scoring -------------------------------------------------------------------------------------


@dataclass
class Tally:
    """True positives, false positives and false negatives."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def add(self, predicted: bool, gold: bool) -> None:
        self.tp += predicted and gold
        self.fp += predicted and not gold
        self.fn += gold and not predicted


@dataclass
class Result:
    """One system on one filter's test split."""

    filter: str
    system: str
    overall: Tally = field(default_factory=Tally)
    categories: dict[str, Tally] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    luhn_invalid_cards: int = 0
    structured: Tally | None = None
    errors: int = 0
    misses: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)
    everyday: tuple[int, int] | None = None
    """Lines of everyday chat flagged, and lines read (:data:`EVERYDAY`)."""
    everyday_alarms: list[str] = field(default_factory=list)

    def category(self, name: str) -> Tally:
        return self.categories.setdefault(name, Tally())

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _luhn(digits: str) -> bool:
    """ISO/IEC 7812-1's check digit, computed here rather than imported from ``serving/pii.py``:
    the benchmark audits that module's cards and must not share a bug with it."""
    kept = sum(int(digit) for digit in digits[-1::-2])
    doubled = sum(sum(divmod(2 * int(digit), 10)) for digit in digits[-2::-2])
    return (kept + doubled) % 10 == 0


def _covers(spans: Iterable[tuple[int, int]], text: str, values: Sequence[str]) -> bool:
    """Whether some span covers one of ``values`` (an occurrence of it in ``text``) whole."""
    for value in values:
        start = text.find(value)
        while start >= 0:
            end = start + len(value)
            if any(s <= start and end <= e for s, e in spans):
                return True
            start = text.find(value, start + 1)
    return False


def score(
    filter_name: str,
    system: str,
    scan: Scan,
    examples: Sequence[Any],
    raw: Sequence[dict[str, Any]],
    only: Iterable[str] | None = None,
) -> Result:
    """Scan every example once and score it (see the module docstring); ``only`` restricts the
    scoring to some categories (a baseline that finds phones only is scored on phones)."""
    known = set(only if only is not None else _categories(filter_name))
    result = Result(filter_name, system)
    if filter_name == "pii":
        result.structured = Tally()
    for example, line in zip(examples, raw, strict=True):
        try:
            found = scan(example.text, example.direction)
        except Exception:
            result.errors += 1
            found = []
        gold = {label for label in example.labels if label in known}
        predicted = {category for category, _ in found if category in known}
        if filter_name == "pii":
            kept = [(category, spans) for category, spans in found if category in known]
            _score_pii(result, example.text, kept, gold, line.get("values") or [])
            continue
        result.overall.add(bool(predicted), bool(gold))
        if gold and not predicted and len(result.misses) < 8:
            result.misses.append(example.text)
        if predicted and not gold and len(result.false_alarms) < 8:
            result.false_alarms.append(example.text)
        for category in known:
            result.category(category).add(category in predicted, category in gold)
    return result


def _score_pii(
    result: Result,
    text: str,
    found: Sequence[tuple[str, tuple[tuple[int, int], ...]]],
    gold: set[str],
    values: Sequence[str],
) -> None:
    spans_by_entity: dict[str, list[tuple[int, int]]] = {}
    for entity, spans in found:
        spans_by_entity.setdefault(entity, []).extend(spans)
        if entity == "creditCard":
            for start, end in spans:
                digits = re.sub(r"\D", "", text[start:end])
                if digits and not _luhn(digits):
                    result.luhn_invalid_cards += 1
    for entity in set(gold) | set(spans_by_entity):
        reported = entity in spans_by_entity
        hit = reported and (not values or entity not in gold or _covers(spans_by_entity[entity], text, values))
        labelled = entity in gold
        tally = result.category(entity)
        tally.add(hit if labelled else reported, labelled)
        result.overall.add(hit if labelled else reported, labelled)
        if entity in STRUCTURED and result.structured is not None:
            result.structured.add(hit if labelled else reported, labelled)
        if labelled and not hit and len(result.misses) < 8:
            result.misses.append(f"{entity}: {text}")
        if reported and not labelled and len(result.false_alarms) < 8:
            result.false_alarms.append(f"{entity}: {text}")


def _categories(filter_name: str) -> tuple[str, ...]:
    return {
        "crisis": ("selfHarm", "suicidalIdeation", "violence"),
        "toxicity": ("toxicity",),
        "pii": ("email", "phone", "creditCard", "ssn", "iban", "ipAddress", "personName", "address"),
        "advice": ("medical", "legal", "financial"),
        "bias": ("raceEthnicity", "religion", "gender", "sexualOrientation", "disability", "age", "nationality"),
    }[filter_name]


def time_scan(result: Result, scan: Scan, examples: Sequence[Any], repeat: int) -> None:
    """p50/p99 material: ``repeat`` timed passes of one scan per line, after a warm-up pass."""
    for example in examples:
        _safe(scan, example.text, example.direction)
    for _ in range(repeat):
        for example in examples:
            started = time.perf_counter()
            _safe(scan, example.text, example.direction)
            result.latencies_ms.append((time.perf_counter() - started) * 1000)


def _safe(scan: Scan, text: str, direction: str) -> None:
    with contextlib.suppress(Exception):  # counted in score(); here only timed
        scan(text, direction)


EVERYDAY = REPO / "benchmarks" / "data" / "everyday_chat.jsonl"
"""Everyday chat (requests and answers about code, travel, cooking, mail; en, es, de, fr) that no
filter should flag: written for this benchmark, in no corpus. A test split holds the hard
negatives its filter was written against; these are the plain traffic most requests are, where
a false alarm rate shows up as escalations, blocks and disclaimers nobody needed."""


def everyday_scan(result: Result, scan: Scan, lines: Sequence[dict[str, Any]]) -> None:
    """Count the everyday lines ``scan`` flags (for PII, only the structured entities: the
    opt-in name and address readers are meant to find names in such text)."""
    known = set(STRUCTURED) if result.filter == "pii" else set(_categories(result.filter))
    flagged = 0
    for line in lines:
        try:
            found = {category for category, _ in scan(line["text"], line["direction"]) if category in known}
        except Exception:
            found = {"(error)"}
        if found:
            flagged += 1
            result.everyday_alarms.append(f"{'/'.join(sorted(found))} ({line['direction']}): {line['text']}")
    result.everyday = (flagged, len(lines))


def read_split(filter_name: str) -> tuple[list[Any], list[dict[str, Any]]] | None:
    """The test split as ``learned.Example`` objects and as raw JSON (for PII ``values``)."""
    from cutover.serving.safety import learned

    path = learned.CORPUS / filter_name / "test.jsonl"
    if not path.exists():
        return None
    examples = learned.read_corpus(filter_name, "test")
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return examples, raw


# ---- added latency -------------------------------------------------------------------------------

USER_MESSAGES = (
    "Hi, I ordered the blue running shoes last Tuesday and they still have not arrived. My email is "
    "dana.whitfield@example.org and my phone is +1 415-555-0132. Could you check the tracking number "
    "and tell me if it is stuck at the depot? I need them before the half marathon on Sunday, thanks a lot!",
    "Can you help me write a short note to my landlord? The kitchen tap has been leaking for two weeks "
    "and nobody came to fix it. I'd like it polite but firm, mention that I reported it on the 3rd and "
    "the 10th, and ask for a visit this week. Keep it under 150 words please, and sign it from Alex.",
    "I'm planning a three-day trip to Lisbon in March with my partner. We like food markets, old trams "
    "and quiet viewpoints more than museums. What would a relaxed itinerary look like, and which area "
    "is nice to stay in without a car? Budget is moderate. Any tips on avoiding the biggest crowds?",
)
ASSISTANT_ANSWERS = (
    "I'm sorry your order is late. I checked the tracking: the parcel left the regional depot this "
    "morning and is due tomorrow before noon. If it has not arrived by Friday, reply here and we will "
    "send a replacement pair by express at no cost, so you have them well before Sunday's race. Good luck!",
    "Here is a draft: Dear Ms. Romero, I am writing about the leaking kitchen tap I reported on the 3rd "
    "and again on the 10th. It is still dripping and water is pooling under the sink. Could someone "
    "come to repair it this week? Please let me know a time that suits. Kind regards, Alex. Shall I edit?",
    "A relaxed plan: day one in Alfama and the castle viewpoint, tram 28 early before the queues; day two "
    "at the Time Out market and a walk along the river to Belém; day three in Príncipe Real's gardens and "
    "shops. Stay in Chiado or Baixa: flat, central and well connected by metro. Go out early and late.",
)


def policy_document(filters: Sequence[str], crisis_scope: str | None = None) -> dict[str, Any]:
    """A SafetyPolicy object with ``filters`` on, each with the API's default scope (crisis,
    toxicity and pii both ways, advice and bias on outputs) and every category on; crisis
    ``block`` instead of ``escalate`` (the same screening, no webhook to stand up)."""
    spec: dict[str, Any] = {name: {} for name in filters}
    # Actions that answer 200 wherever the API offers one (flag, disclaim, redact), so every
    # request takes the whole path (upstream included) whatever a filter finds; crisis has
    # only block and escalate, and a refusal is reported by the HTTP measurement, not timed.
    if "crisis" in spec:
        spec["crisis"].update(action="block")
        if crisis_scope is not None:
            spec["crisis"].update(scope=crisis_scope)
    if "toxicity" in spec:
        spec["toxicity"].update(action="flag")
    if "bias" in spec:
        spec["bias"].update(action="flag")
    if "pii" in spec:
        spec["pii"].update(entities=["email", "phone", "creditCard", "ssn", "ipAddress", "iban"])
    if "advice" in spec:
        spec["advice"].update(domains=["medical", "legal", "financial"])
    return {
        "apiVersion": "cutover.dev/v1alpha1",
        "kind": "SafetyPolicy",
        "metadata": {"name": "bench", "namespace": "bench", "generation": 1, "uid": "bench"},
        "spec": spec,
    }


_SENTENCE_END = re.compile(r"([.!?])(\s|$)")


def unique(text: str, index: int) -> str:
    """``text`` with every sentence made unique to round ``index`` (a reference number before
    its closing mark), so that no round is answered from what the filters remember of an earlier
    one (they keep recent texts and sentences): real requests rarely repeat."""
    tagged = _SENTENCE_END.sub(lambda end: f" r{index}{end.group(1)}{end.group(2)}", text)
    return tagged if tagged != text else f"{text} r{index}"


@dataclass
class Added:
    """Added latency of the filters on one chat exchange."""

    how: str
    with_ms: list[float] = field(default_factory=list)
    without_ms: list[float] = field(default_factory=list)
    note: str = ""
    per_filter_ms: dict[str, list[float]] = field(default_factory=dict)
    """In process: each filter's time per exchange, both directions (the engine's own timing)."""
    cpu_ms: dict[str, float] = field(default_factory=dict)
    """CPU time, which does not count waiting for a core: over HTTP each serving process's per
    timed request, ``with`` and ``without`` the policy; in process the p50 per exchange
    (``with``) and the mean (``mean``)."""
    filters_ms: float | None = None
    """Over HTTP: the filters' own time per timed request in the serving process with the policy,
    from its ``cutover_safety_filter_duration_seconds`` (wall clock inside the filters)."""


def added_latency(filters: Sequence[str], rounds: int) -> Added | None:
    """Time a 300-character chat exchange through the policy engine with ``filters`` on, and
    without a policy; None when the engine has not landed."""
    try:
        policy_module = importlib.import_module("cutover.serving.safety.policy")
    except ImportError:
        return None
    try:
        policy = policy_module.compile_policy(policy_document(filters))
    except Exception as error:
        return Added("engine", note=f"the policy does not compile: {error}")
    pairs = list(zip(USER_MESSAGES, ASSISTANT_ANSWERS, strict=True))

    def exchange(user: str, answer: str) -> list[Any]:
        return [policy.screen("input", [user], [user]), policy.screen("output", [answer])]

    decisions = [
        f"{direction} {index}: {screening.decision} by {', '.join(sorted({hit.filter for hit in screening.hits}))}"
        for index, (user, answer) in enumerate(pairs)
        for direction, screening in (
            ("input", policy.screen("input", [user], [user])),
            ("output", policy.screen("output", [answer])),
        )
        if screening.decision not in ("pass", "redact")
    ]
    added = Added("policy engine: screen(input) + screen(output)")
    cpu_ms: list[float] = []
    for index in range(rounds):
        user, answer = (unique(text, index) for text in pairs[index % len(pairs)])
        started, cpu_started = time.perf_counter(), time.thread_time()
        screenings = exchange(user, answer)
        added.with_ms.append((time.perf_counter() - started) * 1000)
        cpu_ms.append((time.thread_time() - cpu_started) * 1000)
        spent: dict[str, float] = {}
        for screening in screenings:
            for name, seconds in screening.seconds:
                spent[name] = spent.get(name, 0.0) + seconds * 1000
        for name, milliseconds in spent.items():
            added.per_filter_ms.setdefault(name, []).append(milliseconds)
    if cpu_ms:
        added.cpu_ms["with"] = statistics.median(cpu_ms)
        added.cpu_ms["mean"] = statistics.fmean(cpu_ms)
    sizes = [len(unique(text, rounds)) for text in (*USER_MESSAGES, *ASSISTANT_ANSWERS)]
    added.note = (
        f"{len(pairs)} exchanges of {min(sizes)}-{max(sizes)} chars, every sentence unique per round, default scopes"
    )
    if decisions:
        added.note += "; benign exchanges NOT passed: " + "; ".join(decisions)
    return added


class _ChatUpstream(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible upstream that answers every chat request at once with one of
    :data:`ASSISTANT_ANSWERS`, in turn."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    answered = 0

    def do_GET(self) -> None:
        """``/v1/models``: what serving asks before it is ready."""
        self._json({"object": "list", "data": [{"id": "tiny-llm", "object": "model", "owned_by": "bench"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        answer = unique(ASSISTANT_ANSWERS[_ChatUpstream.answered % len(ASSISTANT_ANSWERS)], _ChatUpstream.answered)
        _ChatUpstream.answered += 1
        self._json(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": 0,
                "model": "tiny-llm",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 70, "completion_tokens": 70, "total_tokens": 140},
            }
        )

    def _json(self, value: Any) -> None:
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _cpu_seconds(pid: int) -> float | None:
    """The CPU time (user and system, all threads) process ``pid`` has used, read from
    ``/proc`` (clock ticks, 10 ms on Linux); None where there is no ``/proc``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _filter_seconds(port: int) -> float:
    """The sum of a serving process's ``cutover_safety_filter_duration_seconds`` (every filter,
    both directions), read from its ``/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        lines = answer.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(f"{FILTER_SECONDS}_sum"))


def _serve(upstream: str, port: int, log: Path, policy: Path | None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "cutover.operator.cli", "serve", "--name", "assistant", "--version", "1"]
    command += ["--format", "llm", "--upstream", upstream, "--upstream-model", "tiny-llm"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    if policy is not None:
        command += ["--safety-policy", str(policy)]
    with log.open("wb") as out:
        return subprocess.Popen(
            bench.pinned(bench.SERVER_CPU, command), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _ready(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"cutover serve exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"cutover serve was not ready within 90 s: {log.read_text()[-2000:]}")


def request_latency(filters: Sequence[str], rounds: int, crisis_scope: str | None = None) -> Added | None:
    """The same chat request to two real ``cutover serve`` processes in front of one local
    upstream, one with a policy of ``filters`` (``--safety-policy``) and one without,
    alternating, one request at a time on a keep-alive connection each; None when this build's
    ``cutover serve`` has no ``--safety-policy``. Where both CPUs are free to this script, both
    serving processes run on ``SERVER_CPU`` and this client and the upstream on ``WRK_CPU``, so
    the client never takes the servers' core (other programs on the machine still may)."""
    with bench.on_cpu(bench.WRK_CPU):  # before the upstream's threads start: they inherit it
        return _request_latency(filters, rounds, crisis_scope)


def _request_latency(filters: Sequence[str], rounds: int, crisis_scope: str | None) -> Added | None:
    usage = subprocess.run(
        [sys.executable, "-m", "cutover.operator.cli", "serve", "--help"], capture_output=True, text=True
    ).stdout
    if "--safety-policy" not in usage:
        return None
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ChatUpstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="cutover-bench-safety-") as folder:
        root = Path(folder)
        policy = root / "policy.json"
        policy.write_text(json.dumps(policy_document(filters, crisis_scope)))
        ports = {"without": bench.free_port(), "with": bench.free_port()}
        try:
            for which, port in ports.items():
                log = root / f"{which}.log"
                process = _serve(
                    f"http://127.0.0.1:{upstream.server_address[1]}", port, log, policy if which == "with" else None
                )
                processes.append(process)
                try:
                    _ready(port, process, log)
                except RuntimeError as error:
                    return Added("cutover serve over HTTP", note=f"{which} a policy: {error}"[-600:])
            placed = bench.check_cpu("cutover serve", [process.pid for process in processes], bench.SERVER_CPU)
            connections = {which: http.client.HTTPConnection("127.0.0.1", port) for which, port in ports.items()}
            added = Added(
                "cutover serve over HTTP, alternating with and without --safety-policy"
                + (f", crisis scope {crisis_scope}" if crisis_scope else "")
            )

            def body(index: int) -> bytes:
                text = unique(USER_MESSAGES[index % len(USER_MESSAGES)], index)
                return json.dumps({"model": "assistant", "messages": [{"role": "user", "content": text}]}).encode()

            warmup = 50
            refused: dict[str, int] = {}
            pids = {which: process.pid for which, process in zip(ports, processes, strict=True)}
            cpu: dict[str, float | None] = {}
            filtered = 0.0
            for index in range(rounds + warmup):
                if index == warmup:
                    cpu = {which: _cpu_seconds(pid) for which, pid in pids.items()}
                    filtered = _filter_seconds(ports["with"])
                order = ("with", "without") if index % 2 else ("without", "with")
                for which in order:
                    connection = connections[which]
                    started = time.perf_counter()
                    connection.request(
                        "POST",
                        "/v1/chat/completions",
                        body(index),
                        {"Content-Type": "application/json"},
                    )
                    answer = connection.getresponse()
                    answer.read()
                    elapsed = (time.perf_counter() - started) * 1000
                    if answer.status != 200:
                        refused[f"{which}: {answer.status}"] = refused.get(f"{which}: {answer.status}", 0) + 1
                    elif index >= warmup:
                        (added.with_ms if which == "with" else added.without_ms).append(elapsed)
            added.note = f"{rounds} requests each, load average {os.getloadavg()[0]:.1f}; " + (
                f"servers on CPU {bench.SERVER_CPU}, client and upstream on CPU {bench.WRK_CPU}"
                if bench.pinning()
                else f"not pinned ({placed})"
            )
            for which, pid in pids.items():
                before, after = cpu.get(which), _cpu_seconds(pid)
                if before is not None and after is not None and rounds:
                    added.cpu_ms[which] = (after - before) * 1000 / rounds
            if rounds:
                added.filters_ms = (_filter_seconds(ports["with"]) - filtered) * 1000 / rounds
            if refused:
                # A refused request skips the upstream and would look fast: timed only the 200s.
                added.note += "; NOT answered 200 (benign texts refused; not timed): " + ", ".join(
                    f"{key} x{count}" for key, count in sorted(refused.items())
                )
            return added
        finally:
            for process in processes:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)
            upstream.shutdown()


# ---- report ---------------------------------------------------------------------------------------


def _f(value: float) -> str:
    return "  -  " if value != value else f"{value:.3f}"


def _added_line(added: Added) -> str:
    """One target line for an added-latency measurement: with a measured request without the
    policy, the difference of the two p50s and their ratio; else the engine's own time."""
    if not added.with_ms:
        return f"n/a   added latency ({added.how}): {added.note}"
    with_p50 = statistics.median(added.with_ms)
    if added.without_ms:
        without_p50 = statistics.median(added.without_ms)
        extra = with_p50 - without_p50
        return (
            f"{'PASS' if extra <= TARGET_ADDED_MS else 'FAIL'}  added latency p50 {extra:.3f} ms <= "
            f"{TARGET_ADDED_MS} ms: request p50 {with_p50:.3f} ms with all filters, {without_p50:.3f} ms without, "
            f"ratio {with_p50 / without_p50:.2f} ({added.how}; {added.note})"
            + (
                f"; server CPU per request {added.cpu_ms['with']:.3f} ms with, {added.cpu_ms['without']:.3f} ms "
                f"without (+{added.cpu_ms['with'] - added.cpu_ms['without']:.3f} ms of CPU, "
                f"{'<=' if added.cpu_ms['with'] - added.cpu_ms['without'] <= TARGET_ADDED_MS else '>'} "
                f"{TARGET_ADDED_MS} ms)"
                if len(added.cpu_ms) == 2
                else ""
            )
            + (
                f"; the filters' own wall time in the server with the policy ({FILTER_SECONDS}) "
                f"{added.filters_ms:.3f} ms per request"
                if added.filters_ms is not None
                else ""
            )
        )
    p99 = sorted(added.with_ms)[int(0.99 * (len(added.with_ms) - 1))]
    return (
        f"{'PASS' if with_p50 <= TARGET_ADDED_MS else 'FAIL'}  added latency p50 {with_p50:.3f} ms <= "
        f"{TARGET_ADDED_MS} ms (p99 {p99:.3f} ms; {added.how}; {added.note})"
        + (
            f"; CPU time p50 {added.cpu_ms['with']:.3f} ms, mean {added.cpu_ms['mean']:.3f} ms (the mean compares "
            "with the server CPU per request over HTTP)"
            if "with" in added.cpu_ms
            else ""
        )
    )


def report(results: Sequence[Result], skipped: Mapping[str, str], added: Sequence[Added]) -> list[str]:
    """The printed tables and target lines."""
    lines = ["per filter, held-out test split (serving/safety/corpus/<filter>/test.jsonl)", ""]
    header = f"{'filter':<9} {'system':<22} {'gold':>5} {'prec':>6} {'recall':>6} {'F1':>6} {'p50 ms':>8} {'p99 ms':>8}"
    lines.append(header)
    for r in results:
        t = r.overall
        count = t.tp + t.fn
        lines.append(
            f"{r.filter:<9} {r.system:<22} {count:>5} {_f(t.precision):>6} {_f(t.recall):>6} {_f(t.f1):>6} "
            f"{r.percentile(0.5):>8.3f} {r.percentile(0.99):>8.3f}" + (f"  ({r.errors} errors)" if r.errors else "")
        )
    for name, why in skipped.items():
        lines.append(f"{name:<9} {'(not measured)':<22} {why}")
    lines += ["", "per category (detectors)", ""]
    for r in results:
        if r.system != "detector":
            continue
        for category, t in sorted(r.categories.items()):
            if t.tp + t.fn + t.fp == 0:
                continue
            lines.append(
                f"{r.filter:<9} {category:<18} gold {t.tp + t.fn:>4}  "
                f"P {_f(t.precision)}  R {_f(t.recall)}  F1 {_f(t.f1)}"
            )
    flagged = [r for r in results if r.everyday is not None]
    if flagged:
        total = flagged[0].everyday[1] if flagged[0].everyday else 0
        lines += ["", f"false alarms on everyday chat ({EVERYDAY.relative_to(REPO)}, {total} lines, none to flag)", ""]
        for r in flagged:
            count, read = r.everyday or (0, 0)
            lines.append(f"{r.filter:<9} {r.system:<22} {count:>3} of {read} flagged ({count / max(read, 1):.1%})")
    pii = [r for r in results if r.filter == "pii"]
    if pii:
        lines += ["", "PII, structured entities (email, phone, creditCard, ssn, iban, ipAddress)", ""]
        for r in pii:
            s = r.structured or Tally()
            lines.append(
                f"{r.system:<22} P {_f(s.precision)}  R {_f(s.recall)}  F1 {_f(s.f1)}  "
                f"Luhn-invalid cards redacted: {r.luhn_invalid_cards}"
            )
    lines += ["", "targets", ""]
    by = {(r.filter, r.system): r for r in results}
    crisis = by.get(("crisis", "detector"))
    if crisis is not None:
        ok = crisis.overall.recall >= TARGET_CRISIS_RECALL and crisis.overall.precision >= TARGET_CRISIS_PRECISION
        lines.append(
            f"{'PASS' if ok else 'FAIL'}  crisis recall {_f(crisis.overall.recall)} >= {TARGET_CRISIS_RECALL} at "
            f"precision {_f(crisis.overall.precision)} >= {TARGET_CRISIS_PRECISION}"
        )
    else:
        lines.append("n/a   crisis: detector or test split not there")
    pii_result = by.get(("pii", "detector"))
    if pii_result is not None and pii_result.structured is not None:
        recall = pii_result.structured.recall
        ok = recall >= TARGET_PII_RECALL and pii_result.luhn_invalid_cards == 0
        lines.append(
            f"{'PASS' if ok else 'FAIL'}  PII structured recall {_f(recall)} >= {TARGET_PII_RECALL}, "
            f"Luhn-invalid cards redacted {pii_result.luhn_invalid_cards} == 0"
        )
    else:
        lines.append("n/a   PII: detector or test split not there")
    if not added:
        lines.append("n/a   added latency: the policy engine (serving/safety/policy.py) is not there")
    for measured in added:
        lines.append(_added_line(measured))
        if measured.per_filter_ms:
            parts = [f"{name} {statistics.median(ms):.3f}" for name, ms in measured.per_filter_ms.items()]
            lines.append(f"      per filter, p50 ms per exchange: {', '.join(parts)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--filters", default=",".join(FILTERS), help="comma-separated filters to score")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes over each test split")
    parser.add_argument("--rounds", type=int, default=3000, help="timed exchanges through the engine in process")
    parser.add_argument("--requests", type=int, default=1000, help="timed HTTP chat requests per serving process")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--show-errors", action="store_true", help="print the detectors' misses and false alarms")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.filters.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in FILTERS]
    if unknown:
        parser.error(f"unknown filter(s): {', '.join(unknown)}")

    commit = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%h %cs", "--", "serving/safety", "serving/pii.py"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(
        f"safety filters at {commit or 'an unknown commit'}; {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"
    )
    results: list[Result] = []
    skipped: dict[str, str] = {}
    everyday = [json.loads(line) for line in EVERYDAY.read_text(encoding="utf-8").splitlines() if line.strip()]
    scans = {name: detector_scan(name) for name in FILTERS}
    landed = [name for name in FILTERS if scans[name][0] is not None]
    for name in chosen:
        scan, why = scans[name]
        split = read_split(name)
        if split is None:
            skipped[name] = "no test split yet" + ("" if scan is not None else f"; detector {why}")
            continue
        examples, raw = split
        systems: list[tuple[str, Scan | None]] = []
        if scan is None:
            skipped[name] = f"detector {why}"
        else:
            systems.append(("detector", scan))
        if name == "pii":
            systems.append((f"pii.py@{PII_BEFORE}", pii_before_scan()))
            systems.append(("phonenumbers (phone)", phonenumbers_scan()))
        else:
            systems.append(("keywords", keyword_scan(name)))
        if name == "toxicity":
            systems.append(("profanity-check@0.5", profanity_scan(0.5)))
            systems.append(("profanity-check@0.8", profanity_scan(0.8)))
        for system, system_scan in systems:
            if system_scan is None:
                skipped[f"{name}/{system}"] = "not available (no git history?)"
                continue
            only = ("phone",) if system.startswith("phonenumbers") else None
            result = score(name, system, system_scan, examples, raw, only)
            time_scan(result, system_scan, examples, args.repeat)
            if everyday and only is None:
                everyday_scan(result, system_scan, everyday)
            results.append(result)
    missing = [name for name in FILTERS if name not in landed]
    on = [name for name in FILTERS if name in landed]
    added: list[Added] = []
    if on:
        for measure, rounds in ((added_latency, args.rounds), (request_latency, args.requests)):
            measured = measure(on, rounds)
            if measured is not None:
                if missing:
                    measured.note += f"; without {', '.join(missing)} (not landed)"
                added.append(measured)
        if "crisis" in on and added and not added[-1].with_ms:
            # Crisis on outputs refused the benign answers: measure again with crisis on inputs
            # only, as examples/safetypolicy.yaml has it, so the end-to-end figure exists at all.
            again = request_latency(on, args.requests, crisis_scope="inputs")
            if again is not None:
                added.append(again)
    for line in report(results, skipped, added):
        print(line)
    if args.show_errors:
        for r in results:
            if r.system == "detector":
                print(f"\n{r.filter}: misses")
                print("\n".join(f"  {text}" for text in r.misses))
                print(f"{r.filter}: false alarms")
                print("\n".join(f"  {text}" for text in r.false_alarms))
                print(f"{r.filter}: flagged everyday chat")
                print("\n".join(f"  {text}" for text in r.everyday_alarms))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "commit": commit,
                    "results": [
                        {
                            "filter": r.filter,
                            "system": r.system,
                            "precision": r.overall.precision,
                            "recall": r.overall.recall,
                            "f1": r.overall.f1,
                            "p50_ms": r.percentile(0.5),
                            "p99_ms": r.percentile(0.99),
                            "luhn_invalid_cards": r.luhn_invalid_cards,
                            "structured_recall": r.structured.recall if r.structured else None,
                            "everyday_flagged": list(r.everyday) if r.everyday else None,
                        }
                        for r in results
                    ],
                    "added": [
                        {
                            "how": a.how,
                            "with_ms_p50": statistics.median(a.with_ms) if a.with_ms else None,
                            "without_ms_p50": statistics.median(a.without_ms) if a.without_ms else None,
                        }
                        for a in added
                    ],
                    "skipped": skipped,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
