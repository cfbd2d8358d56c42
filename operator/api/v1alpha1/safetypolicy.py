"""SafetyPolicy (``sp``): what the serving path must filter, and what it does when it finds it.

Every filter counts what it finds in ``cutover_safety_violations_total`` (labelled with the
filter, action, model and revision), so a ModelDeployment can gate promotion on it with the
builtin ``safetyViolations`` metric: "the candidate may not raise the violation rate".
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from .base import ApiModel, Conditions, ObjectMeta, Rule, SecretKeyRef, one_of

Scope = Literal["inputs", "outputs", "both"]
Fraction = Annotated[float, Field(ge=0, le=1)]


class Webhook(ApiModel):
    """An HTTP endpoint that receives a JSON POST."""

    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=2048)] | None = None
    """Where to POST."""
    url_secret_ref: SecretKeyRef | None = None
    """A Secret key holding the URL, when the URL itself is a credential."""
    timeout_seconds: Annotated[int, Field(ge=1, le=60)] = 5
    """Timeout of one delivery."""

    rules = (one_of("url", "urlSecretRef", "a webhook sets exactly one of url or urlSecretRef"),)


class CrisisFilter(ApiModel):
    """Detects messages about self-harm, suicidal ideation or violence."""

    enabled: bool = True
    """Turn the filter on."""
    categories: Annotated[
        list[Literal["selfHarm", "suicidalIdeation", "violence"]], Field(min_length=1, max_length=3)
    ] = ["selfHarm", "suicidalIdeation", "violence"]
    """What to detect."""
    action: Literal["escalate", "block"] = "escalate"
    """escalate answers with the configured crisis message and notifies the escalation webhook;
    block refuses the request."""
    escalation_webhook: Webhook | None = None
    """Receives one POST per detection (request id, category, model, revision; no raw text)."""
    response_message: Annotated[str, StringConstraints(max_length=2000)] = (
        "It sounds like you may be going through something difficult. You do not have to face it "
        "alone: please contact local emergency services or a crisis line."
    )
    """What the client receives instead of the model's answer."""
    scope: Scope = "both"
    """Apply to inputs, outputs or both."""

    rules = (
        Rule(
            cel="self.action != 'escalate' || has(self.escalationWebhook)",
            message="crisis action escalate needs an escalationWebhook to escalate to",
            check=lambda s: s.action != "escalate" or s.escalation_webhook is not None,
        ),
        Rule(
            cel="self.categories.all(c, self.categories.filter(o, o == c).size() == 1)",
            message="crisis categories must not repeat",
            check=lambda s: len(set(s.categories)) == len(s.categories),
        ),
    )


class ToxicityFilter(ApiModel):
    """Scores text for toxicity."""

    enabled: bool = True
    """Turn the filter on."""
    threshold: Fraction = 0.8
    """Score at or above which text counts as toxic."""
    action: Literal["block", "flag"] = "block"
    """block refuses; flag answers but counts and audits the violation."""
    scope: Scope = "both"
    """Apply to inputs, outputs or both."""


PiiEntity = Literal["email", "phone", "creditCard", "ssn", "ipAddress", "iban", "personName", "address"]


class PiiFilter(ApiModel):
    """Finds personal data and redacts it."""

    enabled: bool = True
    """Turn the filter on."""
    entities: Annotated[list[PiiEntity], Field(min_length=1, max_length=8)] = [
        "email",
        "phone",
        "creditCard",
        "ssn",
        "ipAddress",
    ]
    """Which kinds of personal data to find."""
    action: Literal["redact", "block"] = "redact"
    """redact replaces each finding with [REDACTED:<entity>]; block refuses the request."""
    scope: Scope = "both"
    """Apply to inputs, outputs or both. The audit log is always redacted."""


class AdviceFilter(ApiModel):
    """Flags unauthorised professional advice in model outputs."""

    enabled: bool = True
    """Turn the filter on."""
    domains: Annotated[list[Literal["medical", "legal", "financial"]], Field(min_length=1, max_length=3)] = [
        "medical",
        "legal",
    ]
    """Which kinds of advice to look for."""
    action: Literal["flag", "block", "disclaim"] = "flag"
    """flag counts it; disclaim appends the disclaimer; block refuses."""
    disclaimer: Annotated[str, StringConstraints(max_length=2000)] = (
        "This is not professional advice. Please consult a qualified professional."
    )
    """Text appended by disclaim."""
    scope: Scope = "outputs"
    """Apply to inputs, outputs or both."""


BiasCategory = Literal["raceEthnicity", "religion", "gender", "sexualOrientation", "disability", "age", "nationality"]


class BiasFilter(ApiModel):
    """Flags demeaning or discriminatory statements about protected groups in model outputs:
    a group stereotyped, demeaned or excluded ("people from X are lazy", "don't hire women over
    40"), not a group named, statistics with their source, discussion of discrimination or a
    counter-stereotype."""

    enabled: bool = True
    """Turn the filter on."""
    categories: Annotated[list[BiasCategory], Field(min_length=1, max_length=7)] = [
        "raceEthnicity",
        "religion",
        "gender",
        "sexualOrientation",
        "disability",
        "age",
        "nationality",
    ]
    """Which protected-group kinds to look for: raceEthnicity, religion, gender,
    sexualOrientation (including gender identity), disability, age, nationality (including
    immigration status)."""
    threshold: Fraction = 0.8
    """Score at or above which text counts as biased."""
    action: Literal["flag", "block"] = "flag"
    """flag answers but counts and audits the violation; block refuses."""
    scope: Scope = "outputs"
    """Apply to inputs, outputs or both."""

    rules = (
        Rule(
            cel="self.categories.all(c, self.categories.filter(o, o == c).size() == 1)",
            message="bias categories must not repeat",
            check=lambda s: len(set(s.categories)) == len(s.categories),
        ),
    )


class SafetyPolicySpec(ApiModel):
    """Filters applied on the serving path of every ModelDeployment that references this policy."""

    crisis: CrisisFilter | None = None
    """Crisis detection."""
    toxicity: ToxicityFilter | None = None
    """Toxicity scoring."""
    pii: PiiFilter | None = None
    """Personal data redaction."""
    advice: AdviceFilter | None = None
    """Unauthorised advice detection."""
    bias: BiasFilter | None = None
    """Discriminatory content about protected groups."""
    block_message: Annotated[str, StringConstraints(max_length=2000)] = (
        "This request cannot be answered under the service's safety policy."
    )
    """What a blocked client receives (with HTTP 422)."""
    fail_closed: bool = True
    """If a filter itself fails, refuse the request (true) or let it through unfiltered (false)."""

    rules = (
        Rule(
            cel="has(self.crisis) || has(self.toxicity) || has(self.pii) || has(self.advice) || has(self.bias)",
            message="a SafetyPolicy needs at least one filter: crisis, toxicity, pii, advice or bias",
            check=lambda s: any(f is not None for f in (s.crisis, s.toxicity, s.pii, s.advice, s.bias)),
        ),
    )


class SafetyPolicyStatus(ApiModel):
    """What the operator observed."""

    observed_generation: int | None = None
    """The metadata.generation last acted on."""
    conditions: Conditions = []
    """Ready: the policy is valid and served; Stalled: its spec is invalid, which only a new
    spec fixes (kstatus reads it as Failed)."""
    deployments: list[str] = []
    """ModelDeployments that reference this policy."""


class SafetyPolicy(ApiModel):
    """Content filters for the serving path, usable as a promotion gate."""

    model_config = {"extra": "ignore"}

    api_version: Literal["cutover.dev/v1alpha1"] = "cutover.dev/v1alpha1"
    kind: Literal["SafetyPolicy"] = "SafetyPolicy"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: SafetyPolicySpec
    status: SafetyPolicyStatus | None = None
